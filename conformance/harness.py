"""`Harness`: what a conformance test gets to drive one fresh backend.

The runner builds one per test: a new backend from the factory, wrapped in a
`ContractMonitor` (``on_violation="record"``), a private work directory, a
callback that records every state delivered, and a deadline. Tests build
tasks with the helpers here, submit them through the monitor, wait for
states (on the callback, never on sleeps), and fail with `Harness.check` /
`Harness.fail`, which raise `ContractViolation` carrying the trace.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import stat
import threading
import time
from collections.abc import Awaitable, Callable, Iterable
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import spec
from conformance import _payloads, processes
from conformance.errors import ContractViolation, recent
from conformance.monitor import ContractMonitor

__all__ = ["BLOCK_LIMIT", "Blocker", "Harness", "NotApplicable", "within"]

_T = TypeVar("_T")

BLOCK_LIMIT = 20.0
"""Seconds a blocking task waits for its release before ending on its own."""


class NotApplicable(Exception):
    """Raised by a test that cannot exercise its clause on this backend."""


class Blocker:
    """A task that runs until released, with a file telling when it started.

    Attributes:
        task: The task dict to submit.
        started: Path created once the task runs.
        release: Path whose creation lets it finish.
    """

    def __init__(self, task: dict[str, Any], started: Path, release: Path) -> None:
        self.task = task
        self.started = started
        self.release = release

    @property
    def uid(self) -> str:
        """The task's uid."""
        return str(self.task["uid"])

    def let_go(self) -> None:
        """Let the task finish."""
        self.release.touch()


class Harness:
    """One backend under test, watched, with helpers to drive it.

    Args:
        backend: The freshly built backend.
        work_dir: A private directory for this test.
        deadline: ``time.monotonic()`` value by which the test body must end.
        factory: What built the backend, for tests that need fresh backends
            of their own (the stateful test builds one per example).

    Attributes:
        raw: The backend itself.
        backend: The `ContractMonitor` wrapping it; submit through this.
        monitor: Same object as `backend`, named for what it checks.
        capabilities: `spec.capabilities_of` the backend.
        work_dir: The test's private directory (also the backend's
            ``_work_dir`` when it has one).
        states: Every state delivered, per uid, in order.
        measurements: Figures the test reports (e.g. the loop stall).
        factory: The backend factory, when the runner gave it.
        baseline: The child processes alive before the backend was built
            (set by the runner), so a test can tell which ones it started.
    """

    def __init__(
        self,
        backend: Any,
        work_dir: Path,
        deadline: float,
        factory: Callable[[], Any] | None = None,
    ) -> None:
        self.raw = backend
        self.factory = factory
        # Set by the runner: the processes alive before the backend was built.
        self.baseline: dict[int, processes.ProcessInfo] = {}
        self.capabilities = spec.capabilities_of(backend)
        self.work_dir = work_dir
        self.deadline = deadline
        self.monitor = ContractMonitor(backend, on_violation="record")
        self.backend: Any = self.monitor
        self.states: dict[str, list[Any]] = {}
        self.threads: dict[str, int] = {}
        self.measurements: dict[str, float] = {}
        self.notes: list[str] = []
        self.soft_failures: list[ContractViolation] = []
        self.blockers: list[Blocker] = []
        self._loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()
        self._changed = asyncio.Event()
        self._uids = itertools.count(1)
        self._extra_callback: Callable[[Any, Any], None] | None = None
        self.monitor.register_callback(self._on_state)

    # -- the callback --------------------------------------------------------

    def _on_state(self, task: Any, state: Any) -> None:
        uid = task.get("uid") if isinstance(task, dict) else None
        self.states.setdefault(str(uid), []).append(state)
        self.threads[str(uid)] = threading.get_ident()
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

    def fail(self, clause_id: str, message: str, uid: str | None = None) -> NoReturn:
        """Fail the test on ``clause_id`` with the monitor's trace as evidence.

        Raises:
            ContractViolation: Always.
        """
        raise ContractViolation(clause_id, message, recent(self.monitor.events, uid))

    def check(
        self, condition: object, clause_id: str, message: str, uid: str | None = None
    ) -> None:
        """Fail on ``clause_id`` unless ``condition`` is true."""
        if not condition:
            self.fail(clause_id, message, uid)

    def expect(
        self, condition: object, clause_id: str, message: str, uid: str | None = None
    ) -> bool:
        """Record a failure on ``clause_id`` unless ``condition`` holds; carry on.

        For a test checking several clauses, so that one broken clause does
        not leave the others unverified. Returns ``condition`` as a bool.
        """
        if not condition:
            try:
                self.fail(clause_id, message, uid)
            except ContractViolation as exc:
                self.soft_failures.append(exc)
        return bool(condition)

    def not_applicable(self, reason: str) -> NoReturn:
        """End the test as not applicable to this backend.

        Raises:
            NotApplicable: Always.
        """
        raise NotApplicable(reason)

    def has(self, capability: spec.Capability) -> bool:
        """Tell whether the backend declares ``capability``."""
        return capability in self.capabilities

    def remaining(self) -> float:
        """Seconds left before the test's deadline."""
        return max(0.0, self.deadline - time.monotonic())

    # -- building tasks ------------------------------------------------------

    def uid(self, prefix: str = "task") -> str:
        """Return a uid unique within this test."""
        return f"{prefix}.{next(self._uids):06d}"

    def function_task(
        self,
        func: Callable[..., Any],
        *args: Any,
        uid: str | None = None,
        **kwargs: Any,
    ) -> dict[str, Any]:
        """Build a function task calling ``func(*args, **kwargs)``."""
        return {
            "uid": uid or self.uid("function"),
            "name": getattr(func, "__name__", "function"),
            "function": func,
            "args": list(args),
            "kwargs": dict(kwargs),
            "executable": None,
            "arguments": [],
            "task_backend_specific_kwargs": {},
        }

    def executable_task(
        self,
        executable: str,
        arguments: Iterable[str] = (),
        *,
        uid: str | None = None,
        capture_stdio: bool = False,
        **backend_kwargs: Any,
    ) -> dict[str, Any]:
        """Build an executable task.

        ``backend_kwargs`` become its ``task_backend_specific_kwargs``.
        """
        return {
            "uid": uid or self.uid("executable"),
            "name": os.path.basename(executable),
            "function": None,
            "args": [],
            "kwargs": {},
            "executable": executable,
            "arguments": list(arguments),
            "capture_stdio": capture_stdio,
            "task_backend_specific_kwargs": dict(backend_kwargs),
        }

    def prompt_task(
        self, prompt: str = "say hello", uid: str | None = None
    ) -> dict[str, Any]:
        """Build a prompt task."""
        return {
            "uid": uid or self.uid("prompt"),
            "name": "prompt",
            "function": None,
            "executable": None,
            "prompt": prompt,
            "task_backend_specific_kwargs": {},
        }

    def script(self, body: str, name: str = "script.sh") -> str:
        """Write an executable ``/bin/sh`` script into the work dir; return its path."""
        path = self.work_dir / name
        path.write_text("#!/bin/sh\n" + body + "\n")
        path.chmod(path.stat().st_mode | stat.S_IXUSR)
        return str(path)

    def runnable_task(self, uid: str | None = None) -> dict[str, Any]:
        """Build a quick task this backend can run to ``DONE``, whatever it offers."""
        if self.has(spec.Capability.FUNCTIONS) or self.has(spec.Capability.DRY_RUN):
            return self.function_task(_payloads.echo, "ok", uid=uid)
        if self.has(spec.Capability.EXECUTABLES):
            return self.executable_task("true", uid=uid)
        if self.has(spec.Capability.PROMPTS):
            return self.prompt_task(uid=uid)
        self.not_applicable("the backend runs no kind of task")

    def can_block(self) -> bool:
        """Tell whether `blocker` can build a task that runs until released."""
        if self.has(spec.Capability.DRY_RUN):
            return False
        return self.has(spec.Capability.FUNCTIONS) or self.has(
            spec.Capability.EXECUTABLES
        )

    def blocker(self, uid: str | None = None) -> Blocker:
        """Build a task that runs until released (at most `BLOCK_LIMIT` s).

        A function task where the backend runs functions, else an executable.
        Not applicable to a backend that runs neither (or runs nothing).
        """
        if not self.can_block():
            self.not_applicable("the backend cannot run a task that blocks")
        uid = uid or self.uid("blocker")
        started = self.work_dir / f"{uid}.started"
        release = self.work_dir / f"{uid}.release"
        if self.has(spec.Capability.FUNCTIONS):
            task = self.function_task(
                _payloads.block, str(started), str(release), BLOCK_LIMIT, uid=uid
            )
        else:
            loop = (
                f'touch "{started}"; i=0; '
                f'while [ ! -e "{release}" ] && [ -d "{self.work_dir}" ] '
                f"&& [ $i -lt {int(BLOCK_LIMIT * 20)} ]; "
                "do sleep 0.05; i=$((i+1)); done"
            )
            task = self.executable_task(self.script(loop, f"{uid}.sh"), uid=uid)
        blocker = Blocker(task, started, release)
        self.blockers.append(blocker)
        return blocker

    def process_tree(self, uid: str | None = None) -> tuple[Blocker, Path]:
        """Build an executable task that starts a child and waits for it.

        The script writes its own pid and its child's to a file, then marks
        itself started; the child sleeps for a minute. Used to check that
        cancel and shutdown kill the whole process group (CN-5, SD-5).

        Returns:
            The blocker (its release is ignored) and the path of the pid file.
        """
        uid = uid or self.uid("tree")
        started = self.work_dir / f"{uid}.started"
        pids = self.work_dir / f"{uid}.pids"
        body = (
            "sleep 60 &\n"
            f'echo $! > "{pids}"\n'
            f'echo $$ >> "{pids}"\n'
            f'touch "{started}"\n'
            "wait"
        )
        task = self.executable_task(self.script(body, f"{uid}.sh"), uid=uid)
        blocker = Blocker(task, started, self.work_dir / f"{uid}.release")
        return blocker, pids

    @staticmethod
    def read_pids(path: Path) -> dict[int, processes.ProcessInfo]:
        """Read the pids a `process_tree` task wrote, with their identities."""
        pids = [int(line) for line in path.read_text().split() if line.strip()]
        return processes.snapshot(pids)

    async def wait_gone(
        self, procs: dict[int, processes.ProcessInfo], grace: float
    ) -> dict[int, processes.ProcessInfo]:
        """Wait up to ``grace`` s for ``procs`` to exit; return the survivors."""
        return await processes.wait_gone(procs, grace)

    def release_all(self) -> None:
        """Let every blocker of this test finish."""
        for blocker in self.blockers:
            if blocker.release.parent.is_dir():
                blocker.let_go()

    # -- driving the backend -------------------------------------------------

    async def submit(self, tasks: list[Any]) -> None:
        """Submit through the monitor, failing SB-1 if it does not return in time."""
        try:
            await within(self.backend.submit_tasks(tasks), self.remaining())
        except asyncio.TimeoutError:
            self.fail("SB-1", f"submit_tasks of {len(tasks)} task(s) did not return")

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
            clause_id: Blamed if the condition never holds.
            message: Says what never happened.
            timeout: Seconds; defaults to the time left before the deadline.
        """
        limit = self.remaining() if timeout is None else min(timeout, self.remaining())
        end = time.monotonic() + limit
        while not condition():
            self._check_monitor()
            left = end - time.monotonic()
            if left <= 0:
                self.fail(clause_id, f"{message} within {limit:.1f} s")
            self._changed.clear()
            try:
                await asyncio.wait_for(self._changed.wait(), left)
            except asyncio.TimeoutError:
                continue

    async def wait_terminal(
        self, uids: Iterable[str], timeout: float | None = None, clause_id: str = "ST-2"
    ) -> dict[str, spec.TaskState]:
        """Wait until every uid has a terminal state; return them.

        Fails ``clause_id`` (ST-2 by default) naming the tasks that never got one.
        """
        wanted = list(uids)
        pending = set(wanted)

        def done() -> bool:
            for uid in list(pending):
                if any(spec.is_terminal(s) for s in self.states.get(uid, ())):
                    pending.discard(uid)
            return not pending

        try:
            await self.wait_for(
                done, clause_id, "tasks never reached a terminal state", timeout
            )
        except ContractViolation as exc:
            shown = ", ".join(sorted(pending)[:5])
            raise ContractViolation(
                exc.clause_id,
                f"{len(pending)} task(s) never reached a terminal state "
                f"({shown}{', ...' if len(pending) > 5 else ''}); {exc.message}",
                exc.trace,
            ) from None
        return {uid: self.final(uid) for uid in wanted}

    async def run(
        self, tasks: list[dict[str, Any]], timeout: float | None = None
    ) -> dict[str, spec.TaskState]:
        """Submit ``tasks`` and wait for all their terminal states."""
        await self.submit(tasks)
        return await self.wait_terminal([t["uid"] for t in tasks], timeout)

    async def wait_started(self, blocker: Blocker, clause_id: str) -> None:
        """Wait until a blocker's task is running (its started file exists)."""
        end = time.monotonic() + self.remaining()
        while not blocker.started.exists():
            self._check_monitor()
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

    async def shutdown(self, clause_id: str = "SD-4", timeout: float = 10.0) -> None:
        """Shut the backend down through the monitor, failing SD-4 if it hangs."""
        try:
            await within(self.backend.shutdown(), timeout)
        except asyncio.TimeoutError:
            self.fail(clause_id, f"shutdown() did not return within {timeout:.1f} s")

    def _check_monitor(self) -> None:
        # Stop waiting as soon as the monitor has seen the contract broken:
        # the violation is the cause, a timeout would only be its echo.
        self.monitor.raise_first()

    # -- reading what was delivered -----------------------------------------

    def final(self, uid: str) -> spec.TaskState:
        """Return the terminal state delivered for ``uid`` (fails ST-2 if none)."""
        for state in self.states.get(uid, ()):
            if spec.is_terminal(state):
                return spec.TaskState(state)
        self.fail("ST-2", f"task {uid!r} has no terminal state", uid)

    def delivered(self, uid: str) -> list[Any]:
        """Return every state delivered for ``uid``, in order."""
        return list(self.states.get(uid, ()))

    def measure(self, name: str, value: float) -> None:
        """Record a figure for the report (e.g. ``"loop_stall_ms"``)."""
        self.measurements[name] = value

    def note(self, text: str) -> None:
        """Add a line the report shows with this test's result."""
        self.notes.append(text)


async def within(awaitable: Awaitable[_T], seconds: float) -> _T:
    """Await ``awaitable`` for at most ``seconds``, in the current task.

    Unlike ``asyncio.wait_for`` on Python < 3.12, no extra task is created,
    so no loop turn passes between the call returning and the caller resuming
    (tests that check what happened *during* a call rely on that).

    Raises:
        asyncio.TimeoutError: The time ran out.
    """
    timeout = getattr(asyncio, "timeout", None)
    if timeout is None:  # Python 3.10
        return await asyncio.wait_for(awaitable, seconds)
    async with timeout(seconds):
        return await awaitable
