"""NoopExecutionBackend: the strict dry-run reference backend."""

from __future__ import annotations

import asyncio
import gc
import weakref

import pytest
from _ref_helpers import Recorder

from reference import NoopExecutionBackend
from spec import (
    BackendShutdownError,
    BackendState,
    Capability,
    DuplicateTaskError,
    InvalidTaskError,
    TaskState,
    capabilities_of,
)

pytestmark = pytest.mark.asyncio


class WeakTask(dict):  # type: ignore[type-arg]
    """A task dict that can be weakly referenced (plain dicts cannot)."""


@pytest.mark.parametrize(
    ("bad", "error"),
    [
        (42, InvalidTaskError),
        ({"executable": "x"}, InvalidTaskError),
        ({"uid": None}, InvalidTaskError),
        ({"uid": "a"}, DuplicateTaskError),
    ],
)
async def test_an_invalid_batch_raises_and_accepts_nothing(
    recorder: Recorder, bad: object, error: type[Exception]
) -> None:
    backend = NoopExecutionBackend()
    backend.register_callback(recorder)
    with pytest.raises(error) as info:
        await backend.submit_tasks([{"uid": "a", "function": len}, bad])
    assert info.value.index == 1  # type: ignore[attr-defined]
    assert backend._jobs == {}
    await backend.submit_tasks([{"uid": "a", "function": len}])
    await recorder.wait(["a"])
    assert recorder.events and [s for _, s, _ in recorder.events] == [TaskState.DONE]


async def test_a_uid_in_flight_is_rejected(recorder: Recorder) -> None:
    backend = NoopExecutionBackend()
    backend.register_callback(recorder)
    await backend.submit_tasks([{"uid": "a", "function": len}])
    with pytest.raises(DuplicateTaskError):
        await backend.submit_tasks([{"uid": "b", "function": len}, {"uid": "a"}])
    await recorder.wait(["a"])
    assert "b" not in recorder.last


async def test_states_arrive_after_submit_returns_with_dummy_output(
    recorder: Recorder,
) -> None:
    backend = NoopExecutionBackend()
    backend.register_callback(recorder)
    tasks = [
        {"uid": "f", "function": len},
        {"uid": "x", "executable": "/bin/false"},
        {"uid": "p", "prompt": "hi"},
        {"uid": "none"},
    ]
    await backend.submit_tasks(tasks)
    assert recorder.events == [], "a state was delivered inside submit_tasks"
    await recorder.wait(t["uid"] for t in tasks)
    assert [tasks[i]["return_value"] for i in range(3)] == [
        "Dummy Output",
        "Dummy Output",
        "Dummy Prompt Output",
    ]
    assert recorder.final("none") is TaskState.FAILED
    assert isinstance(tasks[3]["exception"], ValueError)
    assert recorder.violations == []
    assert Capability.DRY_RUN in capabilities_of(backend)


async def test_cancel_before_delivery(recorder: Recorder) -> None:
    backend = NoopExecutionBackend()
    backend.register_callback(recorder)
    await backend.submit_tasks(
        [{"uid": "a", "function": len}, {"uid": "b", "function": len}]
    )
    assert await backend.cancel_task("a") is True
    assert recorder.events == [], "a state was delivered inside cancel_task"
    await recorder.wait(["a", "b"])
    assert recorder.states("a") == [TaskState.CANCELED]
    assert recorder.states("b") == [TaskState.DONE]
    assert await backend.cancel_task("a") is False
    assert await backend.cancel_task("unknown") is False


async def test_shutdown_cancels_undelivered_tasks_and_refuses_more(
    recorder: Recorder,
) -> None:
    backend = NoopExecutionBackend()
    backend.register_callback(recorder)
    await backend.submit_tasks([{"uid": "a", "function": len}])
    await backend.shutdown()
    assert recorder.states("a") == [TaskState.CANCELED]
    assert backend.state() is BackendState.SHUTDOWN
    await backend.shutdown()
    with pytest.raises(BackendShutdownError):
        await backend.submit_tasks([{"uid": "b", "function": len}])
    # The batch's delivery was scheduled before shutdown: let it run, silently.
    for _ in range(3):
        await asyncio.sleep(0)
    assert recorder.states("a") == [TaskState.CANCELED]
    assert recorder.violations == []


async def test_finished_tasks_are_not_retained(recorder: Recorder) -> None:
    backend = NoopExecutionBackend()
    backend.register_callback(recorder)
    tasks = [WeakTask(uid=f"t{i}", function=len) for i in range(3)]
    refs = [weakref.ref(t) for t in tasks]
    await backend.submit_tasks(tasks)  # type: ignore[arg-type]
    del tasks
    await recorder.wait(f"t{i}" for i in range(3))
    gc.collect()
    assert [r() for r in refs] == [None, None, None]
