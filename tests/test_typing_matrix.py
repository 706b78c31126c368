"""The typing matrix: mypy accepts the backends people write, rejects the mistakes.

Each file in ``typing_cases/`` is one case. ``accepted_*`` files must
type-check clean under ``--strict``. ``rejected_*`` files carry a marker
``# E: <error-code> <member>`` on the line where mypy must report that error
code, with the offending protocol member named in its notes; any other
error, or the expected one going missing, fails the test.
"""

from __future__ import annotations

import re
from collections import defaultdict
from pathlib import Path

import pytest
from mypy import api

CASES = Path(__file__).parent / "typing_cases"
MARKER = re.compile(r"#\s*E:\s*(?P<code>[\w-]+)\s+(?P<member>\w+)")
LINE = re.compile(
    r"^(?P<file>[^:]+):(?P<line>\d+): (?P<kind>error|note): (?P<text>.*)$"
)


def _case_files(prefix: str) -> list[Path]:
    return sorted(CASES.glob(f"{prefix}_*.py"))


@pytest.fixture(scope="module")
def mypy_report() -> dict[tuple[str, int], dict[str, list[str]]]:
    """Run mypy once over every case; group its output by (file name, line)."""
    stdout, stderr, _status = api.run(
        ["--strict", "--no-color-output", "--no-error-summary", str(CASES)]
    )
    assert not stderr, stderr
    report: dict[tuple[str, int], dict[str, list[str]]] = defaultdict(
        lambda: {"error": [], "note": []}
    )
    for raw in stdout.splitlines():
        match = LINE.match(raw)
        assert match, f"unparsed mypy output: {raw}"
        key = (Path(match["file"]).name, int(match["line"]))
        report[key][match["kind"]].append(match["text"])
    return report


def test_matrix_has_enough_cases() -> None:
    assert len(_case_files("accepted")) >= 6
    assert len(_case_files("rejected")) >= 8


@pytest.mark.parametrize("case", _case_files("accepted"), ids=lambda p: p.stem)
def test_accepted(
    case: Path, mypy_report: dict[tuple[str, int], dict[str, list[str]]]
) -> None:
    errors = {key: v["error"] for key, v in mypy_report.items() if key[0] == case.name}
    assert not any(errors.values()), f"mypy rejected {case.name}: {errors}"


@pytest.mark.parametrize("case", _case_files("rejected"), ids=lambda p: p.stem)
def test_rejected(
    case: Path, mypy_report: dict[tuple[str, int], dict[str, list[str]]]
) -> None:
    expected = {
        number: match
        for number, text in enumerate(case.read_text().splitlines(), start=1)
        if (match := MARKER.search(text))
    }
    assert expected, f"{case.name} has no '# E:' marker"
    for number, marker in expected.items():
        found = mypy_report.get((case.name, number), {"error": [], "note": []})
        codes = [e for e in found["error"] if e.endswith(f"[{marker['code']}]")]
        assert codes, (
            f"{case.name}:{number}: mypy no longer reports [{marker['code']}]; "
            f"got {found['error']}"
        )
        notes = "\n".join(found["note"])
        assert re.search(rf"\b{marker['member']}\b", notes), (
            f"{case.name}:{number}: notes do not name {marker['member']!r}: {notes}"
        )
    unexpected = {
        line: v["error"]
        for (name, line), v in mypy_report.items()
        if name == case.name and line not in expected and v["error"]
    }
    assert not unexpected, f"{case.name}: unexpected mypy errors {unexpected}"
