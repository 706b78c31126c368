"""`ContractMonitor`: the proxy that forwards calls, records them and checks them.

Its public names are listed (and documented) in `conformance.monitor`.

It makes each call on the wrapped backend, records what happened in its
`Recorder` and asks its `TaskLedger` what the observation breaks.
"""

from __future__ import annotations

import inspect
import threading
import time
from collections.abc import Callable, Generator
from types import TracebackType
from typing import Any, Literal, cast

import spec
from conformance._stepping import StepCounter, Stepped
from conformance.errors import ContractViolation, Event
from conformance.monitor._findings import backend_state_findings, short, task_uid
from conformance.monitor._ledger import TaskLedger
from conformance.monitor._recorder import Recorder


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
        self._cm_recorder = Recorder(
            raise_violations=on_violation == "raise", max_events=max_events
        )
        self._cm_ledger = TaskLedger()
        self._cm_steps = StepCounter()
        self._cm_callback: Callable[..., None] | None = None
        self._cm_submit_overhead = 0.0
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
        return list(self._cm_recorder.violations)

    @property
    def violation_counts(self) -> dict[str, int]:
        """How many violations of each clause were found (kept or not)."""
        return dict(self._cm_recorder.counts)

    @property
    def events(self) -> list[Event]:
        """The most recent events, oldest first."""
        return list(self._cm_recorder.events)

    @property
    def submit_overhead(self) -> float:
        """Seconds the monitor itself spent in the last ``submit_tasks`` call."""
        return self._cm_submit_overhead

    @property
    def shut_down(self) -> bool:
        """Whether a ``shutdown()`` (or ``async with`` exit) has returned."""
        return self._cm_ledger.shut_down

    def unfinished(self) -> list[str]:
        """Return the uids accepted and not yet reported in a terminal state."""
        return list(self._cm_ledger.in_flight)

    def raise_first(self) -> None:
        """Raise the first recorded violation, if any.

        Raises:
            ContractViolation: The oldest violation recorded.
        """
        if self._cm_recorder.violations:
            raise self._cm_recorder.violations[0]

    # -- the core contract -----------------------------------------------------

    def state(self) -> spec.BackendState:
        """Return the wrapped backend's state, checking LC-2 and LC-3."""
        result = self._cm_backend.state()
        self._cm_recorder.event("return", "state", state=str(result))
        if inspect.isawaitable(result):
            if inspect.iscoroutine(result):
                result.close()
            self._cm_recorder.violate(
                "LC-2", "state() returned an awaitable; it must be sync"
            )
            return cast(spec.BackendState, result)
        ledger = self._cm_ledger
        self._cm_recorder.report(backend_state_findings(ledger.last_state, result))
        if isinstance(result, spec.BackendState):
            ledger.last_state = result
        return cast(spec.BackendState, result)

    def register_callback(self, func: Callable[..., None]) -> None:
        """Register ``func``, wrapped so every delivery is checked (LC-4)."""
        self._cm_recorder.event(
            "call",
            "register_callback",
            detail=getattr(func, "__qualname__", repr(func)),
        )
        self._cm_ledger.generation += 1
        self._cm_callback = func
        self._cm_backend.register_callback(self._cm_wrapper(self._cm_ledger.generation))

    def get_task_states_map(self) -> Any:
        """Return the wrapped backend's task-states map."""
        return self._cm_backend.get_task_states_map()

    async def submit_tasks(self, tasks: list[Any]) -> None:
        """Forward a batch, checking SB-1..SB-8 and tracking the accepted tasks."""
        started = time.perf_counter()
        recorder, ledger = self._cm_recorder, self._cm_ledger
        size = len(tasks) if isinstance(tasks, (list, tuple)) else "?"
        recorder.event("call", "submit_tasks", detail=f"batch of {size}")
        expected = ledger.expected_for(tasks)
        uids = ledger.accept(tasks, threading.get_ident()) if expected is None else []
        self._cm_submit_overhead = time.perf_counter() - started
        result = self._cm_backend.submit_tasks(tasks)
        if not inspect.isawaitable(result):
            recorder.violate("SB-1", "submit_tasks is not a coroutine function")
        try:
            if inspect.isawaitable(result):
                result = await Stepped(result, self._cm_steps)
        except Exception as exc:
            recorder.event("raise", "submit_tasks", detail=repr(exc))
            recorder.report(ledger.submit_raised(tasks, uids, expected, exc))
            raise
        recorder.event("return", "submit_tasks", detail=short(result))
        recorder.report(ledger.submit_returned(tasks, expected, result))

    async def cancel_task(self, uid: str) -> bool:
        """Forward a cancel request, checking CN-1..CN-4."""
        recorder, ledger = self._cm_recorder, self._cm_ledger
        # The suite also passes things that are not uids, unhashable ones too.
        key = uid if isinstance(uid, str) else None
        recorder.event("call", "cancel_task", uid=key or repr(uid))
        result = self._cm_backend.cancel_task(uid)
        if not inspect.isawaitable(result):
            recorder.violate("CN-1", "cancel_task is not a coroutine function")
        known, finished = ledger.cancel_started(uid)
        try:
            if inspect.isawaitable(result):
                result = await Stepped(result, self._cm_steps)
        except Exception as exc:
            recorder.event("raise", "cancel_task", uid=uid, detail=repr(exc))
            recorder.report(ledger.cancel_raised(uid, known, finished, exc))
            raise
        recorder.event("return", "cancel_task", uid=uid, detail=short(result))
        recorder.report(ledger.cancel_returned(uid, known, result))
        return bool(result)

    async def shutdown(self) -> None:
        """Forward ``shutdown()``, then check SD-2 and LC-3."""
        self._cm_recorder.event("call", "shutdown")
        try:
            await self._cm_backend.shutdown()
        except Exception as exc:
            self._cm_recorder.event("raise", "shutdown", detail=repr(exc))
            self._cm_recorder.violate("SD-1", f"shutdown() raised {exc!r}")
            raise
        self._cm_after_shutdown()

    def _cm_after_shutdown(self, state_clause: str = "LC-3") -> None:
        self._cm_recorder.event("return", "shutdown")
        ledger = self._cm_ledger
        ledger.shut_down = True
        self._cm_recorder.report(ledger.unfinished_findings())
        ledger.in_flight.clear()
        state = self._cm_backend.state()
        if inspect.iscoroutine(state):
            state.close()  # an async state() is LC-2's business, seen elsewhere
            return
        self._cm_recorder.report(ledger.shutdown_state_findings(state, state_clause))
        if state is spec.BackendState.SHUTDOWN:
            ledger.last_state = state

    # -- callbacks -------------------------------------------------------------

    def _cm_wrapper(self, generation: int) -> Callable[..., None]:
        # Extra keyword arguments (a backend's optional ones, such as a
        # service's ``service_callback=``) reach the engine's callback unchanged.
        def monitored_callback(task: Any, state: Any, **kwargs: Any) -> None:
            self._cm_on_state(generation, task, state, kwargs)

        return monitored_callback

    def _cm_on_state(
        self, generation: int, task: Any, state: Any, kwargs: dict[str, Any]
    ) -> None:
        ledger = self._cm_ledger
        uid = task_uid(task)
        self._cm_recorder.event("callback", "callback", uid, str(state))
        try:
            verdict = ledger.judge_delivery(
                generation,
                task,
                state,
                thread=threading.get_ident(),
                thread_name=threading.current_thread().name,
                inside_call=self._cm_steps.active(),
            )
            self._cm_recorder.report(verdict.findings)
            if verdict.state is not None:
                ledger.record(cast(str, uid), verdict.state)
        finally:
            # Deliver even after a violation, so the engine (or test) behind
            # the monitor sees the state and one broken rule does not cascade.
            func = self._cm_callback
            if func is not None and generation == ledger.generation:
                func(task, state, **kwargs)


class AwaitableMonitor(ContractMonitor):
    """Adds ``await monitor`` when the wrapped backend offers ``await`` (LC-5)."""

    def __await__(self) -> Generator[Any, None, ContractMonitor]:
        """Await the wrapped backend; it must return itself."""
        result = yield from self._cm_backend.__await__()
        self._cm_recorder.event("return", "__await__", detail=short(result))
        if result is not self._cm_backend:
            self._cm_recorder.violate(
                "LC-5", f"await backend returned {result!r}, not the backend"
            )
        return self


class ContextMonitor(ContractMonitor):
    """Adds ``async with monitor`` when the wrapped backend offers it (LC-6)."""

    async def __aenter__(self) -> ContractMonitor:
        """Enter the wrapped backend; it must bind the backend itself."""
        result = await self._cm_backend.__aenter__()
        self._cm_recorder.event("return", "__aenter__", detail=short(result))
        if result is not self._cm_backend:
            self._cm_recorder.violate(
                "LC-6", f"async with bound {result!r}, not the backend"
            )
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc_value: BaseException | None,
        traceback: TracebackType | None,
    ) -> bool | None:
        """Leave the wrapped backend; it must shut it down (checked like shutdown)."""
        self._cm_recorder.event("call", "__aexit__")
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
