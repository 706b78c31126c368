"""The monitor's memory of the backend's tasks, and the rules that depend on it.

No I/O here: no threads, no loop, no clock. `TaskLedger` holds what the
monitor has seen (tasks accepted and not finished, tasks finished, tasks of
rejected batches, the last backend state) and answers each observation with
the findings it breaks, as ``(clause ID, message, uid)`` tuples, in the order
the checks run (the rules that need no memory are in
`conformance.monitor._findings`). The proxy around it
(`conformance.monitor._proxy`) makes the calls, records the trace and turns
findings into `ContractViolation`.

When the monitor raises on the first violation, a state must not be recorded
after a broken rule (the backend may deliver again), so
each judgement returns its findings first and leaves the bookkeeping to a
separate step (`TaskLedger.record`, `TaskLedger.accept`, ...) the proxy runs
only when no finding was raised.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any, NamedTuple

import spec
from conformance.monitor._findings import (
    Expected,
    Finding,
    backend_state_findings,
    expected_rejection,
    rejection_findings,
    short,
    task_uid,
)

__all__ = ["FINISHED_MEMORY", "Delivery", "TaskLedger", "TaskRecord"]

FINISHED_MEMORY = 100_000
"""How many finished uids the monitor remembers (for ST-3 and CN-3)."""


class TaskRecord:
    """What the monitor knows about one accepted, unfinished task."""

    __slots__ = ("cancel_promised", "last", "task", "thread")

    def __init__(self, task: dict[str, Any], thread: int) -> None:
        self.task = task
        self.thread = thread
        self.last: spec.TaskState | None = None
        self.cancel_promised = False


class Delivery(NamedTuple):
    """The verdict on one state delivery.

    Attributes:
        findings: The rules the delivery breaks.
        state: The state to record (`TaskLedger.record`), or ``None`` when
            the delivery must not change what the monitor knows.
    """

    findings: list[Finding]
    state: spec.TaskState | None


class TaskLedger:
    """What the monitor has seen of the backend, and the rules over it.

    Attributes:
        in_flight: The accepted, unfinished tasks by uid, in acceptance order.
        finished: The last `FINISHED_MEMORY` finished uids and their states.
        rejected: The uids of rejected batches, and the clause that rejected them.
        last_state: The last valid ``state()`` result seen.
        shut_down: Whether ``shutdown()`` has returned.
        accepted_any: Whether a batch has been accepted.
        generation: How many callbacks the engine has registered.
    """

    def __init__(self) -> None:
        self.in_flight: dict[str, TaskRecord] = {}
        self.finished: OrderedDict[str, spec.TaskState] = OrderedDict()
        self.rejected: dict[str, str] = {}
        self.last_state: spec.BackendState | None = None
        self.shut_down = False
        self.accepted_any = False
        self.generation = 0

    # -- submission ------------------------------------------------------------

    def expected_for(self, tasks: Any) -> Expected | None:
        """Return the rejection the contract demands for ``tasks`` now."""
        if self.shut_down:
            return Expected("SB-7", spec.BackendShutdownError, -1)
        return expected_rejection(tasks, self.in_flight)

    def accept(self, tasks: list[dict[str, Any]], thread: int) -> list[str]:
        """Track a valid batch as in flight before it is submitted; return its uids."""
        in_flight = self.in_flight
        uids = []
        for task in tasks:
            uid = task["uid"]
            in_flight[uid] = TaskRecord(task, thread)
            uids.append(uid)
        return uids

    def submit_raised(
        self, tasks: Any, uids: list[str], expected: Expected | None, exc: Exception
    ) -> list[Finding]:
        """Forget a batch whose submission raised; return what the raise breaks."""
        findings = []
        for uid in uids:
            record = self.in_flight.pop(uid, None)
            if record is not None and record.last is not None:
                findings.append(
                    Finding(
                        "SB-1",
                        f"submit_tasks raised {exc!r} after reporting "
                        f"{record.last} for task {uid!r}: half-submitted batch",
                        uid,
                    )
                )
        findings.extend(rejection_findings(tasks, expected, exc, self.accepted_any))
        return findings

    def submit_returned(
        self, tasks: Any, expected: Expected | None, result: Any
    ) -> list[Finding]:
        """Note an accepted batch; return what accepting it (and ``result``) breaks."""
        self.accepted_any = True
        findings = []
        if expected is not None:
            for task in tasks if isinstance(tasks, (list, tuple)) else ():
                if isinstance(task, dict) and isinstance(task.get("uid"), str):
                    self.rejected[task["uid"]] = expected.clause_id
            findings.append(
                Finding(
                    expected.clause_id,
                    "submit_tasks accepted a batch it must reject with "
                    f"{expected.error.__name__}",
                )
            )
        if result is not None:
            findings.append(
                Finding("SB-1", f"submit_tasks returned {short(result)}, not None")
            )
        return findings

    # -- cancellation ----------------------------------------------------------

    def cancel_started(self, uid: Any) -> tuple[bool, bool]:
        """Return whether ``uid`` is (in flight, finished) as a cancel begins."""
        if not isinstance(uid, str):
            return False, False
        return uid in self.in_flight, uid in self.finished

    @staticmethod
    def cancel_raised(
        uid: Any, known: bool, finished: bool, exc: Exception
    ) -> list[Finding]:
        """Return what a raising ``cancel_task(uid)`` breaks (CN-1..CN-3).

        Args:
            uid: The argument passed.
            known: Whether ``uid`` was in flight when the call began.
            finished: Whether it had finished when the call began.
            exc: What it raised.
        """
        if known:
            message = f"cancel_task({uid!r}) raised {exc!r}, not a bool"
            return [Finding("CN-1", message, uid)]
        clause_id = "CN-3" if finished else "CN-2"
        return [Finding(clause_id, f"cancel_task({uid!r}) raised {exc!r}", uid)]

    def cancel_returned(self, uid: Any, known: bool, result: Any) -> list[Finding]:
        """Judge ``cancel_task(uid)`` returning ``result`` (CN-1..CN-4).

        A promise (``True``) for a task still in flight is noted, so a later
        DONE or FAILED breaks CN-4.

        Args:
            uid: The argument passed.
            known: Whether ``uid`` was in flight when the call began.
            result: What it returned.
        """
        findings = []
        if type(result) is not bool:
            findings.append(
                Finding(
                    "CN-1",
                    f"cancel_task({uid!r}) returned {result!r} "
                    f"({type(result).__name__}), not a bool",
                    uid,
                )
            )
        if not result:
            return findings
        key = uid if isinstance(uid, str) else None
        record = self.in_flight.get(key) if key is not None else None
        ended = self.finished.get(key) if key is not None else None
        if record is not None:
            record.cancel_promised = True
        elif known:
            # In flight when the call began, it ended during the call (a
            # delivery from inside cancel_task is ST-5's finding): the
            # promise is kept only if it ended CANCELED.
            if ended is not None and ended is not spec.TaskState.CANCELED:
                findings.append(
                    Finding(
                        "CN-4",
                        f"cancel_task({uid!r}) returned True, but the task was "
                        f"reported {ended} during the call",
                        uid,
                    )
                )
        elif ended is not None:
            findings.append(
                Finding(
                    "CN-3",
                    f"cancel_task({uid!r}) returned True for a task already "
                    f"reported {ended}",
                    uid,
                )
            )
        else:
            findings.append(
                Finding(
                    "CN-2",
                    f"cancel_task({uid!r}) returned True for an unknown uid",
                    uid,
                )
            )
        return findings

    # -- shutdown --------------------------------------------------------------

    def unfinished_findings(self) -> list[Finding]:
        """Return SD-2's finding if accepted tasks are unfinished (at shutdown)."""
        left = list(self.in_flight)
        if not left:
            return []
        shown = ", ".join(repr(u) for u in left[:5])
        more = f" and {len(left) - 5} more" if len(left) > 5 else ""
        message = (
            f"shutdown() returned before reporting {len(left)} accepted "
            f"task(s) in a terminal state: {shown}{more}"
        )
        return [Finding("SD-2", message, left[0])]

    def shutdown_state_findings(
        self, state: Any, state_clause: str = "LC-3"
    ) -> list[Finding]:
        """Return what ``state()`` right after shutdown returned breaks.

        Args:
            state: What ``state()`` returned.
            state_clause: The clause a state other than ``SHUTDOWN`` breaks
                (LC-6 after ``async with``).
        """
        if state != spec.BackendState.SHUTDOWN:
            message = f"state() is {state!r} after shutdown() returned, not SHUTDOWN"
            return [Finding(state_clause, message)]
        return backend_state_findings(self.last_state, state)

    # -- deliveries ------------------------------------------------------------

    def judge_delivery(
        self,
        generation: int,
        task: Any,
        state: Any,
        *,
        thread: int,
        thread_name: str,
        inside_call: bool,
    ) -> Delivery:
        """Judge one state delivered to the callback of ``generation``.

        Args:
            generation: Which registered callback the backend called.
            task: The task it passed.
            state: The state it passed.
            thread: The identity of the delivering thread.
            thread_name: Its name, for the message.
            inside_call: Whether ``submit_tasks`` or ``cancel_task`` was
                running on that thread at the time (ST-5).
        """
        uid = task_uid(task)
        findings = []
        if generation != self.generation:
            findings.append(
                Finding(
                    "LC-4",
                    f"state {state} delivered to a callback replaced by a later "
                    "register_callback()",
                    uid,
                )
            )
        if self.shut_down:
            findings.append(
                Finding(
                    "SD-3", f"state {state} delivered after shutdown() returned", uid
                )
            )
        if inside_call:
            findings.append(
                Finding(
                    "ST-5",
                    f"state {state} delivered from inside submit_tasks/cancel_task",
                    uid,
                )
            )
        if not isinstance(state, spec.TaskState):
            findings.append(
                Finding(
                    "ST-1",
                    f"delivered state {state!r} ({type(state).__name__}) is not a "
                    "spec.TaskState member",
                    uid,
                )
            )
            try:
                state = spec.TaskState(state)
            except ValueError:
                return Delivery(findings, None)
        record = self.in_flight.get(uid) if uid is not None else None
        if record is None:
            findings.append(self._unknown_delivery(task, uid, state))
            return Delivery(findings, None)
        if thread != record.thread:
            findings.append(
                Finding(
                    "ST-4",
                    f"state {state} delivered on thread {thread_name!r}, not on "
                    "the event-loop thread that submitted the task",
                    uid,
                )
            )
        if task is not record.task:
            findings.append(
                Finding(
                    "ST-6", f"state {state} delivered with a different dict object", uid
                )
            )
        if state not in spec.TASK_TRANSITIONS[record.last]:
            findings.append(Finding("ST-3", f"state {state} after {record.last}", uid))
            return Delivery(findings, None)
        if record.cancel_promised and state in (
            spec.TaskState.DONE,
            spec.TaskState.FAILED,
        ):
            findings.append(
                Finding(
                    "CN-4",
                    f"task reported {state} after cancel_task returned True",
                    uid,
                )
            )
        return Delivery(findings, state)

    def _unknown_delivery(
        self, task: Any, uid: str | None, state: spec.TaskState
    ) -> Finding:
        if uid is None:
            return Finding(
                "ST-6", f"state {state} delivered with {task!r}, not a task dict"
            )
        if uid in self.finished:
            return Finding(
                "ST-3",
                f"state {state} after the terminal state {self.finished[uid]}",
                uid,
            )
        if uid in self.rejected:
            return Finding(
                self.rejected[uid],
                f"state {state} delivered for a task of a rejected batch",
                uid,
            )
        return Finding(
            "ST-2", f"state {state} delivered for a task never accepted", uid
        )

    def record(self, uid: str, state: spec.TaskState) -> None:
        """Note ``state`` as the task's latest (after `judge_delivery` allowed it)."""
        record = self.in_flight[uid]
        record.last = state
        if state in spec.TERMINAL_STATES:
            del self.in_flight[uid]
            finished = self.finished
            finished[uid] = state
            finished.move_to_end(uid)
            if len(finished) > FINISHED_MEMORY:
                finished.popitem(last=False)
