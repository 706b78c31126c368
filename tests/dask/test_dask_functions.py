"""Function tasks on the Dask backend: results, failures, threads, loops."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest
from _dask_helpers import (
    add,
    async_add,
    loop_use_count,
    raise_key_error,
    raise_system_exit,
    raise_unpicklable,
    return_lock,
    run_batch,
)

from spec import CapabilityNotSupportedError, StandInError, TaskState

pytest.importorskip("distributed")
from reference.dask import DaskExecutionBackend

pytestmark = pytest.mark.asyncio


async def test_sync_and_async_functions_return_their_values(address: str) -> None:
    tasks = [
        {"uid": "sync", "function": add, "args": (1, 2)},
        {"uid": "async", "function": async_add, "args": (3,), "kwargs": {"b": 4}},
    ]
    recorder = await run_batch(address, tasks)
    assert recorder.states == {"sync": [TaskState.DONE], "async": [TaskState.DONE]}
    assert tasks[0]["return_value"] == 3
    assert tasks[1]["return_value"] == 7


async def test_callback_gets_the_submitted_dict_on_the_loop_thread(
    address: str,
) -> None:
    task: dict[str, Any] = {"uid": "t", "function": add, "args": (2,)}
    seen: list[tuple[Any, int]] = []
    arrived = asyncio.Event()

    def callback(t: Any, s: TaskState) -> None:
        seen.append((t, threading.get_ident()))
        arrived.set()

    backend = DaskExecutionBackend(address=address)
    backend.register_callback(callback)
    try:
        await backend.submit_tasks([task])
        assert seen == [], "no state may be delivered inside submit_tasks"
        await asyncio.wait_for(arrived.wait(), 60)
    finally:
        await backend.shutdown()
    assert seen[0][0] is task
    assert seen[0][1] == threading.get_ident()


async def test_failure_keeps_the_exception_type_and_traceback(address: str) -> None:
    tasks = [
        {"uid": "bad", "function": raise_key_error},
        {"uid": "good", "function": add, "args": (1, 1)},
        {"uid": "exit", "function": raise_system_exit},
    ]
    recorder = await run_batch(address, tasks, chunk_size=3)  # one chunk for all
    assert recorder.final("bad") is TaskState.FAILED
    assert recorder.final("good") is TaskState.DONE
    assert isinstance(tasks[0]["exception"], KeyError)
    assert "raise_key_error" in tasks[0]["stderr"]
    assert "Traceback" in tasks[0]["stderr"]
    assert recorder.final("exit") is TaskState.FAILED
    assert isinstance(tasks[2]["exception"], SystemExit)


async def test_unsendable_exception_and_value_fail_cleanly(address: str) -> None:
    tasks = [
        {"uid": "exc", "function": raise_unpicklable},
        {"uid": "value", "function": return_lock},
    ]
    recorder = await run_batch(address, tasks)
    assert recorder.final("exc") is TaskState.FAILED
    assert isinstance(tasks[0]["exception"], StandInError)
    assert "Unpicklable" in tasks[0]["exception"].type_name
    assert recorder.final("value") is TaskState.FAILED
    assert isinstance(tasks[1]["exception"], TypeError)
    assert "cannot be pickled" in str(tasks[1]["exception"])


async def test_unpicklable_function_fails_only_its_task(address: str) -> None:
    lock = threading.Lock()
    tasks = [
        {"uid": "closure", "function": lambda: lock},
        {"uid": "fine", "function": add, "args": (5,)},
    ]
    recorder = await run_batch(address, tasks)
    assert recorder.final("closure") is TaskState.FAILED
    assert "pickled" in str(tasks[0]["exception"])
    assert recorder.final("fine") is TaskState.DONE
    assert tasks[1]["return_value"] == 5


async def test_unrunnable_tasks_fail_with_a_reason(address: str) -> None:
    tasks: list[dict[str, Any]] = [
        {"uid": "nothing"},
        {"uid": "prompt", "prompt": "hello?"},
    ]
    recorder = await run_batch(address, tasks)
    assert recorder.final("nothing") is TaskState.FAILED
    assert "none of" in str(tasks[0]["exception"])
    assert recorder.final("prompt") is TaskState.FAILED
    assert isinstance(tasks[1]["exception"], CapabilityNotSupportedError)


async def test_coroutines_share_a_persistent_loop_per_worker_thread(
    address: str,
) -> None:
    tasks = [{"uid": f"l{i}", "function": loop_use_count} for i in range(6)]
    await run_batch(address, tasks, chunk_size=1)
    counts = [t["return_value"][2] for t in tasks]
    # 6 tasks on 2 worker threads: some thread ran several, on the same loop.
    assert max(counts) >= 2


async def test_many_chunked_tasks_all_finish(address: str) -> None:
    tasks = [{"uid": f"m{i}", "function": add, "args": (i, 1)} for i in range(500)]
    recorder = await run_batch(address, tasks)
    assert all(recorder.states[t["uid"]] == [TaskState.DONE] for t in tasks)
    assert [t["return_value"] for t in tasks] == [i + 1 for i in range(500)]
