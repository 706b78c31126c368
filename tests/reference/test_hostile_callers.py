"""Noop and local backends under hostile callers (issue 10, items 1-3, 10, 11).

A callback that raises ``asyncio.CancelledError``, a caller that clears its
batch list right after submitting, options that are NaN or infinite, uids that
are not strings, malformed ``args``/``kwargs``, and a huge batch.
"""

from __future__ import annotations

import asyncio
import collections
import math
import types
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from _ref_helpers import Recorder

from reference import LocalExecutionBackend, NoopExecutionBackend
from spec import InvalidTaskError, TaskState, validate_batch

pytestmark = pytest.mark.timeout(60)

Factory = Callable[[], Any]


def _noop() -> Any:
    return NoopExecutionBackend()


def _local() -> Any:
    return LocalExecutionBackend(kill_grace=0.5, shutdown_timeout=5.0)


BACKENDS = [pytest.param(_noop, id="noop"), pytest.param(_local, id="local")]


@pytest_asyncio.fixture
async def shut_down_later() -> AsyncIterator[list[Any]]:
    """Backends a test starts; all shut down at the end, whatever happens."""
    started: list[Any] = []
    yield started
    for backend in started:
        await asyncio.wait_for(backend.shutdown(), 15)


def _echo(value: object) -> object:
    return value


def _function_task(uid: str) -> dict[str, Any]:
    return {"uid": uid, "function": _echo, "args": (uid,)}


# -- item 1: a callback that raises CancelledError (ST-8) ---------------------


@pytest.mark.asyncio
@pytest.mark.parametrize("factory", BACKENDS)
async def test_a_callback_raising_cancelled_error_loses_no_report(
    factory: Factory, shut_down_later: list[Any]
) -> None:
    backend = factory()
    shut_down_later.append(backend)
    recorder = Recorder()

    def callback(task: dict[str, Any], state: TaskState) -> None:
        recorder(task, state)
        raise asyncio.CancelledError("the engine's callback was cancelled")

    backend.register_callback(callback)
    tasks = [_function_task(f"t{i}") for i in range(10)]
    await backend.submit_tasks(tasks)
    await recorder.wait([t["uid"] for t in tasks], timeout=20)
    assert {t["uid"]: recorder.final(t["uid"]) for t in tasks} == {
        t["uid"]: TaskState.DONE for t in tasks
    }
    # Shutdown must not report the finished tasks again (as CANCELED).
    await backend.shutdown()
    assert recorder.violations == []
    finals = [s for _, s, _ in recorder.events if s is not TaskState.RUNNING]
    assert finals == [TaskState.DONE] * 10


@pytest.mark.asyncio
async def test_a_callback_raising_cancelled_error_still_runs_every_executable(
    tmp_path: Path, shut_down_later: list[Any]
) -> None:
    backend = _local()
    shut_down_later.append(backend)
    recorder = Recorder()

    def callback(task: dict[str, Any], state: TaskState) -> None:
        recorder(task, state)
        raise asyncio.CancelledError

    backend.register_callback(callback)
    tasks = [
        {
            "uid": f"x{i}",
            "executable": "/bin/sh",
            "arguments": ["-c", f"touch {tmp_path / f'ran{i}'}"],
            "task_backend_specific_kwargs": {"shell": False},
        }
        for i in range(5)
    ]
    await backend.submit_tasks(tasks)
    await recorder.wait([t["uid"] for t in tasks], timeout=30)
    assert [recorder.final(t["uid"]) for t in tasks] == [TaskState.DONE] * 5
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"ran{i}" for i in range(5)]


@pytest.mark.parametrize("factory", BACKENDS)
def test_keyboard_interrupt_from_a_callback_propagates(factory: Factory) -> None:
    backend = factory()

    def callback(task: dict[str, Any], state: TaskState) -> None:
        raise KeyboardInterrupt

    backend.register_callback(callback)
    # Delivery happens in the backend's own loop callbacks; the loop lets a
    # KeyboardInterrupt out of run_until_complete, so run it on a fresh loop.
    loop = asyncio.new_event_loop()
    try:
        with pytest.raises(KeyboardInterrupt):
            loop.run_until_complete(_submit_and_wait(backend, "k"))
    finally:
        backend.register_callback(lambda task, state: None)
        loop.run_until_complete(backend.shutdown())
        loop.close()


async def _submit_and_wait(backend: Any, uid: str) -> None:
    await backend.submit_tasks([_function_task(uid)])
    await asyncio.sleep(30)  # interrupted by the callback long before


# -- item 2: the caller's list is not kept (SB-10) ---------------------------


@pytest.mark.asyncio
@pytest.mark.parametrize("factory", BACKENDS)
async def test_clearing_the_batch_list_after_submit_loses_nothing(
    factory: Factory, recorder: Recorder, shut_down_later: list[Any]
) -> None:
    backend = factory()
    shut_down_later.append(backend)
    backend.register_callback(recorder)
    batch = [_function_task(f"c{i}") for i in range(20)]
    uids = [t["uid"] for t in batch]
    await backend.submit_tasks(batch)
    batch.clear()
    batch.append(_function_task("stray"))
    await recorder.wait(uids, timeout=20)
    assert [recorder.final(uid) for uid in uids] == [TaskState.DONE] * 20
    assert recorder.final("stray") is None


# -- item 3: duration options ------------------------------------------------


@pytest.mark.parametrize("option", ["kill_grace", "shutdown_timeout"])
@pytest.mark.parametrize(
    ("value", "error"),
    [
        (math.nan, ValueError),
        (math.inf, ValueError),
        (-math.inf, ValueError),
        (1e20, ValueError),
        (-1, ValueError),
        ("2", TypeError),
        (None, TypeError),
        (True, TypeError),
    ],
)
def test_a_bad_duration_option_is_refused_naming_it(
    option: str, value: object, error: type[Exception]
) -> None:
    with pytest.raises(error, match=option):
        LocalExecutionBackend(**{option: value})


def test_kill_grace_may_be_zero_and_shutdown_timeout_may_not() -> None:
    LocalExecutionBackend(kill_grace=0).executor.shutdown()
    with pytest.raises(ValueError, match="shutdown_timeout"):
        LocalExecutionBackend(shutdown_timeout=0)


# -- item 10: cancel_task of anything that is not an in-flight uid (CN-2) ----


@pytest.mark.asyncio
@pytest.mark.parametrize("factory", BACKENDS)
@pytest.mark.parametrize(
    "uid",
    [["x"], {"uid": "x"}, {"x"}, None, 7, b"x", Path("x")],
    ids=repr,
)
async def test_cancel_of_a_non_uid_returns_false(
    factory: Factory, uid: object, shut_down_later: list[Any]
) -> None:
    backend = factory()
    shut_down_later.append(backend)
    assert await backend.cancel_task(uid) is False


# -- item 11: malformed args / kwargs ----------------------------------------


def _generator() -> Any:
    yield from (1, 2)


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("args", "ab"),
        ("args", {"a": 1}),
        ("args", _generator()),
        ("args", 5),
        ("kwargs", [("a", 1)]),
        ("kwargs", "a=1"),
        ("kwargs", {1: "a"}),
    ],
    ids=lambda v: type(v).__name__,
)
async def test_malformed_args_or_kwargs_fail_the_task_naming_the_field(
    field: str, value: object, recorder: Recorder, shut_down_later: list[Any]
) -> None:
    backend = _local()
    shut_down_later.append(backend)
    backend.register_callback(recorder)
    calls: list[tuple[Any, ...]] = []

    def record(*args: Any, **kwargs: Any) -> None:
        calls.append((args, kwargs))

    bad = {"uid": "bad", "function": record, field: value}
    good = {"uid": "good", "function": record, "args": [1], "kwargs": {"k": 2}}
    await backend.submit_tasks([bad, good])
    await recorder.wait(["bad", "good"], timeout=20)
    assert recorder.final("bad") is TaskState.FAILED
    assert isinstance(bad["exception"], ValueError)
    assert repr(field) in str(bad["exception"])
    assert recorder.final("good") is TaskState.DONE
    assert calls == [((1,), {"k": 2})]  # the bad one never ran


@pytest.mark.asyncio
async def test_process_pool_refuses_malformed_args_too(
    recorder: Recorder, shut_down_later: list[Any]
) -> None:
    from concurrent.futures import ProcessPoolExecutor

    backend = LocalExecutionBackend(ProcessPoolExecutor(1), shutdown_timeout=5.0)
    shut_down_later.append(backend)
    backend.register_callback(recorder)
    bad = {"uid": "bad", "function": _echo, "args": "xy"}
    await backend.submit_tasks([bad])
    await recorder.wait(["bad"], timeout=30)
    assert recorder.final("bad") is TaskState.FAILED
    assert "'args'" in str(bad["exception"])


# -- batch entries that are mappings but not dicts (SB-2) --------------------


@pytest.mark.asyncio
@pytest.mark.parametrize(
    "entry",
    [
        types.MappingProxyType({"uid": "m"}),
        collections.UserDict({"uid": "m"}),
        collections.OrderedDict,  # a class, not an instance
    ],
    ids=["MappingProxyType", "UserDict", "class"],
)
async def test_a_mapping_that_is_not_a_dict_is_refused(
    entry: object, shut_down_later: list[Any]
) -> None:
    with pytest.raises(InvalidTaskError) as caught:
        validate_batch([{"uid": "a"}, entry], ())
    assert caught.value.index == 1
    backend = _local()
    shut_down_later.append(backend)
    with pytest.raises(InvalidTaskError):
        await backend.submit_tasks([{"uid": "a", "function": _echo}, entry])
    assert backend._jobs == {}


# -- item 11: a huge batch on noop is delivered in slices (SC-3) -------------


@pytest.mark.asyncio
async def test_noop_delivers_a_huge_batch_over_many_loop_turns(
    recorder: Recorder, shut_down_later: list[Any]
) -> None:
    backend = NoopExecutionBackend()
    shut_down_later.append(backend)
    backend.register_callback(recorder)
    batch = [{"uid": f"n{i}", "function": _echo} for i in range(100_000)]
    await backend.submit_tasks(batch)
    seen_between: list[int] = []
    loop = asyncio.get_running_loop()

    def count() -> None:
        seen_between.append(len(recorder.events))
        if len(recorder.events) < len(batch):
            loop.call_soon(count)

    loop.call_soon(count)
    await recorder.wait([t["uid"] for t in batch], timeout=60)
    # The loop ran other callbacks while the batch was being delivered.
    partial = [n for n in seen_between if 0 < n < len(batch)]
    assert len(partial) >= 10, seen_between[:20]
