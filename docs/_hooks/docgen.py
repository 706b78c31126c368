"""Markdown generated from the code, so the site cannot drift from it.

Every function here returns Markdown built from one source of truth:

- the clause list (`spec.CLAUSES`) and the state tables
  (`spec.TASK_TRANSITIONS`, `spec.BACKEND_TRANSITIONS`);
- the task dict's TypedDicts, read from the source of `spec/task.py` so the
  attribute docstrings (invisible at run time) are kept;
- the conformance tests, found by scanning `conformance/` for the clause IDs
  the tests are tagged with (without importing it);
- mypy's real output on `tests/typing_cases/`.

`site_hooks.py` wires these into mkdocs; `tests/docs/` calls them directly.
"""

from __future__ import annotations

import ast
import importlib.util
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any

import spec

__all__ = [
    "CLAUSE_ID",
    "TESTS_PAGE",
    "ConformanceTest",
    "attribute_docs",
    "backend_state_diagram",
    "capabilities_table",
    "clause_tables",
    "find_conformance_tests",
    "mypy_output",
    "task_dict_tables",
    "task_state_diagram",
    "tests_page",
    "transitions_table",
]

_AREAS = "|".join(a.name for a in spec.Area)
CLAUSE_ID = re.compile(rf"\b(?:{_AREAS})-\d+\b")
"""A clause ID such as ``SB-2``, for any area the spec defines."""

TESTS_PAGE = "conformance-tests.md"
"""The generated page listing every conformance test and its clauses."""

_ROOT = Path(spec.__file__).resolve().parent.parent


def _package_dir(name: str) -> Path | None:
    """Where an importable package lives, found without importing it."""
    found = importlib.util.find_spec(name)
    if found is None or not found.submodule_search_locations:
        return None
    return Path(next(iter(found.submodule_search_locations)))


def _cell(text: str) -> str:
    """Make text safe inside a Markdown table cell.

    A pipe splits cells except inside a code span, where a backslash would
    show literally; so only pipes outside backticks are escaped.
    """
    parts = text.replace("\n", " ").split("`")
    for i in range(0, len(parts), 2):  # even parts are outside code spans
        parts[i] = parts[i].replace("|", "\\|")
    return "`".join(parts)


# -- conformance tests ---------------------------------------------------------


@dataclass(frozen=True)
class ConformanceTest:
    """One test of the conformance suite and the clauses it checks."""

    path: str
    """Path relative to the project root, e.g. ``conformance/checks/states.py``."""
    qualname: str
    """The function's name, prefixed by its class (``Class.name``) if any."""
    line: int
    summary: str
    clauses: tuple[str, ...] = field(default=())

    @property
    def test_id(self) -> str:
        """The suite's test ID: ``<module>.<qualname>``, e.g. ``states.order``."""
        return f"{Path(self.path).stem}.{self.qualname}"

    @property
    def anchor(self) -> str:
        """The HTML id of the test's entry on the tests page."""
        return re.sub(r"[^a-z0-9]+", "-", self.test_id.lower()).strip("-")


def _ids_in(node: ast.AST) -> list[str]:
    """Clause IDs in the string constants under ``node``."""
    found: list[str] = []
    for sub in ast.walk(node):
        if (
            isinstance(sub, ast.Constant)
            and isinstance(sub.value, str)
            and CLAUSE_ID.fullmatch(sub.value)
        ):
            found.append(sub.value)
    return found


def _tests_in_module(path: Path, root: Path) -> list[ConformanceTest]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    rel = path.relative_to(root).as_posix()
    tests: list[ConformanceTest] = []

    def visit(body: list[ast.stmt], prefix: str, inherited: list[str]) -> None:
        for node in body:
            if not isinstance(
                node, (ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)
            ):
                continue
            ids = inherited + [i for d in node.decorator_list for i in _ids_in(d)]
            if isinstance(node, ast.ClassDef):
                visit(node.body, f"{prefix}{node.name}.", ids)
                continue
            if not ids:
                continue
            doc = (ast.get_docstring(node) or "").strip()
            tests.append(
                ConformanceTest(
                    path=rel,
                    qualname=f"{prefix}{node.name}",
                    line=node.lineno,
                    summary=" ".join(doc.split("\n\n")[0].split()),
                    clauses=tuple(dict.fromkeys(ids)),
                )
            )

    visit(tree.body, "", [])
    return tests


def find_conformance_tests(package_dir: Path | None = None) -> list[ConformanceTest]:
    """Scan the conformance package for tests tagged with clause IDs.

    A function counts as a test of a clause when the clause ID is a string
    constant in one of its decorators (or its class's), which is how the
    suite registers them: ``@cites("ST-2", "ST-3")``. Nothing is imported.

    Args:
        package_dir: The package to scan; defaults to the installed
            ``conformance`` package.

    Returns:
        The tagged tests, module by module in the contract's area order,
        in line order within a module.
    """
    package_dir = package_dir or _package_dir("conformance")
    if package_dir is None:
        return []
    root = package_dir.parent
    tests: list[ConformanceTest] = []
    for path in sorted(package_dir.rglob("*.py")):
        tests.extend(_tests_in_module(path, root))
    # Present modules in the contract's order: by the first area they check.
    areas = [a.name for a in spec.Area]
    first_area: dict[str, int] = {}
    for test in tests:
        rank = min(areas.index(c.split("-")[0]) for c in test.clauses)
        first_area[test.path] = min(first_area.get(test.path, rank), rank)
    return sorted(tests, key=lambda t: first_area[t.path])


def tests_page(tests: list[ConformanceTest]) -> str:
    """The page listing each conformance test with the clauses it checks."""
    lines = [
        "# Conformance tests",
        "",
        "Every test of the conformance suite that is tagged with a clause ID, "
        "found by scanning the `conformance` package. "
        "Each clause on [the contract](contract.md) links here.",
        "",
    ]
    if not tests:
        lines.append("No tagged conformance test was found when this site was built.")
        return "\n".join(lines) + "\n"
    current = None
    for test in tests:
        if test.path != current:
            current = test.path
            lines += [f"## `{current}`", ""]
        links = ", ".join(f"[{c}](contract.md#{c})" for c in test.clauses)
        lines += [
            f'<a id="{test.anchor}"></a>',
            "",
            f"### `{test.test_id}`",
            "",
            f"`{test.path}`; checks {links}.",
            "",
        ]
        if test.summary:
            lines += [f"> {test.summary}", ""]
    return "\n".join(lines) + "\n"


# -- the clause list -----------------------------------------------------------


def clause_tables(
    tests: list[ConformanceTest], tests_page_url: str = TESTS_PAGE
) -> str:
    """Every clause, grouped by area, each linking to the tests that check it."""
    by_clause: dict[str, list[ConformanceTest]] = {}
    for test in tests:
        for cid in test.clauses:
            by_clause.setdefault(cid, []).append(test)
    out: list[str] = []
    area = None
    for item in spec.CLAUSES.values():
        if item.area is not area:
            area = item.area
            out += [
                "",
                f"## {area.value} ({area.name})",
                "",
                "| Clause | Rule | Applies to | Checked by |",
                "| --- | --- | --- | --- |",
            ]
        applies = (
            f"[`{item.capability.value}`](#capabilities)"
            if item.capability
            else "every backend"
        )
        checked = ", ".join(
            f"[`{t.test_id}`]({tests_page_url}#{t.anchor})"
            for t in by_clause.get(item.id, [])
        )
        out.append(
            f'| <a id="{item.id}"></a>**{item.id}** {item.level.value} '
            f"| {_cell(item.text)} | {applies} | {checked or 'no test yet'} |"
        )
    return "\n".join(out).lstrip("\n") + "\n"


# -- state machines --------------------------------------------------------------


def _sorted(states: Iterable[Enum]) -> list[Enum]:
    """States in their enum's declaration order."""
    return sorted(states, key=lambda s: list(type(s).__members__.values()).index(s))


def _name(state: Enum | None) -> str:
    return "accepted" if state is None else str(state.value)


def _edges(table: Mapping[Any, Iterable[Any]]) -> list[tuple[str, str]]:
    return [
        (_name(src), _name(dst))
        for src, dsts in table.items()
        for dst in _sorted(dsts)
        if dst != src
    ]


def task_state_diagram() -> str:
    """A mermaid state diagram of `spec.TASK_TRANSITIONS`."""
    table: Mapping[Any, Iterable[Any]] = spec.TASK_TRANSITIONS
    lines = [
        "stateDiagram-v2",
        "    direction LR",
        "    [*] --> accepted: submit_tasks",
    ]
    lines += [f"    {a} --> {b}" for a, b in _edges(table)]
    lines += [
        f"    {_name(s)} --> [*]" for s, nxt in spec.TASK_TRANSITIONS.items() if not nxt
    ]
    return "```mermaid\n" + "\n".join(lines) + "\n```\n"


def backend_state_diagram() -> str:
    """A mermaid state diagram of `spec.BACKEND_TRANSITIONS`."""
    table: Mapping[Any, Iterable[Any]] = spec.BACKEND_TRANSITIONS
    edges = _edges(table)
    targets = {b for _, b in edges}
    lines = ["stateDiagram-v2", "    direction LR"]
    lines += [
        f"    [*] --> {_name(s)}: constructed"
        for s in spec.BACKEND_TRANSITIONS
        if _name(s) not in targets
    ]
    lines += [f"    {a} --> {b}" for a, b in edges]
    return "```mermaid\n" + "\n".join(lines) + "\n```\n"


def transitions_table(which: str) -> str:
    """The transition table itself, as text (the diagrams need JavaScript)."""
    table: Mapping[Any, Iterable[Any]]
    if which == "task":
        table = spec.TASK_TRANSITIONS
        head = "| Last state reported | May be reported next |"
    else:
        table = spec.BACKEND_TRANSITIONS
        head = "| `state()` returned | May return next |"
    rows = [head, "| --- | --- |"]
    for src, dsts in table.items():
        nxt = _sorted(dsts)
        label = "nothing yet (accepted)" if src is None else f"`{_name(src)}`"
        names = ", ".join(f"`{_name(d)}`" for d in nxt) or "nothing (terminal)"
        rows.append(f"| {label} | {names} |")
    return "\n".join(rows) + "\n"


# -- attribute docstrings ---------------------------------------------------------


def attribute_docs(path: Path, class_name: str) -> dict[str, tuple[str, str]]:
    """Annotated attributes of a class: name -> (annotation source, docstring).

    Reads the source because attribute docstrings are not kept at run time.
    Plain assignments (enum members) get an empty annotation.
    """
    source = path.read_text(encoding="utf-8")
    tree = ast.parse(source)
    for node in tree.body:
        if isinstance(node, ast.ClassDef) and node.name == class_name:
            break
    else:
        raise LookupError(f"no class {class_name} in {path}")
    out: dict[str, tuple[str, str]] = {}
    body = node.body
    for i, stmt in enumerate(body):
        name, annotation = None, ""
        if isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name):
            name = stmt.target.id
            annotation = ast.get_source_segment(source, stmt.annotation) or ""
        elif (
            isinstance(stmt, ast.Assign)
            and len(stmt.targets) == 1
            and isinstance(stmt.targets[0], ast.Name)
        ):
            name = stmt.targets[0].id
        if name is None:
            continue
        doc = ""
        nxt = body[i + 1] if i + 1 < len(body) else None
        if (
            isinstance(nxt, ast.Expr)
            and isinstance(nxt.value, ast.Constant)
            and isinstance(nxt.value.value, str)
        ):
            doc = " ".join(nxt.value.value.split())
        out[name] = (annotation, doc)
    return out


def _rst_to_md(text: str) -> str:
    """Docstrings use RST double backticks; Markdown wants single ones."""
    return text.replace("``", "`")


def _type(annotation: str) -> str:
    """The annotation without a ``Required[...]`` / ``NotRequired[...]`` wrapper."""
    for wrapper in ("Required[", "NotRequired["):
        if annotation.startswith(wrapper):
            return f"`{annotation[len(wrapper) : -1]}`"
    return f"`{annotation}`"


_TASK_SECTIONS = (
    (
        "TaskDescription",
        "the engine",
        "before `submit_tasks`",
    ),
    (
        "TaskResult",
        "the backend",
        "before it reports the terminal state ([ST-6](contract.md#ST-6))",
    ),
    (
        "BackendSpecificKwargs",
        "the engine (from the task decorator's `task_description`)",
        "before `submit_tasks`",
    ),
    (
        "TaskMetadata",
        "the engine",
        "before `submit_tasks`",
    ),
    (
        "Placement",
        "the backend (capability `placement`)",
        "before it reports the terminal state ([PL-1](contract.md#PL-1))",
    ),
)


def task_dict_tables() -> str:
    """One table per TypedDict of `spec.task`: key, type, writer, time, meaning."""
    path = Path(spec.task.__file__)
    out: list[str] = []
    for class_name, writer, when in _TASK_SECTIONS:
        cls = getattr(spec, class_name)
        key = {
            "BackendSpecificKwargs": "task_backend_specific_kwargs",
            "TaskMetadata": "metadata",
            "Placement": "placement",
        }.get(class_name)
        where = f' It is the value of `task["{key}"]`.' if key else ""
        doc = _rst_to_md((cls.__doc__ or "").strip().split("\n\n")[0])
        out += [
            f"## `{class_name}`",
            "",
            " ".join(doc.split()) + where,
            "",
            f"Written by **{writer}**, {when}.",
            "",
            "| Key | Type | Required | Meaning |",
            "| --- | --- | --- | --- |",
        ]
        # Read Required[...] from the source: with postponed annotations the
        # runtime __required_keys__ cannot see it.
        total: bool = getattr(cls, "__total__", True)
        for key, (annotation, text) in attribute_docs(path, class_name).items():
            required = annotation.startswith("Required[") or (
                total and not annotation.startswith("NotRequired[")
            )
            req = "yes" if required else "no"
            out.append(
                f"| `{key}` | {_cell(_type(annotation))} | {req} "
                f"| {_cell(_rst_to_md(text))} |"
            )
        out.append("")
    return "\n".join(out)


def capabilities_table() -> str:
    """Every `spec.Capability`, its meaning, and the clauses that apply under it."""
    docs = attribute_docs(Path(spec.capabilities.__file__), "Capability")
    rows = [
        "| Capability | Value | Meaning | Clauses |",
        "| --- | --- | --- | --- |",
    ]
    for cap in spec.Capability:
        ids = [c.id for c in spec.CLAUSES.values() if c.capability is cap]
        links = ", ".join(f"[{i}](#{i})" for i in ids) or "none"
        default = " (default)" if cap in spec.DEFAULT_CAPABILITIES else ""
        rows.append(
            f"| `{cap.name}`{default} | `{cap.value}` "
            f"| {_cell(_rst_to_md(docs.get(cap.name, ('', ''))[1]))} | {links} |"
        )
    return "\n".join(rows) + "\n"


# -- mypy output -------------------------------------------------------------------


_mypy_cache: dict[str, list[str]] = {}


def mypy_output(case: str, cases_dir: Path | None = None) -> str:
    """mypy's real ``--strict`` output on one typing case, as a text block.

    mypy runs once per build over the whole ``tests/typing_cases`` directory.
    """
    cases_dir = cases_dir or _ROOT / "tests" / "typing_cases"
    if not _mypy_cache:
        from mypy import api

        stdout, stderr, _ = api.run(
            ["--strict", "--no-color-output", "--no-error-summary", str(cases_dir)]
        )
        if stderr:
            raise RuntimeError(f"mypy failed on {cases_dir}: {stderr}")
        for raw in stdout.splitlines():
            file, _, rest = raw.partition(":")
            _mypy_cache.setdefault(Path(file).stem, []).append(
                f"{Path(file).name}:{rest}"
            )
    if case not in _mypy_cache:
        raise LookupError(f"mypy reported nothing for typing case {case!r}")
    return "```text\n" + "\n".join(_mypy_cache[case]) + "\n```\n"
