"""`ConformanceSuite`: the pytest form of the suite, to subclass.

In your own tests::

    import pytest
    from conformance.suite import ConformanceSuite

    class TestMyBackend(ConformanceSuite):
        @pytest.fixture
        def backend_factory(self):
            return MyBackend  # a class, or a zero-argument sync or async factory

Every conformance test then runs as
``TestMyBackend::test_conformance[<area>.<test>]``: passed, failed (with
the clause and the monitor's trace), skipped as not applicable, or xfailed
when only SHOULD clauses were not met (they do not fail the CLI's run
either). To track known gaps, override the ``conformance_expected_failures``
fixture (clause or test ID -> reason): a test failing only on listed clauses
xfails, and a listed *test* that passes fails. The fixtures ship here;
nothing else is needed.
"""

from __future__ import annotations

from collections.abc import Mapping

import pytest

import spec
from conformance.registry import Case, cases
from conformance.report import Outcome
from conformance.runner import apply_expected, probe, run_case
from conformance.target import BackendFactory

__all__ = ["ConformanceSuite"]

_CASES = cases()

# Factories already built once outside any test (see `_warm_up`); kept alive
# so their ids are never reused.
_WARMED: dict[int, BackendFactory] = {}


def _warm_up(factory: BackendFactory) -> None:
    """Build and shut down one backend before the first test, as the CLI does.

    A factory may start something shared on first use (a cluster, a worker
    pool kept for the whole process); started inside a test, its processes
    would look like children the backend left behind (SD-5).
    """
    if id(factory) in _WARMED:
        return
    _WARMED[id(factory)] = factory
    probe(factory)


class ConformanceSuite:
    """Base class of a pytest suite checking one backend; override `backend_factory`."""

    @pytest.fixture
    def backend_factory(self) -> BackendFactory:
        """Return the class or zero-argument factory that builds the backend."""
        pytest.fail(
            f"{type(self).__name__} must override the backend_factory fixture",
            pytrace=False,
        )

    @pytest.fixture
    def conformance_expected_failures(self) -> Mapping[str, str]:
        """Return clause or test IDs expected to fail, with reasons (none here)."""
        return {}

    @pytest.mark.parametrize("conformance_case", _CASES, ids=[c.id for c in _CASES])
    def test_conformance(
        self,
        conformance_case: Case,
        backend_factory: BackendFactory,
        conformance_expected_failures: Mapping[str, str],
    ) -> None:
        """Run one conformance test on a fresh backend from `backend_factory`."""
        _warm_up(backend_factory)
        result = apply_expected(
            run_case(conformance_case, backend_factory), conformance_expected_failures
        )
        failed_listed = result.failures and all(
            f.clause_id in conformance_expected_failures for f in result.failures
        )
        # Like the CLI's exit status: a SHOULD clause not met is reported, but
        # does not fail the run.
        only_should = result.failures and all(
            spec.CLAUSES[f.clause_id].level is not spec.Level.MUST
            for f in result.failures
            if f.clause_id in spec.CLAUSES
        )
        if result.error:
            pytest.fail(
                f"the conformance test is broken: {result.error}", pytrace=False
            )
        if result.outcome is Outcome.NOT_APPLICABLE:
            pytest.skip(f"not applicable: {result.reason}")
        if result.outcome is Outcome.XFAIL or (
            result.outcome is Outcome.FAIL and failed_listed
        ):
            reason = (
                result.reason
                or conformance_expected_failures[result.failures[0].clause_id]
            )
            pytest.xfail(reason)
        if result.outcome is Outcome.XPASS:
            pytest.fail(f"expected to fail ({result.reason}) but passed", pytrace=False)
        if result.outcome is Outcome.FAIL and only_should:
            shown = "; ".join(f.evidence[0] for f in result.failures)
            pytest.xfail(f"SHOULD clause not met: {shown}")
        if result.outcome is Outcome.FAIL:
            lines: list[str] = []
            for failure in result.failures:
                lines.extend(failure.evidence)
            pytest.fail("\n".join(lines), pytrace=False)
