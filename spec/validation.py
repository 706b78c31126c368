"""Batch validation and task classification, shared by every backend.

`validate_batch` implements clauses SB-2..SB-4 once, so a backend gets the
all-or-nothing rule right by calling it before accepting anything.
"""

from __future__ import annotations

import enum
from collections.abc import Container, Sequence
from typing import Any

from spec.errors import DuplicateTaskError, InvalidTaskError

__all__ = ["TaskKind", "task_kind", "validate_batch"]


class TaskKind(str, enum.Enum):
    """What a task asks the backend to run."""

    FUNCTION = "function"
    EXECUTABLE = "executable"
    PROMPT = "prompt"


def task_kind(task: dict[str, Any]) -> TaskKind | None:
    """Classify a task by the first of ``function``, ``executable``, ``prompt`` set.

    Args:
        task: A task dict (already validated by `validate_batch`).

    Returns:
        The kind, or ``None`` when the task names nothing to run (clause SB-5).
    """
    if task.get("function") is not None:
        return TaskKind.FUNCTION
    if task.get("executable") is not None:
        return TaskKind.EXECUTABLE
    if task.get("prompt") is not None:
        return TaskKind.PROMPT
    return None


def validate_batch(tasks: Sequence[Any], in_flight: Container[str]) -> None:
    """Check a batch's structure before any of it is accepted.

    Args:
        tasks: The batch passed to ``submit_tasks``.
        in_flight: The uids the backend has accepted and not yet finished.

    Raises:
        InvalidTaskError: The batch is not a list (or tuple), an entry is
            not a dict, or an entry's ``uid`` is missing or not a string
            (SB-2, SB-3).
        DuplicateTaskError: A uid repeats in the batch or is in flight (SB-4).
    """
    if not isinstance(tasks, (list, tuple)):
        raise InvalidTaskError(
            -1, f"submit_tasks expects a list of task dicts, got {type(tasks).__name__}"
        )
    seen: set[str] = set()
    for index, task in enumerate(tasks):
        if not isinstance(task, dict):
            raise InvalidTaskError(
                index, f"expected a task dict, got {type(task).__name__}"
            )
        uid = task.get("uid")
        if not isinstance(uid, str):
            reason = (
                "missing 'uid'"
                if uid is None
                else (f"'uid' must be a str, got {type(uid).__name__}")
            )
            raise InvalidTaskError(index, reason)
        if uid in seen:
            raise DuplicateTaskError(index, uid, in_flight=False)
        if uid in in_flight:
            raise DuplicateTaskError(index, uid, in_flight=True)
        seen.add(uid)
