"""Clause coverage: the suite tests every MUST clause, and can fail each one.

Reads the conformance registry (every test and the clause IDs it cites) and
the mutant table, and fails when:

* a MUST clause has no conformance test;
* a test, or a mutant, cites a clause ID that `spec.CLAUSES` does not have;
* a MUST (or SHOULD) clause has no mutant proving the suite can fail it.
"""

from __future__ import annotations

import pytest
from mutants import MUTANTS

import conformance
import spec

_BY_LEVEL = {
    level: sorted(c.id for c in spec.CLAUSES.values() if c.level is level)
    for level in spec.Level
}


def _tested() -> set[str]:
    return {c for case in conformance.cases() for c in case.clauses}


def test_the_registry_is_not_empty() -> None:
    assert len(conformance.cases()) >= len(_BY_LEVEL[spec.Level.MUST])


def test_every_must_clause_has_a_conformance_test() -> None:
    untested = [c for c in _BY_LEVEL[spec.Level.MUST] if c not in _tested()]
    assert not untested, f"MUST clauses without a conformance test: {untested}"


def test_every_test_cites_an_existing_clause() -> None:
    unknown = {
        case.id: [c for c in case.clauses if c not in spec.CLAUSES]
        for case in conformance.cases()
    }
    unknown = {test: ids for test, ids in unknown.items() if ids}
    assert not unknown, f"tests citing clauses that do not exist: {unknown}"


def test_every_test_cites_at_least_one_clause() -> None:
    assert all(case.clauses for case in conformance.cases())


def test_every_mutant_breaks_an_existing_clause() -> None:
    unknown = [
        m.id
        for m in MUTANTS
        if m.clause not in spec.CLAUSES
        or not m.also_fails <= set(spec.CLAUSES)
        or m.clause in m.also_fails
    ]
    assert not unknown, f"mutants naming clauses that do not exist: {unknown}"


@pytest.mark.parametrize("level", [spec.Level.MUST, spec.Level.SHOULD])
def test_every_clause_has_a_mutant(level: spec.Level) -> None:
    covered = {m.clause for m in MUTANTS}
    missing = [c for c in _BY_LEVEL[level] if c not in covered]
    assert not missing, f"{level} clauses no mutant breaks: {missing}"


def test_every_mutant_is_a_distinct_class() -> None:
    names = [m.name for m in MUTANTS]
    assert len(names) == len(set(names))
