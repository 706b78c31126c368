"""What every reference backend shares: validation, bookkeeping, delivery.

Each accepted task gets a `Job`, the backend's handle on it, kept in one
table (``_jobs``) while the task is in flight; it leaves the table the moment
its terminal state is reported, so nothing finished is retained (SC-1).
`_finish` is the single way a terminal state is reported and reports a task
at most once (ST-2, ST-3); `_fail` and `_cancel_soon` are built on it.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
from collections.abc import Awaitable, Callable, Generator
from types import TracebackType
from typing import Any, ClassVar, Generic, ParamSpec, TypeVar

from typing_extensions import Self

from reference._core import JobTable, Ticket
from spec import (
    BackendShutdownError,
    BackendState,
    Capability,
    CapabilityNotSupportedError,
    TaskState,
    validate_batch,
)

__all__ = [
    "TASK_STATES_MAP",
    "BackendBase",
    "Job",
    "TaskStatesMapping",
    "duration",
    "function_call",
]

logger = logging.getLogger("reference")


class TaskStatesMapping:
    """The state names radical.asyncflow 0.6 reads from ``get_task_states_map()``."""

    DONE: ClassVar[str] = TaskState.DONE.value
    RUNNING: ClassVar[str] = TaskState.RUNNING.value
    CANCELED: ClassVar[str] = TaskState.CANCELED.value
    FAILED: ClassVar[str] = TaskState.FAILED.value
    terminal_states: ClassVar[frozenset[str]] = frozenset({DONE, FAILED, CANCELED})


TASK_STATES_MAP = TaskStatesMapping()
"""The one shared instance every reference backend returns."""


_RUNS_FUNCTIONS_AND_EXECUTABLES: frozenset[Capability] = frozenset(
    {
        Capability.FUNCTIONS,
        Capability.EXECUTABLES,
        Capability.CAPTURE_STDIO,
        Capability.TIMEOUT,
    }
)
"""What the local and the Dask backend both offer: the same task options."""


_LONGEST_WAIT = 1e9
"""The longest duration accepted: about 31 years, inside every timer's range."""


def duration(name: str, value: object, *, zero_ok: bool = False) -> float:
    """Check one duration option: a finite number of seconds, > 0 (or >= 0).

    The one validation for every option that takes seconds (constructor
    options and the ``timeout`` task option), so NaN, infinities and values
    too large for a timer are refused in one place, naming the option.

    Args:
        name: The option's name, for the message.
        value: What the caller passed.
        zero_ok: Accept 0 (e.g. a kill grace of 0: KILL at once).

    Returns:
        The value as a float.

    Raises:
        TypeError: ``value`` is not a real number (a bool is not one).
        ValueError: ``value`` is NaN, infinite, negative, 0 unless
            ``zero_ok``, or longer than a timer can wait.
    """
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(
            f"{name} must be a number of seconds, got {type(value).__name__} {value!r}"
        )
    seconds = float(value)
    if not math.isfinite(seconds) or seconds > _LONGEST_WAIT:
        raise ValueError(
            f"{name} must be a finite number of seconds up to {_LONGEST_WAIT:g} "
            f"(use None for no limit where the option allows it), got {value!r}"
        )
    if seconds < 0 or (seconds == 0 and not zero_ok):
        bound = ">= 0" if zero_ok else "> 0"
        raise ValueError(f"{name} must be {bound} seconds, got {value!r}")
    return seconds


def function_call(
    task: dict[str, Any],
) -> tuple[Callable[..., Any], tuple[Any, ...], dict[str, Any]]:
    """Read a function task's call: ``(function, args, kwargs)``.

    ``args`` must be a list or tuple and ``kwargs`` a dict with str keys
    (either may be missing or ``None``): a str, dict or generator given as
    ``args`` would otherwise be silently unpacked into something else.

    Raises:
        ValueError: A field has the wrong type; the message names it (the
            task is reported FAILED with it).
    """
    func = task.get("function")
    if not callable(func):
        raise ValueError(f"'function' must be callable, got {type(func).__name__}")
    args = task.get("args")
    if args is None:
        args = ()
    elif not isinstance(args, (list, tuple)):
        raise ValueError(f"'args' must be a list or tuple, got {type(args).__name__}")
    kwargs = task.get("kwargs")
    if kwargs is None:
        kwargs = {}
    elif not isinstance(kwargs, dict):
        raise ValueError(f"'kwargs' must be a dict, got {type(kwargs).__name__}")
    elif not all(isinstance(key, str) for key in kwargs):
        bad = next(key for key in kwargs if not isinstance(key, str))
        raise ValueError(f"'kwargs' keys must be str, got {bad!r}")
    return func, tuple(args), kwargs


def _ignore_state(task: Any, state: str, **service: Any) -> None:
    """Stand-in callback until the engine registers one (readiness included)."""


class Job(Ticket):
    """A backend's handle on one accepted task; backends subclass it.

    Attributes:
        task: The submitted task dict (results are written into it).
        uid: The task's uid.
        canceled: ``cancel_task`` or ``shutdown`` took it: a result that
            still arrives is dropped, and a queued job never starts.
    """

    __slots__ = ("task",)

    def __init__(self, task: dict[str, Any]) -> None:
        self.task = task
        self.uid: str = task["uid"]
        self.canceled = False


JobT = TypeVar("JobT", bound=Job)


def _log_callback_error(task: dict[str, Any], state: TaskState) -> None:
    # Called from an except block: logger.exception adds the traceback.
    logger.exception(
        "state callback raised for task %r (%s); continuing",
        task.get("uid"),
        state.value,
    )


_P = ParamSpec("_P")
_Ready = TypeVar("_Ready")


class BackendFacade:
    """What every reference backend shows the engine besides its jobs.

    ``await backend`` and ``async with backend`` (on `_start` and
    ``shutdown``), the one state callback and the state map. Shared by the
    reference backends and the chaos wrapper; each supplies `_start` (make the
    backend ready; return it), ``shutdown``, and sets ``_callback`` in its
    ``__init__``.
    """

    _callback: Callable[..., None]

    def register_callback(self, func: Callable[[Any, str], None]) -> None:
        """Set the one callback that receives ``(task, state)`` (LC-4).

        Args:
            func: Called on the event-loop thread with the submitted task dict
                and a `TaskState`.

        Raises:
            TypeError: If ``func`` is not callable.
        """
        if not callable(func):
            raise TypeError(f"callback must be callable, got {type(func).__name__}")
        self._callback = func

    def get_task_states_map(self) -> TaskStatesMapping:
        """Return the task-state names the engine compares with (LC-7)."""
        return TASK_STATES_MAP

    @classmethod
    async def create(
        cls: Callable[_P, Awaitable[_Ready]], *args: _P.args, **kwargs: _P.kwargs
    ) -> _Ready:
        """Construct and await a backend: ``backend = await Backend.create()``.

        Takes the same arguments as the class (type checkers check them
        against its ``__init__``).

        Returns:
            The ready backend.
        """
        return await cls(*args, **kwargs)

    async def _start(self) -> Self:  # pragma: no cover - always overridden
        raise NotImplementedError

    async def shutdown(self) -> None:  # pragma: no cover - always overridden
        """Stop the backend; see the subclass."""
        raise NotImplementedError

    def __await__(self) -> Generator[Any, None, Self]:
        """Make the backend awaitable: ``backend = await Backend()`` (LC-5)."""
        return self._start().__await__()

    async def __aenter__(self) -> Self:
        """Enter ``async with``: returns the ready backend (LC-6)."""
        return await self._start()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc_value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        """Leave ``async with``: shuts the backend down (LC-6)."""
        await self.shutdown()


class BackendBase(BackendFacade, Generic[JobT]):
    """Common base of the reference backends (not part of the public API).

    Subclasses implement ``submit_tasks``, ``cancel_task`` and ``shutdown``
    on top of `_accept`, `_finish`, `_fail`, `_cancel_soon` and `_report`;
    their jobs are `Job` subclasses (``JobT``).
    """

    # A class default; an instance may change it from its options (a
    # process pool adds crash isolation, resource accounting adds resources).
    capabilities: frozenset[Capability] = frozenset()
    supports_implicit_data_linking: ClassVar[bool] = False
    supports_explicit_data_linking: ClassVar[bool] = False

    def __init__(self, name: str = "default") -> None:
        if not isinstance(name, str):
            raise TypeError(f"name must be a str, got {type(name).__name__}")
        self.name = name
        self._work_dir: str = os.getcwd()
        self.is_attached: bool = False
        self.attached_to: list[str] = []
        self._callback: Callable[..., None] = _ignore_state
        self._state = BackendState.INITIALIZED
        # Only the jobs in flight: the one uid table (SB-4, SC-1).
        self._table: JobTable[JobT] = JobTable()

    @property
    def _jobs(self) -> dict[str, JobT]:
        """The jobs in flight by uid (the table's mapping; read it, do not keep it)."""
        return self._table.jobs

    # -- lifecycle ---------------------------------------------------------

    def state(self) -> BackendState:
        """Return the backend's lifecycle state (LC-2, LC-3)."""
        return self._state

    async def _start(self) -> Self:
        if self._state is BackendState.INITIALIZED:
            self._state = BackendState.RUNNING
        return self

    # -- engine-facing hooks -------------------------------------------------

    def task_state_cb(self, task: dict[str, Any], state: str) -> None:
        """Observe every reported state before the callback; does nothing here."""

    def build_task(
        self, uid: str, task_desc: dict[str, Any], task_specific_kwargs: dict[str, Any]
    ) -> None:
        """Accept the engine's task-building call; nothing to prepare (CP-3)."""

    def link_implicit_data_deps(
        self, src_task: dict[str, Any], dst_task: dict[str, Any]
    ) -> None:
        """Do nothing: tasks share the local file system (CP-2)."""

    def link_explicit_data_deps(
        self,
        src_task: dict[str, Any] | None = None,
        dst_task: dict[str, Any] | None = None,
        file_name: str | None = None,
        file_path: str | None = None,
    ) -> None:
        """Do nothing: tasks share the local file system (CP-2)."""

    # -- shared machinery ----------------------------------------------------

    def _accept(
        self, tasks: list[Any], new_job: Callable[[dict[str, Any]], JobT]
    ) -> list[JobT]:
        """Validate a batch and register it as in flight, all or nothing.

        Returns:
            One new job per task, in a list of the backend's own: nothing
            keeps the caller's list once ``submit_tasks`` returns (SB-10).
        """
        if self._state is BackendState.SHUTDOWN:
            raise BackendShutdownError(
                f"backend {self.name!r} is shut down; submit_tasks refused "
                f"{len(tasks) if isinstance(tasks, list) else 'the'} task(s)"
            )
        table = self._table
        validate_batch(tasks, table.jobs)  # SB-2, SB-3, SB-4: all or nothing
        accepted = [new_job(task) for task in tasks]
        table.add(accepted)
        self._state = BackendState.RUNNING
        return accepted

    def _job(self, uid: object) -> JobT | None:
        """The job in flight under ``uid``; ``None`` for anything else (CN-2).

        Never raises, whatever ``uid`` is (an unhashable list included).
        """
        return self._table.get(uid)

    def _owes_result(self, job: JobT) -> bool:
        """Whether ``job`` is in flight and not canceled: its result is wanted."""
        return self._table.owes_result(job)

    def _unrunnable(self, task: dict[str, Any]) -> Exception:
        """The error to fail a task with that names nothing this backend runs.

        Call it only for a task without ``function`` and ``executable``, or
        a service on a backend without services: a service or a prompt task
        the backend does not run gets a `CapabilityNotSupportedError` (SB-6),
        a task naming nothing to run a `ValueError` (SB-5).
        """
        uid = task["uid"]
        if (
            task.get("is_service") is True
            and Capability.SERVICES not in self.capabilities
        ):
            return CapabilityNotSupportedError(
                Capability.SERVICES.value,
                f"{type(self).__name__} runs no services (task {uid!r} has "
                "is_service); route it to a backend that offers them",
            )
        if (
            task.get("prompt") is not None
            and Capability.PROMPTS not in self.capabilities
        ):
            return CapabilityNotSupportedError(
                Capability.PROMPTS.value,
                f"{type(self).__name__} runs functions and executables; route "
                f"prompt task {uid!r} to a backend that offers prompts",
            )
        return ValueError(
            f"task {uid!r} has none of 'function', 'executable' or 'prompt'"
        )

    def _report(self, task: dict[str, Any], state: TaskState) -> None:
        """Deliver one state; a raising callback is logged, never propagated.

        Any exception is contained (ST-7), `asyncio.CancelledError` included
        (ST-8): it is a `BaseException`, and letting it out would abort the
        loop callback delivering the other tasks' states. Only
        `KeyboardInterrupt` and `SystemExit` propagate: they ask the whole
        program to stop.
        """
        try:
            self.task_state_cb(task, state)
            self._callback(task, state)
        except (KeyboardInterrupt, SystemExit):
            raise
        except BaseException:
            _log_callback_error(task, state)

    def _report_ready(self, task: dict[str, Any], ready: Any) -> None:
        """Tell the callback a service is ready (SV-2), contained like `_report`.

        RUNNING once more, with the ``service_callback`` keyword: not a change
        of state, so ``task_state_cb`` does not see it. A separate method so
        that `_report`, called for every state of every task, stays a plain
        two-argument call.
        """
        try:
            self._callback(task, TaskState.RUNNING, service_callback=ready)
        except (KeyboardInterrupt, SystemExit):
            raise
        except BaseException:
            _log_callback_error(task, TaskState.RUNNING)

    def _finish(self, job: JobT, state: TaskState) -> bool:
        """Report ``job``'s terminal state unless it was already reported.

        Returns:
            Whether this call reported it.
        """
        if not self._table.settle(job):
            return False  # exactly one terminal state (ST-2, ST-3)
        self._report(job.task, state)
        return True

    def _fail(self, job: JobT, error: BaseException, stderr: str | None = None) -> None:
        """Report ``job`` FAILED with ``error``, unless canceled or reported.

        A canceled job's CANCELED is on its way and a reported one is done:
        neither may have its task overwritten.
        """
        if not self._owes_result(job):
            return
        job.task["exception"] = error
        job.task["stderr"] = str(error) if stderr is None else stderr
        self._finish(job, TaskState.FAILED)

    def _cancel_soon(self, job: JobT, loop: asyncio.AbstractEventLoop) -> None:
        """Mark ``job`` canceled and report CANCELED on a later loop turn.

        Only for a job that will not run (or has been stopped): CANCELED is
        reported only when it is true. Never delivered from inside
        ``cancel_task`` (ST-5).
        """
        job.canceled = True
        loop.call_soon(self._finish, job, TaskState.CANCELED)

    def _cancel_all(self) -> None:
        """Report every job still in flight CANCELED (shutdown, SD-2)."""
        for job in self._table.cancel_all():
            self._finish(job, TaskState.CANCELED)  # SD-2
