"""What one job of a thread-pool puller may leave to the next (issue 20).

- item 4: a cancel an ended ``async def`` job arranged from another thread
  (a `threading.Timer`, a `run_in_executor` helper) is made outside any job's
  context; it must not hit the coroutine the puller runs next;
- a sync job's `ContextVar` set must not be seen by the jobs after it: each
  job starts from the caller's context, as ``async def`` jobs do.
"""

from __future__ import annotations

import asyncio
import contextvars
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from _ref_helpers import Recorder

from reference import LocalExecutionBackend
from spec import TaskState

pytestmark = [pytest.mark.asyncio, pytest.mark.timeout(60)]

_VAR: contextvars.ContextVar[str] = contextvars.ContextVar("_VAR", default="unset")


@pytest.mark.parametrize("helper", ["timer", "run_in_executor"])
async def test_a_cancel_left_from_another_thread_misses_the_next_job(
    recorder: Recorder, helper: str
) -> None:
    bystander_started = threading.Event()
    helpers: list[threading.Thread] = []

    async def leaves_a_cancel_behind() -> str:
        task = asyncio.current_task()
        assert task is not None
        loop = asyncio.get_running_loop()

        def cancel_once_the_next_job_runs() -> None:
            if bystander_started.wait(20):
                loop.call_soon_threadsafe(task.cancel)

        if helper == "timer":
            timer = threading.Timer(0.0, cancel_once_the_next_job_runs)
            helpers.append(timer)
            timer.start()
        else:  # not awaited: it outlives the job
            loop.run_in_executor(None, cancel_once_the_next_job_runs)
        return "left"

    async def bystander() -> str:
        bystander_started.set()
        await asyncio.sleep(1)  # nobody cancels it
        return "finished"

    backend = LocalExecutionBackend(ThreadPoolExecutor(1))  # one puller runs both
    backend.register_callback(recorder)
    tasks: list[dict[str, Any]] = [
        {"uid": "leaves", "function": leaves_a_cancel_behind},
        {"uid": "bystander", "function": bystander},
    ]
    try:
        await backend.submit_tasks(tasks)
        await recorder.wait(["leaves", "bystander"], timeout=30)
    finally:
        await asyncio.wait_for(backend.shutdown(), 15)
        bystander_started.set()
        for thread in helpers:
            thread.join(5)
    assert recorder.final("leaves") is TaskState.DONE
    assert recorder.final("bystander") is TaskState.DONE, tasks[1].get("exception")
    assert tasks[1]["return_value"] == "finished"
    assert not recorder.violations


def _sync_sets() -> str:
    _VAR.set("set by a sync job")
    return _VAR.get()


def _sync_reads() -> str:
    return _VAR.get()


async def _async_reads() -> str:
    return _VAR.get()


async def test_a_sync_job_s_context_var_is_not_seen_by_later_jobs(
    recorder: Recorder,
) -> None:
    backend = LocalExecutionBackend(ThreadPoolExecutor(1))  # one puller, in order
    backend.register_callback(recorder)
    tasks: list[dict[str, Any]] = [
        {"uid": "sets", "function": _sync_sets},
        {"uid": "sync-reads", "function": _sync_reads},
        {"uid": "async-reads", "function": _async_reads},
    ]
    try:
        await backend.submit_tasks(tasks)
        await recorder.wait([t["uid"] for t in tasks], timeout=10)
    finally:
        await asyncio.wait_for(backend.shutdown(), 15)
    values = [t.get("return_value") for t in tasks]
    assert values == ["set by a sync job", "unset", "unset"]
