"""Every code block in the docs that is meant to run, runs.

The convention, for whoever writes a page:

- a ```` ```python ```` block is a complete program: this test runs it, in a
  fresh interpreter from the project root, and it must exit 0 (use ``assert``
  to check what it prints);
- ```` <!-- run-with: DIR --> ```` on the line before adds ``DIR`` to
  ``PYTHONPATH`` (e.g. to import the tutorial backend);
- a block that must not run (a fragment, a signature) is a ```` ```py ```` or
  ```` ``` { .python } ```` block, preceded by ```` <!-- not-run: why --> ````
  unless it is a listing of a tested file (``<!-- include: PATH -->``,
  copied by ``docs/_hooks/pages.py``), whose file is checked on its own.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
FENCE = re.compile(r"^(?P<indent>\s*)(?P<fence>`{3,})(?P<info>[^`]*)$")
COMMENT = re.compile(r"<!--\s*(?P<kind>not-run|run-with|include):\s*(?P<arg>.*?)\s*-->")


@dataclass(frozen=True)
class Block:
    page: str
    line: int
    lang: str
    code: str
    comment: tuple[str, str] | None

    def __str__(self) -> str:
        return f"{self.page}:{self.line}"


def _blocks(page: Path) -> list[Block]:
    lines = page.read_text(encoding="utf-8").splitlines()
    blocks: list[Block] = []
    i = 0
    while i < len(lines):
        match = FENCE.match(lines[i])
        if not match:
            i += 1
            continue
        start, fence = i, match["fence"]
        info = match["info"].strip()
        # ``` { .python } is a listing: ruff format leaves the brace form alone,
        # so snippet includes and signatures stay as written.
        lang = "py" if info.startswith("{") else info.split(" ")[0]
        body: list[str] = []
        i += 1
        while i < len(lines) and lines[i].strip() != fence:
            body.append(lines[i][len(match["indent"]) :])
            i += 1
        i += 1
        previous = next(
            (
                lines[j]
                for j in range(start - 1, -1, -1)
                if lines[j].strip() not in ("", "<!-- fmt: off -->")
            ),
            "",
        )
        found = COMMENT.search(previous)
        blocks.append(
            Block(
                page=page.relative_to(ROOT).as_posix(),
                line=start + 1,
                lang=lang,
                code="\n".join(body) + "\n",
                comment=(found["kind"], found["arg"]) if found else None,
            )
        )
    return blocks


ALL_BLOCKS = [b for page in sorted(DOCS.rglob("*.md")) for b in _blocks(page)]
RUNNABLE = [b for b in ALL_BLOCKS if b.lang == "python"]


def test_docs_have_runnable_examples() -> None:
    assert len(RUNNABLE) >= 4, [str(b) for b in RUNNABLE]


@pytest.mark.parametrize("block", RUNNABLE, ids=str)
def test_python_block_runs(block: Block) -> None:
    assert not (block.comment and block.comment[0] == "not-run"), (
        f"{block}: a not-run block must be a ```py block, not ```python"
    )
    if "reference.dask" in block.code:
        # The Dask examples need the optional extra; CI installs it.
        pytest.importorskip("distributed")
    env = dict(os.environ)
    if block.comment and block.comment[0] == "run-with":
        extra = str(ROOT / block.comment[1])
        env["PYTHONPATH"] = os.pathsep.join(
            p for p in (extra, env.get("PYTHONPATH")) if p
        )
    done = subprocess.run(
        [sys.executable, "-c", block.code],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )
    assert done.returncode == 0, (
        f"{block} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}\n"
        "(```python blocks in docs/ are run; for a fragment that cannot run, "
        "write ```py with '<!-- not-run: why -->' on the line before)"
    )


@pytest.mark.parametrize("block", [b for b in ALL_BLOCKS if b.lang == "py"], ids=str)
def test_py_block_is_an_include_or_says_why_it_does_not_run(block: Block) -> None:
    if block.comment and block.comment[0] == "include":
        return  # a listing of a tested file (docs/_hooks/pages.py copies it)
    assert block.comment and block.comment[0] == "not-run" and block.comment[1], (
        f"{block}: a ```py block needs a '<!-- not-run: why -->' line before it, "
        "or make it a complete ```python program"
    )


def test_every_python_fence_is_classified() -> None:
    """Catch ``` python3 / ```Python and friends, which would silently not run."""
    odd = [
        str(b)
        for b in ALL_BLOCKS
        if b.lang.lower().startswith("py") and b.lang not in ("py", "python")
    ]
    assert not odd, f"use ```python (runs) or ```py (does not): {odd}"
