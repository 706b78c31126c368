"""The command line and the pytest plugin, run as a user would run them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from xml.etree import ElementTree

import pytest

import spec

ROOT = Path(__file__).resolve().parents[2]
NOOP = "reference:NoopExecutionBackend"


def _run(
    *args: str, cwd: Path = ROOT, timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).parent))
    return subprocess.run(
        [sys.executable, *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=env,
        timeout=timeout,
    )


def test_cli_report_json_and_junit(tmp_path: Path) -> None:
    out = _run(
        "-m",
        "conformance",
        NOOP,
        "--json",
        str(tmp_path / "cert.json"),
        "--junit",
        str(tmp_path / "junit.xml"),
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert "CONFORMS" in out.stdout and "DOES NOT" not in out.stdout
    assert f"contract:     {spec.CONTRACT_VERSION}" in out.stdout
    cert = json.loads((tmp_path / "cert.json").read_text())
    assert cert["conforms"] is True and cert["backend"] == NOOP
    assert len(cert["clauses"]) == len(spec.CLAUSES)
    junit = ElementTree.parse(tmp_path / "junit.xml").getroot()
    assert len(junit.findall("testcase")) == len(spec.CLAUSES)


def test_cli_fails_on_a_broken_must_clause() -> None:
    out = _run(
        "-m",
        "conformance",
        "test_conformance_runner:LiesAboutUnknown",
        "--clauses",
        "CN-2",
    )
    assert out.returncode == 1, out.stdout + out.stderr
    assert "CN-2    MUST   fail" in out.stdout
    assert "[CN-2]" in out.stdout


def test_cli_expected_failures(tmp_path: Path) -> None:
    listing = tmp_path / "expected.txt"
    listing.write_text("# known gaps\nCN-2   promises too much (#1)\n")
    out = _run(
        "-m",
        "conformance",
        "test_conformance_runner:LiesAboutUnknown",
        "--clauses",
        "CN-2",
        "--expected-failures",
        str(listing),
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert "CN-2    MUST   xfail" in out.stdout
    listing.write_text("RS-10  no longer true\n")
    out = _run(
        "-m",
        "conformance",
        NOOP,
        "--clauses",
        "RS-10",
        "--expected-failures",
        str(listing),
    )
    assert out.returncode == 1
    assert "xpass" in out.stdout


def test_cli_usage_errors(tmp_path: Path) -> None:
    assert _run("-m", "conformance", "no.such.module:Thing").returncode == 2
    assert _run("-m", "conformance", "not-registered").returncode == 2
    assert _run("-m", "conformance", NOOP, "--clauses", "XX-1").returncode == 2
    bad = tmp_path / "bad.txt"
    bad.write_text("nonsense.test   reason\n")
    out = _run("-m", "conformance", NOOP, "--expected-failures", str(bad))
    assert out.returncode == 2 and "neither a clause" in out.stderr


def test_cli_list() -> None:
    out = _run("-m", "conformance", "--list")
    assert out.returncode == 0
    for clause_id in spec.CLAUSES:
        assert clause_id in out.stdout
    assert "(no test)" not in out.stdout


def test_pytest_plugin_is_inert_without_backend(tmp_path: Path) -> None:
    out = _run("-m", "pytest", "-q", "-p", "no:cacheprovider", cwd=tmp_path)
    assert "no tests ran" in out.stdout, out.stdout


def test_pytest_backend_option(tmp_path: Path) -> None:
    out = _run(
        "-m", "pytest", "-q", "-p", "no:cacheprovider", "--backend", NOOP, cwd=tmp_path
    )
    assert out.returncode == 0, out.stdout[-3000:]
    assert " passed" in out.stdout and "skipped" in out.stdout
    broken = _run(
        "-m",
        "pytest",
        "-q",
        "-p",
        "no:cacheprovider",
        "--backend",
        "test_conformance_runner:LiesAboutUnknown",
        "-k",
        "unknown_uid",
        cwd=tmp_path,
    )
    assert broken.returncode == 1
    assert "[CN-2]" in broken.stdout


def test_pytest_should_failure_xfails(tmp_path: Path) -> None:
    out = _run(
        "-m",
        "pytest",
        "-q",
        "-p",
        "no:cacheprovider",
        "-rx",
        "--backend",
        "test_conformance_runner:NeverCancels",
        "-k",
        "cancel_before_start",
        cwd=tmp_path,
    )
    assert out.returncode == 0, out.stdout[-3000:]
    assert "1 xfailed" in out.stdout and "SHOULD clause not met" in out.stdout


def test_cli_target_whose_import_calls_sys_exit_is_a_usage_error(
    tmp_path: Path,
) -> None:
    """A script's unguarded main() ending the import (issue 20, item 8)."""
    for name, call, shown in (
        ("exits_zero", "sys.exit(0)", "sys.exit(0)"),
        ("exits_message", 'sys.exit("bye")', "sys.exit('bye')"),
    ):
        script = tmp_path / f"{name}.py"
        script.write_text(f"import sys\n\n{call}\n\n\nclass Backend:\n    pass\n")
        out = _run("-m", "conformance", f"{script}:Backend")
        assert out.returncode == 2, out.stdout + out.stderr
        assert shown in out.stderr and "__name__" in out.stderr, out.stderr
        assert "CONFORM" not in out.stdout


@pytest.mark.parametrize(
    ("target", "status"),
    [("cli_targets:ShutdownNeverFinishes", 1), ("cli_targets:LeavesAThreadRunning", 0)],
)
def test_cli_ends_with_its_status_after_the_report(target: str, status: int) -> None:
    """A thread the backend leaves running never keeps the CLI alive (issue 20,
    item 9): without the fix this run waits at interpreter exit for ever, and
    the subprocess timeout fails the test."""
    # LC-8's one test is quick and brings no stateful test along.
    out = _run("-m", "conformance", target, "--clauses", "LC-8", timeout=120)
    assert out.returncode == status, out.stdout + out.stderr
    assert "CONFORM" in out.stdout  # the report came out first
    assert ("DOES NOT CONFORM" in out.stdout) is bool(status)


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--clauses", ","], "names no clause"),
        (["--clauses", " , "], "names no clause"),
        (["--deadline-scale", "nan"], "finite number above 0"),
        (["--deadline-scale", "-1"], "finite number above 0"),
        (["--deadline-scale", "0"], "finite number above 0"),
        (["--deadline-scale", "inf"], "finite number above 0"),
        (["--deadline-scale", "fast"], "not a number"),
        (["--json", "no/such/folder/cert.json"], "no folder 'no/such/folder'"),
        (["--junit", "no/such/folder/junit.xml"], "no folder 'no/such/folder'"),
        (["--json", "-", "--junit", "-"], "cannot both use stdout"),
        (["--clauses", "XX-1"], "error: no contract clause 'XX-1'; IDs look like"),
    ],
)
def test_cli_usage_errors_found_before_the_run(args: list[str], says: str) -> None:
    out = _run("-m", "conformance", NOOP, *args)
    assert out.returncode == 2, out.stdout + out.stderr
    assert says in out.stderr, out.stderr
    assert "Traceback" not in out.stderr
    assert 'error: "' not in out.stderr  # no stray quotes around a message
    assert "CONFORM" not in out.stdout and out.stdout == ""


def test_cli_json_and_junit_to_stdout(tmp_path: Path) -> None:
    out = _run("-m", "conformance", NOOP, "--clauses", "LC-8", "--json", "-")
    assert out.returncode == 0, out.stderr
    cert = json.loads(out.stdout)  # stdout holds the document alone
    assert cert["conforms"] is True
    assert [c["id"] for c in cert["clauses"]] == ["LC-8"]
    assert "CONFORMS" in out.stderr  # the text report went to stderr
    assert not (ROOT / "-").exists()
    out = _run("-m", "conformance", NOOP, "--clauses", "LC-8", "--junit", "-")
    assert out.returncode == 0, out.stderr
    assert ElementTree.fromstring(out.stdout).findall("testcase")
