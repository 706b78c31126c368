"""LocalExecutionBackend: function tasks in a thread pool, states and callbacks."""

from __future__ import annotations

import asyncio
import gc
import logging
import threading
import weakref
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from _ref_helpers import QUICK_DONE, Recorder

from reference import LocalExecutionBackend
from spec import (
    BackendState,
    Capability,
    CapabilityNotSupportedError,
    DuplicateTaskError,
    InvalidTaskError,
    TaskState,
    capabilities_of,
)

pytestmark = pytest.mark.asyncio


def add(a: int, b: int = 0) -> int:
    return a + b


async def async_add(a: int, b: int = 0) -> int:
    await asyncio.sleep(0)
    return a + b


def fail_with_key_error() -> None:
    raise KeyError("missing-key")


class WeakTask(dict):  # type: ignore[type-arg]
    """A task dict that can be weakly referenced (plain dicts cannot)."""


async def loop_id() -> int:
    return id(asyncio.get_running_loop())


async def test_sync_and_async_functions_are_done_with_return_values(
    recorder: Recorder,
) -> None:
    async with LocalExecutionBackend() as backend:
        backend.register_callback(recorder)
        tasks = [
            {"uid": "sync", "function": add, "args": (1,), "kwargs": {"b": 2}},
            {"uid": "async", "function": async_add, "args": [3], "kwargs": {"b": 4}},
            {"uid": "lambda", "function": lambda: "x"},
        ]
        await backend.submit_tasks(tasks)
        assert recorder.events == [], "a state was delivered inside submit_tasks"
        await recorder.wait(["sync", "async", "lambda"])
    assert [t["return_value"] for t in tasks] == [3, 7, "x"]
    for task in tasks:
        # RUNNING is dropped when the task was over before the loop could say so.
        assert recorder.states(task["uid"]) in QUICK_DONE
    assert recorder.violations == []


async def test_create_builds_a_ready_backend_from_the_class_arguments(
    recorder: Recorder,
) -> None:
    backend = await asyncio.wait_for(
        LocalExecutionBackend.create(name="made", resources=True, bind=False), 10
    )
    try:
        assert type(backend) is LocalExecutionBackend and backend.name == "made"
        assert backend.capacity.cores >= 1  # resources=True reached __init__
        backend.register_callback(recorder)
        await backend.submit_tasks([{"uid": "one", "function": add, "args": (1, 2)}])
        await recorder.wait(["one"])
        assert recorder.states("one")[-1] is TaskState.DONE
    finally:
        await asyncio.wait_for(backend.shutdown(), 10)
    with pytest.raises(TypeError, match="cores"):
        await LocalExecutionBackend.create(cores="two")  # type: ignore[arg-type]


async def test_callback_runs_on_the_loop_thread_with_the_submitted_dict() -> None:
    seen: list[tuple[int, object]] = []
    done = asyncio.Event()
    task = {"uid": "t", "function": add, "args": (1, 1)}

    def callback(t: dict[str, Any], state: str) -> None:
        seen.append((threading.get_ident(), t))
        if state == TaskState.DONE:
            done.set()

    backend = LocalExecutionBackend()
    backend.register_callback(callback)
    await backend.submit_tasks([task])
    await asyncio.wait_for(done.wait(), 10)
    await backend.shutdown()
    assert seen
    assert all(ident == threading.get_ident() for ident, _ in seen)
    assert all(t is task for _, t in seen)


async def test_raising_function_fails_with_its_exception_and_traceback(
    recorder: Recorder,
) -> None:
    async with LocalExecutionBackend() as backend:
        backend.register_callback(recorder)
        task = {"uid": "boom", "function": fail_with_key_error}
        await backend.submit_tasks([task])
        await recorder.wait(["boom"])
    assert recorder.final("boom") is TaskState.FAILED
    assert type(task["exception"]) is KeyError
    assert "Traceback" in task["stderr"]
    assert "fail_with_key_error" in task["stderr"]


async def test_prompt_and_empty_tasks_fail_cleanly(recorder: Recorder) -> None:
    async with LocalExecutionBackend() as backend:
        backend.register_callback(recorder)
        prompt = {"uid": "p", "prompt": "hello"}
        empty = {"uid": "e", "function": None, "executable": None}
        await backend.submit_tasks([prompt, empty])
        await recorder.wait(["p", "e"])
    assert recorder.final("p") is TaskState.FAILED
    assert isinstance(prompt["exception"], CapabilityNotSupportedError)
    assert recorder.final("e") is TaskState.FAILED
    assert isinstance(empty["exception"], ValueError)
    assert "'e'" in str(empty["exception"])


async def test_a_raising_callback_is_logged_and_every_task_still_reported(
    caplog: pytest.LogCaptureFixture,
) -> None:
    terminal: list[str] = []
    done = asyncio.Event()

    def callback(task: dict[str, Any], state: str) -> None:
        if state != TaskState.RUNNING:
            terminal.append(task["uid"])
            if len(terminal) == 20:
                done.set()
        raise RuntimeError("callback bug")

    caplog.set_level(logging.ERROR, logger="reference")
    async with LocalExecutionBackend() as backend:
        backend.register_callback(callback)
        await backend.submit_tasks(
            [{"uid": f"t{i}", "function": add, "args": (i,)} for i in range(20)]
        )
        await asyncio.wait_for(done.wait(), 30)
    assert sorted(terminal) == sorted(f"t{i}" for i in range(20))
    assert any("callback raised" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize(
    ("bad", "error"),
    [
        ("not a dict", InvalidTaskError),
        ({"function": add}, InvalidTaskError),
        ({"uid": 7, "function": add}, InvalidTaskError),
        ({"uid": "ok", "function": add}, DuplicateTaskError),
    ],
)
async def test_an_invalid_batch_accepts_nothing(
    recorder: Recorder, bad: object, error: type[Exception]
) -> None:
    backend = LocalExecutionBackend()
    backend.register_callback(recorder)
    with pytest.raises(error):
        await backend.submit_tasks([{"uid": "ok", "function": add, "args": (1,)}, bad])
    assert backend._jobs == {}
    # Nothing was started: the valid uid is free, and it runs exactly once now.
    await backend.submit_tasks([{"uid": "ok", "function": add, "args": (1,)}])
    await recorder.wait(["ok"])
    await backend.shutdown()
    assert recorder.states("ok") in QUICK_DONE


async def test_uid_in_flight_is_rejected_and_free_again_once_finished(
    recorder: Recorder,
) -> None:
    release = threading.Event()
    backend = LocalExecutionBackend()
    backend.register_callback(recorder)
    try:
        await backend.submit_tasks([{"uid": "a", "function": release.wait}])
        with pytest.raises(DuplicateTaskError) as info:
            await backend.submit_tasks(
                [{"uid": "b", "function": add, "args": (1,)}, {"uid": "a"}]
            )
        assert info.value.in_flight
        release.set()
        await recorder.wait(["a"])
        await backend.submit_tasks([{"uid": "a", "function": add, "args": (2,)}])
        await recorder.wait(["a"], TaskState.DONE)
        assert "b" not in recorder.last
    finally:
        release.set()
        await backend.shutdown()


async def test_empty_batch_reports_nothing(recorder: Recorder) -> None:
    async with LocalExecutionBackend() as backend:
        backend.register_callback(recorder)
        await backend.submit_tasks([])
    assert recorder.events == []


async def test_construction_lifecycle_and_capabilities() -> None:
    with pytest.raises(TypeError, match="Executor"):
        LocalExecutionBackend(executor="threads")  # type: ignore[arg-type]
    backend = LocalExecutionBackend(name="here")
    assert backend.state() is BackendState.INITIALIZED
    assert await backend is backend
    assert backend.state() is BackendState.RUNNING
    created = await LocalExecutionBackend.create(name="made")
    assert created.name == "made"
    assert created.state() is BackendState.RUNNING
    caps = capabilities_of(backend)
    assert {
        Capability.FUNCTIONS,
        Capability.EXECUTABLES,
        Capability.CAPTURE_STDIO,
        Capability.TIMEOUT,
        Capability.ASYNC_INIT,
        Capability.ASYNC_CONTEXT,
    } <= caps
    assert Capability.PROMPTS not in caps
    states = backend.get_task_states_map()
    assert states.terminal_states == {"DONE", "FAILED", "CANCELED"}
    for b in (backend, created):
        await b.shutdown()
        assert b.state() is BackendState.SHUTDOWN


async def test_async_functions_reuse_one_loop_per_worker_thread(
    recorder: Recorder,
) -> None:
    pool = ThreadPoolExecutor(max_workers=1)
    async with LocalExecutionBackend(pool) as backend:
        backend.register_callback(recorder)
        tasks = [{"uid": f"t{i}", "function": loop_id} for i in range(20)]
        await backend.submit_tasks(tasks)
        await recorder.wait(t["uid"] for t in tasks)
    assert len({t["return_value"] for t in tasks}) == 1


async def test_finished_tasks_are_not_retained(recorder: Recorder) -> None:
    backend = LocalExecutionBackend()
    backend.register_callback(recorder)
    tasks: list[dict[str, Any]] = [
        WeakTask(uid="f", function=add, args=(1,)),
        WeakTask(uid="x", executable="/bin/true"),
        WeakTask(uid="p", prompt="no"),
    ]
    refs = [weakref.ref(t) for t in tasks]
    await backend.submit_tasks(tasks)
    del tasks
    await recorder.wait(["f", "x", "p"])
    gc.collect()
    assert [r() for r in refs] == [None, None, None]
    assert backend._jobs == {}
    await backend.shutdown()


async def test_ten_thousand_function_tasks_in_one_batch(recorder: Recorder) -> None:
    async with LocalExecutionBackend() as backend:
        backend.register_callback(recorder)
        tasks = [
            {"uid": f"t{i}", "function": async_add if i % 2 else add, "args": (i,)}
            for i in range(10_000)
        ]
        await backend.submit_tasks(tasks)
        await recorder.wait((t["uid"] for t in tasks), timeout=90)
    assert all(t["return_value"] == i for i, t in enumerate(tasks))
    assert recorder.violations == []
    assert backend._jobs == {}


async def test_a_hundred_thousand_tasks_in_one_batch(recorder: Recorder) -> None:
    async with LocalExecutionBackend() as backend:
        backend.register_callback(recorder)
        await backend.submit_tasks(
            [{"uid": f"t{i}", "function": int} for i in range(100_000)]
        )
        await recorder.wait((f"t{i}" for i in range(100_000)), timeout=100)
    assert len(recorder.last) == 100_000
    assert all(state is TaskState.DONE for state in recorder.last.values())
