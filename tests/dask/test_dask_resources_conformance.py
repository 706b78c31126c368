"""The suite's resource and placement clauses on the Dask backend's resources target."""

from __future__ import annotations

import pytest

pytest.importorskip("distributed")


def test_the_shared_resources_target_conforms_on_the_resource_clauses() -> None:
    # `python -m conformance reference.dask:shared_resources_backend`, limited
    # to the clauses accounting changes, to keep the test run short.
    from conformance import Outcome, run
    from reference.dask import shared_resources_backend
    from spec import CLAUSES

    clauses = [c for c in CLAUSES if c.startswith(("RQ-", "PL-", "CN-", "SD-"))]
    report = run(shared_resources_backend, clauses=clauses)
    assert report.ok, report.to_text()
    for clause_id in clauses:
        if clause_id.startswith(("RQ-", "PL-")):
            assert report.outcome(clause_id) is Outcome.PASS, clause_id
