"""The command line and the pytest plugin, run as a user would run them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from xml.etree import ElementTree

import spec

ROOT = Path(__file__).resolve().parents[2]
NOOP = "reference:NoopExecutionBackend"


def _run(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).parent))
    return subprocess.run(
        [sys.executable, *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=env,
        timeout=300,
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
