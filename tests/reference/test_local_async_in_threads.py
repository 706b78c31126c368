"""``async def`` functions in a thread pool: each in a task on the puller's loop.

A pool thread's puller is one asyncio task on the thread's own loop, and an
``async def`` job runs in an asyncio task of its own there (no
``run_until_complete`` of its own). These tests pin what a job must see: a
running loop and a current task in a coroutine, none in a sync function, its
own copy of the context, exceptions of the futures it awaits, and cancels
meant for it only.
"""

from __future__ import annotations

import asyncio
import contextvars
import gc
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from _ref_helpers import Recorder

from reference import LocalExecutionBackend, _workers
from spec import TaskState

_VAR: contextvars.ContextVar[str] = contextvars.ContextVar("_VAR", default="unset")


async def _add(a: int, b: int) -> int:
    await asyncio.sleep(0)
    return a + b


def _sync_runs_its_own_loop() -> tuple[int, bool]:
    try:
        asyncio.get_running_loop()
        saw_loop = True
    except RuntimeError:
        saw_loop = False
    return asyncio.run(_add(1, 2)), saw_loop


async def _sees_loop_and_task() -> bool:
    await asyncio.sleep(0)
    return asyncio.get_running_loop() is not None and asyncio.current_task() is not None


async def _sets_var() -> str:
    _VAR.set("set by the first job")
    await asyncio.sleep(0)
    return _VAR.get()


async def _reads_var() -> str:
    await asyncio.sleep(0)
    return _VAR.get()


async def _await_failing_future(catch: bool) -> str:
    future = asyncio.get_running_loop().create_future()
    asyncio.get_running_loop().call_soon(future.set_exception, KeyError("from afar"))
    try:
        await future
    except KeyError:
        if catch:
            return "caught"
        raise
    return "not raised"


async def _backend(workers: int, recorder: Recorder) -> LocalExecutionBackend:
    backend = LocalExecutionBackend(ThreadPoolExecutor(workers))
    backend.register_callback(recorder)
    return backend


@pytest.mark.asyncio
async def test_a_sync_function_sees_no_running_loop_and_may_start_its_own(
    recorder: Recorder,
) -> None:
    backend = await _backend(1, recorder)
    tasks: list[dict[str, Any]] = [
        {"uid": "async", "function": _sees_loop_and_task},
        {"uid": "sync", "function": _sync_runs_its_own_loop},
        {"uid": "async-again", "function": _sees_loop_and_task},
    ]
    try:
        await backend.submit_tasks(tasks)
        await recorder.wait(["async", "sync", "async-again"], timeout=10)
    finally:
        await backend.shutdown()
    assert [recorder.final(t["uid"]) for t in tasks] == [TaskState.DONE] * 3
    assert tasks[0]["return_value"] is True
    assert tasks[1]["return_value"] == (3, False)
    assert tasks[2]["return_value"] is True


@pytest.mark.asyncio
async def test_each_coroutine_gets_its_own_copy_of_the_context(
    recorder: Recorder,
) -> None:
    backend = await _backend(1, recorder)  # one thread: the same puller runs both
    tasks: list[dict[str, Any]] = [
        {"uid": "sets", "function": _sets_var},
        {"uid": "reads", "function": _reads_var},
    ]
    try:
        await backend.submit_tasks(tasks)
        await recorder.wait(["sets", "reads"], timeout=10)
    finally:
        await backend.shutdown()
    assert tasks[0]["return_value"] == "set by the first job"
    assert tasks[1]["return_value"] == "unset"


@pytest.mark.asyncio
async def test_an_awaited_future_s_exception_reaches_the_coroutine(
    recorder: Recorder,
) -> None:
    backend = await _backend(1, recorder)
    tasks: list[dict[str, Any]] = [
        {"uid": "catches", "function": _await_failing_future, "args": (True,)},
        {"uid": "raises", "function": _await_failing_future, "args": (False,)},
    ]
    try:
        await backend.submit_tasks(tasks)
        await recorder.wait(["catches", "raises"], timeout=10)
    finally:
        await backend.shutdown()
    assert recorder.final("catches") is TaskState.DONE
    assert tasks[0]["return_value"] == "caught"
    assert recorder.final("raises") is TaskState.FAILED
    assert isinstance(tasks[1]["exception"], KeyError)


@pytest.mark.asyncio
@pytest.mark.parametrize("swallow", [False, True], ids=["stops", "swallows"])
@pytest.mark.parametrize("spin", [False, True], ids=["sleeps", "spins"])
async def test_a_cancel_reaches_only_the_coroutine_it_was_meant_for(
    recorder: Recorder, swallow: bool, spin: bool
) -> None:
    started = threading.Event()

    async def victim() -> str:
        started.set()
        try:
            if spin:  # bare yields: the cancel must be thrown in, not awaited
                while True:
                    await asyncio.sleep(0)
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            if not swallow:
                raise
        return "swallowed"

    async def next_on_the_same_thread() -> tuple[str, int]:
        for _ in range(5):
            await asyncio.sleep(0.001)
        if sys.version_info < (3, 11):
            return "finished", 0
        async with asyncio.timeout(5):
            await asyncio.sleep(0)
        current = asyncio.current_task()
        assert current is not None
        # No cancel meant for the victim is left pending on this one.
        return "finished", current.cancelling()

    backend = await _backend(1, recorder)
    tasks: list[dict[str, Any]] = [
        {"uid": "victim", "function": victim},
        {"uid": "next", "function": next_on_the_same_thread},
    ]
    try:
        await backend.submit_tasks(tasks)
        assert await asyncio.to_thread(started.wait, 10)
        assert await backend.cancel_task("victim") is True
        await recorder.wait(["victim", "next"], timeout=10)
    finally:
        await backend.shutdown()
    assert recorder.final("victim") is TaskState.CANCELED
    assert recorder.final("next") is TaskState.DONE
    assert tasks[1]["return_value"] == ("finished", 0)
    assert not recorder.violations


class _Job:
    def __init__(self, function: Any) -> None:
        self.task = {"function": function}
        self.canceled = False
        self.pulled = False
        self.coro: Any = None
        self.ended = False


def test_a_late_cancel_does_not_hit_the_puller_s_next_coroutine() -> None:
    """A cancel that arrives after its coroutine ended is dropped, not passed on."""
    first_started, release_first = threading.Event(), threading.Event()
    second_started, release_second = threading.Event(), threading.Event()

    async def first() -> str:
        first_started.set()
        while not release_first.is_set():
            await asyncio.sleep(0.001)
        return "first"

    async def second() -> str:
        second_started.set()
        while not release_second.is_set():
            await asyncio.sleep(0.001)
        return "second"

    notices: list[tuple[Any, int, Any, str | None]] = []
    queue = _workers.JobQueue(notices.append, 1)
    jobs = [_Job(first), _Job(second)]
    assert queue.put(jobs) == 1
    puller = threading.Thread(target=queue.pull)
    puller.start()
    try:
        assert first_started.wait(10)
        stopper = queue.stop(jobs[0])
        assert not isinstance(stopper, str)
        worker_loop, cancel = stopper
        release_first.set()  # it ends on its own before the cancel is run
        assert second_started.wait(10)
        worker_loop.call_soon_threadsafe(cancel)
        release_second.set()
    finally:
        release_first.set()
        release_second.set()
        puller.join(10)
    assert not puller.is_alive()
    outcomes = [(notice[0], notice[1]) for notice in notices if notice[1] != 0]
    assert outcomes == [(jobs[0], _workers.STOPPED), (jobs[1], _workers.DONE)]
    assert notices[-1][2] == "second"


@pytest.mark.asyncio
async def test_a_job_that_cancels_its_own_task_leaves_the_next_job_alone(
    recorder: Recorder,
) -> None:
    async def cancels_itself_and_returns() -> str:
        current = asyncio.current_task()
        assert current is not None
        current.cancel()  # and returns before any await could take it
        return "returned"

    async def next_on_the_same_thread() -> str:
        for _ in range(3):
            await asyncio.sleep(0)
        return "finished"

    backend = await _backend(1, recorder)
    tasks: list[dict[str, Any]] = [
        {"uid": "self", "function": cancels_itself_and_returns},
        {"uid": "next", "function": next_on_the_same_thread},
    ]
    try:
        await backend.submit_tasks(tasks)
        await recorder.wait(["self", "next"], timeout=10)
    finally:
        await backend.shutdown()
    assert recorder.final("self") in (TaskState.DONE, TaskState.FAILED)
    assert recorder.final("next") is TaskState.DONE
    assert tasks[1]["return_value"] == "finished"


@pytest.mark.asyncio
@pytest.mark.parametrize("kind", [SystemExit, KeyboardInterrupt])
@pytest.mark.parametrize("returns", [False, True], ids=["awaits", "returns"])
async def test_a_background_task_s_system_exit_does_not_kill_the_puller(
    recorder: Recorder, kind: type[BaseException], returns: bool
) -> None:
    """SystemExit out of a job's own task escapes the loop, not the puller's job.

    The loop lets SystemExit and KeyboardInterrupt out of ``run_until_complete``
    whichever task raised them; the puller must carry on with its job and the
    queue, or every task behind it waits forever.
    """

    spawned: list[asyncio.Task[None]] = []

    async def spawns_a_raising_task() -> str:
        async def background() -> None:
            raise kind("from a background task")

        spawned.append(asyncio.get_running_loop().create_task(background()))
        if not returns:
            await asyncio.sleep(0.01)  # it raises while this job is suspended
        return "spawner"

    tasks: list[dict[str, Any]] = [
        {"uid": "spawner", "function": spawns_a_raising_task},
        {"uid": "next", "function": _add, "args": (1, 2)},
        {"uid": "last", "function": _add, "args": (3, 4)},
    ]
    backend = await _backend(1, recorder)
    try:
        await backend.submit_tasks(tasks)
        await recorder.wait(["spawner", "next", "last"], timeout=10)
    finally:
        await backend.shutdown()
    assert recorder.final("spawner") is TaskState.DONE
    assert tasks[0]["return_value"] == "spawner"
    assert [tasks[1]["return_value"], tasks[2]["return_value"]] == [3, 7]
    assert not recorder.violations
    # It stays on the task that raised it (retrieved here, so none is logged).
    assert isinstance(spawned[0].exception(), kind)


@pytest.mark.asyncio
@pytest.mark.parametrize("leftover", ["callback", "task"])
async def test_a_cancel_left_behind_by_an_ended_job_does_not_hit_the_next(
    recorder: Recorder, leftover: str
) -> None:
    """A job's leftovers that cancel "its" task once it has ended hit nothing.

    As a task of its own, the job's task would be done by then; sharing the
    puller's task must not turn the cancel on the job that runs next.
    """

    left: list[asyncio.Task[None]] = []

    async def leaves_a_cancel_behind() -> str:
        current = asyncio.current_task()
        assert current is not None
        loop = asyncio.get_running_loop()
        if leftover == "callback":  # e.g. a watchdog it did not call off
            loop.call_soon(current.cancel)
        else:

            async def cancels_later() -> None:
                current.cancel()

            left.append(loop.create_task(cancels_later()))
        return "left"  # before the loop runs what it left behind

    async def next_on_the_same_thread() -> str:
        for _ in range(3):
            await asyncio.sleep(0)
        return "finished"

    backend = await _backend(1, recorder)
    tasks: list[dict[str, Any]] = [
        {"uid": "leaves", "function": leaves_a_cancel_behind},
        {"uid": "next", "function": next_on_the_same_thread},
        {"uid": "last", "function": next_on_the_same_thread},
    ]
    try:
        await backend.submit_tasks(tasks)
        await recorder.wait(["leaves", "next", "last"], timeout=10)
    finally:
        await backend.shutdown()
    assert recorder.final("leaves") is TaskState.DONE
    assert recorder.final("next") is TaskState.DONE, tasks[1].get("exception")
    assert recorder.final("last") is TaskState.DONE
    assert not recorder.violations


@pytest.mark.asyncio
@pytest.mark.parametrize("returns", [False, True], ids=["awaits", "returns"])
async def test_a_job_that_stops_the_loop_does_not_stop_the_puller(
    recorder: Recorder, returns: bool
) -> None:
    """loop.stop() in a job stops the puller's loop, but not the puller's job."""

    async def stops_the_loop() -> str:
        asyncio.get_running_loop().stop()
        if not returns:
            await asyncio.sleep(0.01)  # the loop stops while it is suspended
        return "carried on"

    tasks: list[dict[str, Any]] = [
        {"uid": "stops", "function": stops_the_loop},
        {"uid": "next", "function": _add, "args": (1, 2)},
        {"uid": "last", "function": _add, "args": (3, 4)},
    ]
    backend = await _backend(1, recorder)
    try:
        await backend.submit_tasks(tasks)
        await recorder.wait(["stops", "next", "last"], timeout=10)
    finally:
        await backend.shutdown()
    assert [recorder.final(t["uid"]) for t in tasks] == [TaskState.DONE] * 3
    assert [t["return_value"] for t in tasks] == ["carried on", 3, 7]
    assert not recorder.violations


def test_a_puller_in_a_thread_that_runs_a_loop_raises_rather_than_spins() -> None:
    """E.g. an executor that runs what it is given inline, on the caller's loop."""

    async def job() -> int:
        return 1

    raised: list[BaseException] = []

    def pull_inside_a_running_loop() -> None:
        async def main() -> None:
            queue = _workers.JobQueue(lambda notice: None, 1)
            assert queue.put([_Job(job)]) == 1
            try:
                queue.pull()
            except RuntimeError as exc:
                raised.append(exc)

        asyncio.run(main())

    thread = threading.Thread(target=pull_inside_a_running_loop, daemon=True)
    thread.start()
    thread.join(10)
    assert not thread.is_alive()
    assert len(raised) == 1
    assert "event loop is running" in str(raised[0])


# -- the first step, taken as the job's task is created ------------------------


@pytest.mark.asyncio
async def test_a_job_s_first_step_runs_as_its_task_is_created(
    recorder: Recorder,
) -> None:
    # A callback the first job queues on the puller's loop runs after the
    # second job's first step: that step did not wait for a turn of the loop
    # (a turn a job costs a selector poll, which gives the GIL away).
    order: list[str] = []
    callback_ran = threading.Event()

    def queued() -> None:
        order.append("queued by the first")
        callback_ran.set()

    async def queues_a_callback() -> None:
        asyncio.get_running_loop().call_soon(queued)

    async def records(own: list[object]) -> None:
        order.append("second job's first step")
        own.append(asyncio.current_task())

    seen: list[object] = []
    tasks: list[dict[str, Any]] = [
        {"uid": "first", "function": queues_a_callback},
        {"uid": "second", "function": records, "args": (seen,)},
    ]
    backend = await _backend(1, recorder)
    try:
        await backend.submit_tasks(tasks)
        await recorder.wait(["first", "second"], timeout=10)
        # The puller's loop runs the callback after the second job's outcome
        # was pushed: wait for it, not for the outcomes alone.
        assert await asyncio.to_thread(callback_ran.wait, 10)
    finally:
        await backend.shutdown()
    assert order == ["second job's first step", "queued by the first"]
    (task,) = seen
    assert isinstance(task, asyncio.Task) and task.done()  # its own, ended


async def _times_out_after_its_first_step() -> str:
    # The timeout is set in the first step and fires after the job has
    # suspended: it must cancel the task the rest of the job runs in.
    async with asyncio.timeout(0.05):  # type: ignore[attr-defined,unused-ignore]
        await asyncio.sleep(10)
    return "not timed out"


@pytest.mark.asyncio
@pytest.mark.skipif(sys.version_info < (3, 11), reason="asyncio.timeout is 3.11+")
async def test_a_timeout_entered_in_the_first_step_fires_on_the_job_s_task(
    recorder: Recorder,
) -> None:
    tasks = [{"uid": "t", "function": _times_out_after_its_first_step}]
    backend = await _backend(1, recorder)
    try:
        await backend.submit_tasks(tasks)
        await recorder.wait(["t"], timeout=10)
    finally:
        await backend.shutdown()
    assert recorder.final("t") is TaskState.FAILED
    assert isinstance(tasks[0]["exception"], TimeoutError)


@pytest.mark.asyncio
async def test_a_cancel_during_the_first_step_stops_the_job_where_it_suspends(
    recorder: Recorder,
) -> None:
    in_first_step = threading.Event()
    go_on = threading.Event()
    reached: list[str] = []

    async def blocks_then_waits() -> str:
        in_first_step.set()
        go_on.wait(10)  # still the first step: nothing can interrupt it
        reached.append("first step over")
        await asyncio.sleep(10)
        reached.append("after the sleep")
        return "ran to the end"

    tasks: list[dict[str, Any]] = [
        {"uid": "job", "function": blocks_then_waits},
        {"uid": "next", "function": _add, "args": (1, 2)},
    ]
    backend = await _backend(1, recorder)
    try:
        await backend.submit_tasks(tasks)
        assert await asyncio.to_thread(in_first_step.wait, 10)
        assert await backend.cancel_task("job") is True
        go_on.set()
        await recorder.wait(["job", "next"], timeout=10)
    finally:
        go_on.set()
        await backend.shutdown()
    assert recorder.final("job") is TaskState.CANCELED
    assert reached == ["first step over"]
    assert tasks[1]["return_value"] == 3
    assert not recorder.violations


@pytest.mark.asyncio
@pytest.mark.parametrize("kind", [SystemExit, KeyboardInterrupt])
async def test_system_exit_in_a_job_s_first_step_fails_that_job_only(
    recorder: Recorder, kind: type[BaseException], caplog: pytest.LogCaptureFixture
) -> None:
    async def raises() -> None:
        raise kind("from the job")

    tasks: list[dict[str, Any]] = [
        {"uid": "raises", "function": raises},
        {"uid": "next", "function": _add, "args": (1, 2)},
    ]
    backend = await _backend(1, recorder)
    try:
        await backend.submit_tasks(tasks)
        await recorder.wait(["raises", "next"], timeout=10)
    finally:
        await backend.shutdown()
    assert recorder.final("raises") is TaskState.FAILED
    assert isinstance(tasks[0]["exception"], kind)
    assert tasks[1]["return_value"] == 3
    gc.collect()  # a task whose exception nobody took logs it as it goes
    assert "never retrieved" not in caplog.text
