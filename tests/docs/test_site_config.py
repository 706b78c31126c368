"""The site's build settings behind the fixes seen in a browser (issue 12, item 11).

Each setting here was checked in headless Chromium once; these tests keep
them from silently going away.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"


class _Loader(yaml.SafeLoader):
    """mkdocs.yml uses !!python/name tags; read them as plain strings."""


_Loader.add_multi_constructor(
    "tag:yaml.org,2002:python/", lambda loader, suffix, node: suffix
)
_Loader.add_constructor("!ENV", lambda loader, node: None)


@pytest.fixture(scope="module")
def config() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.load(
        (ROOT / "mkdocs.yml").read_text(encoding="utf-8"), Loader=_Loader
    )
    return loaded


def _python_options(config: dict[str, Any]) -> dict[str, Any]:
    for plugin in config["plugins"]:
        if isinstance(plugin, dict) and "mkdocstrings" in plugin:
            options: dict[str, Any] = plugin["mkdocstrings"]["handlers"]["python"][
                "options"
            ]
            return options
    raise AssertionError("no mkdocstrings plugin")


def test_mermaid_is_served_by_the_site(config: dict[str, Any]) -> None:
    scripts = config.get("extra_javascript", [])
    assert "assets/javascripts/mermaid.min.js" in scripts
    vendored = DOCS / "assets" / "javascripts" / "mermaid.min.js"
    assert vendored.stat().st_size > 1_000_000  # the whole library, not a stub
    head = vendored.read_bytes()[:4096]
    assert b"mermaid" in head and b"unpkg" not in head
    assert "MIT" in (vendored.with_name("mermaid.LICENSE.txt")).read_text()


def test_returns_sections_are_one_item(config: dict[str, Any]) -> None:
    options = _python_options(config)
    assert options["docstring_options"]["returns_multiple_items"] is False


def test_text_blocks_get_a_class_the_stylesheet_wraps(config: dict[str, Any]) -> None:
    highlight = next(
        e["pymdownx.highlight"]
        for e in config["markdown_extensions"]
        if isinstance(e, dict) and "pymdownx.highlight" in e
    )
    assert highlight["pygments_lang_class"] is True
    css = (DOCS / "stylesheets" / "extra.css").read_text()
    assert ".language-text pre > code" in css and "pre-wrap" in css


def test_every_enum_member_gets_a_docstring(config: dict[str, Any]) -> None:
    """The griffe extension the API pages use documents Level, Area, TaskKind..."""
    import griffe

    options = _python_options(config)
    assert "docs/_hooks/griffe_enums.py:EnumMembers" in options["extensions"]
    sys.path.insert(0, str(DOCS / "_hooks"))
    try:
        from griffe_enums import EnumMembers
    finally:
        sys.path.remove(str(DOCS / "_hooks"))
    loader = griffe.GriffeLoader(
        extensions=griffe.load_extensions(EnumMembers()), search_paths=[str(ROOT)]
    )
    spec_pkg = loader.load("spec")
    conformance_pkg = loader.load("conformance")
    enums = {
        "Level": (spec_pkg["clauses"]["Level"], {"MUST", "SHOULD", "MAY"}),
        "Area": (spec_pkg["clauses"]["Area"], {"LC", "SB", "ST", "RS", "CN", "SD"}),
        "TaskKind": (
            spec_pkg["validation"]["TaskKind"],
            {"FUNCTION", "EXECUTABLE", "PROMPT"},
        ),
        "Outcome": (
            conformance_pkg["report"]["Outcome"],
            {"PASS", "FAIL", "NOT_APPLICABLE", "XFAIL", "XPASS"},
        ),
    }
    for name, (cls, members) in enums.items():
        for member in members:
            assert cls.members[member].docstring, f"{name}.{member} has no docstring"
    # A member's own docstring is kept.
    own = conformance_pkg["report"]["Outcome"].members["BLOCKED"].docstring
    assert own is not None and not own.value.startswith("A member of")


def test_no_made_up_site_address(config: dict[str, Any]) -> None:
    """The site has no host: no invented site_url or repo_url, and the pages
    say how to build and serve it locally instead (issue 23, item 1)."""
    assert "site_url" not in config and "repo_url" not in config
    serve = 'pip install -q -e ".[dev]" && .venv/bin/mkdocs serve'
    for page in (ROOT / "README.md", DOCS / "index.md"):
        assert serve in page.read_text(encoding="utf-8"), page
