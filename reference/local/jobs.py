"""What the local backend's parts share: the job record, notices, the hooks."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any, Protocol

from reference._base import Job
from reference._children import Child
from reference._resources import Grant

if TYPE_CHECKING:
    from reference.local.services import ServiceWatch
from spec import TaskState

__all__ = ["BackendHooks", "LocalJob", "Notice"]

Notice = tuple["LocalJob", int, Any, "str | None"]
"""``(job, kind, value, text)``: what a worker thread or process pushes (kinds
in `reference._workers`); a plain tuple, as it is built once per task on the
hot path."""


class LocalJob(Job):
    """The local backend's handle on one accepted task.

    ``canceled`` is also read by pool threads just before a queued job would
    start.
    """

    __slots__ = (
        "call",
        "child",
        "coro",
        "ended",
        "grant",
        "kill_timer",
        "mark",
        "on_loop",
        "pulled",
        "ranks",
        "service",
        "started",
        "threaded",
        "timed_out",
        "worker",
    )

    def __init__(self, task: dict[str, Any]) -> None:
        super().__init__(task)
        # With resource accounting: what it holds while it runs, and its ranks.
        self.grant: Grant | None = None
        self.ranks = 1
        # Run by the thread pool's pullers, which admit it themselves.
        self.threaded = False
        # Process pools: the validated call, and where it runs (_procpool's mark).
        self.call: tuple[Any, ...] | None = None
        self.worker: Any = None
        # Thread pools: a puller has taken it (under the queue's lock), and
        # (loop, puller) while its coroutine runs, for JobQueue.stop to cancel it.
        self.pulled = False
        self.coro: tuple[asyncio.AbstractEventLoop, Any] | None = None
        # Set by a pool thread once the function has returned or raised.
        self.ended = False
        # ``async_on_loop``: the asyncio task running the coroutine, and
        # whether that task has taken its first step.
        self.on_loop: asyncio.Task[None] | None = None
        self.started = False
        self.child: Child | None = None
        # The next step of stopping a child: KILL after the grace, then the
        # end of the drain (see _terminate).
        self.kill_timer: asyncio.TimerHandle | None = None
        self.timed_out = False
        # Set in the environment of the child and all its descendants, so the
        # ones that leave its process group can still be found and killed.
        self.mark: str | None = None
        # A service's readiness watch (reference.local.services), from dispatch on.
        self.service: ServiceWatch | None = None


class BackendHooks(Protocol):
    """The backend's hooks the parts call back through: its loop and reporting.

    They are the backend's own methods, so a subclass that overrides one (the
    conformance mutants do) changes what every part does.
    """

    _closed: bool

    def _bound_loop(self) -> asyncio.AbstractEventLoop: ...

    def _finish(self, job: Any, state: TaskState) -> bool: ...

    def _fail(
        self, job: Any, error: BaseException, stderr: str | None = None
    ) -> None: ...

    def _report(self, task: dict[str, Any], state: TaskState) -> None: ...

    def _service_running(self, job: Any) -> None: ...
