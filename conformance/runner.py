"""Running the suite: one fresh, watched backend per test, each with a deadline.

Every test runs in its own thread with its own event loop, so a backend that
blocks the loop (or hangs in any other way) costs one failed clause and the
test's deadline, never the whole run. `conformance._execute` runs one test
(set up, body, teardown); this module runs the selected tests (``repeat``
times, in a shuffled order when a seed is given), and turns their results
into one outcome per clause.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import platform
import random
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

import spec
from conformance import processes
from conformance._execute import BUILD_DEADLINE, EXIT_GRACE, SHUTDOWN_DEADLINE, execute
from conformance.errors import ContractViolation
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


def _suite_version() -> str:
    from conformance import __version__

    return __version__


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
    case: Case,
    factory: BackendFactory,
    *,
    deadline_scale: float = 1.0,
    seed: int | None = None,
) -> TestResult:
    """Run one test on a fresh backend, in its own thread and event loop.

    Args:
        case: The test.
        factory: Builds the backend.
        deadline_scale: Multiplies the test's deadline (e.g. 0.2 to fail a
            hanging backend faster, 3 for a slow machine).
        seed: Given to the test (``h.seed``) for what it randomises.

    Returns:
        Its result; a test whose thread is still stuck after its deadline (a
        backend blocking the event loop) is a failure of its first clause.
    """
    baseline = processes.descendants()
    deadline = case.deadline * deadline_scale
    limit = BUILD_DEADLINE + deadline + SHUTDOWN_DEADLINE + EXIT_GRACE + 5.0
    began = time.monotonic()
    finished, value = _in_thread(
        lambda: asyncio.run(execute(case, factory, deadline, seed)), "test-loop", limit
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
        stopped_by=violation.clause_id,
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
    result = ClauseResult(
        found,
        Outcome.UNTESTED,
        list(dict.fromkeys(r.id for r in citing)),
        seconds=sum(r.duration for r in citing),
    )
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
    # A test stopped before its end never checked the rest of its clauses.
    blocker = next((r for r in citing if r.stopped_by or r.error), None)
    if real or broken:
        test, failure = (real or broken)[0]
        result.outcome = Outcome.FAIL if real else Outcome.XFAIL
        result.evidence = [f"in {_run_name(test)}:", *failure.evidence]
        result.reason = "" if real else test.reason
        runs = {r.run for r in results}
        if len(runs) > 1:
            failed_in = {r.run for r, _ in broken}
            result.reason = f"failed in {len(failed_in)} of {len(runs)} runs" + (
                f"; {result.reason}" if result.reason else ""
            )
    elif not has_tests:
        result.reason = "the suite has no test for this clause"
    elif not citing:
        result.outcome = Outcome.NOT_APPLICABLE
        result.reason = "no test selected"
    elif blocker is not None:
        why = (
            "is broken (a suite error)"
            if blocker.error
            else f"stopped on {blocker.stopped_by} first"
        )
        result.reason = f"{_run_name(blocker)} {why}"
        # Another test checked it to its end: judged on that evidence.
        complete = any(r.completed for r in citing)
        result.outcome = Outcome.PASS if complete else Outcome.BLOCKED
        if complete:
            result.reason = f"not checked by {result.reason}"
    elif any(r.completed for r in citing):
        result.outcome = Outcome.PASS
    else:
        result.outcome = Outcome.NOT_APPLICABLE
        result.reason = "; ".join(sorted({r.reason for r in citing if r.reason}))
    reason = expected.get(found.id)
    if reason is not None and result.outcome in _EXPECTED:
        result.outcome, result.reason = _EXPECTED[result.outcome], reason
    return result


def _run_name(result: TestResult) -> str:
    return result.id if result.run == 1 else f"{result.id} (run {result.run})"


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
            # Only the header is wanted here; the tests judge the shutdown.
            with contextlib.suppress(Exception):
                await asyncio.wait_for(backend.shutdown(), SHUTDOWN_DEADLINE)

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
    repeat: int = 1,
    seed: int | None = None,
    started: Callable[[str], None] | None = None,
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
        repeat: Run the selected tests this many times (to flush out races);
            a clause fails if it failed in any run.
        seed: Shuffle the order of the tests in every run with this seed
            (and give it to the tests that randomise, such as the stateful
            one); ``None`` keeps the registry's order.
        started: Called with each test's ID as it starts (the command
            line's progress shows the test running).

    Returns:
        The report; ``report.ok`` / ``report.exit_code`` give the verdict and
        ``report.outcome("ST-2")`` the outcome of one clause.

    Raises:
        KeyError: A selected clause does not exist.
        ValueError: ``repeat`` is not a positive int.
    """
    if isinstance(repeat, bool) or not isinstance(repeat, int) or repeat < 1:
        raise ValueError(f"repeat must be a positive int, not {repeat!r}")
    label = target if isinstance(target, str) else describe(target)
    factory = load_target(target) if isinstance(target, str) else target
    expected = dict(expected_failures or {})
    chosen, clause_ids = select(clauses)
    began = time.monotonic()
    info, error = probe(factory)
    report = _new_report(label, info, repeat, seed)
    capabilities = frozenset(spec.Capability(c) for c in report.capabilities)
    if error is not None:
        report.errors.append(error)
        chosen = []
    for run_number, case, case_seed in _schedule(chosen, repeat, seed):
        if started is not None:
            started(case.id)
        result = _run_one(
            case, factory, capabilities, expected, deadline_scale, case_seed
        )
        result.run = run_number
        _add_result(report, result)
        if progress is not None:
            progress(result)
    report.clauses.update(
        _judge_clauses(clause_ids, capabilities, report.tests, expected, error)
    )
    report.duration = time.monotonic() - began
    return report


def _new_report(
    label: str, info: tuple[str, str, list[str]] | None, repeat: int, seed: int | None
) -> Report:
    """Return an empty report naming the backend (``info`` from `probe`)."""
    backend_type, backend_name, capability_names = info or ("?", "?", [])
    return Report(
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
        repeat=repeat,
        seed=seed,
    )


def _schedule(
    chosen: list[Case], repeat: int, seed: int | None
) -> Iterator[tuple[int, Case, int | None]]:
    """Yield (run number, case, the case's seed) in the order to run them.

    Without a seed the registry's order, repeated; with one, every run
    shuffled by one generator and run ``n`` seeded with ``seed + n - 1``.
    """
    shuffler = random.Random(seed)
    for run_number in range(1, repeat + 1):
        order = list(chosen)
        if seed is not None:
            shuffler.shuffle(order)
        case_seed = None if seed is None else seed + run_number - 1
        for case in order:
            yield run_number, case, case_seed


def _add_result(report: Report, result: TestResult) -> None:
    """Add one test's result (its measurements and error too) to the report."""
    report.tests.append(result)
    report.measurements.update(result.measurements)
    if result.error:
        report.errors.append(result.error)


def _judge_clauses(
    clause_ids: list[str],
    capabilities: frozenset[spec.Capability],
    tests: list[TestResult],
    expected: Mapping[str, str],
    error: str | None,
) -> dict[str, ClauseResult]:
    """Return each reported clause's result, in the contract's order.

    Args:
        clause_ids: The clauses selected.
        capabilities: The backend's capabilities.
        tests: The tests' results.
        expected: Clause or test ID -> reason it is expected to fail.
        error: Why the backend could not be built, if it could not (LC-1).
    """
    cited = {c for case in cases() for c in case.clauses}
    # A selected test may find an unselected clause broken (the monitor
    # watches everything): report that clause too, rather than hide it.
    seen_broken = {f.clause_id for t in tests for f in t.failures}
    results = {
        clause_id: _clause_result(
            spec.CLAUSES[clause_id], capabilities, tests, expected, clause_id in cited
        )
        for clause_id in spec.CLAUSES
        if clause_id in clause_ids or clause_id in seen_broken
    }
    if error is not None:
        results["LC-1"] = ClauseResult(
            spec.CLAUSES["LC-1"], Outcome.FAIL, evidence=[f"[LC-1] {error}"]
        )
    return results


def _run_one(
    case: Case,
    factory: BackendFactory,
    capabilities: frozenset[spec.Capability],
    expected: Mapping[str, str],
    deadline_scale: float,
    seed: int | None,
) -> TestResult:
    why_not = case.why_not(capabilities)
    if why_not is not None:
        return TestResult(case.id, case.clauses, Outcome.NOT_APPLICABLE, reason=why_not)
    return apply_expected(
        run_case(case, factory, deadline_scale=deadline_scale, seed=seed), expected
    )
