"""The generated parts committed in docs/*.md are what the code generates now.

The pages carry their clause tables, diagrams, task-dict tables, mypy output
and tutorial listings in the Markdown itself (so they read complete in any
viewer); `docs/_hooks/pages.py` rewrites them. This test regenerates every
page in memory and fails on any difference, naming the command.
"""

from __future__ import annotations

import difflib
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "docs" / "_hooks"))
import pages  # noqa: E402


def test_committed_pages_match_the_code() -> None:
    expected = pages.expected_pages()
    stale = pages.stale_pages(expected)
    diffs = []
    for path in stale:
        old = path.read_text(encoding="utf-8") if path.exists() else ""
        rel = path.relative_to(ROOT).as_posix()
        diff = difflib.unified_diff(
            old.splitlines(), expected[path].splitlines(), rel, rel, lineterm="", n=1
        )
        diffs.append("\n".join(list(diff)[:30]))
    assert not stale, (
        f"generated parts of the docs are stale: run `{pages.COMMAND}` and "
        "commit the result\n\n" + "\n\n".join(diffs)
    )


def test_every_generated_part_is_filled_and_closed() -> None:
    for path in sorted((ROOT / "docs").rglob("*.md")):
        text = path.read_text(encoding="utf-8")
        assert text.count("<!-- generated: ") == text.count("<!-- end generated -->")
        assert text.count("<!-- include: ") == text.count("<!-- end include -->")
        assert "--8<--" not in text, f"{path}: a build-time include reads empty"


def test_a_listing_is_the_file_section_without_its_markers() -> None:
    listing = pages.listing("docs/tutorial/tutorial_backend.py", "cancel")
    source = (ROOT / "docs/tutorial/tutorial_backend.py").read_text(encoding="utf-8")
    body = listing.split("```py\n", 1)[1].split("\n```", 1)[0]
    assert body in source
    assert "    async def cancel_task(" in body  # indentation kept
    assert "--8<--" not in body


def test_check_mode_names_a_stale_page_and_writes_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    page = tmp_path / "docs" / "page.md"
    page.parent.mkdir()
    page.write_text("old\n", encoding="utf-8")
    monkeypatch.setattr(pages, "ROOT", tmp_path)
    monkeypatch.setattr(pages, "expected_pages", lambda: {page: "new\n"})
    assert pages.main(["--check"]) == 1
    out, err = capsys.readouterr()
    assert "stale: docs/page.md" in out and pages.COMMAND in err
    assert page.read_text(encoding="utf-8") == "old\n"
    assert pages.main([]) == 0
    assert page.read_text(encoding="utf-8") == "new\n"
    assert pages.main(["--check"]) == 0
