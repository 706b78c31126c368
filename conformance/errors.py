"""`ContractViolation` and its trace; the suite's own exceptions.

`NotApplicable` ends a test that cannot run on a backend;
`UndeclaredClauseError` is a bug in a test.
"""

from __future__ import annotations

from collections.abc import Iterable, Reversible
from dataclasses import dataclass

__all__ = [
    "TRACE_LINES",
    "ContractViolation",
    "Event",
    "NotApplicable",
    "UndeclaredClauseError",
    "format_trace",
    "recent",
]

TRACE_LINES = 40
"""How many events a violation carries as its trace, at most."""


@dataclass(frozen=True)
class Event:
    """One thing the contract monitor saw happen.

    Attributes:
        kind: ``"call"``, ``"return"``, ``"raise"`` (a backend method) or
            ``"callback"`` (a state the backend delivered).
        name: The method name, or ``"callback"``.
        uid: The task concerned, when there is one.
        state: The state delivered (callbacks) or returned (``state()``).
        thread: Name of the thread it happened on.
        time: ``time.monotonic()`` when it happened.
        detail: Anything else worth showing (batch size, return value).
    """

    kind: str
    name: str
    uid: str | None
    state: str | None
    thread: str
    time: float
    detail: str = ""

    def format(self, origin: float = 0.0) -> str:
        """Render the event as one trace line, time relative to ``origin``."""
        parts = [f"{(self.time - origin) * 1000:9.3f} ms", f"{self.kind:<8}"]
        parts.append(self.name)
        if self.uid is not None:
            parts.append(f"uid={self.uid!r}")
        if self.state is not None:
            parts.append(f"state={self.state}")
        parts.append(f"thread={self.thread}")
        if self.detail:
            parts.append(self.detail)
        return " ".join(parts)


def format_trace(events: Iterable[Event], origin: float | None = None) -> list[str]:
    """Render events as trace lines, times relative to the first (or ``origin``).

    Args:
        events: The events, oldest first.
        origin: The monotonic time shown as 0; defaults to the first event's.

    Returns:
        One line per event.
    """
    items = list(events)
    if not items:
        return []
    start = items[0].time if origin is None else origin
    return [event.format(start) for event in items]


def recent(
    events: Iterable[Event], uid: str | None = None, lines: int = TRACE_LINES
) -> list[Event]:
    """Return the last ``lines`` events, keeping only those concerning ``uid``.

    Reads ``events`` from its end when it can (a list or deque), so taking a
    trace costs the same however long the history is: a backend breaking a
    rule on every one of 10,000 tasks must not make the monitor quadratic.

    Args:
        events: The events, oldest first.
        uid: A task uid: drop events about other tasks (events about no task
            are kept, as context). ``None`` keeps every event.
        lines: How many events to return, at most.

    Returns:
        The selected events, oldest first.
    """
    newest_first = reversed(events) if isinstance(events, Reversible) else None
    if newest_first is None:
        kept = [e for e in events if uid is None or e.uid in (None, uid)]
        return kept[-lines:] if lines > 0 else []
    picked: list[Event] = []
    for event in newest_first:
        if len(picked) >= lines:
            break
        if uid is None or event.uid in (None, uid):
            picked.append(event)
    picked.reverse()
    return picked


class ContractViolation(Exception):
    """A backend broke a clause of the contract.

    Raised by the contract monitor (and by the suite's checks) with the ID of
    the broken clause and the monitor's event trace leading up to it. It is a
    real exception, never an ``assert``, so it survives ``python -O``.

    Attributes:
        clause_id: The broken clause, e.g. ``"ST-2"``.
        message: What was seen.
        trace: The events that lead to it, oldest first.
    """

    def __init__(
        self, clause_id: str, message: str, trace: Iterable[Event] = ()
    ) -> None:
        self.clause_id = clause_id
        self.message = message
        self.trace: tuple[Event, ...] = tuple(trace)
        super().__init__(f"[{clause_id}] {message}")

    def evidence(self, max_lines: int = 12) -> list[str]:
        """Return the message and the last ``max_lines`` trace lines."""
        lines = [f"[{self.clause_id}] {self.message}"]
        trace = format_trace(self.trace)
        if len(trace) > max_lines:
            omitted = len(trace) - max_lines
            trace = [f"... {omitted} earlier event(s)", *trace[-max_lines:]]
        lines.extend("  " + line for line in trace)
        return lines


class NotApplicable(Exception):
    """Raised by a test that cannot exercise its clause on this backend."""


class UndeclaredClauseError(Exception):
    """A test tried to fail a clause it does not declare: a bug in the test.

    Every failure a test reports must be cited by one of the clauses it
    declares (``@cites(...)``), so that selecting a clause (``--clauses``)
    runs every test that can fail it. The runner reports this as an error of
    the suite, never as a finding about the backend.
    """
