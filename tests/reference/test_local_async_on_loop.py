"""LocalExecutionBackend(async_on_loop=True): coroutines on the caller's loop.

Also the stale-RUNNING rule of the thread path: a RUNNING notice the loop
reaches only after the task has finished is dropped.
"""

from __future__ import annotations

import asyncio
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from _ref_helpers import QUICK_DONE, Recorder

from reference import LocalExecutionBackend
from spec import TaskState

pytestmark = pytest.mark.asyncio


def _loop_backend(recorder: Recorder) -> LocalExecutionBackend:
    backend = LocalExecutionBackend(ThreadPoolExecutor(2), async_on_loop=True)
    backend.register_callback(recorder)
    return backend


async def test_a_stale_running_notice_is_not_delivered(recorder: Recorder) -> None:
    backend = LocalExecutionBackend(ThreadPoolExecutor(1))
    backend.register_callback(recorder)
    try:
        await backend.submit_tasks([{"uid": "t", "function": abs, "args": (-1,)}])
        await asyncio.sleep(0)  # the dispatch turn: the puller starts
        # Hold the loop until the worker has queued both notices, so the
        # drain finds RUNNING only after the function has returned.
        deadline = time.monotonic() + 20
        while len(backend._inbox.notices) < 2 and time.monotonic() < deadline:
            time.sleep(0.001)
        assert len(backend._inbox.notices) == 2
        await recorder.wait(["t"])
    finally:
        await backend.shutdown()
    assert recorder.states("t") == [TaskState.DONE]
    assert recorder.violations == []


async def test_option_must_be_a_bool() -> None:
    with pytest.raises(TypeError, match="async_on_loop must be a bool"):
        LocalExecutionBackend(async_on_loop=1)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="async_on_loop must be a bool"):
        await LocalExecutionBackend.create(async_on_loop="yes")  # type: ignore[arg-type]


async def test_coroutines_run_on_the_loop_thread_sync_functions_in_the_pool(
    recorder: Recorder,
) -> None:
    loop_thread = threading.get_ident()

    async def where(x: int) -> tuple[int, int]:
        await asyncio.sleep(0)
        return x, threading.get_ident()

    def sync_where(x: int) -> tuple[int, int]:
        return x, threading.get_ident()

    backend = _loop_backend(recorder)
    tasks: list[dict[str, Any]] = [
        {"uid": "a", "function": where, "args": (1,)},
        {"uid": "s", "function": sync_where, "args": (2,)},
        {"uid": "k", "function": where, "kwargs": {"x": 3}},
    ]
    try:
        await backend.submit_tasks(tasks)
        assert recorder.events == [], "a state was delivered inside submit_tasks"
        await recorder.wait(["a", "s", "k"])
    finally:
        await backend.shutdown()
    assert tasks[0]["return_value"] == (1, loop_thread)
    assert tasks[2]["return_value"] == (3, loop_thread)
    value, thread = tasks[1]["return_value"]
    assert value == 2 and thread != loop_thread
    # Suspended at its first await: RUNNING is true after the first step.
    assert recorder.states("a") == [TaskState.RUNNING, TaskState.DONE]
    assert recorder.states("s") in QUICK_DONE
    assert recorder.violations == []


async def test_a_coroutine_done_in_its_first_step_goes_straight_to_done(
    recorder: Recorder,
) -> None:
    async def quick(i: int) -> int:
        return i * 2

    backend = _loop_backend(recorder)
    tasks = [{"uid": f"q{i}", "function": quick, "args": (i,)} for i in range(300)]
    try:
        await backend.submit_tasks(tasks)
        await recorder.wait([t["uid"] for t in tasks])
    finally:
        await backend.shutdown()
    assert [t["return_value"] for t in tasks] == [i * 2 for i in range(300)]
    assert all(recorder.states(t["uid"]) == [TaskState.DONE] for t in tasks)
    # The dispatch's memo of the last function does not outlive its turn.
    assert backend._is_coroutine_function._last is None


async def test_failures_keep_the_exception_and_the_traceback(
    recorder: Recorder,
) -> None:
    async def boom() -> None:
        await asyncio.sleep(0)
        raise KeyError("inner")

    async def raises_cancelled() -> None:
        raise asyncio.CancelledError("its own")

    async def takes_one(x: int) -> int:
        return x

    backend = _loop_backend(recorder)
    tasks: list[dict[str, Any]] = [
        {"uid": "boom", "function": boom},
        {"uid": "own-cancel", "function": raises_cancelled},
        {"uid": "bad-args", "function": takes_one, "args": (1, 2)},
    ]
    try:
        await backend.submit_tasks(tasks)
        await recorder.wait(["boom", "own-cancel", "bad-args"])
    finally:
        await backend.shutdown()
    assert recorder.final("boom") is TaskState.FAILED
    assert isinstance(tasks[0]["exception"], KeyError)
    assert "boom" in tasks[0]["stderr"] and "KeyError" in tasks[0]["stderr"]
    # Nobody canceled it: a CancelledError of its own is its failure.
    assert recorder.final("own-cancel") is TaskState.FAILED
    assert isinstance(tasks[1]["exception"], asyncio.CancelledError)
    assert recorder.final("bad-args") is TaskState.FAILED
    assert isinstance(tasks[2]["exception"], TypeError)
    assert recorder.violations == []


async def test_cancel_stops_a_running_coroutine_and_reports_canceled_after(
    recorder: Recorder,
) -> None:
    started = asyncio.Event()
    seen: list[str] = []

    async def long_running() -> None:
        started.set()
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            seen.append("cancelled inside")
            raise
        finally:
            seen.append("stopped")

    def record(task: dict[str, Any], state: TaskState) -> None:
        if state is TaskState.CANCELED:
            # At the moment CANCELED is delivered the coroutine has stopped.
            seen.append(f"CANCELED after {list(seen)}")
        recorder(task, state)

    backend = LocalExecutionBackend(ThreadPoolExecutor(1), async_on_loop=True)
    backend.register_callback(record)
    try:
        await backend.submit_tasks([{"uid": "long", "function": long_running}])
        await asyncio.wait_for(started.wait(), 20)
        await recorder.wait(["long"], TaskState.RUNNING)
        assert await backend.cancel_task("long") is True
        assert recorder.final("long") is TaskState.RUNNING  # not from inside cancel
        await recorder.wait(["long"])
        assert await backend.cancel_task("long") is False
    finally:
        await backend.shutdown()
    assert recorder.states("long") == [TaskState.RUNNING, TaskState.CANCELED]
    assert seen == [
        "cancelled inside",
        "stopped",
        "CANCELED after ['cancelled inside', 'stopped']",
    ]
    assert recorder.violations == []


async def test_a_coroutine_that_ignores_the_cancel_is_canceled_once_it_ends(
    recorder: Recorder,
) -> None:
    release = asyncio.Event()
    caught = asyncio.Event()

    async def stubborn() -> str:
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            caught.set()
        await release.wait()  # goes on after the cancel
        return "late"

    backend = _loop_backend(recorder)
    task = {"uid": "stubborn", "function": stubborn}
    try:
        await backend.submit_tasks([task])
        await recorder.wait(["stubborn"], TaskState.RUNNING)
        assert await backend.cancel_task("stubborn") is True
        await asyncio.wait_for(caught.wait(), 20)
        # Still running: not CANCELED yet, as that would not be true.
        assert recorder.final("stubborn") is TaskState.RUNNING
        release.set()
        await recorder.wait(["stubborn"])
    finally:
        await backend.shutdown()
    assert recorder.states("stubborn") == [TaskState.RUNNING, TaskState.CANCELED]
    assert "return_value" not in task  # the value is dropped
    assert recorder.violations == []


async def test_cancel_before_the_first_step_means_it_never_runs(
    recorder: Recorder,
) -> None:
    ran: list[str] = []

    async def body(uid: str) -> None:
        ran.append(uid)

    backend = _loop_backend(recorder)
    tasks = [{"uid": f"t{i}", "function": body, "args": (f"t{i}",)} for i in range(3)]
    try:
        await backend.submit_tasks(tasks)
        assert await backend.cancel_task("t0") is True  # not dispatched yet
        await asyncio.sleep(0)  # dispatch turn: t1's asyncio task exists, unstarted
        assert backend._jobs["t1"].on_loop is not None
        assert not backend._jobs["t1"].started
        assert await backend.cancel_task("t1") is True
        await recorder.wait([t["uid"] for t in tasks])
    finally:
        await backend.shutdown()
    assert recorder.states("t0") == [TaskState.CANCELED]
    assert recorder.states("t1") == [TaskState.CANCELED]
    assert recorder.states("t2") == [TaskState.DONE]
    assert ran == ["t2"]
    assert recorder.violations == []


async def test_shutdown_stops_running_coroutines_before_it_returns(
    recorder: Recorder,
) -> None:
    stopped: list[str] = []
    started = asyncio.Event()

    async def forever(uid: str) -> None:
        started.set()
        try:
            await asyncio.sleep(3600)
        finally:
            stopped.append(uid)

    backend = _loop_backend(recorder)
    tasks = [
        {"uid": f"f{i}", "function": forever, "args": (f"f{i}",)} for i in range(5)
    ]
    await backend.submit_tasks(tasks)
    await asyncio.wait_for(started.wait(), 20)
    await asyncio.wait_for(backend.shutdown(), 30)
    assert sorted(stopped) == [t["uid"] for t in tasks]
    assert all(recorder.final(t["uid"]) is TaskState.CANCELED for t in tasks)
    count = len(recorder.events)
    await asyncio.sleep(0.05)
    assert len(recorder.events) == count, "a callback came after shutdown returned"
    assert recorder.violations == []


async def test_a_coroutine_ignoring_the_cancel_does_not_hold_up_shutdown(
    recorder: Recorder,
) -> None:
    release = asyncio.Event()
    ended = asyncio.Event()

    async def deaf() -> None:
        try:
            while not release.is_set():
                try:
                    await release.wait()
                except asyncio.CancelledError:
                    continue
        finally:
            ended.set()

    backend = LocalExecutionBackend(
        ThreadPoolExecutor(1), async_on_loop=True, shutdown_timeout=0.5
    )
    backend.register_callback(recorder)
    await backend.submit_tasks([{"uid": "deaf", "function": deaf}])
    await recorder.wait(["deaf"], TaskState.RUNNING)
    try:
        await asyncio.wait_for(backend.shutdown(), 20)
        assert recorder.states("deaf") == [TaskState.RUNNING, TaskState.CANCELED]
    finally:
        release.set()  # let the coroutine end before the loop closes
        await asyncio.wait_for(ended.wait(), 20)
