"""The local backend's own process pool: crash isolation, no prefetch, real cancel.

Every function here is module level, so the workers import it by reference.
Waiting is done on files and delivered states; a test that must show that
something never happens checks that the process which would do it is dead.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import AsyncIterator
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import psutil
import pytest
import pytest_asyncio
from _ref_helpers import Recorder, process_gone

from reference import LocalExecutionBackend
from spec import Capability, TaskState, WorkerLostError, capabilities_of

pytestmark = pytest.mark.asyncio

_LIMIT = 30.0
"""Seconds any blocking function waits before giving up on its own."""


# -- what the workers run ------------------------------------------------------


def value_of(i: int) -> int:
    return i


def _refuse_to_load(reason: str) -> None:
    raise RuntimeError(reason)


class Unloadable:
    """Pickles in the worker; unpickling it calls a function that raises."""

    def __reduce__(self) -> tuple[Any, tuple[str]]:
        return (_refuse_to_load, ("this object cannot be loaded here",))


def make_unloadable() -> Unloadable:
    return Unloadable()


def make_lock() -> Any:
    return threading.Lock()


def exit_now(code: int) -> None:
    os._exit(code)


def mark_and_wait(started: str, release: str) -> int:
    """Write this worker's pid to ``started``, then wait for ``release``."""
    Path(started).write_text(str(os.getpid()))
    end = time.monotonic() + _LIMIT
    while not os.path.exists(release) and time.monotonic() < end:
        time.sleep(0.01)
    return os.getpid()


def touch(path: str) -> str:
    Path(path).touch()
    return path


def mark_then_write_later(started: str, marker: str, child_pids: str) -> str:
    """Start a grandchild, mark started, and write ``marker`` after 3 s."""
    child = subprocess.Popen(["sleep", "60"])
    Path(child_pids).write_text(f"{os.getpid()} {child.pid}")
    Path(started).touch()
    time.sleep(3.0)
    Path(marker).touch()
    return "finished"


async def async_mark_then_write_later(started: str, marker: str) -> str:
    Path(started).write_text(str(os.getpid()))
    await asyncio.sleep(3.0)
    Path(marker).touch()
    return "finished"


async def async_cancellable(started: str, saw_cancel: str, marker: str) -> str:
    """Mark started; on CancelledError write ``saw_cancel`` and stop."""
    Path(started).touch()
    try:
        await asyncio.sleep(3.0)
    except asyncio.CancelledError:
        Path(saw_cancel).touch()
        raise
    Path(marker).touch()
    return "finished"


async def async_stubborn(started: str, release: str) -> str:
    """Swallow every cancel; end only once ``release`` exists."""
    Path(started).touch()
    end = time.monotonic() + _LIMIT
    while not os.path.exists(release) and time.monotonic() < end:
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.sleep(0.01)
    Path(started + ".ended").touch()
    return "ignored the cancel"


async def loop_identity() -> tuple[int, int]:
    await asyncio.sleep(0)
    return os.getpid(), id(asyncio.get_running_loop())


def set_flag(value: str) -> None:
    os.environ["PROCPOOL_TEST_FLAG"] = value


def read_flag() -> str | None:
    return os.environ.get("PROCPOOL_TEST_FLAG")


def fail_init() -> None:
    raise ValueError("no worker for you")


# -- helpers -------------------------------------------------------------------


@pytest_asyncio.fixture
async def two(recorder: Recorder) -> AsyncIterator[LocalExecutionBackend]:
    # The spelling older versions took too, so these tests show the old gaps.
    backend = LocalExecutionBackend(ProcessPoolExecutor(2), kill_grace=0.5)
    backend.register_callback(recorder)
    yield backend
    # Every test here ran a task, so a worker lives (a dead one's replacement
    # may still be starting): the check below must have pids to check.
    for _ in range(1000):
        pids = backend.worker_pids()
        if pids:
            break
        await asyncio.sleep(0.01)
    assert pids, "no live worker to check at shutdown"
    await asyncio.wait_for(backend.shutdown(), 30)
    assert all(process_gone(pid) for pid in pids)


def fn(uid: str, func: Any, *args: Any) -> dict[str, Any]:
    return {"uid": uid, "function": func, "args": list(args)}


async def until_exists(path: Path, timeout: float = 20.0) -> None:
    async def poll() -> None:
        while not path.exists():
            await asyncio.sleep(0.005)

    await asyncio.wait_for(poll(), timeout)


async def started_pid(path: Path) -> int:
    async def poll() -> int:
        while True:
            text = path.read_text() if path.exists() else ""
            if text:
                return int(text.split()[0])
            await asyncio.sleep(0.005)

    return await asyncio.wait_for(poll(), 20.0)


def alive(pid: int) -> bool:
    return not process_gone(pid, timeout=0.0)


# -- construction ------------------------------------------------------------


async def test_process_pools_declare_isolation_and_preemptive_cancel() -> None:
    extras = {Capability.CRASH_ISOLATION, Capability.PREEMPTIVE_CANCEL}
    for backend in (
        LocalExecutionBackend(processes=1),
        LocalExecutionBackend(ProcessPoolExecutor(1)),
    ):
        assert extras <= capabilities_of(backend)
        assert backend.executor is None
        await backend.shutdown()
    threads = LocalExecutionBackend()
    assert not extras & capabilities_of(threads)
    assert not extras & LocalExecutionBackend.capabilities
    await threads.shutdown()


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"processes": 0}, ValueError, "processes must be at least 1"),
        ({"processes": -3}, ValueError, "processes must be at least 1"),
        ({"processes": 2.0}, TypeError, "processes must be an int"),
        ({"processes": True}, TypeError, "processes must be an int"),
        ({"processes": "2"}, TypeError, "processes must be an int"),
        (
            {"processes": 2, "executor": ProcessPoolExecutor(1)},
            TypeError,
            "executor or processes",
        ),
    ],
)
async def test_bad_processes_option(
    kwargs: dict[str, Any], error: type[Exception], match: str
) -> None:
    with pytest.raises(error, match=match):
        LocalExecutionBackend(**kwargs)


async def test_a_process_pool_executor_lends_its_settings(
    recorder: Recorder,
) -> None:
    executor = ProcessPoolExecutor(1, initializer=set_flag, initargs=("from-init",))
    backend = LocalExecutionBackend(executor)
    backend.register_callback(recorder)
    tasks = [fn(f"t{i}", read_flag) for i in range(3)] + [fn("pid", os.getpid)]
    await backend.submit_tasks(tasks)
    await recorder.wait(t["uid"] for t in tasks)
    assert [t["return_value"] for t in tasks[:3]] == ["from-init"] * 3
    assert backend.worker_pids() == [tasks[3]["return_value"]]  # max_workers=1
    await asyncio.wait_for(backend.shutdown(), 30)
    with pytest.raises(RuntimeError):  # the backend shut the executor down
        executor.submit(value_of, 1)


async def test_a_failing_initializer_fails_the_tasks_naming_it(
    recorder: Recorder,
) -> None:
    backend = LocalExecutionBackend(ProcessPoolExecutor(1, initializer=fail_init))
    backend.register_callback(recorder)
    tasks = [fn(f"t{i}", value_of, i) for i in range(3)]
    await backend.submit_tasks(tasks)
    await recorder.wait(t["uid"] for t in tasks)
    for task in tasks:
        assert recorder.final(task["uid"]) is TaskState.FAILED
        assert "initializer" in str(task["exception"])
        assert "no worker for you" in str(task["exception"])
    await asyncio.wait_for(backend.shutdown(), 30)


async def test_async_functions_share_their_worker_s_persistent_loop(
    recorder: Recorder,
) -> None:
    backend = LocalExecutionBackend(processes=1)
    backend.register_callback(recorder)
    tasks = [fn(f"a{i}", loop_identity) for i in range(3)]
    await backend.submit_tasks(tasks)
    await recorder.wait(t["uid"] for t in tasks)
    assert len({t["return_value"] for t in tasks}) == 1  # one worker, one loop
    await asyncio.wait_for(backend.shutdown(), 30)


# -- crash isolation (issue 10, items 4 and 5) ---------------------------------


async def test_an_unloadable_return_value_fails_only_its_task(
    two: LocalExecutionBackend, recorder: Recorder
) -> None:
    tasks = [fn(f"ok{i}", value_of, i) for i in range(4)]
    tasks.insert(2, fn("unloadable", make_unloadable))
    await two.submit_tasks(tasks)
    await recorder.wait(t["uid"] for t in tasks)
    bad = tasks.pop(2)
    assert recorder.final("unloadable") is TaskState.FAILED
    message = str(bad["exception"])
    assert "Unloadable" in message and "cannot be unpickled" in message
    assert not isinstance(bad["exception"], WorkerLostError)
    assert [recorder.final(t["uid"]) for t in tasks] == [TaskState.DONE] * 4
    assert [t["return_value"] for t in tasks] == [0, 1, 2, 3]


async def test_a_return_value_that_cannot_be_pickled_fails_only_its_task(
    two: LocalExecutionBackend, recorder: Recorder
) -> None:
    tasks = [fn("lock", make_lock), fn("ok", value_of, 7)]
    await two.submit_tasks(tasks)
    await recorder.wait(["lock", "ok"])
    assert recorder.final("lock") is TaskState.FAILED
    assert "lock" in str(tasks[0]["exception"])
    assert tasks[1]["return_value"] == 7


async def test_an_argument_that_cannot_be_pickled_fails_only_its_task(
    two: LocalExecutionBackend, recorder: Recorder
) -> None:
    tasks = [fn("bad-arg", value_of, threading.Lock()), fn("ok", value_of, 7)]
    await two.submit_tasks(tasks)
    await recorder.wait(["bad-arg", "ok"])
    assert recorder.final("bad-arg") is TaskState.FAILED
    assert "cannot be pickled" in str(tasks[0]["exception"])
    assert tasks[1]["return_value"] == 7


async def test_os_exit_fails_only_the_task_that_called_it(
    two: LocalExecutionBackend, recorder: Recorder, tmp_path: Path
) -> None:
    # Both workers busy: one task blocks on the other worker while the crash
    # happens, and four wait in the queue.
    release = tmp_path / "release"
    busy = fn("busy", mark_and_wait, str(tmp_path / "busy"), str(release))
    await two.submit_tasks([busy])
    await until_exists(tmp_path / "busy")
    dies = fn("dies", exit_now, 3)
    queued = [fn(f"q{i}", value_of, i) for i in range(4)]
    await two.submit_tasks([dies, *queued])
    await recorder.wait(["dies"])
    release.touch()
    await recorder.wait(t["uid"] for t in [busy, *queued])
    assert recorder.final("dies") is TaskState.FAILED
    error = dies["exception"]
    assert isinstance(error, WorkerLostError)
    assert "'dies'" in str(error) and "exit code 3" in str(error)
    assert recorder.final("busy") is TaskState.DONE
    assert [t["return_value"] for t in queued] == [0, 1, 2, 3]
    assert recorder.violations == []


async def test_a_worker_killed_from_outside_fails_only_its_task_and_the_pool_heals(
    two: LocalExecutionBackend, recorder: Recorder, tmp_path: Path
) -> None:
    victim = fn("victim", mark_and_wait, str(tmp_path / "v"), str(tmp_path / "never"))
    other = fn("other", mark_and_wait, str(tmp_path / "o"), str(tmp_path / "go"))
    await two.submit_tasks([victim, other])
    pid = await started_pid(tmp_path / "v")
    await until_exists(tmp_path / "o")
    queued = [fn(f"q{i}", value_of, i) for i in range(3)]
    await two.submit_tasks(queued)
    os.kill(pid, signal.SIGKILL)
    await recorder.wait(["victim"])
    assert recorder.final("victim") is TaskState.FAILED
    assert isinstance(victim["exception"], WorkerLostError)
    assert "signal 9" in str(victim["exception"])
    await recorder.wait(t["uid"] for t in queued)  # on the replacement worker
    (tmp_path / "go").touch()
    await recorder.wait(["other"])
    assert recorder.final("other") is TaskState.DONE
    assert [t["return_value"] for t in queued] == [0, 1, 2]
    assert pid not in two.worker_pids()
    later = fn("later", value_of, 42)
    await two.submit_tasks([later])
    await recorder.wait(["later"])
    assert later["return_value"] == 42


# -- no prefetch (issue 10, item 6) --------------------------------------------


async def test_cancelled_queued_tasks_never_run(
    recorder: Recorder, tmp_path: Path
) -> None:
    backend = LocalExecutionBackend(ProcessPoolExecutor(1), kill_grace=0.5)
    backend.register_callback(recorder)
    release = tmp_path / "release"
    busy = fn("busy", mark_and_wait, str(tmp_path / "busy"), str(release))
    queued = [fn(f"q{i}", touch, str(tmp_path / f"ran{i}")) for i in range(3)]
    await backend.submit_tasks([busy, *queued])
    await until_exists(tmp_path / "busy")
    promised = [await backend.cancel_task(t["uid"]) for t in queued]
    assert promised == [True, True, True]
    release.touch()
    await recorder.wait(t["uid"] for t in [busy, *queued])
    assert recorder.final("busy") is TaskState.DONE
    assert [recorder.final(t["uid"]) for t in queued] == [TaskState.CANCELED] * 3
    after = fn("after", touch, str(tmp_path / "after"))
    await backend.submit_tasks([after])
    await recorder.wait(["after"])
    # The task behind them ran, on the same worker: they did not.
    assert recorder.final("after") is TaskState.DONE
    assert not any((tmp_path / f"ran{i}").exists() for i in range(3))
    await asyncio.wait_for(backend.shutdown(), 30)
    assert recorder.violations == []


# -- cancel that stops the function (CN-8) --------------------------------------


async def test_cancel_stops_a_running_sync_function_and_its_children(
    two: LocalExecutionBackend, recorder: Recorder, tmp_path: Path
) -> None:
    marker = tmp_path / "late"
    pids_file = tmp_path / "pids"
    task = fn(
        "sync", mark_then_write_later, str(tmp_path / "s"), str(marker), str(pids_file)
    )
    await two.submit_tasks([task])
    await until_exists(tmp_path / "s")
    worker, child = (int(p) for p in pids_file.read_text().split())
    assert await two.cancel_task("sync") is True
    assert recorder.final("sync") is not TaskState.CANCELED  # not inside cancel
    await recorder.wait(["sync"])
    assert recorder.states("sync") == [TaskState.RUNNING, TaskState.CANCELED]
    # CANCELED came once the worker was dead: it can never write the marker.
    assert process_gone(worker, timeout=0.0)
    assert process_gone(child)
    assert not marker.exists()
    healed = fn("healed", value_of, 5)
    await two.submit_tasks([healed])
    await recorder.wait(["healed"])
    assert healed["return_value"] == 5


async def test_cancel_stops_a_running_async_function(
    two: LocalExecutionBackend, recorder: Recorder, tmp_path: Path
) -> None:
    marker = tmp_path / "late"
    task = fn("async", async_mark_then_write_later, str(tmp_path / "a"), str(marker))
    await two.submit_tasks([task])
    worker = await started_pid(tmp_path / "a")
    assert await two.cancel_task("async") is True
    await recorder.wait(["async"])
    assert recorder.final("async") is TaskState.CANCELED
    assert process_gone(worker, timeout=0.0)
    assert not marker.exists()


async def test_a_worker_that_ignores_sigterm_is_killed_after_the_grace(
    two: LocalExecutionBackend, recorder: Recorder, tmp_path: Path
) -> None:
    task = fn("deaf", ignore_term_and_wait, str(tmp_path / "d"))
    await two.submit_tasks([task])
    worker = await started_pid(tmp_path / "d")
    assert await two.cancel_task("deaf") is True
    await recorder.wait(["deaf"])
    assert recorder.final("deaf") is TaskState.CANCELED
    assert process_gone(worker, timeout=0.0)


def ignore_term_and_wait(started: str) -> None:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    Path(started).write_text(str(os.getpid()))
    time.sleep(_LIMIT)


async def test_cancel_after_the_result_came_back_returns_false(
    two: LocalExecutionBackend, recorder: Recorder
) -> None:
    task = fn("quick", value_of, 1)
    await two.submit_tasks([task])
    await recorder.wait(["quick"])
    assert await two.cancel_task("quick") is False
    assert recorder.final("quick") is TaskState.DONE


# -- thread pools: a running coroutine is cancelled on its loop ------------------


async def test_thread_pool_cancel_stops_a_running_coroutine(
    recorder: Recorder, tmp_path: Path
) -> None:
    backend = LocalExecutionBackend(kill_grace=5.0)
    backend.register_callback(recorder)
    saw_cancel, marker = tmp_path / "saw-cancel", tmp_path / "late"
    task = fn(
        "coro", async_cancellable, str(tmp_path / "c"), str(saw_cancel), str(marker)
    )
    await backend.submit_tasks([task])
    await until_exists(tmp_path / "c")
    assert await backend.cancel_task("coro") is True
    await recorder.wait(["coro"], timeout=4.0)  # well before the grace ends
    assert recorder.final("coro") is TaskState.CANCELED
    # CancelledError was raised inside the coroutine before CANCELED came.
    assert saw_cancel.exists()
    assert not marker.exists()
    await asyncio.wait_for(backend.shutdown(), 30)
    assert not marker.exists()


async def test_thread_pool_coroutine_that_swallows_the_cancel(
    recorder: Recorder, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    backend = LocalExecutionBackend(kill_grace=0.2)
    ended_when_reported: list[bool] = []
    started = tmp_path / "s"

    def callback(task: dict[str, Any], state: TaskState) -> None:
        recorder(task, state)
        if state is TaskState.CANCELED:
            ended_when_reported.append(Path(str(started) + ".ended").exists())

    backend.register_callback(callback)
    release = tmp_path / "release"
    task = fn("stubborn", async_stubborn, str(started), str(release))
    await backend.submit_tasks([task])
    await until_exists(started)
    with caplog.at_level(logging.WARNING, logger="reference"):
        assert await backend.cancel_task("stubborn") is True

        async def warned() -> None:
            while "ignored its cancel" not in caplog.text:
                await asyncio.sleep(0.01)

        await asyncio.wait_for(warned(), 10)
    # Past the grace, still running: CANCELED would not be true yet.
    assert recorder.final("stubborn") is TaskState.RUNNING
    release.touch()
    await recorder.wait(["stubborn"])
    assert recorder.final("stubborn") is TaskState.CANCELED
    assert ended_when_reported == [True]
    assert "return_value" not in task
    await asyncio.wait_for(backend.shutdown(), 30)


# -- nothing outlives the backend ---------------------------------------------


async def test_no_worker_or_grandchild_survives_shutdown(
    recorder: Recorder, tmp_path: Path
) -> None:
    backend = LocalExecutionBackend(processes=2, kill_grace=0.5, shutdown_timeout=5)
    backend.register_callback(recorder)
    busy = fn(
        "busy",
        mark_then_write_later,
        str(tmp_path / "b"),
        str(tmp_path / "late"),
        str(tmp_path / "pids"),
    )
    await backend.submit_tasks([busy, fn("idle", value_of, 1)])
    await until_exists(tmp_path / "b")
    await recorder.wait(["idle"])
    pids = backend.worker_pids()
    assert len(pids) == 2
    grandchild = int((tmp_path / "pids").read_text().split()[1])
    mine = {p.pid for p in psutil.Process().children(recursive=True)}
    assert set(pids) <= mine
    await asyncio.wait_for(backend.shutdown(), 30)
    assert recorder.final("busy") is TaskState.CANCELED
    for pid in [*pids, grandchild]:
        assert process_gone(pid), pid
    assert backend.worker_pids() == []


_ORPHAN_SCRIPT = textwrap.dedent(
    """
    import asyncio, os, sys, time
    sys.path.insert(0, {here!r})
    from reference import LocalExecutionBackend

    def wait_long():
        time.sleep(60)

    async def main():
        backend = LocalExecutionBackend(processes=1)
        await backend.submit_tasks([{{"uid": "t", "function": wait_long}}])
        while not backend.worker_pids():
            await asyncio.sleep(0.01)
        print(backend.worker_pids()[0], flush=True)
        await asyncio.sleep(0.3)
        os._exit(0)  # the parent dies without shutting down

    if __name__ == "__main__":
        asyncio.run(main())
    """
)


async def test_workers_die_with_their_parent(tmp_path: Path) -> None:
    script = tmp_path / "orphan.py"
    here = str(Path(__file__).resolve().parents[2])
    script.write_text(_ORPHAN_SCRIPT.format(here=here))
    out = await asyncio.wait_for(
        asyncio.to_thread(
            subprocess.run,
            [sys.executable, str(script)],
            capture_output=True,
            text=True,
            timeout=60,
        ),
        70,
    )
    assert out.returncode == 0, out.stderr
    worker = int(out.stdout.split()[0])
    assert process_gone(worker, timeout=10.0)
