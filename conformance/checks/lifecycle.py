"""Lifecycle: construction, ``state()``, the callback, ``await``, ``async with``."""

from __future__ import annotations

import inspect
import itertools
from typing import Any

import spec
from conformance.harness import Harness
from conformance.registry import cites


@cites("LC-1")
async def ready_after_construction(h: Harness) -> None:
    """A task submitted right after construction (no await, no start) is run."""
    task = h.runnable_task()
    await h.submit([task])
    # A backend that needs starting first leaves the task waiting: that is LC-1.
    states = await h.wait_terminal([task["uid"]], clause_id="LC-1")
    h.expect(
        states[task["uid"]] is spec.TaskState.DONE,
        "LC-1",
        f"a task submitted right after construction ended {states[task['uid']]}",
        task["uid"],
    )


@cites("LC-2", "SB-1", "CN-1", "SD-1", "LC-4", "LC-7")
async def method_shapes(h: Harness) -> None:
    """``state``/``register_callback`` are plain methods; the rest are async."""
    raw = h.raw
    shapes = (
        ("state", False, "LC-2"),
        ("register_callback", False, "LC-4"),
        ("get_task_states_map", False, "LC-7"),
        ("submit_tasks", True, "SB-1"),
        ("cancel_task", True, "CN-1"),
        ("shutdown", True, "SD-1"),
    )
    for name, must_be_async, clause_id in shapes:
        method = getattr(raw, name, None)
        h.expect(callable(method), clause_id, f"the backend has no method {name}()")
        if not callable(method):
            continue
        is_async = inspect.iscoroutinefunction(method)
        h.expect(
            is_async == must_be_async,
            clause_id,
            f"{name}() must {'' if must_be_async else 'not '}be a coroutine function "
            f"(async def), but it is{'' if is_async else ' not'}",
        )
    h.expect(
        isinstance(raw, spec.ExecutionBackend),
        "LC-2",
        "the backend is not a spec.ExecutionBackend (a member is missing)",
    )


@cites("LC-2", "LC-3")
async def state_moves_forward(h: Harness) -> None:
    """``state()`` returns members, moving INITIALIZED -> RUNNING -> SHUTDOWN only."""
    seen = [h.backend.state()]
    h.expect(
        isinstance(seen[0], spec.BackendState),
        "LC-2",
        f"state() returned {seen[0]!r}, not a spec.BackendState",
    )
    h.expect(
        seen[0] is not spec.BackendState.SHUTDOWN,
        "LC-3",
        "a freshly built backend reports SHUTDOWN",
    )
    task = h.runnable_task()
    await h.submit([task])
    seen.append(h.backend.state())
    await h.wait_terminal([task["uid"]])
    seen.append(h.backend.state())
    await h.shutdown()
    seen.append(h.backend.state())
    h.expect(
        seen[-1] is spec.BackendState.SHUTDOWN
        or not isinstance(seen[-1], spec.BackendState),  # LC-2's failure
        "LC-3",
        f"state() is {seen[-1]!r} after shutdown() returned",
    )
    for before, after in itertools.pairwise(seen):
        if not (
            isinstance(before, spec.BackendState)
            and isinstance(after, spec.BackendState)
        ):
            continue  # not a member: LC-2's failure, recorded by the monitor
        h.expect(
            after in spec.BACKEND_TRANSITIONS[before],
            "LC-3",
            f"state() went {before} -> {after}; sequence: {[str(s) for s in seen]}",
        )


@cites("LC-4")
async def one_callback(h: Harness) -> None:
    """After a second ``register_callback`` only the new callback gets states."""
    received: list[tuple[str, Any]] = []
    forward = h._on_state

    def replacement(task: Any, state: Any) -> None:
        received.append((task.get("uid"), state))
        forward(task, state)

    h.backend.register_callback(replacement)
    task = h.runnable_task()
    await h.run([task])
    h.expect(
        any(uid == task["uid"] for uid, _ in received),
        "LC-4",
        "the callback registered last never received the task's state",
        task["uid"],
    )


@cites("LC-5")
async def awaiting_returns_backend(h: Harness) -> None:
    """``await backend`` returns the backend itself, ready for tasks."""
    awaited = await h.backend
    h.expect(
        awaited is h.backend,
        "LC-5",
        f"await backend returned {awaited!r}, not the backend",
    )
    task = h.runnable_task()
    states = await h.run([task])
    h.expect(
        states[task["uid"]] is spec.TaskState.DONE,
        "LC-5",
        f"a task submitted after await ended {states[task['uid']]}",
    )


@cites("LC-6")
async def async_with_shuts_down(h: Harness) -> None:
    """``async with backend as b`` binds the backend and shuts it down on exit."""
    async with h.backend as bound:
        h.expect(bound is h.backend, "LC-6", f"async with bound {bound!r}")
        task = h.runnable_task()
        await h.run([task])
    state = h.backend.state()
    h.expect(
        state == spec.BackendState.SHUTDOWN,
        "LC-6",
        f"state() is {state!r} after leaving async with, not SHUTDOWN",
    )


@cites("LC-7")
async def task_states_map(h: Harness) -> None:
    """``get_task_states_map()`` names the four states and the terminal ones."""
    states_map = h.backend.get_task_states_map()
    for name in ("DONE", "RUNNING", "CANCELED", "FAILED"):
        value = getattr(states_map, name, None)
        h.expect(
            value == spec.TaskState[name].value,
            "LC-7",
            f"get_task_states_map().{name} is {value!r}, not {name!r}",
        )
    terminal = getattr(states_map, "terminal_states", None)
    h.expect(
        terminal is not None and set(terminal) == {"DONE", "FAILED", "CANCELED"},
        "LC-7",
        f"get_task_states_map().terminal_states is {terminal!r}",
    )


@cites("LC-8")
async def name_is_str(h: Harness) -> None:
    """``name`` is a string."""
    name = getattr(h.raw, "name", None)
    h.expect(isinstance(name, str), "LC-8", f"name is {name!r}, not a str")
