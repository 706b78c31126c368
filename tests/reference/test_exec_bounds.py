"""Bounds and releases no other test would notice (issue 20, planted-bug gaps).

- memory is given back when a task ends: two executables of 60 MB under a
  100 MB capacity both run, one after the other;
- an escaped, TERM-ignoring descendant that does not hold the pipes is
  SIGKILLed by its mark at cancel: gone once CANCELED is reported, before any
  shutdown;
- the drain after the KILL is short: a descendant nobody can find (its
  environment cleared, so no mark) holding the pipes delays the report by
  about half a second, so the terminal state comes within timeout (or
  cancel) + kill_grace + 1 s plus room for a busy machine, not 5 s later.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from _ref_helpers import Recorder, process_gone, read_pid

from reference import LocalExecutionBackend
from spec import TaskState, TaskTimeoutError

pytestmark = [pytest.mark.asyncio, pytest.mark.timeout(60)]

KILL_GRACE = 0.5
SLACK = 1.5
"""Room for a busy machine; a 5 s drain still overruns the bound by 3 s."""


def _kill_pid_in(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError, ValueError, ProcessLookupError):
        os.kill(int(path.read_text().strip().rstrip(".")), signal.SIGKILL)


def _shell(uid: str, body: str, **options: Any) -> dict[str, Any]:
    return {
        "uid": uid,
        "executable": "/bin/sh",
        "arguments": ["-c", body],
        "task_backend_specific_kwargs": {"shell": False, **options},
    }


async def test_memory_is_given_back_when_a_task_ends(recorder: Recorder) -> None:
    backend = LocalExecutionBackend(cores=2, memory=100, shutdown_timeout=5)
    backend.register_callback(recorder)
    tasks = [_shell(f"m{i}", "sleep 0.05", mem_per_rank=60) for i in range(2)]
    try:
        await backend.submit_tasks(tasks)
        await recorder.wait(["m0", "m1"], timeout=20)
    finally:
        await asyncio.wait_for(backend.shutdown(), 15)
    assert [recorder.final("m0"), recorder.final("m1")] == [TaskState.DONE] * 2


async def test_a_marked_descendant_ignoring_term_is_killed_at_cancel(
    tmp_path: Path, recorder: Recorder
) -> None:
    pid_file = tmp_path / "escaped.pid"
    # Leaves the group (setsid), ignores TERM, holds none of the task's pipes.
    body = (
        f"setsid sh -c \"trap '' TERM; echo \\$\\$. > {pid_file}; exec sleep 60\" "
        "> /dev/null 2> /dev/null < /dev/null & sleep 60"
    )
    backend = LocalExecutionBackend(kill_grace=KILL_GRACE, shutdown_timeout=5)
    backend.register_callback(recorder)
    try:
        await backend.submit_tasks([_shell("t", body)])
        escaped = await read_pid(pid_file)
        await recorder.wait(["t"], TaskState.RUNNING)
        assert await backend.cancel_task("t") is True
        await recorder.wait(["t"], timeout=20)
        assert recorder.states("t") == [TaskState.RUNNING, TaskState.CANCELED]
        assert process_gone(escaped), "the marked descendant outlived the cancel"
    finally:
        await asyncio.wait_for(backend.shutdown(), 15)
        _kill_pid_in(pid_file)


def _unfindable_holder(pid_file: Path) -> str:
    # env -i: no mark, so nothing can find it; it keeps stdout open 60 s.
    return (
        f"env -i setsid sh -c 'echo $$. > {pid_file}; exec sleep 60' & "
        "echo started; sleep 60"
    )


async def test_a_timeout_is_reported_within_timeout_grace_and_a_short_drain(
    tmp_path: Path, recorder: Recorder
) -> None:
    pid_file = tmp_path / "escaped.pid"
    timeout = 1.0
    task = _shell("t", _unfindable_holder(pid_file), timeout=timeout)
    backend = LocalExecutionBackend(kill_grace=KILL_GRACE, shutdown_timeout=5)
    backend.register_callback(recorder)
    try:
        await backend.submit_tasks([task])
        await read_pid(pid_file)
        await recorder.wait(["t"], TaskState.RUNNING)
        started = time.monotonic()
        await recorder.wait(["t"], timeout=30)
        elapsed = time.monotonic() - started
    finally:
        await asyncio.wait_for(backend.shutdown(), 15)
        _kill_pid_in(pid_file)
    assert recorder.final("t") is TaskState.FAILED
    assert isinstance(task["exception"], TaskTimeoutError)
    assert task["stdout"] == "started\n"
    assert elapsed < timeout + KILL_GRACE + 1.0 + SLACK, elapsed


async def test_a_cancel_is_reported_within_grace_and_a_short_drain(
    tmp_path: Path, recorder: Recorder
) -> None:
    pid_file = tmp_path / "escaped.pid"
    backend = LocalExecutionBackend(kill_grace=KILL_GRACE, shutdown_timeout=5)
    backend.register_callback(recorder)
    try:
        await backend.submit_tasks([_shell("t", _unfindable_holder(pid_file))])
        await read_pid(pid_file)
        await recorder.wait(["t"], TaskState.RUNNING)
        started = time.monotonic()
        assert await backend.cancel_task("t") is True
        await recorder.wait(["t"], timeout=30)
        elapsed = time.monotonic() - started
    finally:
        await asyncio.wait_for(backend.shutdown(), 15)
        _kill_pid_in(pid_file)
    assert recorder.final("t") is TaskState.CANCELED
    assert elapsed < KILL_GRACE + 1.0 + SLACK, elapsed


async def test_a_large_output_is_joined_and_decoded_off_the_loop(
    recorder: Recorder, monkeypatch: pytest.MonkeyPatch
) -> None:
    # 110 MB decoded on the loop stalled it 200-600 ms (issue 20): large
    # output is decoded in a thread; small output stays on the loop.
    from reference import _executables

    decoded_on: list[tuple[int, bool]] = []
    original = _executables.decode

    def watching(data: bytes | None) -> str:
        on_loop = threading.current_thread() is threading.main_thread()
        decoded_on.append((len(data or b""), on_loop))
        return original(data)

    monkeypatch.setattr(_executables, "decode", watching)
    big = 4 << 20
    tasks = [
        _shell("big", f"head -c {big} /dev/zero | tr '\\0' x"),
        _shell("small", "echo small"),
    ]
    backend = LocalExecutionBackend(shutdown_timeout=5)
    backend.register_callback(recorder)
    try:
        await backend.submit_tasks(tasks)
        await recorder.wait(["big", "small"], timeout=30)
    finally:
        await asyncio.wait_for(backend.shutdown(), 15)
    assert recorder.final("big") is TaskState.DONE
    assert tasks[0]["stdout"] == "x" * big
    assert tasks[1]["stdout"] == "small\n"
    assert (big, False) in decoded_on
    assert (len("small\n"), True) in decoded_on
