"""What every reference backend shares: validation, bookkeeping, delivery.

Each backend keeps only the tasks in flight (``_in_flight``); a task leaves it
the moment its terminal state is reported, so nothing finished is retained
(clause SC-1). `_finish` is the single way a terminal state is reported, and
it reports a task at most once (ST-2, ST-3).
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Callable, Generator
from types import TracebackType
from typing import Any, ClassVar, TypeVar

from typing_extensions import Self

from spec import (
    BackendShutdownError,
    BackendState,
    Capability,
    CapabilityNotSupportedError,
    TaskState,
    validate_batch,
)

__all__ = ["TASK_STATES_MAP", "BackendBase", "TaskStatesMapping", "duration"]

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


_V = TypeVar("_V")


def _without(table: dict[str, _V], key: str) -> dict[str, _V]:
    """Delete ``key`` from ``table``; return it, or a fresh dict once it is empty.

    A dict never shrinks: an emptied one would keep the table sized for the
    largest batch. Rebinding to a fresh one releases it (SC-1).
    """
    del table[key]
    return table if table else {}


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


def _ignore_state(task: Any, state: str) -> None:
    """Stand-in callback until the engine registers one."""


class BackendBase:
    """Common base of the reference backends (not part of the public API).

    Subclasses implement ``submit_tasks``, ``cancel_task`` and ``shutdown``
    on top of `_accept`, `_finish` and `_report`.
    """

    capabilities: ClassVar[frozenset[Capability]] = frozenset()
    supports_implicit_data_linking: ClassVar[bool] = False
    supports_explicit_data_linking: ClassVar[bool] = False

    def __init__(self, name: str = "default") -> None:
        if not isinstance(name, str):
            raise TypeError(f"name must be a str, got {type(name).__name__}")
        self.name = name
        self._work_dir: str = os.getcwd()
        self.is_attached: bool = False
        self.attached_to: list[str] = []
        self._callback: Callable[[Any, str], None] = _ignore_state
        self._state = BackendState.INITIALIZED
        self._in_flight: dict[str, dict[str, Any]] = {}

    # -- lifecycle ---------------------------------------------------------

    def state(self) -> BackendState:
        """Return the backend's lifecycle state (LC-2, LC-3)."""
        return self._state

    async def _start(self) -> Self:
        if self._state is BackendState.INITIALIZED:
            self._state = BackendState.RUNNING
        return self

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

    async def shutdown(self) -> None:  # pragma: no cover - always overridden
        """Stop the backend; see the subclass."""
        raise NotImplementedError

    # -- engine-facing hooks -------------------------------------------------

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

    def _accept(self, tasks: list[Any]) -> list[dict[str, Any]]:
        """Validate a batch and register it as in flight, all or nothing."""
        if self._state is BackendState.SHUTDOWN:
            raise BackendShutdownError(
                f"backend {self.name!r} is shut down; submit_tasks refused "
                f"{len(tasks) if isinstance(tasks, list) else 'the'} task(s)"
            )
        validate_batch(tasks, self._in_flight)
        in_flight = self._in_flight
        for task in tasks:
            in_flight[task["uid"]] = task
        self._state = BackendState.RUNNING
        return tasks

    def _unrunnable(self, task: dict[str, Any]) -> Exception:
        """The error to fail a task with that names nothing this backend runs.

        Call it only for a task without ``function`` and ``executable``: a
        prompt task on a backend without prompts gets a
        `CapabilityNotSupportedError` (SB-6), a task naming nothing to run a
        `ValueError` (SB-5).
        """
        uid = task["uid"]
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
            logger.exception(
                "state callback raised for task %r (%s); continuing",
                task.get("uid"),
                state.value,
            )

    def _finish(self, task: dict[str, Any], state: TaskState) -> bool:
        """Report ``task``'s terminal state unless it was already reported.

        Returns:
            Whether this call reported it.
        """
        uid = task["uid"]
        if self._in_flight.get(uid) is not task:
            return False
        self._in_flight = _without(self._in_flight, uid)
        self._report(task, state)
        return True
