"""`Deliveries`: the chaos backend's tasks in flight, and their states when due.

One role: hold each state a task is to get until the policy's delay has
passed, then deliver it, RUNNING before the terminal state and nothing after
it (ST-2, ST-4); at shutdown, deliver everything still held (SD-2).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from reference.chaos._entries import Entry
from reference.chaos._policy import ChaosDecisions, ChaosPolicy, sends_late_running
from reference.chaos._schedule import DueStates
from spec import TaskState

__all__ = ["Deliveries"]


class Deliveries:
    """The tasks in flight here, and the delivery of their held-back states.

    Args:
        policy: Decides each task's delays and RUNNING.
        report: Delivers one state to the engine.
        report_ready: Tells the engine a service is ready (SV-2).
    """

    def __init__(
        self,
        policy: ChaosPolicy,
        report: Callable[[dict[str, Any], TaskState], None],
        report_ready: Callable[[dict[str, Any], Any], None],
    ) -> None:
        self._policy = policy
        self._report = report
        self._report_ready = report_ready
        # The tasks in flight: the task dict itself until something happens
        # to it, then its Entry; a 10,000-task submit makes no objects (SC-3).
        self.in_flight: dict[str, Entry | dict[str, Any]] = {}
        # States held back, delivered by one pump in bursts.
        self.due: DueStates[Entry] = DueStates(self._deliver)

    def entry(self, uid: str) -> Entry | None:
        """The entry of an accepted task in flight, made on first use."""
        found = self.in_flight.get(uid)
        if found is None or isinstance(found, Entry):
            return found
        entry = self.in_flight[uid] = Entry(found)
        return entry

    def owns(self, entry: Entry) -> bool:
        """Whether ``entry`` is still in flight (not delivered or dropped)."""
        return self.in_flight.get(entry.uid) is entry

    def decide(self, entry: Entry) -> ChaosDecisions:
        """The policy's decisions for ``entry``, drawn once."""
        found = entry.decisions
        if found is None:
            found = entry.decisions = self._policy.decisions(entry.uid)
        return found

    def _now(self) -> float:
        return (self.due.loop or asyncio.get_running_loop()).time()

    def hold_running(self, entry: Entry) -> None:
        """Deliver ``entry``'s RUNNING after its delay (an on-time RUNNING)."""
        entry.running_pending = True
        self.due.hold(self._now() + self.decide(entry).running_delay, entry, False)

    def hold_ready(self, entry: Entry, service_callback: Any) -> None:
        """Deliver a service's readiness after its running delay (SV-2)."""
        entry.ready = service_callback
        loop = self.due.loop or asyncio.get_running_loop()
        loop.call_later(self.decide(entry).running_delay, self.deliver_ready, entry)

    def deliver_ready(self, entry: Entry) -> None:
        """Deliver a held readiness now: after RUNNING, before the end (SV-2)."""
        if entry.ready is None or not self.owns(entry):
            return
        if not entry.running_sent:
            # Readiness comes after RUNNING, whatever the RUNNING policy.
            entry.running_pending = True
            self._deliver_running(entry)
        ready, entry.ready = entry.ready, None
        self._report_ready(entry.task, ready)

    def hold_terminal(self, entry: Entry, state: TaskState) -> None:
        """Deliver ``state`` as ``entry``'s terminal state after its delay."""
        entry.terminal = state
        entry.due = self._now() + self.decide(entry).terminal_delay
        self.due.hold(entry.due, entry, True)
        if entry.waiter is not None and not entry.waiter.done():
            entry.waiter.set_result(None)

    def _deliver(self, entry: Entry, terminal: bool) -> None:
        if terminal:
            self._deliver_terminal(entry)
        else:
            self._deliver_running(entry)

    def _deliver_running(self, entry: Entry) -> None:
        if not entry.running_pending:
            return  # delivered already, just before the terminal state
        entry.running_pending = False
        if entry.running_sent or not self.owns(entry):
            return
        entry.running_sent = True
        self._report(entry.task, TaskState.RUNNING)

    def _deliver_terminal(self, entry: Entry) -> None:
        if not self.owns(entry) or entry.terminal is None:
            return
        state = entry.terminal
        if entry.running_pending:
            # Its RUNNING was due later: it still comes first (ST-4).
            self._deliver_running(entry)
        elif not entry.running_sent and sends_late_running(
            self.decide(entry), entry.saw_running, state
        ):
            # Held back until now (or never sent by the inner backend).
            entry.running_pending = True
            self._deliver_running(entry)
        if entry.ready is not None and state is not TaskState.CANCELED:
            self.deliver_ready(entry)  # held back until now: it still comes first
        # Dropped before the callback: a cancel from inside it returns False.
        self.drop(entry)
        if entry.lost and state is TaskState.FAILED:
            error = self._policy.worker_loss_error(entry.uid)
            entry.task.update(exception=error, stderr=str(error), return_value=None)
        self._report(entry.task, state)  # its one terminal state (ST-2)

    def drop(self, entry: Entry) -> None:
        """Forget ``entry``: nothing more is delivered for it."""
        del self.in_flight[entry.uid]
        if not self.in_flight:
            # A dict never shrinks; a fresh one releases a big batch's table (SC-1).
            self.in_flight = {}
        if entry.waiter is not None and not entry.waiter.done():
            entry.waiter.set_result(None)
        entry.waiter = None

    def flush(self) -> None:
        """Deliver every state still held back, in the order it was due (SD-2)."""
        self.due.clear()
        entries = sorted(
            (e for e in map(self.entry, list(self.in_flight)) if e is not None),
            key=lambda e: (e.terminal is None, e.due),
        )
        for entry in entries:
            if entry.terminal is None:
                # The inner backend never reported it: it will not run now.
                entry.running_pending = False
                entry.terminal = TaskState.CANCELED
                entry.lost = False
            self._deliver_terminal(entry)
