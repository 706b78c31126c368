"""The Parsl backend's records: a task (`ParslJob`), a Parsl task (`Chunk`).

Also `ParslHooks`, the backend's methods its parts (settling) call back
through: the one place a terminal state is reported is the backend's job
table (`reference._base.BackendBase._finish`).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any, Protocol

from reference._base import Job
from spec import TaskKind, TaskState, task_kind

__all__ = ["Chunk", "ParslHooks", "ParslJob", "resolve_asker"]


class ParslJob(Job):
    """One accepted task and where it is in Parsl.

    Attributes:
        kind: What it runs; ``None`` for nothing runnable here.
        key: Unique per run: names its claim. A run again gets a new one, so
            the cleanup of the lost run's claims cannot remove the new run's.
        chunk: The Parsl task carrying it, once handed to Parsl.
        runs: Times it was handed to Parsl.
        asking: A cancel waiting for a running executable's outcome.
    """

    __slots__ = ("asking", "chunk", "key", "kind", "runs")

    def __init__(self, task: dict[str, Any]) -> None:
        super().__init__(task)
        self.kind: TaskKind | None = task_kind(task)
        self.key = ""
        self.chunk: Chunk | None = None
        self.runs = 0
        self.asking: asyncio.Future[bool] | None = None


@dataclass(eq=False)
class Chunk:
    """One Parsl task: function tasks, one isolated function, or one executable.

    Attributes:
        entries: The tasks it carries, in order.
        payload: ``(key, pickled call)`` per function, or the pickled
            executable.
        spec: Its ``parsl_resource_specification``.
        isolated: One function, run in a child process of the worker (a
            run again after a loss).
        seen_done: Its worker's done marker was seen, no result yet.
        keys: Its tasks' keys in this run.
    """

    entries: list[ParslJob]
    payload: list[tuple[str, bytes]] | bytes
    spec: dict[str, Any] = field(default_factory=dict)
    isolated: bool = False
    seen_done: bool = False
    keys: list[str] = field(init=False)

    def __post_init__(self) -> None:
        self.keys = [entry.key for entry in self.entries]


class ParslHooks(Protocol):
    """The backend's methods the parts call: its job table and reporting."""

    name: str

    def _owes_result(self, job: ParslJob) -> bool: ...

    def _finish(self, job: ParslJob, state: TaskState) -> bool: ...

    def _fail(
        self, job: ParslJob, error: BaseException, stderr: str | None = None
    ) -> None: ...


def resolve_asker(job: ParslJob, stopped: bool) -> None:
    """Answer a cancel waiting for ``job``'s outcome: whether it was stopped."""
    asking, job.asking = job.asking, None
    if asking is not None and not asking.done():
        asking.set_result(stopped)
