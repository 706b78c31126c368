"""Fill the generated parts of the pages in docs/, so they read complete anywhere.

The pages are plain Markdown that reads whole in any viewer (a clone, a
repository browser): what is generated from the code is committed in the
page, between two markers, and this module rewrites it.

- ``<!-- generated: NAME [ARG] -->`` ... ``<!-- end generated -->``: Markdown
  built by `docgen` (the clause tables, the state diagrams, the task-dict
  tables, mypy's output on a typing case);
- ``<!-- include: PATH[:SECTION] -->`` ... ``<!-- end include -->``: a code
  listing copied from a tested file (the tutorial's backends), a whole file
  or the part between its ``# --8<-- [start:SECTION]`` and
  ``# --8<-- [end:SECTION]`` lines;
- `docgen.TESTS_PAGE` is generated whole.

A marker written without its end (a new one) is filled on the next run.
Run from the project root::

    python docs/_hooks/pages.py           # rewrite what is stale
    python docs/_hooks/pages.py --check   # exit 1 naming the stale pages

``tests/docs/test_pages_fresh.py`` and the site build (``site_hooks.py``)
fail on a stale page and name this command.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Callable
from pathlib import Path

import docgen

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
COMMAND = "python docs/_hooks/pages.py"
"""The one command that regenerates every generated part of the pages."""

_GENERATED = re.compile(
    r"<!-- generated: (?P<name>[\w-]+)(?: (?P<arg>[\w.-]+))? -->\n"
    r"(?:(?P<body>.*?)<!-- end generated -->\n)?",
    re.DOTALL,
)
_INCLUDE = re.compile(
    r"<!-- include: (?P<path>[\w./-]+)(?::(?P<section>[\w-]+))? -->\n"
    r"(?:(?P<body>.*?)<!-- end include -->\n)?",
    re.DOTALL,
)
_SECTION_LINE = re.compile(r"^\s*# --8<-- \[(?:start|end):[\w-]+\]\s*$")


def generators() -> dict[str, Callable[[str | None], str]]:
    """The generated parts a page may hold, by marker name."""
    tests = docgen.find_conformance_tests()
    return {
        "clauses": lambda _arg: docgen.clause_tables(tests),
        "capabilities": lambda _arg: docgen.capabilities_table(),
        "task-diagram": lambda _arg: docgen.task_state_diagram(),
        "backend-diagram": lambda _arg: docgen.backend_state_diagram(),
        "transitions": lambda arg: docgen.transitions_table(arg or "task"),
        "task-dict": lambda _arg: docgen.task_dict_tables(),
        "mypy-output": lambda arg: docgen.mypy_output(arg or ""),
    }


def listing(path: str, section: str | None) -> str:
    """A fenced listing of a file, or of one ``--8<--`` section of it.

    Section markers are left out, indentation is kept, as the snippets
    extension did when the pages included the files at build time.
    """
    lines = (ROOT / path).read_text(encoding="utf-8").splitlines()
    if section is not None:
        start = f"# --8<-- [start:{section}]"
        end = f"# --8<-- [end:{section}]"
        begin = next((i for i, x in enumerate(lines) if x.strip() == start), None)
        if begin is None:
            raise LookupError(f"{path} has no section {section!r}")
        stop = next(i for i in range(begin, len(lines)) if lines[i].strip() == end)
        lines = lines[begin + 1 : stop]
    body = "\n".join(x for x in lines if not _SECTION_LINE.match(x)).strip("\n")
    # fmt: off keeps ruff format (it formats Python blocks in Markdown) from
    # re-indenting a method's listing: the page shows the file as it is.
    return f"<!-- fmt: off -->\n```py\n{body}\n```\n<!-- fmt: on -->\n"


def render(page: str, text: str) -> str:
    """The page with every generated part and listing rebuilt from the code.

    Raises:
        LookupError: the page names an unknown generator or a missing section.
    """
    made = generators()

    def fill(match: re.Match[str]) -> str:
        name, arg = match["name"], match["arg"]
        if name not in made:
            raise LookupError(
                f"{page}: unknown generation marker {name!r}; "
                f"known: {', '.join(sorted(made))}"
            )
        head = f"<!-- generated: {name}{f' {arg}' if arg else ''} -->\n"
        return f"{head}{made[name](arg).rstrip()}\n<!-- end generated -->\n"

    def include(match: re.Match[str]) -> str:
        path, section = match["path"], match["section"]
        head = f"<!-- include: {path}{f':{section}' if section else ''} -->\n"
        return f"{head}{listing(path, section)}<!-- end include -->\n"

    return _INCLUDE.sub(include, _GENERATED.sub(fill, text))


def tests_page_text() -> str:
    """The conformance-tests page, generated whole."""
    note = f"<!-- generated whole by `{COMMAND}`: do not edit -->\n\n"
    return note + docgen.tests_page(docgen.find_conformance_tests())


def expected_pages() -> dict[Path, str]:
    """Every page with generated parts, as it should read now."""
    out: dict[Path, str] = {DOCS / docgen.TESTS_PAGE: tests_page_text()}
    for path in sorted(DOCS.rglob("*.md")):
        if path.name == docgen.TESTS_PAGE:
            continue
        text = path.read_text(encoding="utf-8")
        if "<!-- generated: " in text or "<!-- include: " in text:
            out[path] = render(path.relative_to(ROOT).as_posix(), text)
    return out


def stale_pages(expected: dict[Path, str]) -> list[Path]:
    """The pages whose committed text differs from ``expected``."""
    return [
        path
        for path, text in expected.items()
        if not path.exists() or path.read_text(encoding="utf-8") != text
    ]


def main(argv: list[str] | None = None) -> int:
    """Rewrite the stale pages, or with ``--check`` only name them."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--check", action="store_true", help="write nothing; exit 1 if stale"
    )
    args = parser.parse_args(argv)
    expected = expected_pages()
    stale = stale_pages(expected)
    for path in stale:
        rel = path.relative_to(ROOT).as_posix()
        if args.check:
            print(f"stale: {rel}")
        else:
            path.write_text(expected[path], encoding="utf-8")
            print(f"wrote {rel}")
    if args.check and stale:
        print(f"run `{COMMAND}` to regenerate them", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
