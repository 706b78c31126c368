"""`ContractMonitor`: a runtime validator that wraps any execution backend.

Like ``wsgiref.validate``, it sits between the engine and the backend, proxies
every call and every state callback, and checks the universal rules on each
of them, over time:

* a batch the contract says to reject is rejected with the right spec error,
  and a valid one is accepted (SB-1..SB-7);
* every delivered state is a `spec.TaskState` member (ST-1), follows
  `spec.TASK_TRANSITIONS` (ST-2, ST-3), arrives on the thread of the loop that
  submitted the task (ST-4), never from inside ``submit_tasks`` or
  ``cancel_task`` (ST-5), with the very dict that was submitted (ST-6), only
  to the callback registered last (LC-4), never after ``shutdown()`` has
  returned (SD-3);
* ``state()`` is synchronous, returns a `spec.BackendState` member and only
  moves along `spec.BACKEND_TRANSITIONS` (LC-2, LC-3);
* ``cancel_task`` returns a bool, ``False`` for unknown or finished uids, and
  a task it promised to cancel ends ``CANCELED`` (CN-1..CN-4);
* when ``shutdown()`` returns, every accepted task has a terminal state and
  ``state()`` is ``SHUTDOWN`` (SD-2, LC-3).

A violation raises `ContractViolation` (``on_violation="raise"``, the default)
and is always appended to `ContractMonitor.violations` too, because a
backend may swallow an exception raised inside its callback path. With
``on_violation="record"`` nothing is raised and the caller inspects
`violations` (the conformance suite does this, so one broken rule does not
cascade into unrelated failures).

Use it in an engine (`watch` and ``ContractMonitor(...)`` are the same
factory: they build the class that offers ``await`` / ``async with`` exactly
when the backend does)::

    backend = watch(MyBackend())
    backend.register_callback(engine_callback)  # the engine's, wrapped
    await backend.submit_tasks(tasks)
"""

from __future__ import annotations

import inspect
import reprlib
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Generator, Iterable
from types import TracebackType
from typing import Any, Literal, cast

import spec
from conformance._stepping import StepCounter, Stepped
from conformance.errors import ContractViolation, Event, recent

__all__ = [
    "KEPT_PER_CLAUSE",
    "AwaitableContextMonitor",
    "AwaitableMonitor",
    "ContextMonitor",
    "ContractMonitor",
    "monitor_class",
    "watch",
]

KEPT_PER_CLAUSE = 20
"""Violations of one clause a recording monitor keeps (it counts the rest)."""

_FINISHED_MEMORY = 100_000
"""How many finished uids the monitor remembers (for ST-3 and CN-3)."""


def _short(value: Any) -> str:
    """Return ``repr(value)`` cut to a few items and characters.

    A backend may return a list of 10,000 asyncio tasks; a trace line must
    not hold them all.
    """
    return _REPR.repr(value)


_REPR = reprlib.Repr()
_REPR.maxlist = _REPR.maxtuple = 3
_REPR.maxother = _REPR.maxstring = 120


class _Record:
    """What the monitor knows about one accepted, unfinished task."""

    __slots__ = ("cancel_promised", "last", "task", "thread")

    def __init__(self, task: dict[str, Any], thread: int) -> None:
        self.task = task
        self.thread = thread
        self.last: spec.TaskState | None = None
        self.cancel_promised = False


def _expected_rejection(
    tasks: Any, in_flight: Iterable[str]
) -> tuple[str, type[Exception], int] | None:
    """Return (clause, error type, index) the contract demands for a bad batch."""
    try:
        spec.validate_batch(tasks, frozenset(in_flight))
    except spec.DuplicateTaskError as exc:
        return "SB-4", spec.DuplicateTaskError, exc.index
    except spec.InvalidTaskError as exc:
        if exc.index < 0 or not isinstance(tasks[exc.index], dict):
            return "SB-2", spec.InvalidTaskError, exc.index
        return "SB-3", spec.InvalidTaskError, exc.index
    return None


class ContractMonitor:
    """Wrap a backend and check every call and callback against the contract.

    The monitor is itself an `spec.ExecutionBackend`: pass it wherever the
    backend would go. Attributes it does not define (``_work_dir``,
    ``is_attached``, ``build_task``, ...) are read from and written to the
    wrapped backend. ``await monitor`` and ``async with monitor`` are offered
    exactly when the wrapped backend offers them.

    Args:
        backend: The backend to watch.
        on_violation: ``"raise"`` to raise each `ContractViolation` as it is
            found (it is recorded as well), ``"record"`` to only record it.
        max_events: How many recent events the trace keeps.

    Attributes:
        violations: The violations found, oldest first (see `violations`).
        events: The most recent events, oldest first.
    """

    def __new__(cls, backend: Any, *args: Any, **kwargs: Any) -> ContractMonitor:
        """Build the class `watch` picks for ``backend`` (``ContractMonitor(b)``)."""
        if cls is ContractMonitor:
            cls = monitor_class(backend)
        return super().__new__(cls)

    def __init__(
        self,
        backend: Any,
        *,
        on_violation: Literal["raise", "record"] = "raise",
        max_events: int = 5_000,
    ) -> None:
        if on_violation not in ("raise", "record"):
            raise ValueError(
                f"on_violation must be 'raise' or 'record', not {on_violation!r}"
            )
        self._cm_backend = backend
        self._cm_raise = on_violation == "raise"
        self._cm_events: deque[Event] = deque(maxlen=max_events)
        self._cm_violations: list[ContractViolation] = []
        self._cm_counts: dict[str, int] = {}
        self._cm_in_flight: dict[str, _Record] = {}
        self._cm_finished: OrderedDict[str, spec.TaskState] = OrderedDict()
        self._cm_rejected: dict[str, str] = {}
        self._cm_steps = StepCounter()
        self._cm_generation = 0
        self._cm_callback: Callable[[Any, str], None] | None = None
        self._cm_last_state: spec.BackendState | None = None
        self._cm_shut_down = False
        self._cm_loop_threads: set[int] = set()
        self._cm_submit_overhead = 0.0
        self._cm_accepted_any = False
        # Watch states even before (or without) an engine registering a callback.
        backend.register_callback(self._cm_wrapper(0))

    # -- proxying --------------------------------------------------------------

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_cm_"):
            raise AttributeError(name)
        return getattr(self._cm_backend, name)

    def __setattr__(self, name: str, value: Any) -> None:
        if name.startswith("_cm_"):
            object.__setattr__(self, name, value)
        else:
            setattr(self._cm_backend, name, value)

    def __repr__(self) -> str:
        return f"ContractMonitor({self._cm_backend!r})"

    @property
    def wrapped(self) -> Any:
        """The backend being watched."""
        return self._cm_backend

    @property
    def name(self) -> str:
        """The wrapped backend's ``name``."""
        return cast(str, self._cm_backend.name)

    @property
    def capabilities(self) -> frozenset[spec.Capability]:
        """The wrapped backend's capabilities (`spec.capabilities_of`)."""
        return spec.capabilities_of(self._cm_backend)

    @property
    def violations(self) -> list[ContractViolation]:
        """The violations found so far, oldest first.

        With ``on_violation="record"`` only the first `KEPT_PER_CLAUSE` of
        each clause are kept; `violation_counts` has them all.
        """
        return list(self._cm_violations)

    @property
    def violation_counts(self) -> dict[str, int]:
        """How many violations of each clause were found (kept or not)."""
        return dict(self._cm_counts)

    @property
    def events(self) -> list[Event]:
        """The most recent events, oldest first."""
        return list(self._cm_events)

    @property
    def submit_overhead(self) -> float:
        """Seconds the monitor itself spent in the last ``submit_tasks`` call."""
        return self._cm_submit_overhead

    @property
    def shut_down(self) -> bool:
        """Whether a ``shutdown()`` (or ``async with`` exit) has returned."""
        return self._cm_shut_down

    def unfinished(self) -> list[str]:
        """Return the uids accepted and not yet reported in a terminal state."""
        return list(self._cm_in_flight)

    def raise_first(self) -> None:
        """Raise the first recorded violation, if any.

        Raises:
            ContractViolation: The oldest violation recorded.
        """
        if self._cm_violations:
            raise self._cm_violations[0]

    # -- bookkeeping -----------------------------------------------------------

    def _cm_event(
        self,
        kind: str,
        name: str,
        uid: str | None = None,
        state: str | None = None,
        detail: str = "",
    ) -> None:
        self._cm_events.append(
            Event(
                kind,
                name,
                uid,
                state,
                threading.current_thread().name,
                time.monotonic(),
                detail,
            )
        )

    def _cm_violate(self, clause_id: str, message: str, uid: str | None = None) -> None:
        count = self._cm_counts.get(clause_id, 0) + 1
        self._cm_counts[clause_id] = count
        if count > KEPT_PER_CLAUSE and not self._cm_raise:
            return  # counted; a 10,000-task batch need not keep 10,000 traces
        violation = ContractViolation(clause_id, message, recent(self._cm_events, uid))
        self._cm_violations.append(violation)
        if self._cm_raise:
            raise violation

    def _cm_remember_finished(self, uid: str, state: spec.TaskState) -> None:
        finished = self._cm_finished
        finished[uid] = state
        finished.move_to_end(uid)
        if len(finished) > _FINISHED_MEMORY:
            finished.popitem(last=False)

    # -- the core contract -----------------------------------------------------

    def state(self) -> spec.BackendState:
        """Return the wrapped backend's state, checking LC-2 and LC-3."""
        result = self._cm_backend.state()
        self._cm_event("return", "state", state=str(result))
        if inspect.isawaitable(result):
            if inspect.iscoroutine(result):
                result.close()
            self._cm_violate("LC-2", "state() returned an awaitable; it must be sync")
            return cast(spec.BackendState, result)
        if not isinstance(result, spec.BackendState):
            self._cm_violate(
                "LC-2",
                f"state() returned {result!r} ({type(result).__name__}), "
                "not a spec.BackendState member",
            )
            return cast(spec.BackendState, result)
        self._cm_check_backend_state(result)
        return result

    def _cm_check_backend_state(self, result: spec.BackendState) -> None:
        last = self._cm_last_state
        if last is not None and result not in spec.BACKEND_TRANSITIONS[last]:
            self._cm_violate("LC-3", f"state() moved backwards: {last} -> {result}")
        self._cm_last_state = result

    def register_callback(self, func: Callable[[Any, str], None]) -> None:
        """Register ``func``, wrapped so every delivery is checked (LC-4)."""
        self._cm_event(
            "call",
            "register_callback",
            detail=getattr(func, "__qualname__", repr(func)),
        )
        self._cm_generation += 1
        self._cm_callback = func
        self._cm_backend.register_callback(self._cm_wrapper(self._cm_generation))

    def get_task_states_map(self) -> Any:
        """Return the wrapped backend's task-states map."""
        return self._cm_backend.get_task_states_map()

    async def submit_tasks(self, tasks: list[Any]) -> None:
        """Forward a batch, checking SB-1..SB-7 and tracking the accepted tasks."""
        started = time.perf_counter()
        size = len(tasks) if isinstance(tasks, (list, tuple)) else "?"
        self._cm_event("call", "submit_tasks", detail=f"batch of {size}")
        thread = threading.get_ident()
        self._cm_loop_threads.add(thread)
        if self._cm_shut_down:
            expected: tuple[str, type[Exception], int] | None = (
                "SB-7",
                spec.BackendShutdownError,
                -1,
            )
        else:
            expected = _expected_rejection(tasks, self._cm_in_flight)
        registered: list[str] = []
        if expected is None:
            in_flight = self._cm_in_flight
            for task in tasks:
                uid = task["uid"]
                in_flight[uid] = _Record(task, thread)
                registered.append(uid)
        self._cm_submit_overhead = time.perf_counter() - started
        result = self._cm_backend.submit_tasks(tasks)
        if not inspect.isawaitable(result):
            self._cm_violate("SB-1", "submit_tasks is not a coroutine function")
        try:
            if inspect.isawaitable(result):
                result = await Stepped(result, self._cm_steps)
        except Exception as exc:
            self._cm_event("raise", "submit_tasks", detail=repr(exc))
            for uid in registered:
                record = self._cm_in_flight.pop(uid, None)
                if record is not None and record.last is not None:
                    self._cm_violate(
                        "SB-1",
                        f"submit_tasks raised {exc!r} after reporting "
                        f"{record.last} for task {uid!r}: half-submitted batch",
                        uid,
                    )
            self._cm_check_rejection(tasks, expected, exc)
            raise
        self._cm_event("return", "submit_tasks", detail=_short(result))
        self._cm_accepted_any = True
        if expected is not None:
            clause_id, error, _ = expected
            for task in tasks if isinstance(tasks, (list, tuple)) else ():
                if isinstance(task, dict) and isinstance(task.get("uid"), str):
                    self._cm_rejected[task["uid"]] = clause_id
            self._cm_violate(
                clause_id,
                f"submit_tasks accepted a batch it must reject with {error.__name__}",
            )
        if result is not None:
            self._cm_violate(
                "SB-1", f"submit_tasks returned {_short(result)}, not None"
            )

    def _cm_check_rejection(
        self,
        tasks: Any,
        expected: tuple[str, type[Exception], int] | None,
        exc: Exception,
    ) -> None:
        if expected is None:
            kinds = [spec.task_kind(t) for t in tasks if isinstance(t, dict)]
            clause_id = "SB-5" if None in kinds else "SB-1"
            if isinstance(exc, spec.CapabilityNotSupportedError):
                clause_id = "SB-6"  # it belongs on the task, as FAILED
            elif not self._cm_accepted_any and clause_id == "SB-1":
                clause_id = "LC-1"  # a new backend must take a valid batch
            if isinstance(tasks, (list, tuple)) and not tasks:
                clause_id = "SB-8"  # an empty batch must be accepted
            self._cm_violate(
                clause_id,
                f"submit_tasks raised {exc!r} for a valid batch; unrunnable tasks "
                "must be accepted and reported FAILED",
            )
            return
        clause_id, error, index = expected
        if not isinstance(exc, error):
            self._cm_violate(
                clause_id,
                f"submit_tasks raised {type(exc).__name__}: {exc}; "
                f"the contract requires {error.__name__}",
            )
        elif clause_id == "SB-2" and getattr(exc, "index", None) != index:
            self._cm_violate(
                clause_id,
                f"InvalidTaskError names index {getattr(exc, 'index', None)!r}, "
                f"the bad entry is at {index}",
            )

    async def cancel_task(self, uid: str) -> bool:
        """Forward a cancel request, checking CN-1..CN-4."""
        # The suite also passes things that are not uids, unhashable ones too.
        key = uid if isinstance(uid, str) else None
        self._cm_event("call", "cancel_task", uid=key or repr(uid))
        result = self._cm_backend.cancel_task(uid)
        if not inspect.isawaitable(result):
            self._cm_violate("CN-1", "cancel_task is not a coroutine function")
        known = self._cm_in_flight.get(key) if key is not None else None
        finished = key in self._cm_finished
        try:
            if inspect.isawaitable(result):
                result = await Stepped(result, self._cm_steps)
        except Exception as exc:
            self._cm_event("raise", "cancel_task", uid=uid, detail=repr(exc))
            if known is None:
                clause_id = "CN-3" if finished else "CN-2"
                self._cm_violate(clause_id, f"cancel_task({uid!r}) raised {exc!r}", uid)
            else:
                self._cm_violate(
                    "CN-1", f"cancel_task({uid!r}) raised {exc!r}, not a bool", uid
                )
            raise
        self._cm_event("return", "cancel_task", uid=uid, detail=_short(result))
        if type(result) is not bool:
            self._cm_violate(
                "CN-1",
                f"cancel_task({uid!r}) returned {result!r} "
                f"({type(result).__name__}), not a bool",
                uid,
            )
        if result:
            record = self._cm_in_flight.get(key) if key is not None else None
            if record is not None:
                record.cancel_promised = True
            elif known is not None:
                # In flight when the call began, it ended during the call (a
                # delivery from inside cancel_task is ST-5's finding): the
                # promise is kept only if it ended CANCELED.
                ended = self._cm_finished.get(key)
                if ended is not None and ended is not spec.TaskState.CANCELED:
                    self._cm_violate(
                        "CN-4",
                        f"cancel_task({uid!r}) returned True, but the task was "
                        f"reported {ended} during the call",
                        uid,
                    )
            elif key in self._cm_finished:
                self._cm_violate(
                    "CN-3",
                    f"cancel_task({uid!r}) returned True for a task already "
                    f"reported {self._cm_finished[key]}",
                    uid,
                )
            else:
                self._cm_violate(
                    "CN-2",
                    f"cancel_task({uid!r}) returned True for an unknown uid",
                    uid,
                )
        return bool(result)

    async def shutdown(self) -> None:
        """Forward ``shutdown()``, then check SD-2 and LC-3."""
        self._cm_event("call", "shutdown")
        try:
            await self._cm_backend.shutdown()
        except Exception as exc:
            self._cm_event("raise", "shutdown", detail=repr(exc))
            self._cm_violate("SD-1", f"shutdown() raised {exc!r}")
            raise
        self._cm_after_shutdown()

    def _cm_after_shutdown(self, state_clause: str = "LC-3") -> None:
        self._cm_event("return", "shutdown")
        self._cm_shut_down = True
        left = list(self._cm_in_flight)
        if left:
            shown = ", ".join(repr(u) for u in left[:5])
            more = f" and {len(left) - 5} more" if len(left) > 5 else ""
            self._cm_violate(
                "SD-2",
                f"shutdown() returned before reporting {len(left)} accepted "
                f"task(s) in a terminal state: {shown}{more}",
                left[0],
            )
            self._cm_in_flight.clear()
        state = self._cm_backend.state()
        if inspect.iscoroutine(state):
            state.close()  # an async state() is LC-2's business, seen elsewhere
        elif state != spec.BackendState.SHUTDOWN:
            self._cm_violate(
                state_clause,
                f"state() is {state!r} after shutdown() returned, not SHUTDOWN",
            )
        elif isinstance(state, spec.BackendState):
            self._cm_check_backend_state(state)

    # -- callbacks -------------------------------------------------------------

    def _cm_wrapper(self, generation: int) -> Callable[[Any, Any], None]:
        def monitored_callback(task: Any, state: Any) -> None:
            self._cm_on_state(generation, task, state)

        return monitored_callback

    def _cm_on_state(self, generation: int, task: Any, state: Any) -> None:
        uid = task.get("uid") if isinstance(task, dict) else None
        uid_text = uid if isinstance(uid, str) else None
        self._cm_event("callback", "callback", uid_text, str(state))
        try:
            self._cm_check_delivery(generation, task, uid_text, state)
        finally:
            # Deliver even after a violation, so the engine (or test) behind
            # the monitor sees the state and one broken rule does not cascade.
            func = self._cm_callback
            if func is not None and generation == self._cm_generation:
                func(task, state)

    def _cm_check_delivery(
        self, generation: int, task: Any, uid: str | None, state: Any
    ) -> None:
        if generation != self._cm_generation:
            self._cm_violate(
                "LC-4",
                f"state {state} delivered to a callback replaced by a later "
                "register_callback()",
                uid,
            )
        if self._cm_shut_down:
            self._cm_violate(
                "SD-3", f"state {state} delivered after shutdown() returned", uid
            )
        if self._cm_steps.active():
            self._cm_violate(
                "ST-5",
                f"state {state} delivered from inside submit_tasks/cancel_task",
                uid,
            )
        if not isinstance(state, spec.TaskState):
            self._cm_violate(
                "ST-1",
                f"delivered state {state!r} ({type(state).__name__}) is not a "
                "spec.TaskState member",
                uid,
            )
            try:
                state = spec.TaskState(state)
            except ValueError:
                return
        record = self._cm_in_flight.get(uid) if uid is not None else None
        if record is None:
            self._cm_unknown_delivery(task, uid, state)
            return
        if threading.get_ident() != record.thread:
            self._cm_violate(
                "ST-4",
                f"state {state} delivered on thread "
                f"{threading.current_thread().name!r}, not on the event-loop "
                "thread that submitted the task",
                uid,
            )
        if task is not record.task:
            self._cm_violate(
                "ST-6", f"state {state} delivered with a different dict object", uid
            )
        if state not in spec.TASK_TRANSITIONS[record.last]:
            self._cm_violate("ST-3", f"state {state} after {record.last}", uid)
            return
        if record.cancel_promised and state in (
            spec.TaskState.DONE,
            spec.TaskState.FAILED,
        ):
            self._cm_violate(
                "CN-4", f"task reported {state} after cancel_task returned True", uid
            )
        record.last = state
        if state in spec.TERMINAL_STATES:
            del self._cm_in_flight[cast(str, uid)]
            self._cm_remember_finished(cast(str, uid), state)

    def _cm_unknown_delivery(
        self, task: Any, uid: str | None, state: spec.TaskState
    ) -> None:
        if uid is None:
            self._cm_violate(
                "ST-6", f"state {state} delivered with {task!r}, not a task dict"
            )
        elif uid in self._cm_finished:
            self._cm_violate(
                "ST-3",
                f"state {state} after the terminal state {self._cm_finished[uid]}",
                uid,
            )
        elif uid in self._cm_rejected:
            self._cm_violate(
                self._cm_rejected[uid],
                f"state {state} delivered for a task of a rejected batch",
                uid,
            )
        else:
            self._cm_violate(
                "ST-2", f"state {state} delivered for a task never accepted", uid
            )


class AwaitableMonitor(ContractMonitor):
    """Adds ``await monitor`` when the wrapped backend offers ``await`` (LC-5)."""

    def __await__(self) -> Generator[Any, None, ContractMonitor]:
        """Await the wrapped backend; it must return itself."""
        result = yield from self._cm_backend.__await__()
        self._cm_event("return", "__await__", detail=_short(result))
        if result is not self._cm_backend:
            self._cm_violate(
                "LC-5", f"await backend returned {result!r}, not the backend"
            )
        return self


class ContextMonitor(ContractMonitor):
    """Adds ``async with monitor`` when the wrapped backend offers it (LC-6)."""

    async def __aenter__(self) -> ContractMonitor:
        """Enter the wrapped backend; it must bind the backend itself."""
        result = await self._cm_backend.__aenter__()
        self._cm_event("return", "__aenter__", detail=_short(result))
        if result is not self._cm_backend:
            self._cm_violate("LC-6", f"async with bound {result!r}, not the backend")
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc_value: BaseException | None,
        traceback: TracebackType | None,
    ) -> bool | None:
        """Leave the wrapped backend; it must shut it down (checked like shutdown)."""
        self._cm_event("call", "__aexit__")
        result = await self._cm_backend.__aexit__(exc_type, exc_value, traceback)
        # Not being shut down after ``async with`` is LC-6's failure, not LC-3's.
        self._cm_after_shutdown(state_clause="LC-6")
        return cast("bool | None", result)


class AwaitableContextMonitor(AwaitableMonitor, ContextMonitor):
    """Offers both ``await monitor`` (LC-5) and ``async with monitor`` (LC-6)."""


_CLASSES: dict[tuple[bool, bool], type[ContractMonitor]] = {
    (False, False): ContractMonitor,
    (True, False): AwaitableMonitor,
    (False, True): ContextMonitor,
    (True, True): AwaitableContextMonitor,
}
"""The monitor class for (offers ``await``, offers ``async with``)."""


def monitor_class(backend: Any) -> type[ContractMonitor]:
    """Return the monitor class offering ``await``/``async with`` like ``backend``."""
    kind = type(backend)
    return _CLASSES[
        (
            hasattr(kind, "__await__"),
            hasattr(kind, "__aenter__") and hasattr(kind, "__aexit__"),
        )
    ]


def watch(
    backend: Any,
    *,
    on_violation: Literal["raise", "record"] = "raise",
    max_events: int = 5_000,
) -> ContractMonitor:
    """Wrap ``backend`` in the right `ContractMonitor` class (`monitor_class`).

    Args:
        backend: The backend to watch.
        on_violation: ``"raise"`` or ``"record"`` (see `ContractMonitor`).
        max_events: How many recent events the trace keeps.

    Returns:
        The monitor; pass it wherever the backend would go.
    """
    return monitor_class(backend)(
        backend, on_violation=on_violation, max_events=max_events
    )
