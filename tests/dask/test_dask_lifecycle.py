"""Lifecycle of the Dask backend: clusters owned or not, cancel, shutdown, loss."""

from __future__ import annotations

import asyncio
import math
from pathlib import Path
from typing import Any

import pytest
from _dask_helpers import Recorder, add, block, kill_own_worker, sleep_then

from spec import (
    BackendShutdownError,
    BackendState,
    Capability,
    TaskState,
    WorkerLostError,
    capabilities_of,
)

distributed = pytest.importorskip("distributed")
from reference.dask import DaskExecutionBackend, shared_local_backend  # noqa: E402

pytestmark = pytest.mark.asyncio


def _children() -> set[int]:
    """Living descendants, minus multiprocessing's per-interpreter helpers."""
    psutil = pytest.importorskip("psutil")
    found = set()
    for child in psutil.Process().children(recursive=True):
        try:
            if child.status() == psutil.STATUS_ZOMBIE:
                continue
            if "multiprocessing.resource_tracker" in " ".join(child.cmdline()):
                continue
        except psutil.Error:
            continue
        found.add(child.pid)
    return found


async def test_owned_cluster_starts_lazily_and_closes_on_shutdown() -> None:
    before = _children()
    backend = DaskExecutionBackend(n_workers=1, threads_per_worker=1)
    assert backend.state() is BackendState.INITIALIZED
    recorder = Recorder()
    backend.register_callback(recorder)
    # Accepts tasks straight after construction; the cluster starts behind it.
    task: dict[str, Any] = {"uid": "a", "function": add, "args": (20, 22)}
    await backend.submit_tasks([task])
    assert backend.state() is BackendState.RUNNING
    await recorder.wait("a", timeout=90)
    assert task["return_value"] == 42
    assert _children() - before, "the owned cluster runs worker processes"
    await asyncio.wait_for(backend.shutdown(), 90)
    await asyncio.wait_for(backend.shutdown(), 10)  # idempotent
    assert backend.state() is BackendState.SHUTDOWN
    assert not (_children() - before), "the owned cluster's processes are gone"


async def test_await_backend_connects_and_async_with_shuts_down(address: str) -> None:
    async with DaskExecutionBackend(address=address) as backend:
        assert backend.state() is BackendState.RUNNING
        assert await backend is backend
    assert backend.state() is BackendState.SHUTDOWN


async def test_connected_cluster_and_given_client_are_left_running(
    address: str,
) -> None:
    first = DaskExecutionBackend(address=address)
    await first
    await first.shutdown()
    client = await distributed.Client(address, asynchronous=True)
    try:
        backend = DaskExecutionBackend(client=client)
        recorder = Recorder()
        backend.register_callback(recorder)
        await backend.submit_tasks([{"uid": "c", "function": add, "args": (1,)}])
        await recorder.wait("c")
        await backend.shutdown()
        assert client.status == "running"
        # The cluster still runs tasks for someone else.
        assert await client.submit(add, 2, 3, pure=False) == 5
    finally:
        await client.close()


async def test_constructor_rejects_conflicting_arguments() -> None:
    with pytest.raises(ValueError, match="not both"):
        DaskExecutionBackend(client=object(), address="tcp://x:1")
    with pytest.raises(ValueError, match="asynchronous"):
        DaskExecutionBackend(client=object())
    with pytest.raises(ValueError, match="n_workers"):
        DaskExecutionBackend(address="tcp://x:1", n_workers=2)
    with pytest.raises(ValueError, match="chunk_size must be >= 1, got 0"):
        DaskExecutionBackend(chunk_size=0)
    with pytest.raises(ValueError, match=r"kill_grace must be >= 0 seconds, got -1\.0"):
        DaskExecutionBackend(kill_grace=-1.0)
    for bad in (math.nan, math.inf, 1e20):
        with pytest.raises(ValueError, match="kill_grace"):
            DaskExecutionBackend(kill_grace=bad)
    with pytest.raises(TypeError, match="kill_grace"):
        DaskExecutionBackend(kill_grace="2")  # type: ignore[arg-type]
    for odd in (2.5, "4", True):
        with pytest.raises(TypeError, match="chunk_size must be an int"):
            DaskExecutionBackend(chunk_size=odd)  # type: ignore[arg-type]


async def test_declares_its_capabilities() -> None:
    caps = capabilities_of(DaskExecutionBackend(address="tcp://unused:1"))
    assert {
        Capability.FUNCTIONS,
        Capability.EXECUTABLES,
        Capability.CAPTURE_STDIO,
        Capability.TIMEOUT,
    } <= caps
    assert Capability.PROMPTS not in caps
    assert Capability.CRASH_ISOLATION in caps  # RS-12: a death fails its task only
    # A running function in a worker thread cannot be stopped (CN-8).
    assert Capability.PREEMPTIVE_CANCEL not in caps


async def test_cancel_before_start_never_runs(address: str, tmp_path: Path) -> None:
    backend = DaskExecutionBackend(address=address, chunk_size=1)
    recorder = Recorder()
    backend.register_callback(recorder)
    release = tmp_path / "release"
    marker = tmp_path / "ran"
    busy = [
        {
            "uid": f"busy{i}",
            "function": block,
            "args": (str(tmp_path / f"b{i}"), str(release)),
        }
        for i in range(2)
    ]
    queued: dict[str, Any] = {
        "uid": "queued",
        "function": sleep_then,
        "args": (0.0, str(marker)),
    }
    never_sent: dict[str, Any] = {"uid": "never-sent", "function": add, "args": (1,)}

    async def queue_behind_busy_threads() -> None:
        await backend.submit_tasks(busy)
        while not all((tmp_path / f"b{i}").exists() for i in range(2)):
            await asyncio.sleep(0.02)  # both worker threads are now busy
        await backend.submit_tasks([queued, never_sent])
        # Canceled before the dispatcher's turn: never sent to Dask.
        assert await backend.cancel_task("never-sent") is True
        while backend._jobs["queued"].chunk is None:
            await asyncio.sleep(0)  # sent to Dask, queued behind the busy ones

    try:
        await asyncio.wait_for(queue_behind_busy_threads(), 60)
        assert await backend.cancel_task("queued") is True
        assert await backend.cancel_task("nobody") is False
        await recorder.wait("queued", "never-sent")
        release.touch()
        await recorder.wait("busy0", "busy1")
        assert recorder.states["queued"] == [TaskState.CANCELED]
        assert recorder.states["never-sent"] == [TaskState.CANCELED]
        assert recorder.final("busy0") is TaskState.DONE
    finally:
        release.touch()
        await backend.shutdown()
    assert not marker.exists()


async def test_shutdown_cancels_everything_and_then_stays_silent(
    address: str,
) -> None:
    backend = DaskExecutionBackend(address=address)
    recorder = Recorder()
    backend.register_callback(recorder)
    tasks = [{"uid": f"s{i}", "function": sleep_then, "args": (2.0,)} for i in range(4)]
    await backend.submit_tasks(tasks)
    await asyncio.sleep(0)  # let the dispatcher hand them to Dask
    await asyncio.wait_for(backend.shutdown(), 60)
    recorder.closed = True
    assert all(recorder.states[t["uid"]] == [TaskState.CANCELED] for t in tasks)
    with pytest.raises(BackendShutdownError):
        await backend.submit_tasks([{"uid": "after", "function": add, "args": (1,)}])
    assert await backend.cancel_task("s0") is False
    await asyncio.sleep(2.5)  # the canceled functions finish on the workers now
    assert recorder.after_close == []


async def test_lost_worker_fails_the_task(address: str) -> None:
    backend = DaskExecutionBackend(address=address)
    recorder = Recorder()
    backend.register_callback(recorder)
    task: dict[str, Any] = {"uid": "doomed", "function": kill_own_worker}
    try:
        await backend.submit_tasks([task])
        await recorder.wait("doomed", timeout=90)
    finally:
        await backend.shutdown()
    assert recorder.states["doomed"] == [TaskState.FAILED]
    assert isinstance(task["exception"], WorkerLostError)


async def test_losing_the_scheduler_fails_tasks_instead_of_hanging(
    address: str, tmp_path: Path
) -> None:
    client = await distributed.Client(address, asynchronous=True)
    backend = DaskExecutionBackend(client=client)
    recorder = Recorder()
    backend.register_callback(recorder)
    started, release = tmp_path / "started", tmp_path / "release"
    task: dict[str, Any] = {
        "uid": "orphan",
        "function": block,
        "args": (str(started), str(release)),
    }
    try:
        await backend.submit_tasks([task])

        async def wait_started() -> None:
            while not started.exists():
                await asyncio.sleep(0.02)

        await asyncio.wait_for(wait_started(), 60)
        await client.close()  # the connection to the cluster is gone
        await recorder.wait("orphan")
    finally:
        release.touch()
        await asyncio.wait_for(backend.shutdown(), 60)
    assert recorder.states["orphan"] == [TaskState.FAILED]
    assert isinstance(task["exception"], WorkerLostError)


async def test_shared_cluster_runs_outside_this_process_tree() -> None:
    # Workers that Dask restarts after a death must not look like children a
    # backend left behind (SD-5): the shared cluster is no descendant of ours.
    before = _children()
    backend = await asyncio.wait_for(shared_local_backend(), 90)
    recorder = Recorder()
    backend.register_callback(recorder)
    task: dict[str, Any] = {"uid": "doomed", "function": kill_own_worker}
    healthy: dict[str, Any] = {"uid": "healthy", "function": add, "args": (1, 2)}
    try:
        await backend.submit_tasks([task, healthy])
        await recorder.wait("doomed", "healthy", timeout=90)
    finally:
        await asyncio.wait_for(backend.shutdown(), 60)
    assert recorder.states["doomed"] == [TaskState.FAILED]
    assert isinstance(task["exception"], WorkerLostError)
    assert recorder.states["healthy"] == [TaskState.DONE]
    assert not (_children() - before), "the shared cluster is not our child"
