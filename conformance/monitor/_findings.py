"""The findings the monitor's rules produce, and the rules that need no memory.

A finding is one broken rule: ``(clause ID, message, uid)``. The functions
here judge one observation on its own; `conformance.monitor._ledger` judges
those that depend on what was seen before.
"""

from __future__ import annotations

import reprlib
from collections.abc import Iterable
from typing import Any, NamedTuple

import spec

__all__ = [
    "Expected",
    "Finding",
    "backend_state_findings",
    "expected_rejection",
    "rejection_findings",
    "short",
    "task_uid",
]


class Finding(NamedTuple):
    """One broken rule: the clause, what was seen, and the task it concerns."""

    clause_id: str
    message: str
    uid: str | None = None


class Expected(NamedTuple):
    """The rejection the contract demands for a batch."""

    clause_id: str
    error: type[Exception]
    position: int


_REPR = reprlib.Repr()
_REPR.maxlist = _REPR.maxtuple = 3
_REPR.maxother = _REPR.maxstring = 120


def short(value: Any) -> str:
    """Return ``repr(value)`` cut to a few items and characters.

    A backend may return a list of 10,000 asyncio tasks; a trace line must
    not hold them all.
    """
    return _REPR.repr(value)


def task_uid(task: Any) -> str | None:
    """Return the task's uid, or ``None`` if ``task`` is not a dict with a str uid."""
    uid = task.get("uid") if isinstance(task, dict) else None
    return uid if isinstance(uid, str) else None


def expected_rejection(tasks: Any, in_flight: Iterable[str]) -> Expected | None:
    """Return the rejection the contract demands for a bad batch, or ``None``."""
    try:
        spec.validate_batch(tasks, frozenset(in_flight))
    except spec.DuplicateTaskError as exc:
        return Expected("SB-4", spec.DuplicateTaskError, exc.index)
    except spec.InvalidTaskError as exc:
        if exc.index < 0 or not isinstance(tasks[exc.index], dict):
            return Expected("SB-2", spec.InvalidTaskError, exc.index)
        return Expected("SB-3", spec.InvalidTaskError, exc.index)
    return None


def backend_state_findings(last: spec.BackendState | None, state: Any) -> list[Finding]:
    """Return what a ``state()`` result breaks (LC-2, LC-3), given the last one."""
    if not isinstance(state, spec.BackendState):
        return [
            Finding(
                "LC-2",
                f"state() returned {state!r} ({type(state).__name__}), "
                "not a spec.BackendState member",
            )
        ]
    if last is not None and state not in spec.BACKEND_TRANSITIONS[last]:
        return [Finding("LC-3", f"state() moved backwards: {last} -> {state}")]
    return []


def rejection_findings(
    tasks: Any, expected: Expected | None, exc: Exception, accepted_any: bool
) -> list[Finding]:
    """Return what ``submit_tasks(tasks)`` raising ``exc`` breaks.

    Args:
        tasks: The batch.
        expected: The rejection the contract demands (`Ledger.expected_for`).
        exc: What ``submit_tasks`` raised.
        accepted_any: Whether the backend had accepted a batch before.
    """
    if expected is None:
        kinds = [spec.task_kind(t) for t in tasks if isinstance(t, dict)]
        clause_id = "SB-5" if None in kinds else "SB-1"
        if isinstance(exc, spec.CapabilityNotSupportedError):
            clause_id = "SB-6"  # it belongs on the task, as FAILED
        elif not accepted_any and clause_id == "SB-1":
            clause_id = "LC-1"  # a new backend must take a valid batch
        if isinstance(tasks, (list, tuple)) and not tasks:
            clause_id = "SB-8"  # an empty batch must be accepted
        return [
            Finding(
                clause_id,
                f"submit_tasks raised {exc!r} for a valid batch; unrunnable "
                "tasks must be accepted and reported FAILED",
            )
        ]
    if not isinstance(exc, expected.error):
        return [
            Finding(
                expected.clause_id,
                f"submit_tasks raised {type(exc).__name__}: {exc}; "
                f"the contract requires {expected.error.__name__}",
            )
        ]
    if expected.clause_id == "SB-2" and getattr(exc, "index", None) != (
        expected.position
    ):
        return [
            Finding(
                expected.clause_id,
                f"InvalidTaskError names index {getattr(exc, 'index', None)!r}, "
                f"the bad entry is at {expected.position}",
            )
        ]
    return []
