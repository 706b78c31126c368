"""`ChaosBackend`: a backend that takes every liberty the contract allows.

An engine is usually tested against polite backends: completions in
submission order, RUNNING always sent, cancels that always win. The contract
promises less. `ChaosBackend` wraps any conforming backend and, staying
inside the contract, delivers each state after a random delay (so
completions arrive out of order), leaves RUNNING out for some tasks and sends
it late for others, lets ``cancel_task`` lose the races it may lose, and
takes most of its shutdown allowance. Optionally it fails tasks with
`spec.WorkerLostError`, as a lost worker would.

Every decision is drawn from the seed and the task's uid alone, so the same
seed makes the same decisions for the same tasks: a failing run can be
replayed. The seed is in ``repr()`` and in the log line the backend writes
when it is built.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import hashlib
import heapq
import itertools
import logging
import math
import operator
import os
import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

from typing_extensions import Self

from reference._base import (
    BackendFacade,
    duration,
)
from spec import (
    BackendShutdownError,
    BackendState,
    Capability,
    ExecutionBackend,
    TaskState,
    WorkerLostError,
    capabilities_of,
    validate_batch,
)

__all__ = ["ChaosBackend", "ChaosDecisions", "RunningPolicy"]

logger = logging.getLogger("reference.chaos")

_TWO_64 = float(1 << 64)
_SIX_WORDS = struct.Struct("<6Q")

_BURST = 256
"""Most states delivered per loop turn: a burst never stalls the loop for long."""


class RunningPolicy(str, enum.Enum):
    """What the chaos backend does with a task's RUNNING state."""

    ON_TIME = "on_time"
    """Forwarded (after its own random delay) when the inner backend sends it."""
    OMITTED = "omitted"
    """Never delivered."""
    LATE = "late"
    """Held back and delivered just before the terminal state; also sent for a
    task that ends DONE when the inner backend sent no RUNNING (it did run)."""


@dataclass(frozen=True)
class ChaosDecisions:
    """Everything the chaos backend decides about one task, from (seed, uid).

    Attributes:
        uid: The task's uid.
        running: What happens to its RUNNING state.
        running_delay: Seconds an on-time RUNNING is held back.
        terminal_delay: Seconds its terminal state is held back.
        loses_cancel_race: Whether ``cancel_task`` first gives the task a
            chance to finish (and returns False if it does).
        worker_lost: Whether the task is failed with `spec.WorkerLostError`.
    """

    uid: str
    running: RunningPolicy
    running_delay: float
    terminal_delay: float
    loses_cancel_race: bool
    worker_lost: bool


def _rate(name: str, value: object) -> float:
    """Check a probability option: a real number in [0, 1]."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(
            f"{name} must be a number between 0 and 1, "
            f"got {type(value).__name__} {value!r}"
        )
    rate = float(value)
    if math.isnan(rate) or not 0.0 <= rate <= 1.0:
        raise ValueError(f"{name} must be between 0 and 1, got {value!r}")
    return rate


def _draws(seed: int, key: str, person: bytes) -> list[float]:
    """Six independent uniform draws in [0, 1) from (seed, key).

    A hash, not a shared random stream: a task's draws do not depend on which
    tasks came before it, so they replay whatever else the engine submits.
    """
    data = f"{seed}\x00{key}".encode("utf-8", "surrogatepass")
    digest = hashlib.blake2b(data, digest_size=48, person=person).digest()
    return [word / _TWO_64 for word in _SIX_WORDS.unpack(digest)]


class _Entry:
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


def _ignore_state(task: Any, state: str) -> None:
    """Stand-in callback until the engine registers one."""


_uid_of = operator.itemgetter("uid")


class _HeldBatch:
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
            self._uids = set(map(_uid_of, self.tasks))
        return uid in self._uids


class ChaosBackend(BackendFacade):
    """Wraps a backend and takes, reproducibly, every liberty the contract allows.

    For engine authors: run your engine over it with several seeds, and a
    hidden reliance on polite backend behaviour shows up as a failure you can
    replay. Within the contract (with ``worker_loss=0`` it passes the
    conformance suite for any seed), it:

    - delivers every state after a random delay of up to ``max_delay``
      seconds, so completions arrive in another order than the tasks
      finished;
    - leaves RUNNING out for a share ``omit_running`` of the tasks, and for a
      share ``late_running`` holds it back until just before the terminal
      state (sending one for a task that ended DONE even when the inner
      backend sent none: it did run);
    - for a share ``lose_cancel`` of the tasks, lets ``cancel_task`` wait up
      to ``cancel_wait`` seconds for the task to finish first, and then
      return False while DONE (or FAILED) stands. A task whose terminal state
      is held back has finished, so cancelling it always returns False; a
      True comes from the inner backend (or is for a task never handed to
      it) and the task ends CANCELED;
    - holds each batch back in ``submit_tasks`` for a seeded share of
      ``submit_delay`` seconds before handing it over (a task cancelled
      meanwhile is never handed over, and ends CANCELED), so an engine's other
      coroutines run while its submit is suspended;
    - in ``shutdown()``, keeps delivering for a seeded 50-100% of
      ``shutdown_delay`` seconds before it shuts the inner backend down, then
      delivers everything still held back;
    - with ``worker_loss`` above 0 (off by default, and then the backend no
      longer conforms: tasks fail that would not), fails that share of the
      tasks with `spec.WorkerLostError`: their work is cancelled in the inner
      backend when it starts, and any result is discarded.

    Every decision comes from ``seed`` and the task's uid alone (see
    `decisions`), so the same seed makes the same decisions for the same
    tasks, whatever else runs. The seed is in ``repr()`` and in the INFO line
    logged (logger ``reference.chaos``) when the backend is built.

    It uses only the inner backend's public contract: ``submit_tasks``,
    ``cancel_task``, ``shutdown``, ``register_callback``, ``state`` and the
    engine-facing attributes (``_work_dir``, ``is_attached``,
    ``attached_to``, the data-linking flags and hooks, ``build_task``) and
    the resource ``capacity``, which it forwards. Its capabilities are the
    inner backend's.

    Args:
        inner: The backend to wrap; a new `reference.LocalExecutionBackend`
            when ``None``. The chaos backend shuts it down in ``shutdown()``.
        seed: The seed every decision is drawn from.
        name: Name in an engine's registry; the inner backend's by default.
        max_delay: Most seconds a state is held back.
        omit_running: Share of the tasks whose RUNNING is never delivered.
        late_running: Share of the tasks whose RUNNING comes just before the
            terminal state.
        lose_cancel: Share of the tasks whose cancel waits for the task to
            finish first.
        cancel_wait: Most seconds such a cancel waits before it forwards the
            cancel to the inner backend.
        shutdown_delay: Most seconds ``shutdown()`` keeps delivering before it
            shuts the inner backend down.
        submit_delay: Most seconds ``submit_tasks`` holds a batch back before
            it hands it to the inner backend.
        worker_loss: Share of the tasks failed with `spec.WorkerLostError`.

    Raises:
        TypeError: ``seed`` is not an int, ``name`` not a str, or an option
            not a number.
        ValueError: A delay is negative, NaN or infinite, a share is outside
            [0, 1] or NaN, or ``omit_running + late_running`` exceeds 1.
    """

    _PERSON_TASK: ClassVar[bytes] = b"chaos-task"
    _PERSON_BACKEND: ClassVar[bytes] = b"chaos-backend"
    _PERSON_SUBMIT: ClassVar[bytes] = b"chaos-submit"

    def __init__(
        self,
        inner: ExecutionBackend | None = None,
        *,
        seed: int = 0,
        name: str | None = None,
        max_delay: float = 0.005,
        omit_running: float = 0.3,
        late_running: float = 0.3,
        lose_cancel: float = 0.5,
        cancel_wait: float = 0.005,
        shutdown_delay: float = 0.01,
        submit_delay: float = 0.002,
        worker_loss: float = 0.0,
    ) -> None:
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise TypeError(f"seed must be an int, got {type(seed).__name__} {seed!r}")
        if name is not None and not isinstance(name, str):
            raise TypeError(f"name must be a str, got {type(name).__name__}")
        self._max_delay = duration("max_delay", max_delay, zero_ok=True)
        self._omit_running = _rate("omit_running", omit_running)
        self._late_running = _rate("late_running", late_running)
        if self._omit_running + self._late_running > 1.0:
            raise ValueError(
                "omit_running + late_running must be at most 1, got "
                f"{omit_running!r} + {late_running!r}"
            )
        self._lose_cancel = _rate("lose_cancel", lose_cancel)
        self._cancel_wait = duration("cancel_wait", cancel_wait, zero_ok=True)
        self._shutdown_delay = duration("shutdown_delay", shutdown_delay, zero_ok=True)
        self._submit_delay = duration("submit_delay", submit_delay, zero_ok=True)
        self._worker_loss = _rate("worker_loss", worker_loss)
        if inner is None:
            from reference.local import LocalExecutionBackend

            inner = LocalExecutionBackend(name="default" if name is None else name)
        for method in ("submit_tasks", "cancel_task", "shutdown", "register_callback"):
            if not callable(getattr(inner, method, None)):
                raise TypeError(
                    f"inner must be an execution backend; {type(inner).__name__} "
                    f"has no {method}()"
                )
        self._inner: Any = inner
        self.seed = seed
        self._name = name if name is not None else str(getattr(inner, "name", "chaos"))
        self._callback: Callable[[Any, str], None] = _ignore_state
        # The tasks in flight: the task dict itself until something happens
        # to it, then its _Entry; a 10,000-task submit makes no objects (SC-3).
        self._in_flight: dict[str, _Entry | dict[str, Any]] = {}
        # Batches accepted, not yet handed to the inner backend (submit_delay).
        self._held: list[_HeldBatch] = []
        # States held back: (due, order, entry, terminal?), delivered by one
        # pump in bursts of at most _BURST per loop turn.
        self._due: list[tuple[float, int, _Entry, bool]] = []
        self._order = itertools.count()
        self._pump_handle: asyncio.Handle | None = None
        self._pump_at = math.inf
        self._loop: asyncio.AbstractEventLoop | None = None
        self._closing: asyncio.Event | None = None
        self._shut_down = False
        self._chores: set[asyncio.Task[Any]] = set()
        # Engine-facing attributes the inner backend may lack: kept here then.
        self._own_work_dir = os.getcwd()
        self._own_is_attached = False
        self._own_attached_to: list[str] = []
        inner.register_callback(self._on_inner_state)
        logger.info("%r: replay this run with seed=%d", self, seed)

    # -- identity ------------------------------------------------------------

    def __repr__(self) -> str:
        options = (
            f"seed={self.seed}, max_delay={self._max_delay:g}, "
            f"omit_running={self._omit_running:g}, "
            f"late_running={self._late_running:g}, "
            f"lose_cancel={self._lose_cancel:g}, cancel_wait={self._cancel_wait:g}, "
            f"shutdown_delay={self._shutdown_delay:g}, "
            f"submit_delay={self._submit_delay:g}, "
            f"worker_loss={self._worker_loss:g}"
        )
        return f"ChaosBackend({type(self._inner).__name__}, {options})"

    @property
    def name(self) -> str:
        """Name of the backend in an engine's registry (LC-8)."""
        return self._name

    @property
    def inner(self) -> Any:
        """The wrapped backend."""
        return self._inner

    @property
    def capabilities(self) -> frozenset[Capability]:
        """The inner backend's capabilities: chaos takes none away."""
        return capabilities_of(self._inner)

    @property
    def capacity(self) -> Any:
        """The inner backend's resource capacity (capability ``resources``).

        Raises:
            AttributeError: The inner backend has none (so the chaos backend
                does not satisfy `spec.SupportsResources` either).
        """
        try:
            return self._inner.capacity
        except AttributeError:
            raise AttributeError(
                f"{type(self._inner).__name__} has no resource capacity"
            ) from None

    def decisions(self, uid: str) -> ChaosDecisions:
        """Return what this backend decides for the task ``uid``.

        A pure function of the seed, the options and ``uid``: call it before,
        during or after a run to see (or predict) what happened to a task.

        Args:
            uid: A task uid.

        Returns:
            The task's decisions.
        """
        draws = _draws(self.seed, uid, self._PERSON_TASK)
        if draws[0] < self._omit_running:
            running = RunningPolicy.OMITTED
        elif draws[0] < self._omit_running + self._late_running:
            running = RunningPolicy.LATE
        else:
            running = RunningPolicy.ON_TIME
        return ChaosDecisions(
            uid=uid,
            running=running,
            running_delay=draws[1] * self._max_delay,
            terminal_delay=draws[2] * self._max_delay,
            loses_cancel_race=draws[3] < self._lose_cancel,
            worker_lost=draws[4] < self._worker_loss,
        )

    def submit_pause(self, first_uid: str) -> float:
        """Seconds ``submit_tasks`` holds a batch back before handing it over.

        Drawn from the seed and the uid of the batch's first task: a seeded
        0-100% of ``submit_delay``.

        Args:
            first_uid: The uid of the batch's first task.

        Returns:
            The pause.
        """
        return self._submit_delay * _draws(self.seed, first_uid, self._PERSON_SUBMIT)[0]

    def shutdown_pause(self) -> float:
        """Seconds ``shutdown()`` keeps delivering before it stops the inner backend.

        A seeded 50-100% of ``shutdown_delay``.
        """
        draw = _draws(self.seed, "", self._PERSON_BACKEND)[0]
        return self._shutdown_delay * (0.5 + 0.5 * draw)

    # -- lifecycle -----------------------------------------------------------

    def _closed(self) -> bool:
        """Whether ``shutdown()`` has been called."""
        return self._closing is not None or self._shut_down

    def state(self) -> BackendState:
        """Return the lifecycle state: the inner one, SHUTDOWN from shutdown() on."""
        if self._closed():
            return BackendState.SHUTDOWN
        return BackendState(self._inner.state())

    async def _start(self) -> Self:
        # ``await chaos`` awaits the inner backend where it can be (LC-5).
        if callable(getattr(self._inner, "__await__", None)):
            await self._inner
        return self

    # -- engine-facing attributes, forwarded ---------------------------------

    @property
    def _work_dir(self) -> str:
        return str(getattr(self._inner, "_work_dir", self._own_work_dir))

    @_work_dir.setter
    def _work_dir(self, value: str) -> None:
        self._own_work_dir = value
        if hasattr(self._inner, "_work_dir"):
            self._inner._work_dir = value

    @property
    def is_attached(self) -> bool:
        """Whether an engine has attached the backend (forwarded to the inner one)."""
        return bool(getattr(self._inner, "is_attached", self._own_is_attached))

    @is_attached.setter
    def is_attached(self, value: bool) -> None:
        self._own_is_attached = value
        if hasattr(self._inner, "is_attached"):
            self._inner.is_attached = value

    @property
    def attached_to(self) -> list[str]:
        """UIDs of the engines the backend was attached to (the inner one's list)."""
        found = getattr(self._inner, "attached_to", None)
        return found if isinstance(found, list) else self._own_attached_to

    @attached_to.setter
    def attached_to(self, value: list[str]) -> None:
        self._own_attached_to = value
        if hasattr(self._inner, "attached_to"):
            self._inner.attached_to = value

    @property
    def supports_implicit_data_linking(self) -> bool:
        """The inner backend's flag (False when it has none)."""
        return bool(getattr(self._inner, "supports_implicit_data_linking", False))

    @property
    def supports_explicit_data_linking(self) -> bool:
        """The inner backend's flag (False when it has none)."""
        return bool(getattr(self._inner, "supports_explicit_data_linking", False))

    def link_implicit_data_deps(
        self, src_task: dict[str, Any], dst_task: dict[str, Any]
    ) -> None:
        """Forward to the inner backend's hook, if it has one (CP-2)."""
        hook = getattr(self._inner, "link_implicit_data_deps", None)
        if callable(hook):
            hook(src_task, dst_task)

    def link_explicit_data_deps(
        self,
        src_task: dict[str, Any] | None = None,
        dst_task: dict[str, Any] | None = None,
        file_name: str | None = None,
        file_path: str | None = None,
    ) -> Any:
        """Forward to the inner backend's hook, if it has one (CP-2)."""
        hook = getattr(self._inner, "link_explicit_data_deps", None)
        if callable(hook):
            return hook(
                src_task=src_task,
                dst_task=dst_task,
                file_name=file_name,
                file_path=file_path,
            )
        return None

    def build_task(
        self, uid: str, task_desc: dict[str, Any], task_specific_kwargs: dict[str, Any]
    ) -> None:
        """Forward to the inner backend's ``build_task``, if it has one (CP-3)."""
        hook = getattr(self._inner, "build_task", None)
        if callable(hook):
            hook(uid, task_desc, task_specific_kwargs)

    def task_state_cb(self, task: dict[str, Any], state: str) -> None:
        """Observe every state this backend delivers, before the callback."""

    # -- submission ----------------------------------------------------------

    async def submit_tasks(self, tasks: list[dict[str, Any]]) -> None:
        """Accept a batch and hand it to the inner backend.

        Args:
            tasks: Task dicts, each with a unique string ``uid``.

        Raises:
            InvalidTaskError: An entry is not a dict or lacks a string uid.
            DuplicateTaskError: A uid repeats, or is in flight here (a task
                whose state is still held back is in flight).
            BackendShutdownError: The backend is shut down or shutting down.
        """
        if self._closed():
            raise BackendShutdownError(
                f"chaos backend {self._name!r} is shut down; submit_tasks refused "
                f"{len(tasks) if isinstance(tasks, list) else 'the'} task(s)"
            )
        validate_batch(tasks, self._in_flight)
        self._loop = asyncio.get_running_loop()
        # Recorded before the inner call: the inner backend may deliver
        # while its submit_tasks is suspended.
        batch = list(tasks)
        self._in_flight.update(zip(map(_uid_of, batch), batch, strict=True))
        try:
            pause = self.submit_pause(batch[0]["uid"]) if batch else 0.0
            if pause > 0:
                batch = await self._pause_submit(batch, pause)
                if self._closed():
                    return  # shutdown reports the whole batch CANCELED
            if batch:
                await self._inner.submit_tasks(batch)
        except BaseException:
            # Nothing of the batch is accepted, except what a cancel already
            # promised to report CANCELED (CN-4).
            for task in batch:
                entry = self._entry(task["uid"])
                if (
                    entry is not None
                    and entry.task is task
                    and not entry.cancel_promised
                ):
                    self._drop(entry)
            raise

    async def _pause_submit(
        self, batch: list[dict[str, Any]], pause: float
    ) -> list[dict[str, Any]]:
        """Hold the batch back; return the tasks not cancelled meanwhile."""
        held = _HeldBatch(batch)
        self._held.append(held)
        try:
            await asyncio.sleep(pause)
        finally:
            self._held.remove(held)
        if not held.cancelled:
            return batch
        return [task for task in batch if task["uid"] not in held.cancelled]

    def _entry(self, uid: str) -> _Entry | None:
        """The entry of an accepted task in flight, made on first use."""
        found = self._in_flight.get(uid)
        if found is None or isinstance(found, _Entry):
            return found
        entry = self._in_flight[uid] = _Entry(found)
        return entry

    # -- what the inner backend reports --------------------------------------

    def _decide(self, entry: _Entry) -> ChaosDecisions:
        found = entry.decisions
        if found is None:
            found = entry.decisions = self.decisions(entry.uid)
        return found

    def _on_inner_state(self, task: Any, state: Any) -> None:
        uid = task.get("uid") if isinstance(task, dict) else None
        entry = self._entry(uid) if isinstance(uid, str) else None
        if entry is None or entry.terminal is not None:
            logger.debug("chaos: ignoring %s for %r, not in flight here", state, uid)
            return
        try:
            state = TaskState(state)
        except ValueError:
            logger.warning("chaos: inner backend reported %r for %r", state, uid)
            return
        loop = self._loop or asyncio.get_running_loop()
        decisions = self._decide(entry)
        if state is TaskState.RUNNING:
            if entry.saw_running:
                return
            entry.saw_running = True
            if decisions.worker_lost and not entry.cancel_promised:
                self._lose_worker(entry)
            if decisions.running is RunningPolicy.ON_TIME:
                entry.running_pending = True
                self._hold(loop.time() + decisions.running_delay, entry, False)
            return
        if (
            decisions.worker_lost
            and not entry.cancel_promised
            and state is TaskState.DONE
        ):
            # It ran, but its result is lost with the worker on the way back.
            self._mark_lost(entry)
        if entry.lost:
            state = TaskState.FAILED
        self._hold_terminal(entry, state)

    def _hold_terminal(self, entry: _Entry, state: TaskState) -> None:
        loop = self._loop or asyncio.get_running_loop()
        entry.terminal = state
        entry.due = loop.time() + self._decide(entry).terminal_delay
        self._hold(entry.due, entry, True)
        if entry.waiter is not None and not entry.waiter.done():
            entry.waiter.set_result(None)

    def _lose_worker(self, entry: _Entry) -> None:
        """Stop the task's work in the inner backend, as a dead worker would."""
        self._mark_lost(entry)
        loop = self._loop or asyncio.get_running_loop()
        chore = loop.create_task(self._inner.cancel_task(entry.uid))
        self._chores.add(chore)
        chore.add_done_callback(self._chores.discard)

    def _mark_lost(self, entry: _Entry) -> None:
        if entry.lost:
            return
        entry.lost = True
        logger.debug("chaos (seed %d): worker of %r lost", self.seed, entry.uid)

    def _write_worker_loss(self, entry: _Entry) -> None:
        task = entry.task
        error = WorkerLostError(
            f"the worker running task {entry.uid!r} was lost "
            f"(ChaosBackend seed={self.seed}, worker_loss={self._worker_loss:g})"
        )
        task["exception"] = error
        task["stderr"] = str(error)
        task["return_value"] = None

    # -- delivery ------------------------------------------------------------

    def _hold(self, due: float, entry: _Entry, terminal: bool) -> None:
        """Deliver the entry's RUNNING (or terminal state) at loop time ``due``."""
        heapq.heappush(self._due, (due, next(self._order), entry, terminal))
        if due < self._pump_at and self._loop is not None:
            if self._pump_handle is not None:
                self._pump_handle.cancel()
            self._pump_at = due
            self._pump_handle = self._loop.call_at(due, self._pump)

    def _pump(self) -> None:
        """Deliver what is due, at most _BURST states, then re-arm."""
        loop = self._loop
        self._pump_handle = None
        self._pump_at = math.inf
        if loop is None:
            return
        due = self._due
        now = loop.time()
        for _ in range(_BURST):
            if not due or due[0][0] > now:
                break
            _, _, entry, terminal = heapq.heappop(due)
            if terminal:
                self._deliver_terminal(entry)
            else:
                self._deliver_running(entry)
        if not due or self._pump_handle is not None:
            return
        if due[0][0] <= now:
            # More is due: on the next turn, so other work runs in between.
            self._pump_at = -math.inf
            self._pump_handle = loop.call_soon(self._pump)
        else:
            self._pump_at = due[0][0]
            self._pump_handle = loop.call_at(self._pump_at, self._pump)

    def _report(self, task: dict[str, Any], state: TaskState) -> None:
        """Deliver one state; a raising callback is logged, never propagated (ST-7)."""
        try:
            self.task_state_cb(task, state)
            self._callback(task, state)
        except (KeyboardInterrupt, SystemExit):
            raise
        except BaseException:  # CancelledError too (ST-8)
            logger.exception(
                "state callback raised for task %r (%s); continuing",
                task.get("uid"),
                state.value,
            )

    def _deliver_running(self, entry: _Entry) -> None:
        if not entry.running_pending:
            return  # delivered already, just before the terminal state
        entry.running_pending = False
        if entry.running_sent or self._in_flight.get(entry.uid) is not entry:
            return
        entry.running_sent = True
        self._report(entry.task, TaskState.RUNNING)

    def _deliver_terminal(self, entry: _Entry) -> None:
        if self._in_flight.get(entry.uid) is not entry or entry.terminal is None:
            return
        state = entry.terminal
        if entry.running_pending:
            # Its RUNNING was due later: it still comes first.
            self._deliver_running(entry)
        elif (
            not entry.running_sent
            and self._decide(entry).running is RunningPolicy.LATE
            and (entry.saw_running or state is TaskState.DONE)
        ):
            # Held back until now (or never sent by the inner backend).
            entry.running_pending = True
            self._deliver_running(entry)
        # Dropped before the callback: a cancel from inside it returns False.
        self._drop(entry)
        if entry.lost and state is TaskState.FAILED:
            self._write_worker_loss(entry)
        self._report(entry.task, state)

    def _drop(self, entry: _Entry) -> None:
        del self._in_flight[entry.uid]
        if not self._in_flight:
            # A dict never shrinks; a fresh one releases a big batch's table (SC-1).
            self._in_flight = {}
        if entry.waiter is not None and not entry.waiter.done():
            entry.waiter.set_result(None)
        entry.waiter = None

    # -- cancellation --------------------------------------------------------

    async def cancel_task(self, uid: str) -> bool:
        """Cancel a task, perhaps losing the race to its completion.

        Args:
            uid: The task's uid.

        Returns:
            ``True`` if the task will be reported CANCELED (the inner backend
            promised it, or the task was never handed to it); ``False`` for
            unknown or finished uids, for a task whose terminal state is only
            held back, for a task whose worker was lost, and for a task that
            finished while the cancel waited.
        """
        try:
            entry = self._entry(uid)
        except TypeError:  # an unhashable uid is unknown, not an error (CN-2)
            return False
        if entry is None:
            return False
        settled = self._settled(entry)
        if settled is not None:
            return settled
        if self._decide(entry).loses_cancel_race and self._closing is None:
            loop = asyncio.get_running_loop()
            entry.waiter = waiter = loop.create_future()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(asyncio.shield(waiter), self._cancel_wait)
            # The wait let the task run on: look again (mypy keeps the
            # narrowing from before the await, hence the helper).
            settled = self._settled(entry)
            if settled is not None:
                if not settled:
                    logger.debug(
                        "chaos (seed %d): %r finished before its cancel", self.seed, uid
                    )
                return settled
        held = next((h for h in self._held if h.holds(uid)), None)
        if held is not None:
            # Not handed to the inner backend yet: it never will be.
            held.cancelled.add(uid)
            entry.cancel_promised = True
            self._hold_terminal(entry, TaskState.CANCELED)
            return True
        try:
            promised = await self._inner.cancel_task(uid)
        except Exception:
            logger.exception("inner cancel_task(%r) raised; reporting False", uid)
            return False
        if promised is not True:
            return False
        if self._in_flight.get(uid) is entry:
            entry.cancel_promised = True
        return True

    def _settled(self, entry: _Entry) -> bool | None:
        """What a cancel of ``entry`` returns without asking the inner backend."""
        if self._in_flight.get(entry.uid) is not entry:
            return False
        if entry.terminal is not None or entry.lost:
            return False
        if entry.cancel_promised:
            return True
        return None

    # -- shutdown ------------------------------------------------------------

    async def shutdown(self) -> None:
        """Keep delivering for a while, shut the inner backend down, deliver the rest.

        Idempotent. Every task still in flight is reported before it returns
        (CANCELED where the inner backend cancelled it, or where it reported
        nothing); no callback follows it.
        """
        if self._shut_down:
            return
        if self._closing is not None:
            await self._closing.wait()
            return
        closing = self._closing = asyncio.Event()
        logger.info("%r: shutting down", self)
        try:
            # States keep arriving meanwhile: the engine must cope with that.
            await asyncio.sleep(self.shutdown_pause())
        finally:
            # Even when cancelled in the pause: the inner backend's children
            # must not outlive us (SD-5), and every task gets its state (SD-2).
            try:
                await self._inner.shutdown()
            finally:
                for chore in list(self._chores):
                    chore.cancel()
                self._flush()
                self._shut_down = True
                closing.set()

    def _flush(self) -> None:
        """Deliver every state still held back, in the order it was due."""
        if self._pump_handle is not None:
            self._pump_handle.cancel()
            self._pump_handle = None
        self._pump_at = math.inf
        self._due = []
        entries = sorted(
            (e for e in map(self._entry, list(self._in_flight)) if e is not None),
            key=lambda e: (e.terminal is None, e.due),
        )
        for entry in entries:
            if entry.terminal is None:
                # The inner backend never reported it: it will not run now.
                entry.running_pending = False
                entry.terminal = TaskState.CANCELED
                entry.lost = False
            self._deliver_terminal(entry)
