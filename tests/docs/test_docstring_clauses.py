"""Docstrings that cite a clause cite the right one.

Each spec error's docstring names the clause that raises or stores it; that
clause's text must name the error (StandInError once cited RS-10, the dry-run
clause, instead of RS-9).
"""

from __future__ import annotations

import re

import pytest

import spec
import spec.errors

CITED = re.compile(r"\b[A-Z]{2}-\d+\b")


@pytest.mark.parametrize("name", spec.errors.__all__)
def test_error_docstrings_cite_the_clause_that_names_them(name: str) -> None:
    doc = getattr(spec.errors, name).__doc__ or ""
    for clause_id in CITED.findall(doc):
        assert name in spec.clause(clause_id).text, (
            f"{name}'s docstring cites {clause_id}, whose text does not name it: "
            f"{spec.clause(clause_id).text!r}"
        )


def test_stand_in_error_cites_rs_9() -> None:
    assert "RS-9" in (spec.StandInError.__doc__ or "")
