"""`Report`: the outcome of a run, per clause and per test.

Rendered as a table (`Report.to_text`), as JSON (`Report.to_json`, which is
also the conformance certificate) and as JUnit XML (`Report.to_junit`).
"""

from __future__ import annotations

import enum
import json
from dataclasses import dataclass, field
from typing import Any

import spec

__all__ = ["ClauseResult", "Failure", "Outcome", "Report", "TestResult"]


class Outcome(str, enum.Enum):
    """The outcome of a test or of a clause."""

    PASS = "pass"
    FAIL = "fail"
    NOT_APPLICABLE = "n/a"
    XFAIL = "xfail"
    """Failed, as the expected-failures list says it would."""
    XPASS = "xpass"
    """Listed as an expected failure, but passed: the list is out of date."""
    BLOCKED = "blocked"
    """Its tests failed on another clause first, so it was not verified."""
    UNTESTED = "untested"
    """The suite has no test for it."""

    def __str__(self) -> str:
        return self.value


@dataclass(frozen=True)
class Failure:
    """One broken clause seen by one test.

    Attributes:
        clause_id: The broken clause.
        message: What was seen.
        evidence: The message and the first lines of the monitor's trace.
    """

    clause_id: str
    message: str
    evidence: tuple[str, ...]


@dataclass
class TestResult:
    """The outcome of one test.

    Attributes:
        id: The test's ID (``<area>.<name>``).
        clauses: The clause IDs it checks.
        outcome: pass, fail, n/a, xfail or xpass.
        duration: Seconds it took, teardown included.
        failures: The clauses it saw broken (empty unless it failed).
        reason: Why it was not applicable, or the expected-failure reason.
        measurements: Figures it measured.
        notes: Extra lines it reported.
        completed: Whether its body ran to the end, so every clause it cites
            was checked (a failure on one clause did not cut the others short).
        stopped_by: The clause of the failure that ended the body early (the
            backend raised or hung, or the test could not go on); empty if
            nothing did. Its other clauses are then ``blocked``.
        error: A bug in the test itself (it failed a clause it does not
            declare); reported as an error of the run, not of the backend.
        run: Which run of the test this is (1 unless ``--repeat``).
    """

    __test__ = False  # not a pytest test class, despite the name

    id: str
    clauses: tuple[str, ...]
    outcome: Outcome
    duration: float = 0.0
    failures: list[Failure] = field(default_factory=list)
    reason: str = ""
    measurements: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    completed: bool = False
    stopped_by: str = ""
    error: str = ""
    run: int = 1

    def to_json(self) -> dict[str, Any]:
        """Return the result as JSON-ready data."""
        return {
            "id": self.id,
            "clauses": list(self.clauses),
            "outcome": self.outcome.value,
            "duration_s": round(self.duration, 4),
            "failures": [
                {
                    "clause": f.clause_id,
                    "message": f.message,
                    "evidence": list(f.evidence),
                }
                for f in self.failures
            ],
            "reason": self.reason,
            "measurements": self.measurements,
            "notes": self.notes,
            "completed": self.completed,
            "stopped_by": self.stopped_by,
            "error": self.error,
            "run": self.run,
        }


@dataclass
class ClauseResult:
    """The outcome of one clause over every test citing it.

    Attributes:
        clause: The clause.
        outcome: Its outcome.
        tests: IDs of the tests citing it.
        evidence: For a failure, the first failing test's evidence: ``in
            <test>:``, the message, then the monitor's trace up to the
            violation.
        reason: Why it is not applicable, or the expected-failure reason.
        seconds: Time taken by the tests citing it (all runs).
    """

    clause: spec.Clause
    outcome: Outcome
    tests: list[str] = field(default_factory=list)
    evidence: list[str] = field(default_factory=list)
    reason: str = ""
    seconds: float = 0.0

    def to_json(self) -> dict[str, Any]:
        """Return the result as JSON-ready data."""
        return {
            "id": self.clause.id,
            "level": self.clause.level.value,
            "capability": self.clause.capability.value
            if self.clause.capability
            else None,
            "outcome": self.outcome.value,
            "tests": self.tests,
            "evidence": self.evidence,
            "reason": self.reason,
            "duration_s": round(self.seconds, 4),
        }


@dataclass
class Report:
    """Everything a run found: a header, one result per clause and per test.

    Attributes:
        backend: What was tested (the target string, or the factory's name).
        backend_type: Qualified name of the backend's class.
        backend_name: The backend's ``name``.
        capabilities: The capabilities it declares.
        contract_version: `spec.CONTRACT_VERSION`.
        suite_version: `conformance.__version__`.
        python: The Python version.
        platform: The platform string.
        started: When the run began (ISO 8601, UTC).
        duration: Seconds the run took.
        clauses: One result per clause, in `spec.CLAUSES` order.
        tests: One result per test run.
        measurements: Figures measured by the tests, by name.
        errors: Problems outside any clause (e.g. the backend cannot be
            built, or a test of the suite is broken).
        repeat: How many times the selected tests ran (``--repeat``).
        seed: The seed that shuffled their order, if any (``--seed``).
    """

    backend: str
    backend_type: str
    backend_name: str
    capabilities: list[str]
    contract_version: str
    suite_version: str
    python: str
    platform: str
    started: str
    duration: float = 0.0
    clauses: dict[str, ClauseResult] = field(default_factory=dict)
    tests: list[TestResult] = field(default_factory=list)
    measurements: dict[str, float] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    repeat: int = 1
    seed: int | None = None

    # -- queries ---------------------------------------------------------------

    def outcome(self, clause_id: str) -> Outcome:
        """Return the outcome of one clause.

        Raises:
            KeyError: If the clause is not in the report.
        """
        return self.clauses[clause_id].outcome

    def clauses_with(self, *outcomes: Outcome) -> set[str]:
        """Return the IDs of the clauses with any of ``outcomes``."""
        return {cid for cid, res in self.clauses.items() if res.outcome in outcomes}

    @property
    def failed(self) -> set[str]:
        """IDs of the clauses that failed (MUST and SHOULD)."""
        return self.clauses_with(Outcome.FAIL)

    def test(self, test_id: str) -> TestResult:
        """Return the result of one test.

        Raises:
            KeyError: If that test did not run.
        """
        for result in self.tests:
            if result.id == test_id:
                return result
        raise KeyError(test_id)

    @property
    def ok(self) -> bool:
        """True iff no MUST clause failed or was blocked, and nothing xpassed."""
        if self.errors:
            return False
        for result in self.clauses.values():
            if result.outcome is Outcome.XPASS:
                return False
            if result.clause.level is spec.Level.MUST and result.outcome in (
                Outcome.FAIL,
                Outcome.BLOCKED,
            ):
                return False
        return all(t.outcome is not Outcome.XPASS for t in self.tests)

    @property
    def exit_code(self) -> int:
        """The CLI's exit status: 0 iff `ok`."""
        return 0 if self.ok else 1

    def counts(self) -> dict[str, int]:
        """Return how many clauses have each outcome."""
        found = {o.value: 0 for o in Outcome}
        for result in self.clauses.values():
            found[result.outcome.value] += 1
        return found

    # -- renderings ------------------------------------------------------------

    def to_text(self, verbose: bool = False, evidence_lines: int = 8) -> str:
        """Render the report as a table for a terminal.

        Args:
            verbose: Show every clause's full text, every test's outcome and
                time, and the full evidence.
            evidence_lines: Evidence lines shown per failing clause otherwise:
                the message, then the last trace lines (the violating event
                and those just before it).
        """
        from conformance import _render  # it imports this module's types

        return _render.text(self, verbose=verbose, evidence_lines=evidence_lines)

    def to_json(self) -> dict[str, Any]:
        """Return the report as JSON-ready data: the conformance certificate."""
        return {
            "format": "asyncflow-backend-spec conformance certificate",
            "backend": self.backend,
            "backend_type": self.backend_type,
            "backend_name": self.backend_name,
            "capabilities": self.capabilities,
            "contract_version": self.contract_version,
            "suite_version": self.suite_version,
            "python": self.python,
            "platform": self.platform,
            "started": self.started,
            "duration_s": round(self.duration, 3),
            "repeat": self.repeat,
            "seed": self.seed,
            "conforms": self.ok,
            "counts": self.counts(),
            "clauses": [result.to_json() for result in self.clauses.values()],
            "tests": [result.to_json() for result in self.tests],
            "measurements": self.measurements,
            "errors": self.errors,
        }

    def dumps(self) -> str:
        """Return `to_json` as a JSON string."""
        return json.dumps(self.to_json(), indent=2, default=str)

    def to_junit(self) -> str:
        """Render the report as JUnit XML: one testcase per clause."""
        from conformance import _render  # it imports this module's types

        return _render.junit(self)
