"""The site's generated pages say what the code says.

`docs/_hooks/docgen.py` builds the contract tables, the state diagrams, the
task-dict tables and the conformance-test index from the code; these tests
check that nothing is dropped and that the test scanner finds real tags.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

import spec

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "docs" / "_hooks"))
import docgen  # noqa: E402

TAGGED_MODULE = '''
from conformance.registry import clause

@clause("ST-2", "ST-3")
async def one_terminal_state(h):
    """Every accepted task ends in exactly one terminal state."""

@clause("SB-4", requires=())
async def duplicate_uid(h):
    """A repeated uid is rejected."""

async def helper(h):
    """Not a test: no clause."""

class TestThing:
    @pytest.mark.clause("CN-2")
    def test_unknown(self):
        pass
'''


@pytest.fixture
def fake_suite(tmp_path: Path) -> Path:
    package = tmp_path / "conformance"
    (package / "checks").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "checks" / "states.py").write_text(TAGGED_MODULE)
    return package


def test_scanner_finds_tagged_functions_only(fake_suite: Path) -> None:
    tests = docgen.find_conformance_tests(fake_suite)
    assert [(t.test_id, t.clauses) for t in tests] == [
        ("states.one_terminal_state", ("ST-2", "ST-3")),
        ("states.duplicate_uid", ("SB-4",)),
        ("states.TestThing.test_unknown", ("CN-2",)),
    ]
    assert tests[0].summary == "Every accepted task ends in exactly one terminal state."
    assert tests[0].path == "conformance/checks/states.py"


def test_clause_tables_list_every_clause_once_and_link_its_tests(
    fake_suite: Path,
) -> None:
    tests = docgen.find_conformance_tests(fake_suite)
    md = docgen.clause_tables(tests)
    for cid, item in spec.CLAUSES.items():
        rows = [line for line in md.splitlines() if f'<a id="{cid}">' in line]
        assert len(rows) == 1, cid
        assert f'<a id="{cid}"></a>**{cid}** {item.level.value} |' in rows[0]
    st2 = next(line for line in md.splitlines() if '<a id="ST-2">' in line)
    assert "conformance-tests.md#states-one-terminal-state" in st2
    lc1 = next(line for line in md.splitlines() if '<a id="LC-1">' in line)
    assert "no test yet" in lc1
    for area in spec.Area:
        assert f"## {area.value} ({area.name})" in md


def test_tests_page_links_back_to_the_clauses(fake_suite: Path) -> None:
    page = docgen.tests_page(docgen.find_conformance_tests(fake_suite))
    assert '<a id="states-one-terminal-state"></a>' in page
    assert "[ST-3](contract.md#ST-3)" in page


def test_every_clause_id_cited_by_the_real_suite_exists() -> None:
    for test in docgen.find_conformance_tests():
        unknown = set(test.clauses) - set(spec.CLAUSES)
        assert not unknown, f"{test.test_id} cites {unknown}"


def _mermaid_edges(md: str) -> set[tuple[str, str]]:
    return set(re.findall(r"^\s+(\S+) --> (\S+?)(?::.*)?$", md, re.MULTILINE))


def test_task_diagram_has_exactly_the_table_transitions() -> None:
    edges = _mermaid_edges(docgen.task_state_diagram())
    expected = {
        ("accepted" if src is None else src.value, dst.value)
        for src, dsts in spec.TASK_TRANSITIONS.items()
        for dst in dsts
    }
    expected |= {("[*]", "accepted")}
    expected |= {(s.value, "[*]") for s in spec.TERMINAL_STATES}
    assert edges == expected


def test_backend_diagram_has_every_forward_transition() -> None:
    edges = _mermaid_edges(docgen.backend_state_diagram())
    expected = {
        (src.value, dst.value)
        for src, dsts in spec.BACKEND_TRANSITIONS.items()
        for dst in dsts
        if dst is not src
    }
    assert edges - {("[*]", "INITIALIZED")} == expected
    assert ("[*]", "INITIALIZED") in edges


def test_task_dict_tables_cover_every_key() -> None:
    md = docgen.task_dict_tables()
    for cls in (
        spec.TaskDescription,
        spec.TaskResult,
        spec.BackendSpecificKwargs,
        spec.TaskMetadata,
    ):
        assert f"## `{cls.__name__}`" in md
        for key in cls.__annotations__:
            assert f"| `{key}` |" in md, (cls.__name__, key)
    uid_row = next(line for line in md.splitlines() if line.startswith("| `uid` |"))
    assert "| `str` | yes |" in uid_row


def test_capabilities_table_names_every_capability() -> None:
    md = docgen.capabilities_table()
    for cap in spec.Capability:
        assert f"`{cap.value}`" in md


def test_typing_page_shows_every_rejected_case() -> None:
    page = (ROOT / "docs" / "typing.md").read_text(encoding="utf-8")
    shown = set(re.findall(r"generated: mypy-output (\w+)", page))
    assert "rejected_async_state.py:13: error:" in page  # the output, in the page
    cases = {p.stem for p in (ROOT / "tests" / "typing_cases").glob("rejected_*.py")}
    assert cases <= shown, f"typing.md does not show {sorted(cases - shown)}"


def test_mypy_output_is_real() -> None:
    block = docgen.mypy_output("rejected_async_state")
    assert (
        "rejected_async_state.py:13: error: Incompatible types in assignment" in block
    )
    assert "def state(self) -> Coroutine[Any, Any, BackendState]" in block


def test_home_page_quickstart_matches_the_readme() -> None:
    fence = re.compile(r"```bash\n(.*?)```", re.DOTALL)
    readme = fence.findall((ROOT / "README.md").read_text(encoding="utf-8"))
    home = fence.findall((ROOT / "docs" / "index.md").read_text(encoding="utf-8"))
    assert readme[:2] == home[:2]


def test_expected_failures_example_parses() -> None:
    """The example file on the suite's page is one the suite accepts."""
    from conformance import cases, parse_expected_failures

    page = (ROOT / "docs" / "conformance.md").read_text(encoding="utf-8")
    section = page.split("## Expected failures", 1)[1]
    example = re.search(r"```text\n(.*?)```", section, re.DOTALL)
    assert example, "no example file in the Expected failures section"
    parsed = parse_expected_failures(example[1], {c.id for c in cases()})
    assert len(parsed) == 2 and all(parsed.values()), parsed


def test_reference_backends_table_lists_the_real_capabilities() -> None:
    from reference import LocalExecutionBackend, NoopExecutionBackend

    page = (ROOT / "docs" / "reference-backends.md").read_text(encoding="utf-8")

    def row(label: str) -> list[set[str]]:
        line = next(x for x in page.splitlines() if x.startswith(f"| {label} |"))
        cells = [c.strip() for c in line.strip("|").split("|")[1:]]
        return [set(re.findall(r"`(\w+)`", c)) for c in cells]

    declared, structural = row("Capabilities"), row("Also (structural)")
    for column, cls in enumerate((NoopExecutionBackend, LocalExecutionBackend)):
        backend = cls()
        found = {c.value for c in spec.capabilities_of(backend)}
        shown = declared[column] | (
            structural[column] if structural[column] else structural[0]
        )
        assert shown == found, (cls.__name__, shown ^ found)
        assert declared[column] == {c.value for c in cls.capabilities}


def test_typing_page_names_exactly_the_accepted_cases() -> None:
    page = (ROOT / "docs" / "typing.md").read_text(encoding="utf-8")
    named = set(re.findall(r"`(accepted_\w+)\.py`", page))
    cases = {p.stem for p in (ROOT / "tests" / "typing_cases").glob("accepted_*.py")}
    assert named == cases, named ^ cases


def test_suite_page_lists_exactly_the_cli_options() -> None:
    """The option table on docs/conformance.md matches ``--help``."""
    from conformance.__main__ import _parser

    real = {
        opt
        for action in _parser()._actions
        for opt in action.option_strings
        if opt.startswith("--") and opt != "--help"
    }
    page = (ROOT / "docs" / "conformance.md").read_text(encoding="utf-8")
    section = page.split("## From the command line", 1)[1].split("\n## ", 1)[0]
    shown = set(re.findall(r"^\| `(--[\w-]+)", section, re.MULTILINE))
    shown |= set(re.findall(r"^\| `-\w`, `(--[\w-]+)`", section, re.MULTILINE))
    assert shown == real, shown ^ real
