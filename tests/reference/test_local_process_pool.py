"""LocalExecutionBackend over a ProcessPoolExecutor."""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import AsyncIterator
from concurrent.futures import ProcessPoolExecutor
from typing import Any

import pytest
import pytest_asyncio
from _ref_helpers import Recorder, process_gone

from reference import LocalExecutionBackend
from spec import StandInError, TaskState, WorkerLostError

pytestmark = pytest.mark.asyncio


class CustomError(Exception):
    """Importable, so it travels back from a worker as itself."""


def raise_custom(message: str) -> None:
    raise CustomError(message)


def worker_pid() -> int:
    return os.getpid()


async def async_double(x: int) -> int:
    await asyncio.sleep(0)
    return 2 * x


def die() -> None:
    os._exit(7)


@pytest_asyncio.fixture
async def pool_backend(
    recorder: Recorder,
) -> AsyncIterator[LocalExecutionBackend]:
    backend = LocalExecutionBackend(ProcessPoolExecutor(max_workers=2), kill_grace=0.5)
    backend.register_callback(recorder)
    yield backend
    await asyncio.wait_for(backend.shutdown(), 30)


async def test_lambdas_closures_local_and_async_functions_run(
    pool_backend: LocalExecutionBackend, recorder: Recorder
) -> None:
    offset = 10

    def local_add(x: int) -> int:
        return x + offset

    tasks = [
        {"uid": "lambda", "function": lambda x: x * 3, "args": (2,)},
        {"uid": "closure", "function": local_add, "args": (1,)},
        {"uid": "async", "function": async_double, "args": (21,)},
        {"uid": "pid", "function": worker_pid},
    ]
    await pool_backend.submit_tasks(tasks)
    await recorder.wait(t["uid"] for t in tasks)
    assert [t["return_value"] for t in tasks[:3]] == [6, 11, 42]
    assert tasks[3]["return_value"] != os.getpid()
    assert recorder.violations == []


async def test_exception_type_is_kept_across_processes(
    pool_backend: LocalExecutionBackend, recorder: Recorder
) -> None:
    task = {"uid": "custom", "function": raise_custom, "args": ("bad input",)}
    await pool_backend.submit_tasks([task])
    await recorder.wait(["custom"])
    assert recorder.final("custom") is TaskState.FAILED
    assert type(task["exception"]) is CustomError
    assert str(task["exception"]) == "bad input"
    assert "raise_custom" in task["stderr"]


async def test_an_exception_that_cannot_travel_back_becomes_a_stand_in(
    pool_backend: LocalExecutionBackend, recorder: Recorder
) -> None:
    class LocalError(Exception):
        """Defined in a function: the pickle module cannot send it back."""

    def raise_local() -> None:
        raise LocalError("only here")

    task = {"uid": "local", "function": raise_local}
    await pool_backend.submit_tasks([task])
    await recorder.wait(["local"])
    assert recorder.final("local") is TaskState.FAILED
    error = task["exception"]
    assert isinstance(error, StandInError)
    assert "LocalError" in error.type_name
    assert error.message == "only here"


async def test_a_function_that_cannot_be_pickled_fails_alone(
    pool_backend: LocalExecutionBackend, recorder: Recorder
) -> None:
    lock = threading.Lock()
    bad = {"uid": "bad", "function": lambda: lock.locked()}
    good = {"uid": "good", "function": worker_pid}
    await pool_backend.submit_tasks([bad, good])
    await recorder.wait(["bad", "good"])
    assert recorder.final("bad") is TaskState.FAILED
    assert "cannot be pickled" in str(bad["exception"])
    assert recorder.final("good") is TaskState.DONE


async def test_a_dead_worker_fails_its_task_and_is_replaced(
    pool_backend: LocalExecutionBackend, recorder: Recorder
) -> None:
    dying = {"uid": "dies", "function": die}
    await pool_backend.submit_tasks([dying])
    await recorder.wait(["dies"])
    assert recorder.final("dies") is TaskState.FAILED
    assert isinstance(dying["exception"], WorkerLostError)
    assert "'dies'" in str(dying["exception"])
    later: list[dict[str, Any]] = [
        {"uid": f"later{i}", "function": async_double, "args": (i,)} for i in range(4)
    ]
    await pool_backend.submit_tasks(later)
    await recorder.wait(t["uid"] for t in later)
    assert [t["return_value"] for t in later] == [0, 2, 4, 6]


async def test_shutdown_kills_a_busy_worker_process(recorder: Recorder) -> None:
    backend = LocalExecutionBackend(
        ProcessPoolExecutor(max_workers=1), shutdown_timeout=5.0
    )
    backend.register_callback(recorder)
    await backend.submit_tasks([{"uid": "pid", "function": worker_pid}])
    await recorder.wait(["pid"])
    await backend.submit_tasks(
        [{"uid": "busy", "function": __import__("time").sleep, "args": (60,)}]
    )
    await recorder.wait(["busy"], TaskState.RUNNING)
    pids = backend.worker_pids()
    await asyncio.wait_for(backend.shutdown(), 30)
    assert recorder.final("busy") is TaskState.CANCELED
    assert pids and all(process_gone(pid) for pid in pids)
