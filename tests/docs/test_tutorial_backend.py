"""The tutorial's backend (docs/tutorial/tutorial_backend.py) is real and conforms.

The page shows this file; these tests keep it honest: mypy accepts it as a
`spec.ExecutionBackend` under ``--strict``, and the conformance suite passes
every MUST clause for the capabilities it declares.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from mypy import api

import spec

ROOT = Path(__file__).resolve().parents[2]
TUTORIAL = ROOT / "docs" / "tutorial" / "tutorial_backend.py"


def _load() -> ModuleType:
    found = importlib.util.spec_from_file_location("tutorial_backend", TUTORIAL)
    assert found and found.loader
    module = importlib.util.module_from_spec(found)
    sys.modules["tutorial_backend"] = module
    found.loader.exec_module(module)
    return module


def test_mypy_strict_accepts_it_as_an_execution_backend() -> None:
    text = TUTORIAL.read_text(encoding="utf-8")
    # The file must declare conformance, or mypy would check nothing.
    assert "backend: ExecutionBackend = TutorialBackend()" in text
    stdout, stderr, status = api.run(["--strict", "--no-error-summary", str(TUTORIAL)])
    assert status == 0, stdout + stderr


def test_mypy_would_reject_a_broken_copy(tmp_path: Path) -> None:
    """The declaration really is checked: break cancel_task and mypy says so."""
    broken = TUTORIAL.read_text(encoding="utf-8").replace(
        "async def cancel_task(self, uid: str) -> bool:",
        "def cancel_task(self, uid: str) -> bool:",
    )
    broken = broken.replace("asyncio.get_running_loop().call_soon(", "(")
    path = tmp_path / "tutorial_backend.py"
    path.write_text(broken, encoding="utf-8")
    stdout, _, status = api.run(["--strict", "--no-error-summary", str(path)])
    assert status == 1
    assert "cancel_task" in stdout


def test_it_declares_functions_only() -> None:
    module = _load()
    backend = module.TutorialBackend()
    assert isinstance(backend, spec.ExecutionBackend)
    assert spec.capabilities_of(backend) == {spec.Capability.FUNCTIONS}


@pytest.mark.asyncio
async def test_the_tutorial_walkthrough_holds() -> None:
    """The behaviours the page promises, one quick run."""
    module = _load()
    backend = module.TutorialBackend()
    states: list[tuple[str, str]] = []
    terminal = asyncio.Event()

    def on_state(task: dict[str, Any], state: str) -> None:
        states.append((task["uid"], str(state)))
        if sum(s in ("DONE", "FAILED", "CANCELED") for _, s in states) == 4:
            terminal.set()

    async def forever() -> None:
        await asyncio.Event().wait()

    backend.register_callback(on_state)
    batch = [
        {"uid": "ok", "function": divmod, "args": [7, 2]},
        {"uid": "boom", "function": lambda: 1 / 0},
        {"uid": "exe", "executable": "/bin/true"},
        {"uid": "hang", "function": forever},
    ]
    await backend.submit_tasks(batch)
    assert states == []  # nothing delivered inside submit_tasks (ST-5)
    with pytest.raises(spec.DuplicateTaskError):
        await backend.submit_tasks([{"uid": "new"}, {"uid": "ok"}])
    assert await backend.cancel_task("hang") is True
    assert await backend.cancel_task("nobody") is False
    await asyncio.wait_for(terminal.wait(), timeout=30)
    await backend.shutdown()
    assert backend.state() is spec.BackendState.SHUTDOWN
    final = {uid: s for uid, s in states if s != "RUNNING"}
    assert final == {
        "ok": "DONE",
        "boom": "FAILED",
        "exe": "FAILED",
        "hang": "CANCELED",
    }
    assert batch[0]["return_value"] == (3, 1)
    assert isinstance(batch[1]["exception"], ZeroDivisionError)
    assert "ZeroDivisionError" in batch[1]["stderr"]
    assert isinstance(batch[2]["exception"], spec.CapabilityNotSupportedError)
    with pytest.raises(spec.BackendShutdownError):
        await backend.submit_tasks([{"uid": "late", "function": int}])


def _run(args: list[str], tmp_path: Path) -> subprocess.CompletedProcess[str]:
    """Run a command from the project root with the tutorial importable."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(TUTORIAL.parent), env.get("PYTHONPATH")) if p
    )
    return subprocess.run(
        [sys.executable, *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def test_the_documented_cli_command_passes_every_applicable_must_clause(
    tmp_path: Path,
) -> None:
    """The tutorial's last step, as the page writes it, with a JSON report."""
    report_path = tmp_path / "report.json"
    done = _run(
        [
            "-m",
            "conformance",
            "tutorial_backend:TutorialBackend",
            "--json",
            str(report_path),
        ],
        tmp_path,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    report = json.loads(report_path.read_text(encoding="utf-8"))
    assert report["capabilities"] == ["functions"]
    outcomes = {c["id"]: c["outcome"] for c in report["clauses"]}
    assert set(outcomes) == set(spec.CLAUSES)
    # SC-3 (SHOULD) is a timing measurement; on a loaded machine it may miss
    # its bound without the backend being wrong, so it alone is not judged.
    broken = {
        cid: o
        for cid, o in outcomes.items()
        if o in ("fail", "blocked", "xpass") and cid != "SC-3"
    }
    assert not broken, broken
    for cid, item in spec.CLAUSES.items():
        applies = item.capability in (None, spec.Capability.FUNCTIONS)
        if not applies:
            assert outcomes[cid] == "n/a", (cid, outcomes[cid])
    # The suite may still judge a core clause n/a (SD-5 needs a backend that
    # starts processes), but the contract's core must really have been checked.
    checked = [c for c, o in outcomes.items() if o == "pass"]
    for cid in ("LC-1", "SB-1", "SB-2", "SB-4", "ST-2", "ST-4", "ST-5", "CN-4", "SD-2"):
        assert cid in checked, (cid, outcomes[cid])
    assert {"RS-1", "RS-2", "RS-3"} <= set(checked)


def test_the_documented_pytest_subclass_runs(tmp_path: Path) -> None:
    """docs/tutorial/test_tutorial_conformance.py, shown on the suite's page."""
    done = _run(
        [
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            str(TUTORIAL.parent / "test_tutorial_conformance.py"),
        ],
        tmp_path,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    # A SHOULD clause not met (e.g. the SC-3 timing on a loaded machine)
    # xfails, like the CLI, so the exit status is the verdict.
    assert re.search(r"\b\d+ passed", done.stdout), done.stdout
    assert not re.search(r"\b\d+ (failed|error)", done.stdout), done.stdout


def test_the_report_excerpt_on_the_suite_page_is_real(tmp_path: Path) -> None:
    """docs/conformance.md shows a report; rerun its command and compare.

    Lines that change from run to run (platform, start time, durations) and
    the progress line are not compared.
    """
    page = (ROOT / "docs" / "conformance.md").read_text(encoding="utf-8")
    block = re.search(r"```text\n\$ PYTHONPATH=\S+ python (.*?)\n(.*?)```", page, re.S)
    assert block, "no report excerpt on the page"
    args, shown = block[1].split(), block[2].splitlines()
    done = _run(args, tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    real = done.stdout.splitlines()
    volatile = ("contract:", "started:", "wall time:")
    for line in shown:
        if line.startswith(volatile) or re.fullmatch(r"[.sFxX]*", line):
            continue
        assert line in real, f"{line!r} not in the real report:\n{done.stdout}"
