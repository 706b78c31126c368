"""A conformance run leaves nothing behind outside a directory it owns.

Run as a user would (the CLI, from their own folder), on backends that write
where uids like ``../x`` and absolute paths point (RS-11's check provokes
it), two levels above their work dir, and into a folder they make read-only.
Afterwards the current folder and the temporary folder are as they were: no
capture file, no litter, no ``.hypothesis/`` (issue 23, item 4).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]


@pytest.mark.parametrize(
    "target",
    [
        "mutants.local_mutants:CaptureOutsideWorkDir",
        "cli_targets:LittersAroundItsWorkDir",
    ],
)
def test_nothing_left_outside_the_suites_directory(tmp_path: Path, target: str) -> None:
    cwd, tmp = tmp_path / "cwd", tmp_path / "tmp"
    cwd.mkdir()
    tmp.mkdir()
    env = dict(
        os.environ, PYTHONPATH=os.pathsep.join([str(HERE), str(ROOT)]), TMPDIR=str(tmp)
    )
    out = subprocess.run(
        # RS-11 provokes the writes; ST-2 brings the stateful test (hypothesis).
        [sys.executable, "-m", "conformance", target, "--clauses", "RS-11,ST-2"],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=env,
        timeout=300,
    )
    assert "RS-11   MUST   fail" in out.stdout, out.stdout + out.stderr
    assert sorted(os.listdir(cwd)) == [], "left in the current folder"
    assert sorted(os.listdir(tmp)) == [], "left in the temporary folder"
    assert sorted(os.listdir(tmp_path)) == ["cwd", "tmp"]
