"""Task and backend states, and the transitions between them, as data.

The tables here are the single definition of both state machines: the
reference backends, the conformance monitor and the docs all read them.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from types import MappingProxyType

__all__ = [
    "BACKEND_TRANSITIONS",
    "TASK_TRANSITIONS",
    "TERMINAL_STATES",
    "BackendState",
    "TaskState",
    "is_terminal",
]


class TaskState(str, enum.Enum):
    """A state a backend reports for a task through the registered callback.

    Members are strings (``TaskState.DONE == "DONE"``), so engines that compare
    against plain strings keep working.
    """

    RUNNING = "RUNNING"
    """The task has started executing."""
    DONE = "DONE"
    """The task finished successfully (terminal)."""
    FAILED = "FAILED"
    """The task could not run, or ran and failed (terminal)."""
    CANCELED = "CANCELED"
    """The task was cancelled before it finished (terminal)."""

    def __str__(self) -> str:
        return self.value


class BackendState(str, enum.Enum):
    """The lifecycle state of a backend, as returned by ``state()``.

    A backend's state only moves forward: ``INITIALIZED`` -> ``RUNNING`` ->
    ``SHUTDOWN``; a step may be skipped, none may be undone.
    """

    INITIALIZED = "INITIALIZED"
    """Constructed and ready to accept tasks."""
    RUNNING = "RUNNING"
    """Has accepted work, or has been awaited / entered."""
    SHUTDOWN = "SHUTDOWN"
    """``shutdown()`` has begun; no further task is accepted."""

    def __str__(self) -> str:
        return self.value


TERMINAL_STATES: frozenset[TaskState] = frozenset(
    {TaskState.DONE, TaskState.FAILED, TaskState.CANCELED}
)
"""The task states after which nothing more is reported for that task."""

TASK_TRANSITIONS: Mapping[TaskState | None, frozenset[TaskState]] = MappingProxyType(
    {
        # None: accepted by submit_tasks, nothing reported yet.
        None: frozenset({TaskState.RUNNING, *TERMINAL_STATES}),
        TaskState.RUNNING: TERMINAL_STATES,
        TaskState.DONE: frozenset(),
        TaskState.FAILED: frozenset(),
        TaskState.CANCELED: frozenset(),
    }
)
"""Allowed reports for a task, keyed by the last state reported for it.

``None`` stands for "accepted, nothing reported yet". ``RUNNING`` is optional
and at most once; every accepted task ends in exactly one terminal state.
"""

BACKEND_TRANSITIONS: Mapping[BackendState, frozenset[BackendState]] = MappingProxyType(
    {
        BackendState.INITIALIZED: frozenset(
            {BackendState.INITIALIZED, BackendState.RUNNING, BackendState.SHUTDOWN}
        ),
        BackendState.RUNNING: frozenset({BackendState.RUNNING, BackendState.SHUTDOWN}),
        BackendState.SHUTDOWN: frozenset({BackendState.SHUTDOWN}),
    }
)
"""States ``state()`` may return next, keyed by the state it returned last."""


def is_terminal(state: str) -> bool:
    """Tell whether a task state is terminal.

    Args:
        state: A `TaskState` member or its string value.

    Returns:
        True for ``DONE``, ``FAILED`` and ``CANCELED``.
    """
    return state in TERMINAL_STATES
