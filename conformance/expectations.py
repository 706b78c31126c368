"""Expected failures: known gaps a backend author tracks on purpose.

The file lists one clause ID or test ID per line, then the reason::

    # clause or test id    reason
    RS-9                   exceptions are never pickled back yet (#12)
    cancellation.cancel_running_task   thread pool cannot interrupt functions

Blank lines and lines starting with ``#`` are ignored. A listed clause or test that
fails is reported ``xfail``; one that passes is reported ``xpass`` and fails
the run, so the list cannot silently go stale.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import spec

__all__ = ["load_expected_failures", "parse_expected_failures"]


def parse_expected_failures(
    text: str, known_tests: set[str] | None = None
) -> dict[str, str]:
    """Parse an expected-failures listing.

    Args:
        text: The file's contents.
        known_tests: Test IDs that exist; when given, unknown IDs are rejected.

    Returns:
        ID -> reason.

    Raises:
        ValueError: A line names no clause and no known test, or has no reason.
    """
    found: dict[str, str] = {}
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        # Only whole lines are comments: a reason may cite an issue ("#12").
        if not line or line.startswith("#"):
            continue
        ident, *rest = line.split(None, 1)
        reason = rest[0].strip() if rest else ""
        if not reason:
            raise ValueError(f"line {number}: {ident!r} needs a reason after it")
        is_clause = ident in spec.CLAUSES
        if not is_clause and known_tests is not None and ident not in known_tests:
            raise ValueError(
                f"line {number}: {ident!r} is neither a clause ID nor a test ID"
            )
        found[ident] = reason
    return found


def load_expected_failures(
    path: str | Path, known_tests: set[str] | None = None
) -> Mapping[str, str]:
    """Read and parse an expected-failures file (see `parse_expected_failures`)."""
    return parse_expected_failures(Path(path).read_text(), known_tests)
