"""The suite passes on the reference backends, in every configuration.

The noop and the thread-pool local backend run through the pytest form (a
`ConformanceSuite` subclass, as a backend author would write it); the
process-pool and the ``async_on_loop=True`` configurations through
`conformance.run`.
"""

from __future__ import annotations

import pytest
from local_pools import (
    async_on_loop,
    one_thread,
    process_pool,
    thread_pool,
    with_resources,
)

import spec
from conformance import Outcome, run
from conformance.suite import ConformanceSuite
from conformance.target import BackendFactory
from reference import NoopExecutionBackend


class TestNoopConformance(ConformanceSuite):
    @pytest.fixture
    def backend_factory(self) -> BackendFactory:
        return NoopExecutionBackend


class TestLocalThreadPoolConformance(ConformanceSuite):
    @pytest.fixture
    def backend_factory(self) -> BackendFactory:
        return thread_pool


# The whole suite in one test: the process pool's took 141 s on 2 cores at
# load average 30 (every test passed, none near its own deadline), over the
# default 120 s timeout.
@pytest.mark.timeout(300)
@pytest.mark.parametrize("factory", [process_pool, async_on_loop, one_thread])
def test_local_configuration_conforms(factory: BackendFactory) -> None:
    report = run(factory)
    assert report.ok, report.to_text()
    for found in spec.CLAUSES.values():
        if found.level is spec.Level.MUST:
            assert report.outcome(found.id) in (Outcome.PASS, Outcome.NOT_APPLICABLE)


def test_local_with_resources_conforms_on_the_resource_clauses() -> None:
    # The whole suite on this configuration runs in CI (.ci/run); here only
    # the clauses that accounting changes, to keep the test run short.
    clauses = [c for c in spec.CLAUSES if c.startswith(("RQ-", "CN-", "SD-"))]
    report = run(with_resources, clauses=clauses)
    assert report.ok, report.to_text()
    for clause_id in clauses:
        if clause_id.startswith("RQ-"):
            assert report.outcome(clause_id) is Outcome.PASS, clause_id


def test_isolation_clauses_are_checked_on_processes_only() -> None:
    # A process pool declares crash_isolation and preemptive_cancel: their
    # clauses are really exercised (PASS, not n/a); a thread pool claims
    # neither, so they do not apply to it.
    isolation = ["RS-12", "CN-8"]
    on_processes = run(process_pool, clauses=isolation)
    assert [on_processes.outcome(c) for c in isolation] == [Outcome.PASS] * 2, (
        on_processes.to_text()
    )
    on_threads = run(thread_pool, clauses=isolation)
    assert [on_threads.outcome(c) for c in isolation] == [Outcome.NOT_APPLICABLE] * 2
