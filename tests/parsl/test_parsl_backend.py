"""The Parsl backend on a shared local DataFlowKernel: results, cancels, faults."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from pathlib import Path
from typing import Any

import psutil
import pytest
from _parsl_helpers import (
    Recorder,
    Unsendable,
    add,
    async_add,
    block,
    kill_own_worker,
    raise_key_error,
    touch,
    wait_gone,
)

from spec import (
    CapabilityNotSupportedError,
    TaskState,
    TaskTimeoutError,
    WorkerLostError,
)

pytest.importorskip("parsl")
from reference.parsl import ParslExecutionBackend

pytestmark = pytest.mark.asyncio


async def _backend(dfk: Any, tmp_path: Path, **options: Any) -> ParslExecutionBackend:
    backend = ParslExecutionBackend(dfk=dfk, **options)
    backend._work_dir = str(tmp_path)
    return await asyncio.wait_for(backend, 60)


async def _started(path: Path, timeout: float = 60.0) -> None:
    """Wait until a task created ``path`` (a worker has started it)."""
    async with asyncio.timeout(timeout):
        while not path.exists():
            await asyncio.sleep(0.02)


async def test_functions_and_executables_report_results(
    dfk: Any, tmp_path: Path
) -> None:
    backend = await _backend(dfk, tmp_path)
    recorder = Recorder()
    backend.register_callback(recorder)
    tasks: list[dict[str, Any]] = [
        {"uid": "sync", "function": add, "args": [1], "kwargs": {"b": 2}},
        {"uid": "async", "function": async_add, "args": (2, 3)},
        {"uid": "raises", "function": raise_key_error},
        {
            "uid": "echo",
            "executable": "echo",
            "arguments": ["$X"],
            "task_backend_specific_kwargs": {
                "env": {"X": "from env"},
                "cwd": str(tmp_path),
            },
        },
        {
            "uid": "argv",
            "executable": "pwd",
            "task_backend_specific_kwargs": {"shell": False, "cwd": str(tmp_path)},
        },
        {"uid": "exit3", "executable": "sh", "arguments": ["-c", "'exit 3'"]},
        {
            "uid": "captured",
            "executable": "echo",
            "arguments": ["kept"],
            "capture_stdio": True,
        },
        {
            "uid": "slow",
            "executable": "sleep",
            "arguments": ["30"],
            "task_backend_specific_kwargs": {"timeout": 0.5},
        },
        {"uid": "missing", "executable": "/no/such/program"},
        {"uid": "nothing"},
        {"uid": "service", "function": add, "args": [1], "is_service": True},
    ]
    try:
        await backend.submit_tasks(tasks)
        await recorder.wait(*(t["uid"] for t in tasks))
    finally:
        await asyncio.wait_for(backend.shutdown(), 60)
    by = {t["uid"]: t for t in tasks}
    assert recorder.threads == {threading.get_ident()}  # all on the loop thread
    assert by["sync"]["return_value"] == 3 and by["async"]["return_value"] == 5
    assert isinstance(by["raises"]["exception"], KeyError)
    assert "missing thing" in by["raises"]["stderr"]
    assert by["echo"]["stdout"] == "from env\n" and by["echo"]["exit_code"] == 0
    assert by["argv"]["stdout"].strip() == str(tmp_path)
    assert recorder.final("exit3") is TaskState.FAILED and by["exit3"]["exit_code"] == 3
    out = Path(by["captured"]["stdout"])
    assert out.parent == tmp_path and out.read_text() == "kept\n"
    assert isinstance(by["slow"]["exception"], TaskTimeoutError)
    assert isinstance(by["missing"]["exception"], FileNotFoundError)
    assert recorder.final("nothing") is TaskState.FAILED
    assert recorder.states["service"] == [TaskState.FAILED]  # no services (SB-6)
    assert isinstance(by["service"]["exception"], CapabilityNotSupportedError)
    for uid in ("sync", "async", "echo", "argv", "captured"):
        assert recorder.states[uid] == [TaskState.DONE], uid


async def test_unsendable_argument_fails_only_its_task(
    dfk: Any, tmp_path: Path
) -> None:
    backend = await _backend(dfk, tmp_path, chunk_size=3)
    recorder = Recorder()
    backend.register_callback(recorder)
    tasks: list[dict[str, Any]] = [
        {"uid": f"ok{i}", "function": add, "args": (i, 1)} for i in range(3)
    ]
    tasks.insert(
        1, {"uid": "bad", "function": add, "args": (1,), "kwargs": {"b": Unsendable()}}
    )
    try:
        await backend.submit_tasks(tasks)
        await recorder.wait(*(t["uid"] for t in tasks))
    finally:
        await asyncio.wait_for(backend.shutdown(), 60)
    bad = tasks.pop(1)
    assert recorder.states["bad"] == [TaskState.FAILED]
    assert "kwargs['b']" in str(bad["exception"]) and "Unsendable" in str(
        bad["exception"]
    )
    assert [t["return_value"] for t in tasks] == [1, 2, 3]


async def test_a_worker_that_dies_fails_only_its_task(dfk: Any, tmp_path: Path) -> None:
    # One chunk of 6: the worker dies with all of it; each member runs again
    # alone, and only the one that kills its worker fails.
    backend = await _backend(dfk, tmp_path, chunk_size=6)
    recorder = Recorder()
    backend.register_callback(recorder)
    tasks: list[dict[str, Any]] = [
        {"uid": f"ok{i}", "function": add, "args": (i,)} for i in range(5)
    ]
    tasks.insert(2, {"uid": "killer", "function": kill_own_worker})
    try:
        await backend.submit_tasks(tasks)
        await recorder.wait(*(t["uid"] for t in tasks))
        later = [{"uid": "after", "function": add, "args": (7,)}]
        await backend.submit_tasks(later)  # the pool has healed
        await recorder.wait("after")
    finally:
        await asyncio.wait_for(backend.shutdown(), 60)
    killer = tasks.pop(2)
    assert recorder.states["killer"] == [TaskState.FAILED]
    assert isinstance(killer["exception"], WorkerLostError)
    assert [t["return_value"] for t in tasks] == [0, 1, 2, 3, 4]
    assert later[0]["return_value"] == 7


async def test_a_raising_callback_loses_nothing(dfk: Any, tmp_path: Path) -> None:
    backend = await _backend(dfk, tmp_path)
    recorder = Recorder()

    def callback(task: dict[str, Any], state: TaskState) -> None:
        recorder(task, state)
        if task["uid"] == "a":
            raise RuntimeError("callback bug")
        if task["uid"] == "b":
            raise asyncio.CancelledError

    backend.register_callback(callback)
    tasks = [{"uid": u, "function": add, "args": (1,)} for u in ("a", "b", "c")]
    try:
        await backend.submit_tasks(tasks)
        await recorder.wait("a", "b", "c")
        await backend.submit_tasks([{"uid": "d", "function": add, "args": (2,)}])
        await recorder.wait("d")
    finally:
        await asyncio.wait_for(backend.shutdown(), 60)
    assert all(recorder.states[u] == [TaskState.DONE] for u in "abcd")


async def test_cancel_before_start_never_runs(dfk: Any, tmp_path: Path) -> None:
    # Both workers blocked: the next task waits in Parsl, where a cancel
    # claims it first; released workers then skip it.
    backend = await _backend(dfk, tmp_path, chunk_size=1)
    recorder = Recorder()
    backend.register_callback(recorder)
    release = tmp_path / "release"
    blockers = [
        {
            "uid": f"block{i}",
            "function": block,
            "args": (str(tmp_path / f"started{i}"), str(release)),
        }
        for i in range(2)
    ]
    marker = tmp_path / "ran"
    queued = {"uid": "queued", "function": touch, "args": (str(marker),)}
    try:
        await backend.submit_tasks(blockers)
        await _started(tmp_path / "started0")
        await _started(tmp_path / "started1")
        await backend.submit_tasks([queued])
        await asyncio.sleep(0.5)  # let it reach Parsl (not needed for the claim)
        assert await backend.cancel_task("queued") is True
        assert await backend.cancel_task("queued") is True  # asked twice: still true
        release.touch()
        await recorder.wait("block0", "block1", "queued")
        follow = {"uid": "follow", "function": add, "args": (1,)}
        await backend.submit_tasks([follow])
        await recorder.wait("follow")  # ran after where "queued" would have
    finally:
        release.touch()
        await asyncio.wait_for(backend.shutdown(), 60)
    assert recorder.states["queued"] == [TaskState.CANCELED]
    assert not marker.exists()
    assert await backend.cancel_task("queued") is False  # finished: unknown now


async def test_cancel_running_function_says_false(dfk: Any, tmp_path: Path) -> None:
    backend = await _backend(dfk, tmp_path)
    recorder = Recorder()
    backend.register_callback(recorder)
    release = tmp_path / "release"
    task = {"uid": "f", "function": block, "args": (str(tmp_path / "s"), str(release))}
    try:
        await backend.submit_tasks([task])
        await _started(tmp_path / "s")
        assert await backend.cancel_task("f") is False
        release.touch()
        await recorder.wait("f")
    finally:
        release.touch()
        await asyncio.wait_for(backend.shutdown(), 60)
    assert recorder.states["f"] == [TaskState.DONE]
    assert task["return_value"] == "released"


async def test_cancel_running_executable_kills_its_group(
    dfk: Any, tmp_path: Path
) -> None:
    backend = await _backend(dfk, tmp_path)
    recorder = Recorder()
    backend.register_callback(recorder)
    pids = tmp_path / "pids"
    script = f"sleep 60 & echo $$ $! > {pids}; wait"
    task = {"uid": "x", "executable": script}
    try:
        await backend.submit_tasks([task])
        await _started(pids)
        await asyncio.sleep(0.1)
        assert await backend.cancel_task("x") is True
        await recorder.wait("x")
    finally:
        await asyncio.wait_for(backend.shutdown(), 60)
    assert recorder.states["x"] == [TaskState.CANCELED]
    procs = []
    for pid in map(int, pids.read_text().split()):
        with contextlib.suppress(psutil.NoSuchProcess):
            procs.append(psutil.Process(pid))
    assert wait_gone(procs, 5.0) == []


async def test_cancel_unknown_and_odd_uids_is_false(dfk: Any, tmp_path: Path) -> None:
    backend = await _backend(dfk, tmp_path)
    try:
        for uid in ("nope", None, ["list"], float("nan"), Path("p")):
            assert await backend.cancel_task(uid) is False  # type: ignore[arg-type]
    finally:
        await asyncio.wait_for(backend.shutdown(), 60)


async def test_shutdown_cancels_tasks_parsl_holds(dfk: Any, tmp_path: Path) -> None:
    backend = await _backend(dfk, tmp_path, chunk_size=1)
    recorder = Recorder()
    backend.register_callback(recorder)
    release = tmp_path / "release"
    blockers = [
        {
            "uid": f"b{i}",
            "function": block,
            "args": (str(tmp_path / f"s{i}"), str(release), 5.0),
        }
        for i in range(2)
    ]
    marker = tmp_path / "ran"
    queued = {"uid": "q", "function": touch, "args": (str(marker),)}
    try:
        await backend.submit_tasks(blockers)
        await _started(tmp_path / "s0")
        await _started(tmp_path / "s1")
        await backend.submit_tasks([queued])
        await asyncio.sleep(0.5)
    finally:
        await asyncio.wait_for(backend.shutdown(), 60)
        release.touch()
    assert all(recorder.states[u] == [TaskState.CANCELED] for u in ("b0", "b1", "q"))
    # The next backend's tasks run on the freed workers; "q" never ran.
    after = await _backend(dfk, tmp_path)
    rec = Recorder()
    after.register_callback(rec)
    try:
        await after.submit_tasks([{"uid": "n", "function": add, "args": (1,)}])
        await rec.wait("n")
    finally:
        await asyncio.wait_for(after.shutdown(), 60)
    assert not marker.exists()
