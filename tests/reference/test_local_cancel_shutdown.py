"""LocalExecutionBackend: cancellation and shutdown."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from _ref_helpers import QUICK_DONE, Recorder, process_gone, read_pid

from reference import LocalExecutionBackend
from spec import BackendShutdownError, BackendState, TaskState

pytestmark = pytest.mark.asyncio


@pytest.fixture
def gate() -> Iterator[threading.Event]:
    """An event a "stuck" function waits on; always released at teardown.

    Pool threads are joined at interpreter exit, so a test must never leave
    one blocked for good.
    """
    event = threading.Event()
    yield event
    event.set()


def sleeper(tmp_path: Path, name: str, script: str = "exec sleep 60") -> dict[str, Any]:
    """An executable task that writes its pid to ``<tmp>/<name>`` and sleeps."""
    return {
        "uid": name,
        "executable": "/bin/sh",
        "arguments": ["-c", f"echo $$. > {tmp_path / name}; {script}"],
        "task_backend_specific_kwargs": {"shell": False},
    }


async def test_cancel_unknown_or_finished_returns_false(recorder: Recorder) -> None:
    async with LocalExecutionBackend() as backend:
        backend.register_callback(recorder)
        assert await backend.cancel_task("nope") is False
        await backend.submit_tasks([{"uid": "t", "function": int}])
        await recorder.wait(["t"])
        assert await backend.cancel_task("t") is False
    assert recorder.states("t") in QUICK_DONE


async def test_cancelled_queued_function_never_starts(
    recorder: Recorder, gate: threading.Event
) -> None:
    started: list[str] = []
    backend = LocalExecutionBackend(ThreadPoolExecutor(max_workers=1))
    backend.register_callback(recorder)
    await backend.submit_tasks(
        [
            {"uid": "blocker", "function": gate.wait},
            {"uid": "queued", "function": started.append, "args": ("queued",)},
        ]
    )
    await recorder.wait(["blocker"], TaskState.RUNNING)
    assert await backend.cancel_task("queued") is True
    assert recorder.final("queued") is None, "delivered inside cancel_task"
    await recorder.wait(["queued"])
    gate.set()
    await recorder.wait(["blocker"])
    await backend.shutdown()
    assert recorder.states("queued") == [TaskState.CANCELED]
    assert started == []
    assert recorder.final("blocker") is TaskState.DONE
    assert recorder.violations == []


async def test_cancel_of_a_running_sync_function_returns_false_and_it_finishes(
    recorder: Recorder, gate: threading.Event
) -> None:
    # A thread cannot be stopped: CANCELED would not be true, so the cancel
    # is refused and the function's own outcome is reported.
    def slow() -> str:
        gate.wait()
        return "late"

    backend = LocalExecutionBackend()
    backend.register_callback(recorder)
    task = {"uid": "slow", "function": slow}
    await backend.submit_tasks([task, {"uid": "other", "function": int}])
    await recorder.wait(["slow"], TaskState.RUNNING)
    assert await backend.cancel_task("slow") is False
    gate.set()
    await recorder.wait(["slow", "other"])
    await backend.shutdown()
    assert recorder.states("slow") == [TaskState.RUNNING, TaskState.DONE]
    assert task["return_value"] == "late"
    assert recorder.violations == []


async def test_cancel_running_executable_kills_its_process_group(
    recorder: Recorder, tmp_path: Path
) -> None:
    # The shell ignores TERM, so the group needs the KILL after the grace period;
    # its background sleep is a grandchild in the same group.
    task = sleeper(
        tmp_path,
        "sh",
        f"trap '' TERM; sleep 60 & echo $!. > {tmp_path}/bg; wait",
    )
    backend = LocalExecutionBackend(kill_grace=0.3)
    backend.register_callback(recorder)
    await backend.submit_tasks([task])
    leader = await read_pid(tmp_path / "sh")
    grandchild = await read_pid(tmp_path / "bg")
    await recorder.wait(["sh"], TaskState.RUNNING)
    assert await backend.cancel_task("sh") is True
    assert await backend.cancel_task("sh") is True  # still on its way: same answer
    await recorder.wait(["sh"])
    assert recorder.states("sh") == [TaskState.RUNNING, TaskState.CANCELED]
    assert process_gone(leader)
    assert process_gone(grandchild)
    await backend.shutdown()


async def test_cancelled_queued_executable_never_starts(
    recorder: Recorder, tmp_path: Path
) -> None:
    backend = LocalExecutionBackend(max_processes=1)
    backend.register_callback(recorder)
    await backend.submit_tasks(
        [sleeper(tmp_path, "first"), sleeper(tmp_path, "second")]
    )
    await recorder.wait(["first"], TaskState.RUNNING)
    assert await backend.cancel_task("second") is True
    await recorder.wait(["second"])
    assert recorder.states("second") == [TaskState.CANCELED]
    await backend.shutdown()
    assert not (tmp_path / "second").exists()
    assert recorder.final("first") is TaskState.CANCELED


async def test_shutdown_cancels_in_flight_kills_children_and_is_final(
    recorder: Recorder, tmp_path: Path, gate: threading.Event
) -> None:
    backend = LocalExecutionBackend(ThreadPoolExecutor(max_workers=1))
    backend.register_callback(recorder)
    await backend.submit_tasks(
        [
            sleeper(tmp_path, "child"),
            {"uid": "stuck", "function": gate.wait},
            {"uid": "queued", "function": int},
        ]
    )
    pid = await read_pid(tmp_path / "child")
    await recorder.wait(["child", "stuck"], TaskState.RUNNING)
    await asyncio.wait_for(backend.shutdown(), 30)
    assert backend.state() is BackendState.SHUTDOWN
    for uid in ("child", "stuck", "queued"):
        assert recorder.final(uid) is TaskState.CANCELED, uid
    assert process_gone(pid)
    count = len(recorder.events)
    await backend.shutdown()  # idempotent
    with pytest.raises(BackendShutdownError):
        await backend.submit_tasks([{"uid": "late", "function": int}])
    assert await backend.cancel_task("stuck") is False
    gate.set()
    for thread in threading.enumerate():
        if thread.name.startswith("asyncflow-default"):
            await asyncio.to_thread(thread.join, 10)
    for _ in range(3):  # the stuck worker's late notice is drained by now
        await asyncio.sleep(0)
    assert len(recorder.events) == count, "a callback came after shutdown returned"
    assert recorder.violations == []


async def test_shutdown_returns_in_bounded_time_with_a_stuck_thread(
    recorder: Recorder, gate: threading.Event
) -> None:
    backend = LocalExecutionBackend(shutdown_timeout=1.0)
    backend.register_callback(recorder)
    await backend.submit_tasks([{"uid": "stuck", "function": gate.wait}])
    await recorder.wait(["stuck"], TaskState.RUNNING)
    # Shutdown waits for the thread (which never finishes by itself) at most
    # its 1 s shutdown_timeout: the bound leaves 2 s for a busy machine, and
    # still fails a backend waiting for the 5 s default, or for the thread.
    started = time.monotonic()
    await asyncio.wait_for(backend.shutdown(), 20)
    elapsed = time.monotonic() - started
    assert not gate.is_set()
    assert recorder.final("stuck") is TaskState.CANCELED
    assert elapsed < 1.0 + 2.0, elapsed


async def test_concurrent_shutdowns_both_return_after_the_work_is_done(
    recorder: Recorder, tmp_path: Path
) -> None:
    backend = LocalExecutionBackend()
    backend.register_callback(recorder)
    await backend.submit_tasks([sleeper(tmp_path, "a")])
    await recorder.wait(["a"], TaskState.RUNNING)
    await asyncio.wait_for(asyncio.gather(backend.shutdown(), backend.shutdown()), 30)
    assert recorder.final("a") is TaskState.CANCELED


async def test_async_with_shuts_down() -> None:
    async with LocalExecutionBackend() as backend:
        assert backend.state() is BackendState.RUNNING
    assert backend.state() is BackendState.SHUTDOWN
    with pytest.raises(BackendShutdownError):
        await backend.submit_tasks([])
