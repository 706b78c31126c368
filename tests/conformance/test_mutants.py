"""The suite can fail: each mutant in the table fails exactly its clause.

Each row of `mutants.MUTANTS` is run through `conformance.run`, restricted to
the row's clause (so only the tests citing it run), with deadlines scaled
down so a mutant that hangs costs seconds, not the suite's full deadlines.
"""

from __future__ import annotations

from typing import Any

import pytest
from mutants import MUTANTS, Mutant
from mutants import local_mutants as local

import conformance
from conformance import Outcome

DEADLINE_SCALE = 0.25
"""Hanging mutants fail on a quarter of the normal deadlines."""


@pytest.mark.parametrize("mutant", MUTANTS, ids=[m.id for m in MUTANTS])
def test_the_suite_fails_the_broken_clause(mutant: Mutant) -> None:
    report = conformance.run(
        mutant.factory, clauses=[mutant.clause], deadline_scale=DEADLINE_SCALE
    )
    evidence = "\n".join(
        line for t in report.tests for f in t.failures for line in f.evidence[:3]
    )
    assert report.outcome(mutant.clause) is Outcome.FAIL, (
        f"{mutant.name} ({mutant.description}) was not caught: "
        f"{mutant.clause} is {report.outcome(mutant.clause)}\n{evidence}"
    )
    unexpected = report.failed - {mutant.clause} - mutant.also_fails
    assert not unexpected, (
        f"{mutant.name} also failed {sorted(unexpected)}, which it should not "
        f"break (or list them in its row's also_fails)\n{evidence}"
    )
    assert report.exit_code != 0 or mutant.clause not in _must()


def _must() -> set[str]:
    import spec

    return {c.id for c in spec.CLAUSES.values() if c.level is spec.Level.MUST}


def test_every_row_names_its_clause_in_its_docstring() -> None:
    for mutant in MUTANTS:
        first = (mutant.factory.__doc__ or "").strip().splitlines()[0]
        assert first.startswith(f"{mutant.clause}: "), mutant.name


@pytest.mark.parametrize(
    ("factory", "clause", "names"),
    [
        (local.NeverKills, "CN-5", "the kill never came"),
        (local.WaitsForHeldPipes, "CN-7", "wait for the child's exit, not for EOF"),
    ],
)
def test_a_missing_state_after_a_kill_says_what_is_missing(
    factory: Any, clause: str, names: str
) -> None:
    """Not only "never reached a terminal state": was the kill missing, or
    the report of its end (issue 23, item 6)?"""
    report = conformance.run(factory, clauses=[clause], deadline_scale=DEADLINE_SCALE)
    messages = [
        f.message for t in report.tests for f in t.failures if f.clause_id == clause
    ]
    assert any(
        "never reached a terminal state" in m and names in m for m in messages
    ), messages
