"""mkdocs hooks: fill the ``<!-- generated: ... -->`` markers from the code.

A page writes a marker where generated Markdown belongs, for example
``<!-- generated: clauses -->``; an unknown marker fails the build. The
conformance-tests page is generated whole.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import docgen
from mkdocs.config.defaults import MkDocsConfig
from mkdocs.exceptions import PluginError
from mkdocs.structure.files import File, Files
from mkdocs.structure.pages import Page

_MARKER = re.compile(
    r"<!--\s*generated:\s*(?P<name>[\w-]+)(?:\s+(?P<arg>[\w.-]+))?\s*-->"
)


def _generators() -> dict[str, Callable[[str | None], str]]:
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


def on_files(files: Files, config: MkDocsConfig, **_: Any) -> Files:
    """Add the generated conformance-tests page."""
    content = docgen.tests_page(docgen.find_conformance_tests())
    files.append(File.generated(config, docgen.TESTS_PAGE, content=content))
    return files


def on_page_markdown(markdown: str, page: Page, **_: Any) -> str:
    """Replace every generation marker in a page."""
    if "<!--" not in markdown or "generated:" not in markdown:
        return markdown
    generators = _generators()

    def expand(match: re.Match[str]) -> str:
        name = match["name"]
        if name not in generators:
            raise PluginError(
                f"{page.file.src_uri}: unknown generation marker {name!r}; "
                f"known: {', '.join(sorted(generators))}"
            )
        return generators[name](match["arg"])

    return _MARKER.sub(expand, markdown)
