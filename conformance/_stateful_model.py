"""The stateful machine's model of a backend: what it was asked, what it reported.

No I/O here: no loop, no threads, no files touched. `RunModel` keeps the
tasks the machine submitted (`TrackedTask`), the states the backend
delivered, and the calls that change what a task may end as (a cancel
promised, a shutdown). Its ``*_findings`` methods return the rules the run
breaks, as ``(clause ID, message)`` pairs; the machine
(`conformance.state_machine.BackendMachine`) drives the backend and fails on
the first one.
"""

from __future__ import annotations

import itertools
from collections.abc import Collection, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import spec
from conformance import _payloads

__all__ = [
    "BLOCK_LIMIT",
    "KINDS",
    "Kind",
    "RunModel",
    "TrackedTask",
    "build_task",
    "kinds_for",
]

_C = spec.Capability
_S = spec.TaskState

BLOCK_LIMIT = 10.0
"""Seconds a slow task waits for its release before ending on its own."""

SLOW_SCRIPT = (
    "#!/bin/sh\n"
    "i=0\n"
    'while [ ! -e "$1" ] && [ -d "$2" ] && [ $i -lt 200 ]; do '
    "sleep 0.05; i=$((i+1)); done\n"
)
"""``slow.sh``: waits until its release file exists (or the work dir is gone)."""


@dataclass(frozen=True)
class Kind:
    """A kind of task the machine submits, and how it must end if left alone."""

    name: str
    expected: spec.TaskState
    clause: str
    """Blamed when such a task, not cancelled nor shut down, ends otherwise."""
    slow: bool = False


KINDS = {
    kind.name: kind
    for kind in (
        Kind("nothing-to-run", _S.FAILED, "SB-5"),
        Kind("quick-function", _S.DONE, "RS-1"),
        Kind("failing-function", _S.FAILED, "RS-3"),
        Kind("slow-function", _S.DONE, "RS-1", slow=True),
        Kind("quick-executable", _S.DONE, "RS-4"),
        Kind("failing-executable", _S.FAILED, "RS-4"),
        Kind("slow-executable", _S.DONE, "RS-4", slow=True),
        Kind("dry-function", _S.DONE, "RS-10"),
        Kind("dry-executable", _S.DONE, "RS-10"),
        Kind("dry-prompt", _S.DONE, "RS-10"),
    )
}


def kinds_for(capabilities: Iterable[spec.Capability]) -> tuple[str, ...]:
    """Return the kinds of task the machine submits to a backend with ``capabilities``.

    A task with nothing to run is always among them (every backend must fail
    it); the others follow the capabilities: a dry-run backend gets tasks of
    every kind it completes, a real one quick, slow and failing functions
    and executables.
    """
    caps = frozenset(capabilities)
    kinds = ["nothing-to-run"]
    if _C.DRY_RUN in caps:
        kinds += ["dry-function", "dry-executable"]
        if _C.PROMPTS in caps:
            kinds.append("dry-prompt")
        return tuple(kinds)
    if _C.FUNCTIONS in caps:
        kinds += ["quick-function", "failing-function", "slow-function"]
    if _C.EXECUTABLES in caps:
        kinds += ["quick-executable", "failing-executable", "slow-executable"]
    return tuple(kinds)


def build_task(
    kind: Kind, uid: str, work_dir: Path
) -> tuple[dict[str, Any], Path | None]:
    """Return a task of ``kind`` and, for a slow one, the file that releases it.

    Slow tasks wait for their release file under ``work_dir``; a slow
    executable runs ``work_dir / "slow.sh"`` (`SLOW_SCRIPT`).
    """
    release = work_dir / f"{uid}.release" if kind.slow else None
    task: dict[str, Any] = {"uid": uid, "name": kind.name}
    if kind.name == "nothing-to-run":
        task.update(function=None, executable=None)
    elif kind.name in ("quick-function", "dry-function"):
        task.update(function=_payloads.echo, args=[uid], kwargs={})
    elif kind.name == "failing-function":
        task.update(function=_payloads.fail, args=["planned failure"], kwargs={})
    elif kind.name == "slow-function":
        started = str(work_dir / f"{uid}.started")
        args = [started, str(release), BLOCK_LIMIT]
        task.update(function=_payloads.block, args=args, kwargs={})
    elif kind.name == "slow-executable":
        task.update(
            function=None,
            executable=str(work_dir / "slow.sh"),
            arguments=[str(release), str(work_dir)],
        )
    elif kind.name in ("quick-executable", "dry-executable"):
        task.update(function=None, executable="true", arguments=[])
    elif kind.name == "failing-executable":
        task.update(function=None, executable="false", arguments=[])
    else:  # dry-prompt
        task.update(function=None, executable=None, prompt="say hello")
    task.setdefault("task_backend_specific_kwargs", {})
    return task, release


class TrackedTask:
    """The machine's model of one accepted task."""

    __slots__ = (
        "cancel_promised",
        "caught_by_shutdown",
        "kind",
        "release",
        "released",
        "task",
    )

    def __init__(self, task: dict[str, Any], kind: Kind, release: Path | None) -> None:
        self.task = task
        self.kind = kind
        self.release = release
        self.released = False
        self.cancel_promised = False
        self.caught_by_shutdown = False

    @property
    def waiting(self) -> bool:
        """Whether it is a slow task not yet released."""
        return self.release is not None and not self.released


Finding = tuple[str, str]
"""A broken rule: (clause ID, message)."""


class RunModel:
    """What one random run asked of the backend and what the backend reported.

    Attributes:
        tracked: The submitted tasks by uid, in submission order.
        states: Every state delivered, by uid (``str(uid)`` of what was passed).
        shutdown_called: Whether ``shutdown()`` has been called.
        shut_down: Whether ``shutdown()`` has returned.
        delivered: How many states were delivered.
    """

    def __init__(self) -> None:
        self.tracked: dict[str, TrackedTask] = {}
        self.states: dict[str, list[Any]] = {}
        self.shutdown_called = False
        self.shut_down = False
        self.delivered = 0
        self._delivered_at_shutdown = 0
        self._uids = itertools.count(1)

    def new_uid(self, kind: Kind) -> str:
        """Return a fresh uid for a task of ``kind``."""
        return f"{kind.name}.{next(self._uids):04d}"

    def track(self, task: dict[str, Any], release: Path | None) -> None:
        """Note a task about to be submitted."""
        self.tracked[task["uid"]] = TrackedTask(task, KINDS[task["name"]], release)

    def deliver(self, uid: Any, state: Any) -> None:
        """Note a state the backend delivered."""
        self.states.setdefault(str(uid), []).append(state)
        self.delivered += 1

    def terminal(self, uid: str) -> list[Any]:
        """Return the terminal states delivered for ``uid``."""
        return [s for s in self.states.get(uid, ()) if spec.is_terminal(s)]

    def unfinished(self, *, slow_too: bool = True) -> list[str]:
        """Return the tracked uids without a terminal state.

        Args:
            slow_too: Include slow tasks not yet released (they cannot finish).
        """
        return [
            uid
            for uid, t in self.tracked.items()
            if not self.terminal(uid) and (slow_too or not t.waiting)
        ]

    def waiting(self) -> list[TrackedTask]:
        """Return the slow tasks not yet released."""
        return [t for t in self.tracked.values() if t.waiting]

    def cancel_answered(self, uid: str, promised: Any, was_terminal: bool) -> None:
        """Note ``cancel_task(uid)`` returning ``promised``.

        Args:
            uid: The uid cancelled.
            promised: What it returned.
            was_terminal: Whether the task had a terminal state before the call.
        """
        tracked = self.tracked.get(uid)
        if promised is True and tracked is not None and not was_terminal:
            tracked.cancel_promised = True

    def shutdown_called_now(self) -> None:
        """Note a ``shutdown()`` call: the unfinished tasks may end CANCELED."""
        self.shutdown_called = True
        for uid in self.unfinished():
            self.tracked[uid].caught_by_shutdown = True

    def shutdown_returned(self) -> list[Finding]:
        """Note the first ``shutdown()`` returning; return what it left (SD-2)."""
        self.shut_down = True
        self._delivered_at_shutdown = self.delivered
        left = self.unfinished()
        if not left:
            return []
        return [
            (
                "SD-2",
                f"shutdown() returned with {len(left)} task(s) not reported "
                f"in a terminal state: {left[:5]}",
            )
        ]

    def findings(self, judged: Collection[str] | None = None) -> list[Finding]:
        """Return what the run breaks so far, checked after every step.

        Args:
            judged: The clauses an outcome is judged against; ``None``: all.
        """
        found = []
        late = self.delivered - self._delivered_at_shutdown
        if self.shut_down and late:
            found.append(
                ("SD-3", f"{late} state(s) delivered after shutdown() returned")
            )
        for uid, tracked in self.tracked.items():
            terminal = self.terminal(uid)
            if len(terminal) > 1:
                found.append(("ST-2", f"task {uid!r} has terminal states {terminal}"))
            if terminal:
                state = spec.TaskState(terminal[0])
                found.extend(_outcome_findings(uid, tracked, state, judged))
        return found

    def final_findings(self) -> list[Finding]:
        """Return the tasks that did not end with exactly one terminal state."""
        return [
            ("ST-2", f"task {uid!r} ended with {self.states.get(uid)}")
            for uid in self.tracked
            if len(self.terminal(uid)) != 1
        ]


def _outcome_findings(
    uid: str, tracked: TrackedTask, state: _S, judged: Collection[str] | None
) -> list[Finding]:
    """Return what a task ending ``state`` breaks, given what it was asked."""
    if tracked.cancel_promised:
        if state is not _S.CANCELED:
            message = f"cancel_task({uid!r}) returned True, the task ended {state}"
            return [("CN-4", message)]
        return []
    if state is _S.CANCELED:
        if not tracked.caught_by_shutdown:
            message = (
                f"task {uid!r} ended CANCELED, but no cancel_task returned True "
                "for it and shutdown() had not been called"
            )
            return [("CN-4", message)]
        return []
    if tracked.caught_by_shutdown:
        return []  # it finished while shutdown() ran: any single outcome
    if judged is not None and tracked.kind.clause not in judged:
        return []  # e.g. SB-5 or RS-3: the business of their own tests
    if state is not tracked.kind.expected:
        error = tracked.task.get("exception")
        message = (
            f"a {tracked.kind.name} task ({uid!r}) ended {state}, not "
            f"{tracked.kind.expected} (exception={error!r})"
        )
        return [(tracked.kind.clause, message)]
    return []
