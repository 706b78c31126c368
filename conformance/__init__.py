"""The conformance suite: proves a backend honours the contract in ``spec``.

``conformance`` imports only ``spec``, so it can judge any backend. One set of
tests (`conformance.checks`, one module per area of the contract, each test
tagged with the clause IDs it checks) sits behind every way in:

* the command line: ``python -m conformance [TARGET]`` (or
  ``asyncflow-conformance``), TARGET being ``module:attr`` (a backend class or
  a zero-argument sync or async factory) or a name registered in
  `spec.ENTRY_POINT_GROUP`; see ``python -m conformance --help``;
* pytest: ``pytest --backend module:attr`` (the plugin is inert without it),
  or subclass `conformance.suite.ConformanceSuite` and override its one
  fixture, ``backend_factory``;
* Python: `run`.

Public API (stable):

* ``run(target, *, clauses=None, expected_failures=None, progress=None,
  deadline_scale=1.0) -> Report`` -- synchronous; ``target`` is a factory or
  a target string; ``clauses`` selects clause IDs (the report also lists any
  other clause a selected test found broken); ``expected_failures`` maps a
  clause or test ID to a reason; ``deadline_scale`` multiplies every test's
  deadline.
* `Report` -- ``report.outcome("ST-2")`` is an `Outcome` (``pass``, ``fail``,
  ``n/a``, ``xfail``, ``xpass``, ``blocked``, ``untested``);
  ``report.failed`` the set of failed clause IDs; ``report.ok`` and
  ``report.exit_code`` the verdict (non-zero iff a MUST clause fails or is
  blocked, or an expected failure passes); ``report.tests`` the per-test
  `TestResult` list, each with its `Failure` list; ``report.clauses`` maps
  each clause ID to its `ClauseResult`; ``to_text()``, ``to_json()`` (the
  conformance certificate), ``to_junit()``.
* `watch` (or ``ContractMonitor(backend)``) and `ContractViolation` -- the
  runtime validator, usable on its own in an engine; a violation carries
  ``clause_id``, ``message`` and ``trace`` (a tuple of `Event`, printable
  with `format_trace`).
* `cites` (decorator registering a test under the clauses it checks), `Case`,
  `cases`, `case` (one test by ID), `Harness`, `TaskBuilder` (the task dicts a
  test submits), `Blocker` (a task that runs until released), `NotApplicable`,
  `UndeclaredClauseError` -- for adding tests; `run_case` runs one `Case`
  against a factory.
* `BackendFactory`, `load_target`, `build_backend`, `DEFAULT_TARGET` -- what
  a target is and how it becomes a backend.
* `load_expected_failures`, `parse_expected_failures` -- the
  expected-failures file.
* ``__version__`` -- the suite's version, named in every report.
"""

from __future__ import annotations

from conformance.errors import (
    ContractViolation,
    Event,
    NotApplicable,
    UndeclaredClauseError,
    format_trace,
)
from conformance.expectations import load_expected_failures, parse_expected_failures
from conformance.harness import Harness
from conformance.monitor import ContractMonitor, watch
from conformance.registry import Case, case, cases, cites
from conformance.report import ClauseResult, Failure, Outcome, Report, TestResult
from conformance.runner import run, run_case
from conformance.target import (
    DEFAULT_TARGET,
    BackendFactory,
    build_backend,
    load_target,
)
from conformance.tasks import Blocker, TaskBuilder

__version__ = "0.1.0"
"""Version of the suite (reported in every report and certificate)."""

__all__ = [
    "DEFAULT_TARGET",
    "BackendFactory",
    "Blocker",
    "Case",
    "ClauseResult",
    "ContractMonitor",
    "ContractViolation",
    "Event",
    "Failure",
    "Harness",
    "NotApplicable",
    "Outcome",
    "Report",
    "TaskBuilder",
    "TestResult",
    "UndeclaredClauseError",
    "__version__",
    "build_backend",
    "case",
    "cases",
    "cites",
    "format_trace",
    "load_expected_failures",
    "load_target",
    "parse_expected_failures",
    "run",
    "run_case",
    "watch",
]
