"""LocalExecutionBackend on a thread pool: queued jobs are pulled, not submitted.

The backend keeps at most one "puller" call per pool thread in the executor;
each runs queued jobs one at a time. These tests pin what that must keep:
no task waits behind a slow one while a thread is free, the executor sees
few calls, pullers stop at shutdown, and emptied dicts are released.
"""

from __future__ import annotations

import asyncio
import math
import sys
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from typing import Any

import pytest
from _ref_helpers import QUICK_DONE, Recorder

from reference import LocalExecutionBackend
from reference.local import dispatch as local_module
from reference.local import functions as local_functions
from spec import TaskState

pytestmark = pytest.mark.asyncio


@pytest.fixture
def gate() -> Iterator[threading.Event]:
    """An event a blocked function waits on; always released at teardown."""
    event = threading.Event()
    yield event
    event.set()


class _CountingExecutor(Executor):
    """A thread pool that counts the calls it is given (no ``_max_workers``)."""

    def __init__(self, workers: int) -> None:
        self._pool = ThreadPoolExecutor(workers)
        self.calls = 0

    def submit(
        self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any
    ) -> Future[Any]:
        self.calls += 1
        return self._pool.submit(fn, *args, **kwargs)

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        self._pool.shutdown(wait, cancel_futures=cancel_futures)


async def test_a_slow_task_holds_up_no_queued_task_while_a_thread_is_free(
    recorder: Recorder, gate: threading.Event
) -> None:
    backend = LocalExecutionBackend(ThreadPoolExecutor(2))
    backend.register_callback(recorder)
    quick = [{"uid": f"q{i}", "function": abs, "args": (-i,)} for i in range(50)]
    try:
        await backend.submit_tasks([{"uid": "slow", "function": gate.wait}, *quick])
        # Every quick task finishes on the other thread while "slow" still runs.
        await recorder.wait([t["uid"] for t in quick], timeout=30)
        assert recorder.final("slow") is TaskState.RUNNING
        gate.set()
        await recorder.wait(["slow"])
    finally:
        await backend.shutdown()
    assert all(recorder.final(t["uid"]) is TaskState.DONE for t in quick)
    assert [t["return_value"] for t in quick] == list(range(50))
    assert recorder.violations == []


async def test_the_executor_gets_a_few_puller_calls_not_one_per_task(
    recorder: Recorder,
) -> None:
    executor = _CountingExecutor(2)
    backend = LocalExecutionBackend(executor)
    backend.register_callback(recorder)
    tasks = [{"uid": f"t{i}", "function": abs, "args": (-i,)} for i in range(600)]
    try:
        await backend.submit_tasks(tasks)
        await recorder.wait([t["uid"] for t in tasks], timeout=60)
    finally:
        await backend.shutdown()
    assert all(recorder.states(t["uid"]) in QUICK_DONE for t in tasks)
    # At most one puller per pool thread (its size unknown here: the stdlib's
    # default is assumed) for each chunk of work handed over.
    chunks = math.ceil(len(tasks) / local_module._DISPATCH_CHUNK)
    assert 1 <= executor.calls <= chunks * local_functions.pool_width(executor)
    assert executor.calls < len(tasks)


async def test_pool_width_reads_the_thread_pool_size() -> None:
    pool = ThreadPoolExecutor(3)
    try:
        assert local_functions.pool_width(pool) == 3
    finally:
        pool.shutdown()


async def test_pullers_take_no_queued_job_after_shutdown(
    recorder: Recorder, gate: threading.Event
) -> None:
    ran: list[int] = []
    pool = ThreadPoolExecutor(1)
    backend = LocalExecutionBackend(pool, shutdown_timeout=1.0)
    backend.register_callback(recorder)
    queued = [{"uid": f"q{i}", "function": ran.append, "args": (i,)} for i in range(5)]
    await backend.submit_tasks([{"uid": "blocker", "function": gate.wait}, *queued])
    await recorder.wait(["blocker"], TaskState.RUNNING)
    await backend.shutdown()
    assert recorder.final("blocker") is TaskState.CANCELED
    assert all(recorder.states(t["uid"]) == [TaskState.CANCELED] for t in queued)
    # Free the one thread: its puller must return without running the rest.
    gate.set()
    await asyncio.wait_for(asyncio.to_thread(pool.shutdown, True), 30)
    assert ran == []
    assert recorder.violations == []


async def test_an_executor_shut_down_under_the_backend_fails_the_tasks(
    recorder: Recorder,
) -> None:
    pool = ThreadPoolExecutor(1)
    pool.shutdown()
    backend = LocalExecutionBackend(pool)
    backend.register_callback(recorder)
    try:
        await backend.submit_tasks([{"uid": "a", "function": int}])
        await recorder.wait(["a"])
    finally:
        await backend.shutdown()
    assert recorder.states("a") == [TaskState.FAILED]
    assert recorder.violations == []


async def test_emptied_dicts_are_replaced_so_their_tables_are_released(
    recorder: Recorder,
) -> None:
    backend = LocalExecutionBackend(ThreadPoolExecutor(2))
    backend.register_callback(recorder)
    tasks = [{"uid": f"t{i}", "function": int} for i in range(2_000)]
    try:
        await backend.submit_tasks(tasks)
        await recorder.wait([t["uid"] for t in tasks], timeout=60)
        empty = sys.getsizeof({})
        assert backend._jobs == {}
        assert sys.getsizeof(backend._jobs) == empty
        assert sys.getsizeof(backend._jobs) == empty
    finally:
        await backend.shutdown()
