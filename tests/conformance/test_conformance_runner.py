"""`conformance.run`: targets, selection, outcomes, expected failures, reports."""

from __future__ import annotations

import asyncio
import json
import subprocess
from typing import Any
from xml.etree import ElementTree

import pytest

import spec
from conformance import Outcome, cases, run
from conformance.processes import alive, descendants
from reference import NoopExecutionBackend
from reference._base import BackendBase, Job

O = Outcome  # noqa: E741 - short, and never confused with 0 in this file


@pytest.fixture(scope="module")
def noop_report() -> Any:
    return run(NoopExecutionBackend)


def test_noop_conforms(noop_report: Any) -> None:
    assert noop_report.ok, noop_report.to_text()
    assert noop_report.exit_code == 0
    assert set(noop_report.clauses) == set(spec.CLAUSES)
    assert noop_report.outcome("RS-10") is O.PASS  # dry_run applies
    assert noop_report.outcome("RS-1") is O.NOT_APPLICABLE  # functions do not
    must = [c for c in spec.CLAUSES.values() if c.level is spec.Level.MUST]
    for found in must:
        assert noop_report.outcome(found.id) in (O.PASS, O.NOT_APPLICABLE), found.id
    assert len(noop_report.tests) == len(cases())


def test_every_clause_has_a_test() -> None:
    cited = {c for case in cases() for c in case.clauses}
    assert set(spec.CLAUSES) <= cited
    assert cited <= set(spec.CLAUSES)


def test_certificate(noop_report: Any) -> None:
    data = json.loads(noop_report.dumps())
    assert data["contract_version"] == spec.CONTRACT_VERSION
    assert data["suite_version"]
    assert data["conforms"] is True
    assert "dry_run" in data["capabilities"]
    outcomes = {c["id"]: c["outcome"] for c in data["clauses"]}
    assert outcomes["RS-10"] == "pass" and outcomes["RS-1"] == "n/a"
    assert {t["id"] for t in data["tests"]} == {c.id for c in cases()}


def test_junit(noop_report: Any) -> None:
    root = ElementTree.fromstring(noop_report.to_junit())
    assert root.tag == "testsuite"
    assert len(root.findall("testcase")) == len(spec.CLAUSES)
    assert root.get("failures") == "0"


def test_text_report_header(noop_report: Any) -> None:
    text = noop_report.to_text()
    assert "NoopExecutionBackend" in text
    assert f"contract:     {spec.CONTRACT_VERSION}" in text
    assert "CONFORMS" in text
    for clause_id in spec.CLAUSES:
        assert f"\n{clause_id} " in text


async def _async_factory() -> NoopExecutionBackend:
    await asyncio.sleep(0)
    return NoopExecutionBackend(name="async-built")


@pytest.mark.parametrize(
    "target",
    [
        NoopExecutionBackend,
        lambda: NoopExecutionBackend(name="sync-built"),
        _async_factory,
        "reference:NoopExecutionBackend",
        "noop",
    ],
    ids=["class", "sync-factory", "async-factory", "module-attr", "entry-point"],
)
def test_target_forms(target: Any) -> None:
    report = run(target, clauses=["LC-1", "LC-8"])
    assert set(report.clauses) == {"LC-1", "LC-8"}
    assert report.outcome("LC-1") is O.PASS, report.to_text()
    assert {t.id for t in report.tests} == {
        c.id for c in cases() if {"LC-1", "LC-8"} & set(c.clauses)
    }


def test_unknown_clause_is_rejected() -> None:
    with pytest.raises(KeyError):
        run(NoopExecutionBackend, clauses=["XX-1"])


class LiesAboutUnknown(NoopExecutionBackend):
    """cancel_task promises to cancel uids it never saw (breaks CN-2)."""

    async def cancel_task(self, uid: str) -> bool:
        return await super().cancel_task(uid) or uid not in self._jobs


def test_a_broken_clause_fails_the_run() -> None:
    report = run(LiesAboutUnknown, clauses=["CN-2", "LC-1"])
    assert report.failed == {"CN-2"}, report.to_text()
    assert report.outcome("LC-1") is O.PASS
    assert report.exit_code == 1
    evidence = "\n".join(report.clauses["CN-2"].evidence)
    assert "[CN-2]" in evidence and "cancel_task" in evidence


def test_expected_failures() -> None:
    report = run(
        LiesAboutUnknown,
        clauses=["CN-2", "RS-10"],
        expected_failures={"CN-2": "known gap", "RS-10": "stale entry"},
    )
    assert report.outcome("CN-2") is O.XFAIL
    assert report.outcome("RS-10") is O.XPASS
    assert not report.ok
    report = run(
        LiesAboutUnknown,
        clauses=["CN-2"],
        expected_failures={"cancellation.unknown_uid": "known gap"},
    )
    assert report.test("cancellation.unknown_uid").outcome is O.XFAIL
    assert report.outcome("CN-2") is O.XFAIL
    assert report.ok, report.to_text()


class NeverReports(BackendBase[Job]):
    """Accepts tasks and never reports them: a hanging backend."""

    capabilities = frozenset({spec.Capability.FUNCTIONS})

    async def submit_tasks(self, tasks: list[Any]) -> None:
        self._accept(tasks, Job)

    async def cancel_task(self, uid: str) -> bool:
        return False

    async def shutdown(self) -> None:
        self._state = spec.BackendState.SHUTDOWN
        self._cancel_all()


def test_a_hanging_backend_fails_a_clause_not_the_run() -> None:
    report = run(NeverReports, clauses=["LC-1", "ST-2"], deadline_scale=0.05)
    # Each waiting test blames the clause its wait is about.
    assert report.failed == {"LC-1", "ST-2"}, report.to_text()
    assert "never reached a terminal state" in "\n".join(
        report.clauses["ST-2"].evidence
    )
    assert all(t.duration < 30 for t in report.tests)


class LeavesAChild(NoopExecutionBackend):
    """Starts a process per batch and never stops it (breaks SD-5)."""

    children: list[subprocess.Popen[bytes]] = []

    async def submit_tasks(self, tasks: list[Any]) -> None:
        await super().submit_tasks(tasks)
        self.children.append(subprocess.Popen(["sleep", "30"]))


def test_a_surviving_child_process_is_reported_and_killed() -> None:
    before = descendants()
    report = run(LeavesAChild, clauses=["LC-1"])
    assert "SD-5" in report.failed, report.to_text()
    leftover = {p: i for p, i in descendants().items() if p not in before}
    assert not alive(leftover), alive(leftover)
    for child in LeavesAChild.children:
        child.wait(timeout=10)


class NeverCancels(NoopExecutionBackend):
    """cancel_task always declines: legal, but misses the SHOULD clause CN-6."""

    async def cancel_task(self, uid: str) -> bool:
        return False


def test_a_should_clause_is_reported_but_does_not_fail_the_run() -> None:
    report = run(NeverCancels, clauses=["CN-6", "CN-2"])
    assert report.failed == {"CN-6"}, report.to_text()
    assert report.ok and report.exit_code == 0


@pytest.mark.parametrize("use_psutil", [True, False], ids=["psutil", "proc"])
def test_child_process_tracking(
    monkeypatch: pytest.MonkeyPatch, use_psutil: bool
) -> None:
    from conformance import processes

    if not use_psutil:
        if not processes.available() or not __import__("os").path.isdir("/proc/self"):
            pytest.skip("no /proc on this platform")
        monkeypatch.setattr(processes, "_psutil", None)
    child = subprocess.Popen(["sleep", "30"])
    try:
        found = processes.descendants()
        assert child.pid in found and "sleep" in found[child.pid][1]
        assert processes.alive(processes.snapshot([child.pid]))
        processes.kill(processes.snapshot([child.pid]))
        assert not processes.alive({child.pid: found[child.pid]})
    finally:
        child.kill()
        child.wait(timeout=10)


def test_expected_failures_parsing() -> None:
    from conformance import parse_expected_failures

    known = {c.id for c in cases()}
    text = "# header\n\nRS-9\tnot pickled\nstates.one_terminal_state  flaky (#3)\n"
    assert parse_expected_failures(text, known) == {
        "RS-9": "not pickled",
        "states.one_terminal_state": "flaky (#3)",
    }
    with pytest.raises(ValueError, match="needs a reason"):
        parse_expected_failures("RS-9\n", known)
    with pytest.raises(ValueError, match="neither a clause"):
        parse_expected_failures("no.such_test  reason\n", known)
