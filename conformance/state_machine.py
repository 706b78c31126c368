"""Stateful property-based testing: random interleavings of submit, cancel, shutdown.

`BackendMachine` is a hypothesis `RuleBasedStateMachine`. Each example builds
a fresh backend from a factory, wraps it in a `ContractMonitor`, and drives it
through a random sequence of steps:

* ``submit`` a batch (possibly empty) mixing quick, slow, failing and
  executable tasks, only of kinds the backend's capabilities allow, plus
  tasks with nothing to run;
* ``cancel`` a submitted uid (in flight, finished, or never submitted);
* ``release`` a slow task, ``settle`` (let the backend work for a moment);
* ``shutdown`` (more than once, too), then ``submit`` again (must be refused).

The monitor checks every call and every delivered state as it happens; after
every step the machine also checks its own model of the run, and at the end
of each example it waits for every task and checks the invariants:

* every accepted task has exactly one terminal state (ST-2), nothing after it
  (ST-3), and none after ``shutdown()`` returned (SD-3);
* a task ends CANCELED if and only if ``cancel_task`` returned True for it
  (CN-4) or ``shutdown()`` found it unfinished (SD-2);
* a task neither cancelled nor caught by shutdown ends as its kind says
  (quick DONE, failing FAILED, nothing-to-run FAILED).

Hypothesis state machines are synchronous: the machine owns an event loop
(created in ``__init__``, closed in ``teardown``) and runs each step's
coroutine on it with a timeout, so the backend delivers its callbacks on the
loop's thread and a hanging backend fails a step rather than the run.

Use `run_stateful` to run it (the conformance test
``stateful.random_interleavings`` does), or `machine_for` to get the class,
whose ``TestCase`` attribute pytest collects.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import random
import shutil
import tempfile
import threading
import time
from collections.abc import Awaitable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, NoReturn, TypeVar

from hypothesis import HealthCheck, Phase, settings
from hypothesis import strategies as st
from hypothesis.errors import Flaky
from hypothesis.reporting import with_reporter
from hypothesis.stateful import (
    RuleBasedStateMachine,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

import spec
from conformance import _payloads
from conformance.errors import ContractViolation, recent
from conformance.monitor import watch
from conformance.target import BackendFactory, build_backend

__all__ = [
    "STEP_TIMEOUT",
    "BackendMachine",
    "StatefulRun",
    "kinds_for",
    "machine_for",
    "run_stateful",
]

_T = TypeVar("_T")
_C = spec.Capability
_S = spec.TaskState

STEP_TIMEOUT = 5.0
"""Seconds one step (a call, or waiting for the tasks at the end) may take."""

_BLOCK_LIMIT = 10.0
"""Seconds a slow task waits for its release before ending on its own."""

_MAX_BATCH = 6
_THEN = ("nothing", "nothing", "nothing", "cancel-first", "cancel-all", "shutdown")
"""What a submit step does right after submit_tasks returns, in the same turn
(repeats weight the choice: shutting down ends the example's submissions)."""
_SLOW_SCRIPT = (
    "#!/bin/sh\n"
    "i=0\n"
    'while [ ! -e "$1" ] && [ -d "$2" ] && [ $i -lt 200 ]; do '
    "sleep 0.05; i=$((i+1)); done\n"
)


@dataclass(frozen=True)
class _Kind:
    """A kind of task the machine submits, and how it must end if left alone."""

    name: str
    expected: spec.TaskState
    clause: str
    """Blamed when such a task, not cancelled nor shut down, ends otherwise."""
    slow: bool = False


_KINDS = {
    kind.name: kind
    for kind in (
        _Kind("nothing-to-run", _S.FAILED, "SB-5"),
        _Kind("quick-function", _S.DONE, "RS-1"),
        _Kind("failing-function", _S.FAILED, "RS-3"),
        _Kind("slow-function", _S.DONE, "RS-1", slow=True),
        _Kind("quick-executable", _S.DONE, "RS-4"),
        _Kind("failing-executable", _S.FAILED, "RS-4"),
        _Kind("slow-executable", _S.DONE, "RS-4", slow=True),
        _Kind("dry-function", _S.DONE, "RS-10"),
        _Kind("dry-executable", _S.DONE, "RS-10"),
        _Kind("dry-prompt", _S.DONE, "RS-10"),
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


class _Tracked:
    """The machine's model of one accepted task."""

    __slots__ = ("cancel_promised", "caught_by_shutdown", "kind", "release", "task")

    def __init__(self, task: dict[str, Any], kind: _Kind, release: Path | None) -> None:
        self.task = task
        self.kind = kind
        self.release = release
        self.cancel_promised = False
        self.caught_by_shutdown = False


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
    """Drives one fresh backend per example; see the module docstring.

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
        self._tracked: dict[str, _Tracked] = {}
        self._states: dict[str, list[Any]] = {}
        self._uids = itertools.count(1)
        self._shutdown_called = False
        self._shut_down = False
        self._delivered = 0
        self._delivered_at_shutdown = 0
        self._failed = False
        self._current: tuple[str, str] | None = None
        self.log: list[str] = []
        if self.tally is not None:
            self.tally.examples += 1
        raw = self._run(build_backend(factory), "LC-1", "building the backend")
        self.raw = raw
        if hasattr(raw, "_work_dir"):
            raw._work_dir = str(self._work_dir)
        self.kinds = [_KINDS[k] for k in kinds_for(spec.capabilities_of(raw))]
        self.monitor = watch(raw, on_violation="record")
        self.monitor.register_callback(self._on_state)
        script = self._work_dir / "slow.sh"
        script.write_text(_SLOW_SCRIPT)
        script.chmod(0o755)

    # -- plumbing --------------------------------------------------------------

    def _on_state(self, task: Any, state: Any) -> None:
        uid = task.get("uid") if isinstance(task, dict) else None
        self._states.setdefault(str(uid), []).append(state)
        self._delivered += 1
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

    def _terminal(self, uid: str) -> list[Any]:
        return [s for s in self._states.get(uid, ()) if spec.is_terminal(s)]

    def _unfinished(self, *, slow_too: bool = True) -> list[str]:
        return [
            uid
            for uid, t in self._tracked.items()
            if not self._terminal(uid)
            and (slow_too or not t.kind.slow or (t.release and t.release.exists()))
        ]

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

    def _build(self, kind: _Kind) -> tuple[dict[str, Any], Path | None]:
        uid = f"{kind.name}.{next(self._uids):04d}"
        release = self._work_dir / f"{uid}.release" if kind.slow else None
        task: dict[str, Any] = {"uid": uid, "name": kind.name}
        if kind.name == "nothing-to-run":
            task.update(function=None, executable=None)
        elif kind.name in ("quick-function", "dry-function"):
            task.update(function=_payloads.echo, args=[uid], kwargs={})
        elif kind.name == "failing-function":
            task.update(function=_payloads.fail, args=["planned failure"], kwargs={})
        elif kind.name == "slow-function":
            started = str(self._work_dir / f"{uid}.started")
            args = [started, str(release), _BLOCK_LIMIT]
            task.update(function=_payloads.block, args=args, kwargs={})
        elif kind.name == "slow-executable":
            task.update(
                function=None,
                executable=str(self._work_dir / "slow.sh"),
                arguments=[str(release), str(self._work_dir)],
            )
        elif kind.name in ("quick-executable", "dry-executable"):
            task.update(function=None, executable="true", arguments=[])
        elif kind.name == "failing-executable":
            task.update(function=None, executable="false", arguments=[])
        else:  # dry-prompt
            task.update(function=None, executable=None, prompt="say hello")
        task.setdefault("task_backend_specific_kwargs", {})
        return task, release

    def _pick(self, index: int) -> str:
        uids = list(self._tracked)
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

    async def _submit(self, kinds: list[_Kind]) -> list[str]:
        built = [self._build(kind) for kind in kinds]
        for task, release in built:
            self._tracked[task["uid"]] = _Tracked(task, _KINDS[task["name"]], release)
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
        was_terminal = bool(self._terminal(uid))
        promised = await self._call(
            self.monitor.cancel_task(uid), "CN-1", f"cancel_task({uid!r})", "CN-1"
        )
        self.log.append(f"cancel {uid} -> {promised!r}")
        tracked = self._tracked.get(uid)
        if promised is True and tracked is not None and not was_terminal:
            tracked.cancel_promised = True

    async def _shutdown(self) -> None:
        self.log.append("shutdown")
        self._shutdown_called = True
        for uid in self._unfinished():
            self._tracked[uid].caught_by_shutdown = True
        await self._call(self.monitor.shutdown(), "SD-1", "shutdown()", "SD-4")
        if self._shut_down:
            return
        self._shut_down = True
        self._delivered_at_shutdown = self._delivered
        left = self._unfinished()
        if left:
            self._fail(
                "SD-2",
                f"shutdown() returned with {len(left)} task(s) not reported "
                f"in a terminal state: {left[:5]}",
            )

    # -- rules -----------------------------------------------------------------

    @precondition(lambda self: not self._shutdown_called)
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

    @precondition(lambda self: bool(self._tracked))
    @rule(pick=st.integers(0, 63), unknown=st.booleans())
    def cancel(self, pick: int, unknown: bool) -> None:
        """Cancel a submitted task, or a uid never submitted."""
        uid = f"never-submitted.{pick}" if unknown else self._pick(pick)
        with self._step():
            self._run(self._cancel(uid), "CN-1", f"cancel_task({uid!r})")

    @precondition(
        lambda self: any(
            t.release is not None and not t.release.exists()
            for t in self._tracked.values()
        )
    )
    @rule(pick=st.integers(0, 63))
    def release(self, pick: int) -> None:
        """Let one slow task finish."""
        waiting = [
            (t.task["uid"], t.release)
            for t in self._tracked.values()
            if t.release is not None and not t.release.exists()
        ]
        uid, release = waiting[pick % len(waiting)]
        with self._step():
            self.log.append(f"release {uid}")
            release.touch()

    # Preconditions read only the machine's own model, never what the backend
    # has done by now: hypothesis must see the same rules enabled on replay.
    @precondition(lambda self: bool(self._tracked) and not self._shut_down)
    @rule()
    def settle(self) -> None:
        """Let the backend work until the tasks that can finish have (0.1 s at most)."""
        with self._step():
            self.log.append("settle")

            async def wait() -> None:
                await self._until(lambda: not self._unfinished(slow_too=False), 0.1)

            self._run(wait(), "ST-2", "settling")

    @precondition(lambda self: len(self._tracked) >= 3 or self._shutdown_called)
    @rule()
    def shutdown(self) -> None:
        """Shut the backend down (again, if it already is)."""
        with self._step():
            self._run_for(self._shutdown(), "SD-4", "shutdown()", 2 * self.step_timeout)

    @precondition(lambda self: self._shut_down)
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
        if self._shut_down and self._delivered != self._delivered_at_shutdown:
            self._fail(
                "SD-3",
                f"{self._delivered - self._delivered_at_shutdown} state(s) "
                "delivered after shutdown() returned",
            )
        for uid, tracked in self._tracked.items():
            terminal = self._terminal(uid)
            if len(terminal) > 1:
                self._fail("ST-2", f"task {uid!r} has terminal states {terminal}")
            if not terminal:
                continue
            self._check_outcome(uid, tracked, spec.TaskState(terminal[0]))

    def _check_outcome(self, uid: str, tracked: _Tracked, state: _S) -> None:
        if tracked.cancel_promised:
            if state is not _S.CANCELED:
                self._fail(
                    "CN-4",
                    f"cancel_task({uid!r}) returned True, the task ended {state}",
                )
            return
        if state is _S.CANCELED:
            if not tracked.caught_by_shutdown:
                self._fail(
                    "CN-4",
                    f"task {uid!r} ended CANCELED, but no cancel_task returned True "
                    "for it and shutdown() had not been called",
                )
            return
        if tracked.caught_by_shutdown:
            return  # it finished while shutdown() ran: any single outcome
        if self.judged is not None and tracked.kind.clause not in self.judged:
            return  # e.g. SB-5 or RS-3: the business of their own tests
        if state is not tracked.kind.expected:
            error = tracked.task.get("exception")
            self._fail(
                tracked.kind.clause,
                f"a {tracked.kind.name} task ({uid!r}) ended {state}, not "
                f"{tracked.kind.expected} (exception={error!r})",
            )

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
        if not self._shut_down:

            async def wait() -> bool:
                return await self._until(
                    lambda: not self._unfinished(), self.step_timeout
                )

            if not self._run_for(wait(), "ST-2", "waiting", self.step_timeout + 1):
                left = self._unfinished()
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
        for uid in self._tracked:
            if len(self._terminal(uid)) != 1:
                self._fail("ST-2", f"task {uid!r} ended with {self._states.get(uid)}")

    def _release_all(self) -> None:
        for tracked in self._tracked.values():
            if tracked.release is not None and self._work_dir.is_dir():
                tracked.release.touch()

    def _cleanup(self) -> None:
        loop = self._loop
        try:
            self._release_all()
            if not self._shut_down:
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


def machine_for(
    factory: BackendFactory,
    *,
    step_timeout: float = STEP_TIMEOUT,
    base_dir: str | Path | None = None,
    judged: Iterable[str] | None = None,
) -> type[BackendMachine]:
    """Return a `BackendMachine` subclass bound to ``factory``.

    Args:
        factory: Builds a fresh backend (a class, or a zero-argument sync or
            async factory); called once per example.
        step_timeout: Seconds each step may take.
        base_dir: Where each example's scratch directory goes.
        judged: Only violations of these clauses end a run (``None``: all).

    Returns:
        The machine class; its ``TestCase`` attribute is a unittest case
        pytest collects.
    """
    attrs = {
        "factory": staticmethod(factory),
        "step_timeout": step_timeout,
        "base_dir": None if base_dir is None else str(base_dir),
        "tally": StatefulRun(),
        "judged": None if judged is None else frozenset(judged),
    }
    name = f"{getattr(factory, '__name__', 'Backend')}Machine"
    machine = type(name, (BackendMachine,), attrs)
    return machine


def _violation_in(exc: BaseException) -> ContractViolation | None:
    """Find the first ContractViolation in ``exc`` or the exceptions it groups."""
    if isinstance(exc, ContractViolation):
        return exc
    for inner in getattr(exc, "exceptions", ()):
        found = _violation_in(inner)
        if found is not None:
            return found
    return None


@contextlib.contextmanager
def _seeded(seed: int | None) -> Iterator[None]:
    """Seed hypothesis's draws in this thread.

    Hypothesis has no public knob for that in a state machine run outside a
    test function.
    """
    if seed is None:
        yield
        return
    from hypothesis import core

    local = getattr(core, "threadlocal", None)
    if local is None or not hasattr(local, "_hypothesis_global_random"):
        yield  # an unknown hypothesis: its own random draws, unseeded
        return
    saved = local._hypothesis_global_random
    local._hypothesis_global_random = random.Random(seed)
    try:
        yield
    finally:
        local._hypothesis_global_random = saved


def run_stateful(
    factory: BackendFactory,
    *,
    max_examples: int = 8,
    steps: int = 12,
    step_timeout: float = STEP_TIMEOUT,
    base_dir: str | Path | None = None,
    shrink: bool = False,
    seed: int | None = None,
    judged: Iterable[str] | None = None,
) -> StatefulRun:
    """Run the state machine against fresh backends from ``factory``.

    Without an example database; derandomised (so a run is repeatable)
    unless a ``seed`` picks other random runs, the same for the same seed.

    Args:
        factory: Builds a fresh backend; called once per example.
        max_examples: Random runs.
        steps: Most steps per run.
        step_timeout: Seconds each step may take.
        base_dir: Where each example's scratch directory goes.
        shrink: Let hypothesis shrink a failing run to a minimal one (slower).
        seed: Draw the random runs from this seed (``--seed``); ``None``
            for the fixed, derandomised ones.
        judged: Only violations of these clauses end a run (``None``: all).

    Returns:
        What was run.

    Raises:
        ContractViolation: A run broke a clause; the message lists the steps
            of the failing run (and hypothesis's own replay of it).
    """
    machine = machine_for(
        factory, step_timeout=step_timeout, base_dir=base_dir, judged=judged
    )
    phases = [Phase.explicit, Phase.generate] + ([Phase.shrink] if shrink else [])
    config = settings(
        max_examples=max_examples,
        stateful_step_count=steps,
        deadline=None,
        derandomize=seed is None,
        database=None,
        phases=phases,
        suppress_health_check=list(HealthCheck),
        report_multiple_bugs=False,
        print_blob=False,
    )
    lines: list[str] = []
    began = time.monotonic()
    try:
        with with_reporter(lambda value: lines.append(str(value))), _seeded(seed):
            run_state_machine_as_test(machine, settings=config)
    except (ContractViolation, Flaky) as exc:
        found = _violation_in(exc)
        if found is None:
            raise
        notes = [str(n) for n in getattr(exc, "__notes__", ())]
        notes += [
            str(n) for n in getattr(found, "__notes__", ()) if str(n) not in notes
        ]
        replay = "\n".join(
            line
            for text in lines + notes
            for line in text.splitlines()
            if line.strip() and "model_holds()" not in line  # invariants: noise
        )
        flaky = isinstance(exc, Flaky)
        note = " (it did not fail again on replay: timing-dependent)" if flaky else ""
        raise ContractViolation(
            found.clause_id,
            f"{found.message}{note}\nhypothesis replay:\n{replay}",
            found.trace,
        ) from exc
    tally = machine.tally or StatefulRun()
    tally.seconds = time.monotonic() - began
    return tally
