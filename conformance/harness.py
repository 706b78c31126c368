"""`Harness`: what a conformance test gets to drive one fresh backend.

The runner builds one per test: a new backend from the factory, wrapped in a
`ContractMonitor` (``on_violation="record"``), a private work directory, a
callback that records every state delivered, and a deadline. Tests build
tasks with the builders it inherits from `conformance.tasks.TaskBuilder`,
submit them through `Harness.backend` (the monitor), wait for states (on
the callback, never on sleeps), and judge with:

* `Harness.expect` -- record a failure and carry on (the usual way: one
  broken clause must not leave the others unverified);
* `Harness.check` / `Harness.fail` -- record a failure and stop the test,
  for when what follows cannot run (the rest of the test would only echo
  the same defect).

A test may only fail the clauses it declares (`UndeclaredClauseError`
otherwise). Besides, the monitor records every violation it sees, under its
own clause, and the harness's own waits blame the universal clauses: SB-1
(``submit_tasks`` does not return), ST-2 (a task never gets a terminal
state) and SD-4 (``shutdown()`` hangs).
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import spec
from conformance import processes
from conformance._deadline import within
from conformance.errors import (
    ContractViolation,
    NotApplicable,
    UndeclaredClauseError,
    recent,
)
from conformance.monitor import ContractMonitor, watch
from conformance.tasks import BLOCK_LIMIT, Blocker, TaskBuilder

__all__ = ["BLOCK_LIMIT", "Blocker", "Harness", "NotApplicable", "within"]

_T = TypeVar("_T")


_RECHECK = 0.2
"""Seconds a wait sleeps at most before looking at the monitor's findings."""

_STATES_GO_ELSEWHERE = frozenset({"LC-4"})
"""Monitor findings after which the states a test waits for never reach it
(they go to a replaced callback): the wait ends on the finding at once."""


class Harness(TaskBuilder):
    """One backend under test, watched, with helpers to drive and judge it.

    Args:
        backend: The freshly built backend.
        work_dir: A private directory for this test.
        deadline: ``time.monotonic()`` value by which the test body must end.
        factory: What built the backend, for tests that need fresh backends
            of their own (the stateful test builds one per example).
        clauses: The clauses the test declares; a failure under any other
            raises `UndeclaredClauseError`. ``None`` accepts every clause.

    Attributes:
        raw: The backend itself.
        backend: The `ContractMonitor` wrapping it; drive the backend through
            this (``await h.backend.cancel_task(uid)``).
        capabilities: `spec.capabilities_of` the backend.
        work_dir: The test's private directory (also the backend's
            ``_work_dir`` when it has one).
        clauses: As given.
        states: Every state delivered, per uid, in order.
        threads: The thread each uid's last state was delivered on.
        measurements: Figures the test reports (e.g. the loop stall).
        notes: Extra lines the report shows with the test's result.
        failures: What `expect` found broken so far, oldest first (`check`
            and `fail` raise instead; the runner records what ends the test).
        factory: The backend factory, when the runner gave it.
        baseline: The child processes alive before the backend was built
            (set by the runner), so a test can tell which ones it started.
        loop_stalls: How often the event loop stopped turning for seconds
            (see `on_loop_stall`).
        seed: The run's seed (``--seed``; set by the runner), for a test
            that randomises; ``None`` means "be repeatable".
    """

    def __init__(
        self,
        backend: Any,
        work_dir: Path,
        deadline: float,
        factory: Callable[[], Any] | None = None,
        *,
        clauses: Iterable[str] | None = None,
    ) -> None:
        super().__init__(spec.capabilities_of(backend), work_dir)
        self.raw = backend
        self.factory = factory
        self.clauses = None if clauses is None else frozenset(clauses)
        self.baseline: dict[int, processes.ProcessInfo] = {}
        self.deadline = deadline
        self._monitor = watch(backend, on_violation="record")
        self.backend: Any = self._monitor
        self.states: dict[str, list[Any]] = {}
        self.threads: dict[str, int] = {}
        self.measurements: dict[str, float] = {}
        self.notes: list[str] = []
        self.failures: list[ContractViolation] = []
        self._loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()
        self._changed = asyncio.Event()
        self._extra_callback: Callable[[Any, Any], None] | None = None
        # uids in the order their terminal states came: lets a wait for
        # 10,000 tasks look at each delivery once, not at every task each time.
        self._ended: list[str] = []
        self.loop_stalls = 0
        self.seed: int | None = None
        self._monitor.register_callback(self._on_state)

    @property
    def monitor(self) -> ContractMonitor:
        """Deprecated name of `backend` (the same object), typed as the monitor."""
        return self._monitor

    @property
    def soft_failures(self) -> list[ContractViolation]:
        """Deprecated name of `failures`."""
        return self.failures

    def on_loop_stall(self, seconds: float) -> None:
        """Let every blocker go: the event loop has not turned for ``seconds``.

        Called by the runner's watchdog thread. A backend blocking the loop
        until its tasks end (a synchronous ``executor.shutdown(wait=True)``)
        would otherwise hold the test until the blockers give up by
        themselves; released, they end, the backend returns, and the test
        judges what happened (`shutdown` fails SD-4 for it).
        """
        self.loop_stalls += 1
        self.notes.append(
            f"the event loop did not turn for {seconds:.1f} s; "
            "the suite released its blocking tasks"
        )
        self.release_all()

    # -- the callback --------------------------------------------------------

    def _on_state(self, task: Any, state: Any) -> None:
        uid = task.get("uid") if isinstance(task, dict) else None
        self.states.setdefault(str(uid), []).append(state)
        self.threads[str(uid)] = threading.get_ident()
        if _is_terminal(state):
            self._ended.append(str(uid))
        if threading.get_ident() == self._loop_thread:
            self._changed.set()
        else:  # a misbehaving backend; the monitor flags it, we just wake up
            self._loop.call_soon_threadsafe(self._changed.set)
        if self._extra_callback is not None:
            self._extra_callback(task, state)

    def also_call(self, func: Callable[[Any, Any], None] | None) -> None:
        """Call ``func(task, state)`` after recording each delivered state."""
        self._extra_callback = func

    # -- outcomes ------------------------------------------------------------

    def violation(
        self, clause_id: str, message: str, uid: str | None = None
    ) -> ContractViolation:
        """Build a `ContractViolation` of a declared clause, with the trace.

        Raises:
            UndeclaredClauseError: The test does not declare ``clause_id``.
        """
        self._declared(clause_id, message)
        return self._violation(clause_id, message, uid)

    def _declared(self, clause_id: str, message: str = "") -> None:
        if self.clauses is not None and clause_id not in self.clauses:
            raise UndeclaredClauseError(
                f"the test judges {clause_id}, which it does not declare (it "
                f"declares {', '.join(sorted(self.clauses))})"
                + (f": {message}" if message else "")
            )

    def _violation(
        self, clause_id: str, message: str, uid: str | None = None
    ) -> ContractViolation:
        # The harness's own universal clauses (SB-1, ST-2, SD-4) come here
        # directly: they are judged in every test, like the monitor's.
        return ContractViolation(clause_id, message, recent(self._monitor.events, uid))

    def fail(self, clause_id: str, message: str, uid: str | None = None) -> NoReturn:
        """Record a failure of ``clause_id`` and stop the test.

        Raises:
            ContractViolation: Always.
            UndeclaredClauseError: The test does not declare ``clause_id``.
        """
        raise self.violation(clause_id, message, uid)

    def check(
        self, condition: object, clause_id: str, message: str, uid: str | None = None
    ) -> None:
        """Fail on ``clause_id`` and stop the test unless ``condition`` is true.

        For a condition the rest of the test depends on; otherwise `expect`.
        The clause is checked against the declared ones even when
        ``condition`` holds, so a wrong declaration shows on any backend.
        """
        self._declared(clause_id, message)
        if not condition:
            raise self._violation(clause_id, message, uid)

    def expect(
        self, condition: object, clause_id: str, message: str, uid: str | None = None
    ) -> bool:
        """Record a failure on ``clause_id`` unless ``condition`` holds; carry on.

        Returns:
            ``condition`` as a bool.

        Raises:
            UndeclaredClauseError: The test does not declare ``clause_id``
                (checked even when ``condition`` holds).
        """
        self._declared(clause_id, message)
        if not condition:
            self.failures.append(self._violation(clause_id, message, uid))
        return bool(condition)

    def remaining(self) -> float:
        """Seconds left before the test's deadline."""
        return max(0.0, self.deadline - time.monotonic())

    async def wait_gone(
        self, procs: dict[int, processes.ProcessInfo], grace: float
    ) -> dict[int, processes.ProcessInfo]:
        """Wait up to ``grace`` s for ``procs`` to exit; return the survivors."""
        return await processes.wait_gone(procs, grace)

    # -- driving the backend -------------------------------------------------

    async def submit(self, tasks: list[Any]) -> None:
        """Submit through the monitor, failing SB-1 if it does not return in time.

        An exception the backend raises propagates (the monitor has judged it).
        """
        try:
            await within(self.backend.submit_tasks(tasks), self.remaining())
        except asyncio.TimeoutError:
            raise self._violation(
                "SB-1", f"submit_tasks of {len(tasks)} task(s) did not return"
            ) from None

    async def wait_for(
        self,
        condition: Callable[[], bool],
        clause_id: str,
        message: str,
        timeout: float | None = None,
    ) -> None:
        """Wait (on delivered states) until ``condition()`` holds, or fail.

        Args:
            condition: Checked after every delivered state.
            clause_id: Blamed if the condition never holds (a declared one).
            message: Says what never happened.
            timeout: Seconds; defaults to the time left before the deadline.

        Raises:
            ContractViolation: The condition did not hold in time.
        """
        self._declared(clause_id, message)
        limit = self._limit(timeout)
        if not await self._until(condition, limit):
            self.fail(clause_id, f"{message} within {limit:.1f} s")

    def _limit(self, timeout: float | None) -> float:
        return self.remaining() if timeout is None else min(timeout, self.remaining())

    async def _until(
        self, condition: Callable[[], bool], timeout: float | None
    ) -> bool:
        """Wait until ``condition()`` holds; False if the time ran out first.

        A violation the monitor records does not end the wait: one broken
        rule must not cut the test short (the states may still come).
        """
        end = time.monotonic() + self._limit(timeout)
        while not condition():
            left = end - time.monotonic()
            if left <= 0 or self._monitor.shut_down:
                # After shutdown() returned no state may come (SD-3).
                return False
            for violation in self._monitor.violations:
                if violation.clause_id in _STATES_GO_ELSEWHERE:
                    raise violation  # the cause; a timeout would be its echo
            self._changed.clear()
            try:
                # Woken by each delivered state; the slice bounds how late a
                # finding that delivers nothing to us (LC-4) is noticed.
                await asyncio.wait_for(self._changed.wait(), min(left, _RECHECK))
            except asyncio.TimeoutError:
                continue
        return True

    async def wait_terminal(
        self,
        uids: Iterable[str],
        timeout: float | None = None,
        clause_id: str | None = None,
    ) -> dict[str, spec.TaskState]:
        """Wait until every uid has a terminal state; return them.

        Args:
            uids: The tasks.
            timeout: Seconds; defaults to the time left before the deadline.
            clause_id: Blamed for a task that never gets one (a declared
                clause); ST-2, the universal rule, by default.

        Raises:
            ContractViolation: A task got no terminal state in time.
        """
        wanted = list(uids)
        if clause_id is not None:
            self._declared(clause_id)
        seen = len(self._ended)
        pending = {
            uid
            for uid in wanted
            if not any(_is_terminal(s) for s in self.states.get(uid, ()))
        }

        def done() -> bool:
            nonlocal seen
            ended = self._ended
            pending.difference_update(ended[seen:])
            seen = len(ended)
            return not pending

        limit = self._limit(timeout)
        if not await self._until(done, limit):
            shown = ", ".join(sorted(pending)[:5])
            when = (
                "before shutdown() returned"
                if self._monitor.shut_down
                else f"within {limit:.1f} s"
            )
            message = (
                f"{len(pending)} task(s) never reached a terminal state {when} "
                f"({shown}{', ...' if len(pending) > 5 else ''})"
            )
            first = sorted(pending)[0]
            if clause_id is None:
                raise self._violation("ST-2", message, first)
            self.fail(clause_id, message, first)
        return {uid: self.final(uid) for uid in wanted}

    async def run(
        self, tasks: list[dict[str, Any]], timeout: float | None = None
    ) -> dict[str, spec.TaskState]:
        """Submit ``tasks`` and wait for all their terminal states."""
        await self.submit(tasks)
        return await self.wait_terminal([t["uid"] for t in tasks], timeout)

    async def wait_started(self, blocker: Blocker, clause_id: str) -> None:
        """Wait until a blocker's task is running (its started file exists).

        Fails ``clause_id`` (a declared clause) if it ends or never starts.
        """
        self._declared(clause_id)
        end = time.monotonic() + self.remaining()
        while not blocker.started.exists():
            if any(spec.is_terminal(s) for s in self.states.get(blocker.uid, ())):
                self.fail(
                    clause_id,
                    f"blocking task ended {self.final(blocker.uid)} before it started",
                    blocker.uid,
                )
            if time.monotonic() > end:
                self.fail(clause_id, "blocking task never started", blocker.uid)
            # The task signals through a file (it may run in another process).
            await asyncio.sleep(0.01)

    async def shutdown(
        self, clause_id: str | None = None, timeout: float = 10.0
    ) -> None:
        """Shut the backend down through the monitor, failing if it hangs.

        Args:
            clause_id: Blamed if it does not return in time (a declared
                clause); SD-4, the universal rule, by default.
            timeout: Seconds it may take.
        """
        if clause_id is not None:
            self._declared(clause_id)
        stalls = self.loop_stalls
        began = time.monotonic()
        try:
            await within(self.backend.shutdown(), timeout)
        except asyncio.TimeoutError:
            message = f"shutdown() did not return within {timeout:.1f} s"
            raise self._violation(clause_id or "SD-4", message) from None
        if self.loop_stalls > stalls:
            # It returned only because the suite let its tasks go: recorded,
            # and the test goes on (the backend is shut down now).
            message = (
                f"shutdown() blocked the event loop ({time.monotonic() - began:.1f} s) "
                "until the suite released the tasks still running"
            )
            self.failures.append(self._violation(clause_id or "SD-4", message))

    # -- reading what was delivered -----------------------------------------

    def final(self, uid: str) -> spec.TaskState:
        """Return the terminal state delivered for ``uid`` (fails ST-2 if none)."""
        for state in self.states.get(uid, ()):
            if spec.is_terminal(state):
                return spec.TaskState(state)
        raise self._violation("ST-2", f"task {uid!r} has no terminal state", uid)

    def delivered(self, uid: str) -> list[Any]:
        """Return every state delivered for ``uid``, in order."""
        return list(self.states.get(uid, ()))

    def measure(self, name: str, value: float) -> None:
        """Record a figure for the report (e.g. ``"loop_stall_ms"``)."""
        self.measurements[name] = value

    def note(self, text: str) -> None:
        """Add a line the report shows with this test's result."""
        self.notes.append(text)


def _is_terminal(state: Any) -> bool:
    try:
        return spec.is_terminal(state)
    except TypeError:  # an unhashable "state": ST-1's failure, not ours
        return False
