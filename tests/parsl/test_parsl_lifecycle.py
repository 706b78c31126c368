"""The Parsl backend owning its DataFlowKernel: start, fail to start, stop clean."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import psutil
import pytest
from _parsl_helpers import Recorder, add, block, parsl_processes, wait_gone

from spec import BackendError, BackendShutdownError, BackendState, TaskState

pytest.importorskip("parsl")
from reference.parsl import ParslExecutionBackend, local_config

pytestmark = pytest.mark.asyncio


async def test_shutdown_leaves_no_parsl_process(tmp_path: Path) -> None:
    run_dir = str(tmp_path / "runinfo")
    backend = ParslExecutionBackend(local_config(workers=2, run_dir=run_dir))
    recorder = Recorder()
    backend.register_callback(recorder)
    release = tmp_path / "release"
    stuck = {
        "uid": "stuck",
        "function": block,
        "args": (str(tmp_path / "s"), str(release), 60.0),
    }
    try:
        await asyncio.wait_for(backend, 90)
        await backend.submit_tasks([{"uid": "a", "function": add, "args": (1,)}, stuck])
        await recorder.wait("a")
        # The block's shells, its pool and two workers; and the interchange,
        # whose command line (set by Parsl) does not name the run directory.
        procs = parsl_processes(run_dir)
        assert len(procs) >= 4, procs
        interchange = backend._dfk.executors["asyncflow_htex"].interchange_proc
        procs.append(psutil.Process(interchange.pid))
    finally:
        started = time.monotonic()
        await asyncio.wait_for(backend.shutdown(), 60)
        took = time.monotonic() - started
    assert recorder.states["stuck"] == [TaskState.CANCELED]
    assert wait_gone(procs, 10.0) == []
    assert parsl_processes(run_dir) == []
    assert took < 40  # bounded although a worker was stuck in a function
    await backend.shutdown()  # idempotent
    with pytest.raises(BackendShutdownError):
        await backend.submit_tasks([{"uid": "late", "function": add, "args": (1,)}])


async def test_workers_that_never_come_up_fail_clearly(tmp_path: Path) -> None:
    run_dir = str(tmp_path / "runinfo")
    config = local_config(workers=1, run_dir=run_dir)
    config.executors[0].launch_cmd = "false"  # the block starts no worker pool
    backend = ParslExecutionBackend(config, start_timeout=3)
    recorder = Recorder()
    backend.register_callback(recorder)
    started = time.monotonic()
    try:
        await backend.submit_tasks([{"uid": "t", "function": add, "args": (1,)}])
        with pytest.raises(BackendError, match="no Parsl worker connected"):
            await asyncio.wait_for(backend, 60)
        await recorder.wait("t", timeout=60)
        assert time.monotonic() - started < 45
        assert recorder.states["t"] == [TaskState.FAILED]
        await backend.submit_tasks([{"uid": "u", "function": add, "args": (1,)}])
        await recorder.wait("u", timeout=10)
        assert recorder.states["u"] == [TaskState.FAILED]
    finally:
        await asyncio.wait_for(backend.shutdown(), 60)
    assert backend.state() is BackendState.SHUTDOWN
    assert wait_gone(parsl_processes(run_dir), 10.0) == []


async def test_options_are_checked() -> None:
    with pytest.raises(ValueError, match="chunk_size"):
        ParslExecutionBackend(chunk_size=0)
    with pytest.raises(TypeError, match="chunk_size"):
        ParslExecutionBackend(chunk_size=1.5)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="kill_grace"):
        ParslExecutionBackend(kill_grace=float("nan"))
    with pytest.raises(ValueError, match="start_timeout"):
        ParslExecutionBackend(start_timeout=-1)
    with pytest.raises(ValueError, match="not both"):
        ParslExecutionBackend(local_config(), dfk=object())
    with pytest.raises(ValueError, match="workers"):
        local_config(workers=0)


async def test_shutdown_while_parsl_starts_leaves_nothing(tmp_path: Path) -> None:
    run_dir = str(tmp_path / "runinfo")
    backend = ParslExecutionBackend(local_config(workers=1, run_dir=run_dir))
    recorder = Recorder()
    backend.register_callback(recorder)
    await backend.submit_tasks([{"uid": "t", "function": add, "args": (1,)}])
    await asyncio.sleep(0)  # the dispatcher starts the DataFlowKernel
    await asyncio.wait_for(backend.shutdown(), 60)
    assert recorder.states["t"] == [TaskState.CANCELED]
    if backend._dfk is not None:  # it had started: its interchange is gone too
        interchange = backend._dfk.executors["asyncflow_htex"].interchange_proc
        assert interchange is None or interchange.poll() is not None
    assert wait_gone(parsl_processes(run_dir), 10.0) == []
