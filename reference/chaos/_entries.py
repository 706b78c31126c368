"""The chaos backend's records: a task in flight (`Entry`), a held batch.

Plain records, no behaviour beyond their own fields: the wrapper
(`reference.chaos._backend`) decides what happens to them.
"""

from __future__ import annotations

import asyncio
import operator
from typing import Any

from reference.chaos._policy import ChaosDecisions
from spec import TaskState

__all__ = ["Entry", "HeldBatch", "uid_of"]


class Entry:
    """The chaos backend's record of one accepted task, until it is delivered."""

    __slots__ = (
        "cancel_promised",
        "decisions",
        "due",
        "lost",
        "running_pending",
        "running_sent",
        "saw_running",
        "task",
        "terminal",
        "uid",
        "waiter",
    )

    def __init__(self, task: dict[str, Any]) -> None:
        self.task = task
        self.uid: str = task["uid"]
        self.decisions: ChaosDecisions | None = None
        self.saw_running = False
        self.running_sent = False
        self.running_pending = False
        self.terminal: TaskState | None = None
        self.due = 0.0
        self.cancel_promised = False
        self.lost = False
        self.waiter: asyncio.Future[None] | None = None


uid_of = operator.itemgetter("uid")


class HeldBatch:
    """A batch ``submit_tasks`` holds back, and the uids cancelled meanwhile."""

    __slots__ = ("_uids", "cancelled", "tasks")

    def __init__(self, tasks: list[dict[str, Any]]) -> None:
        self.tasks = tasks
        self.cancelled: set[str] = set()
        self._uids: set[str] | None = None

    def holds(self, uid: str) -> bool:
        """Tell whether ``uid`` is one of the batch's tasks."""
        # The set is built only if a cancel comes: submit stays cheap (SC-3).
        if self._uids is None:
            self._uids = set(map(uid_of, self.tasks))
        return uid in self._uids
