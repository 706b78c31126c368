"""A small, complete execution backend: the one the tutorial builds.

It runs function tasks only: ``async def`` functions as asyncio tasks on the
event loop, plain functions on a thread pool. Executables and prompts are
accepted and reported FAILED, as the contract requires of a backend that
does not declare those capabilities.

The project's tests type-check this file with ``mypy --strict`` and run the
conformance suite against it, so the tutorial cannot rot.
"""

# --8<-- [start:imports]
from __future__ import annotations

import asyncio
import inspect
import logging
import traceback
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from spec import (
    BackendShutdownError,
    BackendState,
    Capability,
    CapabilityNotSupportedError,
    ExecutionBackend,
    TaskKind,
    TaskState,
    is_service,
    task_kind,
    validate_batch,
)

logger = logging.getLogger(__name__)
# --8<-- [end:imports]


# --8<-- [start:states-map]
class _StateNames:
    """What ``get_task_states_map()`` returns: the names the engine compares with."""

    DONE = TaskState.DONE.value
    RUNNING = TaskState.RUNNING.value
    CANCELED = TaskState.CANCELED.value
    FAILED = TaskState.FAILED.value
    terminal_states = frozenset({DONE, FAILED, CANCELED})


def _ignore(task: Any, state: str) -> None:
    """The callback until the engine registers its own."""


# --8<-- [end:states-map]


# --8<-- [start:class]
class TutorialBackend:
    """Runs function tasks: coroutines on the loop, plain functions on threads."""

    capabilities = frozenset({Capability.FUNCTIONS})

    def __init__(self, name: str = "tutorial", max_workers: int = 4) -> None:
        self.name = name
        self._state = BackendState.INITIALIZED
        self._callback: Callable[[Any, str], None] = _ignore
        self._pool = ThreadPoolExecutor(max_workers, thread_name_prefix=name)
        # Tasks accepted and not yet reported terminal, with the asyncio task
        # driving each (None until started). Nothing else is kept, so memory
        # is bounded by the tasks in flight (SC-1).
        self._in_flight: dict[str, tuple[dict[str, Any], asyncio.Task[None] | None]]
        self._in_flight = {}
        self._starters: set[asyncio.Task[None]] = set()
        # uids of plain functions running in a pool thread: they cannot be
        # stopped, so they cannot be cancelled either.
        self._in_threads: set[str] = set()

    def state(self) -> BackendState:
        return self._state

    def register_callback(self, func: Callable[[Any, str], None]) -> None:
        self._callback = func

    def get_task_states_map(self) -> _StateNames:
        return _StateNames()

    # --8<-- [end:class]

    # --8<-- [start:report]
    def _report(self, task: dict[str, Any], state: TaskState) -> None:
        """Deliver one state; a callback that raises is logged (ST-7, ST-8)."""
        try:
            self._callback(task, state)
        except (KeyboardInterrupt, SystemExit):
            raise  # the program is asked to stop: not ours to swallow
        except BaseException:  # asyncio.CancelledError included (ST-8)
            logger.exception("callback raised for task %r", task["uid"])

    def _pending(self, task: dict[str, Any]) -> bool:
        """Whether ``task`` (this very dict) is still waiting for its end."""
        entry = self._in_flight.get(task["uid"])
        return entry is not None and entry[0] is task

    def _finish(self, task: dict[str, Any], state: TaskState) -> None:
        """Report a terminal state, unless the task was already finished."""
        if not self._pending(task):
            return  # cancelled or shut down meanwhile: report nothing more
        del self._in_flight[task["uid"]]
        self._report(task, state)

    # --8<-- [end:report]

    # --8<-- [start:submit]
    async def submit_tasks(self, tasks: list[dict[str, Any]]) -> None:
        if self._state is BackendState.SHUTDOWN:
            raise BackendShutdownError(f"backend {self.name!r} is shut down")
        # Raises before anything is accepted: all or nothing (SB-2..SB-4).
        validate_batch(tasks, self._in_flight)
        self._state = BackendState.RUNNING
        for task in tasks:
            self._in_flight[task["uid"]] = (task, None)
        # Start the tasks from a task of our own: no callback can run inside
        # submit_tasks (ST-5), and it returns at once (SB-1).
        # A copy: the caller may clear or reuse its list at once (SB-10).
        starter = asyncio.create_task(self._start(list(tasks)))
        self._starters.add(starter)
        starter.add_done_callback(self._starters.discard)

    async def _start(self, tasks: list[dict[str, Any]]) -> None:
        for index, task in enumerate(tasks):
            if index % 500 == 499:
                # Yield between slices: a huge batch never stalls the loop (SC-3).
                await asyncio.sleep(0)
            if self._pending(task):  # not cancelled meanwhile
                runner = asyncio.create_task(self._run(task))
                self._in_flight[task["uid"]] = (task, runner)

    # --8<-- [end:submit]

    # --8<-- [start:run]
    async def _run(self, task: dict[str, Any]) -> None:
        if not self._pending(task):
            return  # cancelled before it started: it never starts (CN-6)
        kind = task_kind(task)
        if kind is None:
            task["exception"] = ValueError(
                f"task {task['uid']!r} has none of function, executable or prompt"
            )
            self._finish(task, TaskState.FAILED)
            return
        if kind is not TaskKind.FUNCTION:
            task["exception"] = CapabilityNotSupportedError(kind.value)
            self._finish(task, TaskState.FAILED)
            return
        if is_service(task):  # it would run until stopped, never announced ready
            task["exception"] = CapabilityNotSupportedError("services")
            self._finish(task, TaskState.FAILED)
            return
        self._report(task, TaskState.RUNNING)
        func = task["function"]
        args, kwargs = task.get("args") or (), task.get("kwargs") or {}
        try:
            if inspect.iscoroutinefunction(func):
                result = await func(*args, **kwargs)
            else:
                loop = asyncio.get_running_loop()
                self._in_threads.add(task["uid"])
                try:
                    result = await loop.run_in_executor(
                        self._pool, lambda: func(*args, **kwargs)
                    )
                finally:
                    self._in_threads.discard(task["uid"])
        except asyncio.CancelledError:
            raise  # cancel_task or shutdown already reported CANCELED
        except Exception as exc:
            task["exception"] = exc
            task["stderr"] = "".join(traceback.format_exception(exc))
            self._finish(task, TaskState.FAILED)
        else:
            task["return_value"] = result
            self._finish(task, TaskState.DONE)

    # --8<-- [end:run]

    # --8<-- [start:cancel]
    async def cancel_task(self, uid: str) -> bool:
        # Not even a str (a list is unhashable: .get would raise): CN-2.
        entry = self._in_flight.get(uid) if isinstance(uid, str) else None
        if entry is None:
            return False  # unknown or already finished (CN-2, CN-3)
        task, runner = entry
        if uid in self._in_threads:
            # A plain function in a thread cannot be stopped: CANCELED would
            # not be true, so the cancel is refused and its outcome stands.
            return False
        # A task not started yet never starts; a coroutine is interrupted at
        # its next await.
        if runner is not None:
            runner.cancel()
        # Report on a later turn of the loop, never inside cancel_task (ST-5);
        # _finish reports it once, however often cancel_task is called.
        asyncio.get_running_loop().call_soon(self._finish, task, TaskState.CANCELED)
        return True

    # --8<-- [end:cancel]

    # --8<-- [start:shutdown]
    async def shutdown(self) -> None:
        self._state = BackendState.SHUTDOWN
        runners = list(self._starters)
        for starter in runners:
            starter.cancel()
        for task, runner in list(self._in_flight.values()):
            if runner is not None:
                runner.cancel()
                runners.append(runner)
            self._finish(task, TaskState.CANCELED)  # before we return (SD-2)
        # Never wait for the threads: one may be stuck forever (SD-4).
        self._pool.shutdown(wait=False, cancel_futures=True)
        await asyncio.gather(*runners, return_exceptions=True)

    # --8<-- [end:shutdown]


# --8<-- [start:check]
if TYPE_CHECKING:
    # mypy checks TutorialBackend against the whole core contract here.
    backend: ExecutionBackend = TutorialBackend()
# --8<-- [end:check]
