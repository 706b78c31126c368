"""One test on one fresh backend: set up, run the body, tear down, judge.

`execute` runs in the test's own event loop (see `conformance.runner`). Each
step is a small function returning what it found; every cleanup is pushed on
an `contextlib.AsyncExitStack` as soon as there is something to clean, so it
runs (in reverse order) however the test ended:

1. a fresh work directory deep in a directory of its own (removed whole,
   last: `conformance._sandbox`) and the child processes alive
   before the backend was built (any new one still alive at the end fails
   SD-5 and is killed);
2. the backend from the factory (a factory that raises or hangs fails LC-1),
   its ``_work_dir`` pointed at the work directory, wrapped in a `Harness`;
3. the body, with a deadline, while a watchdog lets the test's blocking
   tasks go if the event loop stops turning;
4. the teardown ``shutdown()`` (SD-4 if it hangs), after the blocking tasks
   are let go.

What the monitor recorded, what the test recorded with ``expect``, what
ended the body and what the teardown found become the test's failures,
each under its own clause.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import traceback
from dataclasses import dataclass, field
from typing import Any

import spec
from conformance import processes
from conformance._escapes import Escape, Escapes
from conformance._sandbox import sandbox
from conformance._watchdog import LoopWatch
from conformance.errors import (
    ContractViolation,
    NotApplicable,
    UndeclaredClauseError,
    recent,
)
from conformance.harness import Harness
from conformance.registry import Case
from conformance.report import Failure, Outcome, TestResult
from conformance.target import BackendFactory, build_backend

__all__ = ["BUILD_DEADLINE", "EXIT_GRACE", "SHUTDOWN_DEADLINE", "execute"]

BUILD_DEADLINE = 10.0
"""Seconds the factory may take to produce a backend."""

SHUTDOWN_DEADLINE = 10.0
"""Seconds the teardown's ``shutdown()`` may take (SD-4)."""

EXIT_GRACE = 5.0
"""Seconds child processes get to exit after shutdown and release."""


@dataclass
class _Findings:
    """What one test found, filled in step by step."""

    harness: Harness | None = None
    stopped_by: ContractViolation | None = None
    """What ended the body before its end (a hard failure, a hang)."""
    completed: bool = False
    not_applicable: str = ""
    error: str = ""
    """A bug in the test itself (e.g. it failed a clause it does not declare)."""
    teardown: list[ContractViolation] = field(default_factory=list)
    escapes: list[Escape] = field(default_factory=list)
    """Exceptions that escaped the backend's own tasks, callbacks and threads."""
    escape_count: int = 0


async def execute(
    case: Case, factory: BackendFactory, deadline: float, seed: int | None = None
) -> TestResult:
    """Run one test in the current event loop; see the module docstring."""
    began = time.monotonic()
    found = _Findings()
    escapes = Escapes()
    escapes.install(asyncio.get_running_loop())
    try:
        async with contextlib.AsyncExitStack() as cleanup:
            harness = await _set_up(case, factory, deadline, cleanup, found)
            if harness is not None:
                harness.seed = seed
                await _run_body(case, harness, deadline, found)
        failed = found.stopped_by is not None or bool(found.teardown)
        found.escapes = escapes.collect(thorough=failed)
        found.escape_count = escapes.count
    finally:
        escapes.uninstall()
    return _result(case, found, time.monotonic() - began)


async def _set_up(
    case: Case,
    factory: BackendFactory,
    deadline: float,
    cleanup: contextlib.AsyncExitStack,
    found: _Findings,
) -> Harness | None:
    """Build the work dir, the backend and its harness; None if the test cannot run."""
    work_dir = cleanup.enter_context(sandbox())
    baseline = processes.descendants()
    cleanup.push_async_callback(_reap_children, baseline, found)
    backend, broken = await _build(factory)
    if backend is None:
        found.stopped_by = broken
        return None
    cleanup.push_async_callback(_shutdown_raw, backend, found)
    try:
        capabilities = spec.capabilities_of(backend)
    except TypeError as exc:
        found.stopped_by = ContractViolation("LC-1", f"bad capabilities: {exc}")
        return None
    why_not = case.why_not(capabilities)
    if why_not is not None:
        found.not_applicable = why_not
        return None
    if hasattr(backend, "_work_dir"):
        backend._work_dir = str(work_dir)
    try:
        harness = Harness(
            backend,
            work_dir,
            time.monotonic() + deadline,
            factory=factory,
            clauses=case.clauses,
        )
    except Exception as exc:
        # Wrapping the backend calls only register_callback.
        found.stopped_by = ContractViolation(
            "LC-4", f"register_callback(func) raised {exc!r}"
        )
        return None
    harness.baseline = baseline
    found.harness = harness
    # From here on the teardown goes through the monitor, which judges it;
    # the blocking tasks are let go first, so shutdown need not wait on them.
    cleanup.push_async_callback(_shutdown_watched, harness, found)
    cleanup.callback(harness.release_all)
    watch = LoopWatch(asyncio.get_running_loop(), harness.on_loop_stall)
    watch.start()
    cleanup.callback(watch.stop)
    return harness


async def _build(factory: BackendFactory) -> tuple[Any, ContractViolation | None]:
    """Return (the backend, None) or (None, the LC-1 failure)."""
    try:
        return await asyncio.wait_for(build_backend(factory), BUILD_DEADLINE), None
    except asyncio.TimeoutError:
        return None, ContractViolation(
            "LC-1", f"the factory did not return a backend within {BUILD_DEADLINE} s"
        )
    except Exception as exc:
        return None, ContractViolation("LC-1", f"the factory raised {exc!r}")


async def _run_body(
    case: Case, harness: Harness, deadline: float, found: _Findings
) -> None:
    """Run the test body with its deadline; record how it ended."""
    try:
        # A grace second on top: the harness's own waits end first and
        # name a precise clause; this only catches a body stuck elsewhere.
        await asyncio.wait_for(case.func(harness), deadline + 1.0)
    except NotApplicable as exc:
        found.not_applicable = str(exc)
    except UndeclaredClauseError as exc:
        found.error = f"{case.id} is broken: {exc}"
    except ContractViolation as exc:
        found.stopped_by = exc
    except asyncio.TimeoutError:
        found.stopped_by = ContractViolation(
            case.clauses[0],
            f"test did not finish within its {deadline:.1f} s deadline "
            "(the backend hangs)",
            recent(harness.monitor.events),
        )
    except Exception as exc:
        found.stopped_by = _unexpected(case, harness, exc)
    else:
        found.completed = True


def _unexpected(case: Case, harness: Harness, exc: Exception) -> ContractViolation:
    """The failure for an exception that escaped the body."""
    lines = traceback.format_exception(exc)[-6:]
    return ContractViolation(
        case.clauses[0],
        f"unexpected {type(exc).__name__}: {exc}\n" + "".join(lines).rstrip(),
        recent(harness.monitor.events),
    )


async def _shutdown_watched(harness: Harness, found: _Findings) -> None:
    """Teardown through the monitor (it judges SD-1, SD-2, LC-3); SD-4 on a hang."""
    if harness.monitor.shut_down:
        return
    try:
        await asyncio.wait_for(harness.backend.shutdown(), SHUTDOWN_DEADLINE)
    except asyncio.TimeoutError:
        found.teardown.append(
            ContractViolation(
                "SD-4",
                f"shutdown() did not return within {SHUTDOWN_DEADLINE} s",
                recent(harness.monitor.events),
            )
        )
    except Exception:  # recorded by the monitor as SD-1
        pass


async def _shutdown_raw(backend: Any, found: _Findings) -> None:
    """Teardown of a backend no harness wraps (the test never started)."""
    if found.harness is not None:
        return  # `_shutdown_watched` did it
    # Nothing more to learn from it: a failure here is not reported.
    with contextlib.suppress(Exception):
        await asyncio.wait_for(backend.shutdown(), SHUTDOWN_DEADLINE)


async def _reap_children(
    baseline: dict[int, processes.ProcessInfo], found: _Findings
) -> None:
    """Fail SD-5 for any child process the test started that outlives it; kill it."""
    spawned = {
        pid: info
        for pid, info in processes.descendants().items()
        if pid not in baseline
    }
    survivors = await processes.wait_gone(spawned, EXIT_GRACE)
    if survivors:
        shown = processes.describe(survivors)
        found.teardown.append(
            ContractViolation(
                "SD-5",
                f"{len(survivors)} child process(es) still alive "
                f"{EXIT_GRACE:.0f} s after shutdown() returned: {shown}",
            )
        )
        processes.kill(survivors)


def _violations(case: Case, found: _Findings) -> list[ContractViolation]:
    """Every violation the test saw, the monitor's first (they are the causes)."""
    harness = found.harness
    seen: list[ContractViolation] = []
    if harness is not None:
        seen += harness.monitor.violations + harness.failures
    if found.stopped_by is not None and all(found.stopped_by is not v for v in seen):
        seen.append(found.stopped_by)
    return seen + found.teardown


def _result(case: Case, found: _Findings, duration: float) -> TestResult:
    failures: list[Failure] = []
    harness = found.harness
    counts = harness.monitor.violation_counts if harness is not None else {}
    for violation in _violations(case, found):
        if any(f.clause_id == violation.clause_id for f in failures):
            continue  # the first one seen is the evidence
        times = counts.get(violation.clause_id, 0)
        if times > 1:
            violation = ContractViolation(
                violation.clause_id,
                f"{violation.message} (seen {times} times in this test)",
                violation.trace,
            )
        failures.append(
            Failure(violation.clause_id, violation.message, tuple(violation.evidence()))
        )
    notes = list(harness.notes) if harness is not None else []
    if found.escapes:
        failures, notes = _show_escapes(failures, notes, found)
    if failures or found.error:
        outcome = Outcome.FAIL
    elif found.not_applicable:
        outcome = Outcome.NOT_APPLICABLE
    else:
        outcome = Outcome.PASS
    return TestResult(
        case.id,
        case.clauses,
        outcome,
        duration,
        failures,
        found.not_applicable,
        dict(harness.measurements) if harness is not None else {},
        notes,
        completed=found.completed,
        error=found.error,
        stopped_by=(found.stopped_by.clause_id if found.stopped_by is not None else ""),
    )


def _show_escapes(
    failures: list[Failure], notes: list[str], found: _Findings
) -> tuple[list[Failure], list[str]]:
    """Put what escaped the backend next to the failure it most likely caused.

    That is the failure that stopped the test (a task that never got its
    state, a call that hung), else the first one; its message names the
    exception, and its evidence gets the tracebacks right after the message.
    A test that passed anyway notes them.
    """
    escapes = found.escapes
    first = escapes[0]
    more = found.escape_count - 1
    summary = f"the backend let {first.exception} escape from {first.where}" + (
        f" (and {more} more)" if more else ""
    )
    if not failures:
        return failures, [*notes, f"{summary}; it did not fail this test"]
    stopped = found.stopped_by.clause_id if found.stopped_by is not None else ""
    index = next((i for i, f in enumerate(failures) if f.clause_id == stopped), 0)
    blamed = failures[index]
    lines = [line for escape in escapes for line in escape.lines()]
    evidence = (
        f"{blamed.evidence[0]}; {summary}",
        *lines,
        *blamed.evidence[1:],
    )
    shown = Failure(blamed.clause_id, f"{blamed.message}; {summary}", evidence)
    return [*failures[:index], shown, *failures[index + 1 :]], notes
