"""`BackendMachine`: the hypothesis rules that drive one backend per example.

The rules make the calls (submit, cancel, release, settle, shutdown) on a
loop the machine owns; what the run asked and what the backend reported is
kept in a `conformance._stateful_model.RunModel`, which also says what the run
breaks. `conformance.state_machine` describes the whole and runs it.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import tempfile
import threading
from collections.abc import Awaitable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, NoReturn, TypeVar

from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    invariant,
    precondition,
    rule,
)

import spec
from conformance._stateful_model import (
    KINDS,
    SLOW_SCRIPT,
    Finding,
    Kind,
    RunModel,
    TrackedTask,
    build_task,
    kinds_for,
)
from conformance.errors import ContractViolation, recent
from conformance.monitor import watch
from conformance.target import BackendFactory, build_backend

__all__ = ["STEP_TIMEOUT", "BackendMachine", "StatefulRun"]

_T = TypeVar("_T")
_C = spec.Capability
_S = spec.TaskState

STEP_TIMEOUT = 5.0
"""Seconds one step (a call, or waiting for the tasks at the end) may take."""

_MAX_BATCH = 6
_THEN = ("nothing", "nothing", "nothing", "cancel-first", "cancel-all", "shutdown")
"""What a submit step does right after submit_tasks returns, in the same turn
(repeats weight the choice: shutting down ends the example's submissions)."""


@dataclass
class StatefulRun:
    """What a `run_stateful` call did.

    Attributes:
        examples: Random runs (each on a fresh backend).
        steps: Steps taken over all of them.
        tasks: Tasks submitted over all of them.
        seconds: Wall time.
    """

    examples: int = 0
    steps: int = 0
    tasks: int = 0
    seconds: float = 0.0


class BackendMachine(RuleBasedStateMachine):
    """Drives one fresh backend per example; see `conformance.state_machine`.

    Use `machine_for` to get a subclass bound to a backend factory.
    """

    factory: ClassVar[BackendFactory | None] = None
    step_timeout: ClassVar[float] = STEP_TIMEOUT
    base_dir: ClassVar[str | None] = None
    tally: ClassVar[StatefulRun | None] = None
    judged: ClassVar[frozenset[str] | None] = None
    """The clauses whose violations end a run; ``None``: every clause. Other
    violations are left to the tests of their own clauses, so one broken
    rule (states as plain strings, say) does not hide the interleavings."""

    def __init__(self) -> None:
        super().__init__()
        factory = type(self).factory
        if factory is None:
            raise TypeError("use machine_for(factory) to bind BackendMachine")
        self._loop = asyncio.new_event_loop()
        self._loop_thread = threading.get_ident()
        self._work_dir = Path(tempfile.mkdtemp(prefix="stateful-", dir=self.base_dir))
        # Set on every delivered state; steps waiting for states wait on it.
        self._changed = asyncio.Event()
        self.model = RunModel()
        self._failed = False
        self._current: tuple[str, str] | None = None
        self.log: list[str] = []
        if self.tally is not None:
            self.tally.examples += 1
        raw = self._run(build_backend(factory), "LC-1", "building the backend")
        self.raw = raw
        if hasattr(raw, "_work_dir"):
            raw._work_dir = str(self._work_dir)
        self.kinds = [KINDS[k] for k in kinds_for(spec.capabilities_of(raw))]
        self.monitor = watch(raw, on_violation="record")
        self.monitor.register_callback(self._on_state)
        script = self._work_dir / "slow.sh"
        script.write_text(SLOW_SCRIPT)
        script.chmod(0o755)

    # -- plumbing --------------------------------------------------------------

    def _on_state(self, task: Any, state: Any) -> None:
        uid = task.get("uid") if isinstance(task, dict) else None
        self.model.deliver(uid, state)
        if threading.get_ident() == self._loop_thread:
            self._changed.set()
        else:  # a misbehaving backend; the monitor flags it (ST-4)
            self._loop.call_soon_threadsafe(self._changed.set)

    @contextlib.contextmanager
    def _step(self) -> Iterator[None]:
        if self.tally is not None:
            self.tally.steps += 1
        try:
            yield
            self._check_monitor()
        except BaseException:
            self._failed = True
            raise

    def _run(self, awaitable: Awaitable[_T], clause_id: str, what: str) -> _T:
        return self._run_for(awaitable, clause_id, what, self.step_timeout)

    def _run_for(
        self, awaitable: Awaitable[_T], clause_id: str, what: str, timeout: float
    ) -> _T:
        async def bounded() -> _T:
            self._current = None
            try:
                return await asyncio.wait_for(awaitable, timeout)
            except asyncio.TimeoutError:
                clause_id_now, what_now = self._current or (clause_id, what)
                self._fail(
                    clause_id_now, f"{what_now} did not finish within {timeout:.1f} s"
                )

        return self._loop.run_until_complete(bounded())

    def _fail_first(self, findings: list[Finding]) -> None:
        if findings:
            self._fail(*findings[0])

    def _fail(self, clause_id: str, message: str) -> NoReturn:
        self._failed = True
        monitor = getattr(self, "monitor", None)
        trace = recent(monitor.events) if monitor is not None else []
        raise ContractViolation(clause_id, f"{message}\n{self._steps_text()}", trace)

    def _steps_text(self) -> str:
        shown = self.log[-25:]
        more = (
            f"({len(self.log) - len(shown)} earlier) "
            if len(shown) < len(self.log)
            else ""
        )
        return "steps of this random run: " + more + "; ".join(shown)

    def _check_monitor(self) -> None:
        judged = self.judged
        found = [
            v
            for v in self.monitor.violations
            if judged is None or v.clause_id in judged
        ]
        if found:
            first = found[0]
            self._failed = True
            raise ContractViolation(
                first.clause_id, f"{first.message}\n{self._steps_text()}", first.trace
            )

    async def _until(self, done: Any, limit: float) -> bool:
        """Wait on delivered states until ``done()`` or ``limit`` seconds pass."""
        end = self._loop.time() + limit
        while not done():
            left = end - self._loop.time()
            if left <= 0:
                return False
            self._changed.clear()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._changed.wait(), left)
        return True

    def _build(self, kind: Kind) -> tuple[dict[str, Any], Path | None]:
        return build_task(kind, self.model.new_uid(kind), self._work_dir)

    def _pick(self, index: int) -> str:
        uids = list(self.model.tracked)
        return uids[index % len(uids)]

    # -- operations (one call each, inside a step's coroutine) -----------------

    async def _call(
        self, awaitable: Awaitable[_T], clause_id: str, what: str, hang: str
    ) -> _T:
        """Await one backend call.

        An exception it raises fails ``clause_id``, a hang (the step's timeout)
        fails ``hang``.
        """
        self._current = (hang, what)
        try:
            return await awaitable
        except ContractViolation:
            raise
        except Exception as exc:
            self._check_monitor()  # the monitor usually names the precise clause
            self._fail(clause_id, f"{what} raised {exc!r}")

    async def _submit(self, kinds: list[Kind]) -> list[str]:
        built = [self._build(kind) for kind in kinds]
        for task, release in built:
            self.model.track(task, release)
        uids = [task["uid"] for task, _ in built]
        self.log.append(f"submit {uids}")
        if self.tally is not None:
            self.tally.tasks += len(built)
        batch = [task for task, _ in built]
        await self._call(
            self.monitor.submit_tasks(batch),
            "SB-1",
            f"submit_tasks of {len(batch)}",
            "SB-1",
        )
        return uids

    async def _cancel(self, uid: str) -> None:
        was_terminal = bool(self.model.terminal(uid))
        promised = await self._call(
            self.monitor.cancel_task(uid), "CN-1", f"cancel_task({uid!r})", "CN-1"
        )
        self.log.append(f"cancel {uid} -> {promised!r}")
        self.model.cancel_answered(uid, promised, was_terminal)

    async def _shutdown(self) -> None:
        self.log.append("shutdown")
        self.model.shutdown_called_now()
        await self._call(self.monitor.shutdown(), "SD-1", "shutdown()", "SD-4")
        if not self.model.shut_down:
            self._fail_first(self.model.shutdown_returned())

    # -- rules -----------------------------------------------------------------

    @precondition(lambda self: not self.model.shutdown_called)
    @rule(
        picks=st.lists(st.integers(0, 15), min_size=1, max_size=_MAX_BATCH),
        then=st.sampled_from(_THEN),
    )
    def submit(self, picks: list[int], then: str) -> None:
        """Submit a batch of tasks of the kinds the backend offers.

        ``then`` is done in the same loop turn, before the backend can have
        run anything: cancel some of the batch, or shut down.
        """
        kinds = [self.kinds[p % len(self.kinds)] for p in picks]

        async def step() -> None:
            uids = await self._submit(kinds)
            if then == "cancel-first" and uids:
                await self._cancel(uids[0])
            elif then == "cancel-all":
                for uid in uids:
                    await self._cancel(uid)
            elif then == "shutdown":
                await self._shutdown()

        with self._step():
            self._run_for(step(), "SB-1", "submit_tasks", 2 * self.step_timeout)

    @precondition(lambda self: bool(self.model.tracked))
    @rule(pick=st.integers(0, 63), unknown=st.booleans())
    def cancel(self, pick: int, unknown: bool) -> None:
        """Cancel a submitted task, or a uid never submitted."""
        uid = f"never-submitted.{pick}" if unknown else self._pick(pick)
        with self._step():
            self._run(self._cancel(uid), "CN-1", f"cancel_task({uid!r})")

    @precondition(lambda self: bool(self.model.waiting()))
    @rule(pick=st.integers(0, 63))
    def release(self, pick: int) -> None:
        """Let one slow task finish."""
        waiting = self.model.waiting()
        tracked = waiting[pick % len(waiting)]
        with self._step():
            self.log.append(f"release {tracked.task['uid']}")
            self._release(tracked)

    # Preconditions read only the machine's own model, never what the backend
    # has done by now: hypothesis must see the same rules enabled on replay.
    @precondition(lambda self: bool(self.model.tracked) and not self.model.shut_down)
    @rule()
    def settle(self) -> None:
        """Let the backend work until the tasks that can finish have (0.1 s at most)."""
        with self._step():
            self.log.append("settle")

            async def wait() -> None:
                await self._until(
                    lambda: not self.model.unfinished(slow_too=False), 0.1
                )

            self._run(wait(), "ST-2", "settling")

    @precondition(
        lambda self: len(self.model.tracked) >= 3 or self.model.shutdown_called
    )
    @rule()
    def shutdown(self) -> None:
        """Shut the backend down (again, if it already is)."""
        with self._step():
            self._run_for(self._shutdown(), "SD-4", "shutdown()", 2 * self.step_timeout)

    @precondition(lambda self: self.model.shut_down)
    @rule()
    def submit_after_shutdown(self) -> None:
        """A batch submitted after shutdown is refused with BackendShutdownError."""
        task, _ = self._build(self.kinds[-1])
        with self._step():
            self.log.append(f"submit after shutdown [{task['uid']!r}]")
            try:
                self._run(
                    self.monitor.submit_tasks([task]), "SB-7", "submit after shutdown"
                )
            except spec.BackendShutdownError:
                return
            except ContractViolation:
                raise
            except Exception as exc:
                self._check_monitor()
                self._fail("SB-7", f"submit after shutdown raised {exc!r}")
            self._check_monitor()
            self._fail("SB-7", "submit_tasks accepted a batch after shutdown()")

    # -- invariants ------------------------------------------------------------

    @invariant()
    def model_holds(self) -> None:
        """After every step: the monitor saw nothing wrong; the model holds."""
        self._check_monitor()
        self._fail_first(self.model.findings(self.judged))

    # -- the end of an example ---------------------------------------------------

    def teardown(self) -> None:
        """Wait for every task, check the final invariants, close everything."""
        try:
            if not self._failed:
                with self._step():
                    self.log.append("end: release all, wait for every task")
                    self._finish()
        finally:
            self._cleanup()

    def _finish(self) -> None:
        self._release_all()
        if not self.model.shut_down:

            async def wait() -> bool:
                return await self._until(
                    lambda: not self.model.unfinished(), self.step_timeout
                )

            if not self._run_for(wait(), "ST-2", "waiting", self.step_timeout + 1):
                left = self.model.unfinished()
                self._fail(
                    "ST-2",
                    f"{len(left)} accepted task(s) never reached a terminal state "
                    f"within {self.step_timeout:.1f} s: {left[:5]}",
                )
            self.model_holds()
            self.shutdown()

        async def quiet() -> None:
            # Absence cannot be awaited: give stragglers loop turns and a moment.
            for _ in range(10):
                await asyncio.sleep(0)
            await asyncio.sleep(0.02)

        self._run(quiet(), "SD-3", "waiting for stragglers")
        self.model_holds()
        self._fail_first(self.model.final_findings())

    def _release(self, tracked: TrackedTask) -> None:
        if tracked.release is not None and self._work_dir.is_dir():
            tracked.release.touch()
            tracked.released = True

    def _release_all(self) -> None:
        for tracked in self.model.waiting():
            self._release(tracked)

    def _cleanup(self) -> None:
        loop = self._loop
        try:
            self._release_all()
            if not self.model.shut_down:
                with contextlib.suppress(Exception):
                    loop.run_until_complete(
                        asyncio.wait_for(self.raw.shutdown(), 2 * self.step_timeout)
                    )
            pending = asyncio.all_tasks(loop)
            for task in pending:
                task.cancel()
            if pending:
                loop.run_until_complete(
                    asyncio.gather(*pending, return_exceptions=True)
                )
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.run_until_complete(loop.shutdown_default_executor())
        finally:
            loop.close()
            shutil.rmtree(self._work_dir, ignore_errors=True)
