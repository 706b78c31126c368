"""mypy finds ``spec`` in an installed project, from any directory (issue 12, item 4).

A backend author installs the project (``pip install -e .`` as the README
says, or a regular ``pip install``) and runs mypy on their own file in their
own folder. setuptools' default editable install for a flat layout is an
import hook that mypy cannot follow; ``package-dir = {"" = "."}`` in
``pyproject.toml`` makes it a plain ``.pth`` path entry instead, which mypy
reads. Each case installs the project into a fresh venv and runs mypy from
a temporary directory outside the repository.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MYPY = Path(sys.executable).with_name("mypy")

BACKEND = """\
from __future__ import annotations

from spec import ExecutionBackend
from reference import NoopExecutionBackend
from conformance import run

backend: ExecutionBackend = NoopExecutionBackend()
wrong: int = backend.state()  # E: the protocol's return type is known
"""


def _sh(*cmd: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "MYPYPATH")}
    return subprocess.run(
        cmd, capture_output=True, text=True, cwd=cwd, env=env, timeout=300
    )


@pytest.mark.timeout(600)
@pytest.mark.parametrize("editable", [True, False], ids=["editable", "regular"])
def test_mypy_finds_spec_outside_the_repository(tmp_path: Path, editable: bool) -> None:
    venv = tmp_path / "venv"
    made = _sh(sys.executable, "-m", "venv", str(venv), cwd=tmp_path)
    assert made.returncode == 0, made.stderr
    python = venv / "bin" / "python"
    install = [str(python), "-m", "pip", "install", "-q", "--no-deps"]
    install += ["-e", str(ROOT)] if editable else [str(ROOT)]
    done = _sh(*install, cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr

    author = tmp_path / "author"
    author.mkdir()
    (author / "mybackend.py").write_text(BACKEND)
    out = _sh(
        str(MYPY),
        "--strict",
        "--no-color-output",
        "--python-executable",
        str(python),
        "--cache-dir",
        str(tmp_path / "mypy-cache"),
        "mybackend.py",
        cwd=author,
    )
    assert "Cannot find implementation" not in out.stdout, out.stdout
    # The one error is the deliberate one: spec's types were read, not Any.
    lines = [line for line in out.stdout.splitlines() if ": error:" in line]
    assert len(lines) == 1, out.stdout
    assert "mybackend.py:8: error" in lines[0] and "BackendState" in lines[0]
