"""Running the suite: one fresh, watched backend per test, each with a deadline.

Every test runs in its own thread with its own event loop, so a backend that
blocks the loop (or hangs in any other way) costs one failed clause and the
test's deadline, never the whole run. Around each test the runner:

1. builds a backend from the factory (awaiting an async factory), points its
   ``_work_dir`` (when it has one) at a fresh temporary directory;
2. wraps it in a `ContractMonitor` inside a `Harness` and runs the body with
   a deadline;
3. shuts the backend down (even on failure, with a deadline: SD-4), lets
   blocking tasks go, checks that no child process it started survives
   (SD-5), and kills any that does;
4. turns what the monitor recorded and what the body raised into failures,
   each naming its clause.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import platform
import shutil
import tempfile
import threading
import time
import traceback
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import spec
from conformance import processes
from conformance.errors import ContractViolation, recent
from conformance.harness import Harness, NotApplicable
from conformance.registry import DRY_RUN_EXEMPT, Case, cases
from conformance.report import ClauseResult, Failure, Outcome, Report, TestResult
from conformance.target import BackendFactory, build_backend, describe, load_target

__all__ = [
    "BUILD_DEADLINE",
    "SHUTDOWN_DEADLINE",
    "apply_expected",
    "probe",
    "run",
    "run_case",
    "select",
]

BUILD_DEADLINE = 10.0
"""Seconds the factory may take to produce a backend."""

SHUTDOWN_DEADLINE = 10.0
"""Seconds the teardown's ``shutdown()`` may take (SD-4)."""

_EXIT_GRACE = 5.0
"""Seconds child processes get to exit after shutdown and release."""


def _suite_version() -> str:
    from conformance import __version__

    return __version__


async def _shutdown_raw(backend: Any) -> None:
    # Teardown of a backend whose test already failed: nothing more to learn.
    with contextlib.suppress(Exception):
        await asyncio.wait_for(backend.shutdown(), SHUTDOWN_DEADLINE)


async def _execute(case: Case, factory: BackendFactory, deadline: float) -> TestResult:
    """Run one test in the current event loop; see the module docstring."""
    began = time.monotonic()
    baseline = processes.descendants()
    work_dir = Path(tempfile.mkdtemp(prefix="conformance-"))
    primary: ContractViolation | None = None
    teardown: list[ContractViolation] = []
    reason = ""
    completed = False
    harness: Harness | None = None
    backend: Any = None
    try:
        try:
            backend = await asyncio.wait_for(build_backend(factory), BUILD_DEADLINE)
        except asyncio.TimeoutError:
            primary = ContractViolation(
                "LC-1",
                f"the factory did not return a backend within {BUILD_DEADLINE} s",
            )
        except Exception as exc:
            primary = ContractViolation("LC-1", f"the factory raised {exc!r}")
        if backend is not None:
            try:
                capabilities = spec.capabilities_of(backend)
            except TypeError as exc:
                primary = ContractViolation("LC-1", f"bad capabilities: {exc}")
                backend_usable = False
            else:
                backend_usable = True
        if backend is not None and backend_usable:
            why_not = case.why_not(capabilities)
            if why_not is not None:
                raise NotApplicable(why_not)
            if hasattr(backend, "_work_dir"):
                backend._work_dir = str(work_dir)
            try:
                harness = Harness(
                    backend, work_dir, time.monotonic() + deadline, factory=factory
                )
                harness.baseline = baseline
            except Exception as exc:
                # Wrapping the backend calls only register_callback.
                primary = ContractViolation(
                    "LC-4", f"register_callback(func) raised {exc!r}"
                )
        if harness is not None:
            try:
                # A grace second on top: the harness's own waits end first and
                # name a precise clause; this only catches a body stuck elsewhere.
                await asyncio.wait_for(case.func(harness), deadline + 1.0)
                completed = True
            except ContractViolation as exc:
                primary = exc
            except asyncio.TimeoutError:
                primary = ContractViolation(
                    case.clauses[0],
                    f"test did not finish within its {deadline:.1f} s deadline "
                    "(the backend hangs)",
                    recent(harness.monitor.events),
                )
            except NotApplicable:
                raise
            except Exception as exc:
                lines = traceback.format_exception(exc)[-6:]
                primary = ContractViolation(
                    case.clauses[0],
                    f"unexpected {type(exc).__name__}: {exc}\n"
                    + "".join(lines).rstrip(),
                    recent(harness.monitor.events),
                )
    except NotApplicable as exc:
        reason = str(exc)
    finally:
        spawned = {
            pid: info
            for pid, info in processes.descendants().items()
            if pid not in baseline
        }
        if harness is not None:
            if not harness.monitor._cm_shut_down:
                try:
                    await asyncio.wait_for(
                        harness.backend.shutdown(), SHUTDOWN_DEADLINE
                    )
                except asyncio.TimeoutError:
                    teardown.append(
                        ContractViolation(
                            "SD-4",
                            f"shutdown() did not return within {SHUTDOWN_DEADLINE} s",
                            recent(harness.monitor.events),
                        )
                    )
                except Exception:  # recorded by the monitor as SD-1
                    pass
            harness.release_all()
        elif backend is not None:
            await _shutdown_raw(backend)
        spawned.update(
            (pid, info)
            for pid, info in processes.descendants().items()
            if pid not in baseline
        )
        survivors = await processes.wait_gone(spawned, _EXIT_GRACE)
        if survivors:
            shown = processes.describe(survivors)
            teardown.append(
                ContractViolation(
                    "SD-5",
                    f"{len(survivors)} child process(es) still alive "
                    f"{_EXIT_GRACE:.0f} s after shutdown() returned: {shown}",
                )
            )
            processes.kill(survivors)
        shutil.rmtree(work_dir, ignore_errors=True)
    result = _result(case, harness, primary, teardown, reason, time.monotonic() - began)
    result.completed = completed
    return result


def _result(
    case: Case,
    harness: Harness | None,
    primary: ContractViolation | None,
    teardown: list[ContractViolation],
    reason: str,
    duration: float,
) -> TestResult:
    recorded = harness.monitor.violations if harness is not None else []
    if harness is not None:
        teardown = harness.soft_failures + teardown
    # What the monitor recorded is the root cause; an assertion or timeout that
    # followed is usually its echo, so it is kept as evidence, not as a failure.
    if recorded:
        causes = recorded + teardown
        if primary is not None and primary.clause_id not in {
            v.clause_id for v in causes
        }:
            causes[0] = ContractViolation(
                causes[0].clause_id,
                f"{causes[0].message} (then: {primary})",
                causes[0].trace,
            )
    else:
        causes = ([primary] if primary is not None else []) + teardown
    failures: list[Failure] = []
    seen: set[str] = set()
    for violation in causes:
        if violation.clause_id in seen:
            continue
        seen.add(violation.clause_id)
        failures.append(
            Failure(violation.clause_id, violation.message, tuple(violation.evidence()))
        )
    if failures:
        outcome = Outcome.FAIL
    elif reason:
        outcome = Outcome.NOT_APPLICABLE
    else:
        outcome = Outcome.PASS
    return TestResult(
        case.id,
        case.clauses,
        outcome,
        duration,
        failures,
        reason,
        dict(harness.measurements) if harness is not None else {},
        list(harness.notes) if harness is not None else [],
    )


def _in_thread(func: Callable[[], Any], name: str, limit: float) -> tuple[bool, Any]:
    """Run ``func`` in a daemon thread; return (finished, result or exception)."""
    box: dict[str, Any] = {}

    def body() -> None:
        try:
            box["value"] = func()
        except BaseException as exc:  # reported to the caller, not lost in a thread
            box["value"] = exc

    thread = threading.Thread(target=body, name=name, daemon=True)
    thread.start()
    thread.join(limit)
    return not thread.is_alive(), box.get("value")


def run_case(
    case: Case, factory: BackendFactory, *, deadline_scale: float = 1.0
) -> TestResult:
    """Run one test on a fresh backend, in its own thread and event loop.

    Args:
        case: The test.
        factory: Builds the backend.
        deadline_scale: Multiplies the test's deadline (e.g. 0.2 to fail a
            hanging backend faster, 3 for a slow machine).

    Returns:
        Its result; a test whose thread is still stuck after its deadline (a
        backend blocking the event loop) is a failure of its first clause.
    """
    baseline = processes.descendants()
    deadline = case.deadline * deadline_scale
    limit = BUILD_DEADLINE + deadline + SHUTDOWN_DEADLINE + _EXIT_GRACE + 5.0
    began = time.monotonic()
    finished, value = _in_thread(
        lambda: asyncio.run(_execute(case, factory, deadline)), "test-loop", limit
    )
    if finished and isinstance(value, TestResult):
        return value
    if finished:
        message = f"the suite itself failed running this test: {value!r}"
    else:
        message = (
            f"test still running {limit:.0f} s after it started: the backend blocks "
            "the event loop (or a thread the loop waits for)"
        )
        processes.kill(
            {p: i for p, i in processes.descendants().items() if p not in baseline}
        )
    violation = ContractViolation(case.clauses[0], message)
    return TestResult(
        case.id,
        case.clauses,
        Outcome.FAIL,
        time.monotonic() - began,
        [Failure(violation.clause_id, message, tuple(violation.evidence()))],
    )


_EXPECTED = {Outcome.FAIL: Outcome.XFAIL, Outcome.PASS: Outcome.XPASS}
"""What an outcome becomes when the expected-failures list names it."""


def apply_expected(result: TestResult, expected: Mapping[str, str]) -> TestResult:
    """Mark a test ``xfail``/``xpass`` when its ID is in the expected failures."""
    reason = expected.get(result.id)
    if reason is not None and result.outcome in _EXPECTED:
        result.outcome, result.reason = _EXPECTED[result.outcome], reason
    return result


def _clause_result(
    found: spec.Clause,
    capabilities: frozenset[spec.Capability],
    results: list[TestResult],
    expected: Mapping[str, str],
    has_tests: bool,
) -> ClauseResult:
    citing = [r for r in results if found.id in r.clauses]
    result = ClauseResult(found, Outcome.UNTESTED, [r.id for r in citing])
    if found.capability is not None and found.capability not in capabilities:
        result.outcome = Outcome.NOT_APPLICABLE
        result.reason = f"the backend does not declare {found.capability.value}"
        return result
    if spec.Capability.DRY_RUN in capabilities and found.id in DRY_RUN_EXEMPT:
        result.outcome = Outcome.NOT_APPLICABLE
        result.reason = "a dry-run backend runs nothing"
        return result
    broken = [
        (r, f)
        for r in results
        for f in r.failures
        if f.clause_id == found.id and r.outcome in (Outcome.FAIL, Outcome.XFAIL)
    ]
    real = [(r, f) for r, f in broken if r.outcome is Outcome.FAIL]
    # A test that failed before reaching its end never checked its other clauses.
    blocker = next(
        (r for r in citing if r.outcome is Outcome.FAIL and not r.completed), None
    )
    if real or broken:
        test, failure = (real or broken)[0]
        result.outcome = Outcome.FAIL if real else Outcome.XFAIL
        result.evidence = [f"in {test.id}:", *failure.evidence]
        result.reason = "" if real else test.reason
    elif not has_tests:
        result.reason = "the suite has no test for this clause"
    elif not citing:
        result.outcome = Outcome.NOT_APPLICABLE
        result.reason = "no test selected"
    elif blocker is not None:
        result.outcome = Outcome.BLOCKED
        result.reason = f"{blocker.id} failed on {blocker.failures[0].clause_id} first"
    elif any(
        r.outcome in (Outcome.PASS, Outcome.XPASS)
        or (r.outcome is Outcome.FAIL and r.completed)
        for r in citing
    ):
        result.outcome = Outcome.PASS
    else:
        result.outcome = Outcome.NOT_APPLICABLE
        result.reason = "; ".join(sorted({r.reason for r in citing if r.reason}))
    reason = expected.get(found.id)
    if reason is not None and result.outcome in _EXPECTED:
        result.outcome, result.reason = _EXPECTED[result.outcome], reason
    return result


def probe(factory: BackendFactory) -> tuple[Any, str | None]:
    """Build and shut down one backend; return (header info, error).

    The info is (type name, ``name``, capability values); the error says why
    no backend could be built (``None`` if one was).
    """

    async def build() -> tuple[str, str, list[str]]:
        backend = await asyncio.wait_for(build_backend(factory), BUILD_DEADLINE)
        try:
            kind = type(backend)
            caps = sorted(c.value for c in spec.capabilities_of(backend))
            return f"{kind.__module__}.{kind.__qualname__}", str(backend.name), caps
        finally:
            await _shutdown_raw(backend)

    finished, value = _in_thread(
        lambda: asyncio.run(build()),
        "conformance:probe",
        BUILD_DEADLINE + SHUTDOWN_DEADLINE + 5,
    )
    if not finished:
        return None, "building the backend hung"
    if isinstance(value, BaseException):
        return None, f"building the backend failed: {value!r}"
    return value, None


def select(selected: Iterable[str] | None) -> tuple[list[Case], list[str]]:
    """Return the tests and clause IDs a selection names (``None``: all).

    Raises:
        KeyError: An ID names no clause.
    """
    everything = cases()
    if selected is None:
        return everything, list(spec.CLAUSES)
    ids = [spec.clause(c).id for c in selected]
    return [c for c in everything if set(c.clauses) & set(ids)], [
        c for c in spec.CLAUSES if c in ids
    ]


def run(
    target: BackendFactory | str,
    *,
    clauses: Iterable[str] | None = None,
    expected_failures: Mapping[str, str] | None = None,
    progress: Callable[[TestResult], None] | None = None,
    deadline_scale: float = 1.0,
) -> Report:
    """Run the conformance suite against a backend and return the report.

    Synchronous: each test runs in its own thread with its own event loop.
    Call it from plain code (or from a thread), not from inside a running loop
    you need to keep responsive.

    Args:
        target: A backend class, a zero-argument sync or async factory, or a
            target string (``module:attr`` or a registered name).
        clauses: Clause IDs to check (and report); ``None`` for all.
        expected_failures: Clause or test ID -> reason (see
            `conformance.expectations`).
        progress: Called with each test's result as it finishes.
        deadline_scale: Multiplies every test's deadline (see `run_case`).

    Returns:
        The report; ``report.ok`` / ``report.exit_code`` give the verdict and
        ``report.outcome("ST-2")`` the outcome of one clause.

    Raises:
        KeyError: A selected clause does not exist.
    """
    label = target if isinstance(target, str) else describe(target)
    factory = load_target(target) if isinstance(target, str) else target
    expected = dict(expected_failures or {})
    chosen, clause_ids = select(clauses)
    began = time.monotonic()
    info, error = probe(factory)
    backend_type, backend_name, capability_names = info or ("?", "?", [])
    capabilities = frozenset(spec.Capability(c) for c in capability_names)
    report = Report(
        backend=label,
        backend_type=backend_type,
        backend_name=backend_name,
        capabilities=capability_names,
        contract_version=spec.CONTRACT_VERSION,
        suite_version=_suite_version(),
        python=platform.python_version(),
        platform=platform.platform(terse=True),
        started=datetime.datetime.now(datetime.timezone.utc).isoformat(
            timespec="seconds"
        ),
    )
    if error is not None:
        report.errors.append(error)
        chosen = []
    for case in chosen:
        why_not = case.why_not(capabilities)
        if why_not is not None:
            result = TestResult(
                case.id, case.clauses, Outcome.NOT_APPLICABLE, reason=why_not
            )
        else:
            result = apply_expected(
                run_case(case, factory, deadline_scale=deadline_scale), expected
            )
        report.tests.append(result)
        report.measurements.update(result.measurements)
        if progress is not None:
            progress(result)
    cited = {c for case in cases() for c in case.clauses}
    # A selected test may find an unselected clause broken (the monitor
    # watches everything): report that clause too, rather than hide it.
    seen_broken = {f.clause_id for t in report.tests for f in t.failures}
    clause_ids = [c for c in spec.CLAUSES if c in clause_ids or c in seen_broken]
    for clause_id in clause_ids:
        report.clauses[clause_id] = _clause_result(
            spec.CLAUSES[clause_id],
            capabilities,
            report.tests,
            expected,
            clause_id in cited,
        )
    if error is not None:
        report.clauses["LC-1"] = ClauseResult(
            spec.CLAUSES["LC-1"], Outcome.FAIL, evidence=[f"[LC-1] {error}"]
        )
    report.duration = time.monotonic() - began
    return report
