"""Executable tasks on the Dask backend: output, options, timeout, cancel."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path
from typing import Any

import pytest
from _dask_helpers import Recorder, run_batch

from spec import TaskState, TaskTimeoutError

pytest.importorskip("distributed")
from reference.dask import DaskExecutionBackend

pytestmark = pytest.mark.asyncio


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie is dead for our purposes; psutil tells zombies apart.
    psutil = pytest.importorskip("psutil")
    try:
        return bool(psutil.Process(pid).status() != psutil.STATUS_ZOMBIE)
    except psutil.NoSuchProcess:
        return False


async def test_output_exit_code_and_state(address: str) -> None:
    tasks: list[dict[str, Any]] = [
        {"uid": "ok", "executable": "echo", "arguments": ["hello", "dask"]},
        {
            "uid": "err",
            "executable": "sh",
            "arguments": ["-c", "'echo oops >&2; exit 3'"],
        },
        {"uid": "missing", "executable": "no-such-program-xyz"},
    ]
    recorder = await run_batch(address, tasks)
    assert recorder.final("ok") is TaskState.DONE
    assert tasks[0]["stdout"] == "hello dask\n"
    assert tasks[0]["exit_code"] == 0
    assert recorder.final("err") is TaskState.FAILED
    assert tasks[1]["exit_code"] == 3
    assert tasks[1]["stderr"] == "oops\n"
    assert recorder.final("missing") is TaskState.FAILED
    assert "no-such-program-xyz" in str(tasks[2]["exception"])


async def test_shell_cwd_and_env_options(address: str, tmp_path: Path) -> None:
    tasks: list[dict[str, Any]] = [
        {
            "uid": "noshell",
            "executable": "echo",
            "arguments": ["$HOME"],
            "task_backend_specific_kwargs": {"shell": False},
        },
        {
            "uid": "cwd",
            "executable": "pwd",
            "task_backend_specific_kwargs": {"cwd": str(tmp_path)},
        },
        {
            "uid": "env",
            "executable": "echo",
            "arguments": ["$ONLY_VAR"],
            "task_backend_specific_kwargs": {"env": {"ONLY_VAR": "set-by-test"}},
        },
    ]
    recorder = await run_batch(address, tasks)
    assert all(recorder.final(t["uid"]) is TaskState.DONE for t in tasks)
    assert tasks[0]["stdout"] == "$HOME\n"
    assert tasks[1]["stdout"].strip() == str(tmp_path)
    assert tasks[2]["stdout"] == "set-by-test\n"


async def test_timeout_kills_and_fails(address: str) -> None:
    task: dict[str, Any] = {
        "uid": "slow",
        "executable": "sleep",
        "arguments": ["30"],
        "task_backend_specific_kwargs": {"timeout": 0.5},
    }
    recorder = await run_batch(address, [task], kill_grace=0.5)
    assert recorder.final("slow") is TaskState.FAILED
    assert isinstance(task["exception"], TaskTimeoutError)


async def test_capture_stdio_writes_files(address: str, tmp_path: Path) -> None:
    backend = DaskExecutionBackend(address=address)
    backend._work_dir = str(tmp_path)
    recorder = Recorder()
    task: dict[str, Any] = {
        "uid": "cap",
        "executable": "echo",
        "arguments": ["captured"],
        "capture_stdio": True,
    }
    backend.register_callback(recorder)
    try:
        await backend.submit_tasks([task])
        await recorder.wait("cap")
    finally:
        await backend.shutdown()
    assert recorder.final("cap") is TaskState.DONE
    assert task["stdout"] == str(tmp_path / "cap.stdout")
    assert Path(task["stdout"]).read_text() == "captured\n"
    assert Path(task["stderr"]).exists()


async def test_cancel_kills_the_whole_process_group(
    address: str, tmp_path: Path
) -> None:
    pid_file = tmp_path / "pid"
    task: dict[str, Any] = {
        "uid": "victim",
        # The sleep is the shell's child: the kill must reach the group.
        "executable": f"sleep 60 & echo $! > {pid_file}; wait",
    }
    backend = DaskExecutionBackend(address=address, kill_grace=1.0)
    recorder = Recorder()
    backend.register_callback(recorder)
    try:
        await backend.submit_tasks([task])
        pid = await _pid_from(pid_file)
        assert _alive(pid)
        # A second cancel while the first is on its way shares its answer.
        answers = await asyncio.gather(
            backend.cancel_task("victim"), backend.cancel_task("victim")
        )
        assert answers == [True, True]
        await recorder.wait("victim")
        assert recorder.states["victim"] == [TaskState.CANCELED]
        assert not _alive(pid)
        assert await backend.cancel_task("victim") is False
    finally:
        await backend.shutdown()


async def test_shutdown_kills_running_executables(address: str, tmp_path: Path) -> None:
    pid_file = tmp_path / "pid"
    backend = DaskExecutionBackend(address=address, kill_grace=1.0)
    recorder = Recorder()
    backend.register_callback(recorder)
    await backend.submit_tasks(
        [{"uid": "x", "executable": f"echo $$ > {pid_file}; exec sleep 60"}]
    )
    pid = await _pid_from(pid_file)
    await asyncio.wait_for(backend.shutdown(), 60)
    assert recorder.states["x"] == [TaskState.CANCELED]
    assert not _alive(pid)


async def _pid_from(pid_file: Path) -> int:
    """Wait (at most 60 s) until the task has written its pid, and return it."""
    async with _deadline(60):
        while not pid_file.exists() or not pid_file.read_text().strip():
            await asyncio.sleep(0.05)
    return int(pid_file.read_text())


class _deadline:
    """``asyncio.timeout`` for Python 3.10: fail instead of hanging."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds

    async def __aenter__(self) -> None:
        self.task = asyncio.current_task()
        loop = asyncio.get_running_loop()
        self.handle = loop.call_later(self.seconds, self._expire)

    def _expire(self) -> None:
        assert self.task is not None
        self.task.cancel()

    async def __aexit__(self, *exc: Any) -> None:
        self.handle.cancel()


if sys.platform == "win32":  # pragma: no cover
    pytestmark = pytest.mark.skip("POSIX process groups")


async def test_lost_worker_takes_its_executable_along(
    address: str, tmp_path: Path
) -> None:
    if not sys.platform.startswith("linux"):
        pytest.skip("the parent-death signal is Linux-only")
    import distributed
    from _dask_helpers import kill_own_worker

    pid_file = tmp_path / "pid"
    client = await distributed.Client(address, asynchronous=True)
    backend = DaskExecutionBackend(client=client)
    recorder = Recorder()
    backend.register_callback(recorder)
    again = tmp_path / "again"
    task: dict[str, Any] = {
        "uid": "stranded",
        "executable": (
            f"if [ -e {pid_file} ]; then echo $$ > {again}; "
            f"else echo $$ > {pid_file}; fi; exec sleep 60"
        ),
    }
    try:
        await backend.submit_tasks([task])
        pid = await _pid_from(pid_file)
        # Kill every worker process (the nannies restart them).
        await client.run(kill_own_worker, on_error="ignore")
        async with _deadline(10):  # its child died with its worker
            while _alive(pid):
                await asyncio.sleep(0.05)
        # It runs again from the start, as the function tasks of a lost
        # chunk do (issue 20 item 7), and is stopped at shutdown.
        second = await _pid_from(again)
        assert "stranded" not in recorder.states
    finally:
        await backend.shutdown()
        await client.close()
    assert recorder.states["stranded"] == [TaskState.CANCELED]
    async with _deadline(10):
        while _alive(second):
            await asyncio.sleep(0.05)
