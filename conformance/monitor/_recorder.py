"""The monitor's recording: the event trace and the violations found.

`Recorder` keeps the most recent events (calls, returns, raises and
callbacks, each with its thread and time) and turns the rules' findings into
`ContractViolation` objects carrying the trace that led to them. It decides
nothing about the contract: `conformance.monitor._findings` and
`conformance.monitor._ledger` do.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Iterable

from conformance.errors import ContractViolation, Event, recent
from conformance.monitor._findings import Finding

__all__ = ["KEPT_PER_CLAUSE", "Recorder"]

KEPT_PER_CLAUSE = 20
"""Violations of one clause a recording monitor keeps (it counts the rest)."""


class Recorder:
    """The event trace and the violations of one monitor.

    Args:
        raise_violations: Raise each violation as it is reported (it is kept
            as well), instead of only keeping it.
        max_events: How many recent events the trace keeps.

    Attributes:
        events: The most recent events, oldest first.
        violations: The violations kept, oldest first.
        counts: How many violations of each clause were reported.
    """

    def __init__(self, *, raise_violations: bool, max_events: int) -> None:
        self.raise_violations = raise_violations
        self.events: deque[Event] = deque(maxlen=max_events)
        self.violations: list[ContractViolation] = []
        self.counts: dict[str, int] = {}

    def event(
        self,
        kind: str,
        name: str,
        uid: str | None = None,
        state: str | None = None,
        detail: str = "",
    ) -> None:
        """Append an event seen now, on the current thread."""
        self.events.append(
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

    def report(self, findings: Iterable[Finding]) -> None:
        """Turn each finding into a violation, in order.

        Raises:
            ContractViolation: The first finding, when raising violations.
        """
        for finding in findings:
            self.violate(*finding)

    def violate(self, clause_id: str, message: str, uid: str | None = None) -> None:
        """Record (and maybe raise) one violation with the trace around ``uid``.

        Raises:
            ContractViolation: The violation, when raising violations.
        """
        count = self.counts.get(clause_id, 0) + 1
        self.counts[clause_id] = count
        if count > KEPT_PER_CLAUSE and not self.raise_violations:
            return  # counted; a 10,000-task batch need not keep 10,000 traces
        violation = ContractViolation(clause_id, message, recent(self.events, uid))
        self.violations.append(violation)
        if self.raise_violations:
            raise violation
