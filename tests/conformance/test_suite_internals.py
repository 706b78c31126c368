"""The suite's own machinery: no cascade, declared clauses, traces, reports, repeat.

Each test here failed on the suite before the change it covers (issue 12).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from typing import Any
from xml.etree import ElementTree

import pytest

import conformance
import spec
from conformance import Case, ContractViolation, Event, Outcome, run, run_case
from conformance.harness import Harness, within
from conformance.report import ClauseResult, Report
from reference import LocalExecutionBackend, NoopExecutionBackend

O = Outcome  # noqa: E741 - short, and never confused with 0 in this file


# -- item 1: a violation that does not stop a test does not block its clauses


class StringStatesAndList(LocalExecutionBackend):
    """Delivers states as plain strings and returns a list from submit_tasks.

    Like radical.asyncflow 0.6's backends: two shape defects (ST-1, SB-1) that
    leave every behaviour intact.
    """

    def register_callback(self, func: Callable[[Any, Any], None]) -> None:
        def plain(task: Any, state: Any) -> None:
            func(task, state.value if isinstance(state, spec.TaskState) else state)

        super().register_callback(plain)

    async def submit_tasks(self, tasks: list[Any]) -> Any:  # type: ignore[override]
        await super().submit_tasks(tasks)
        return []


def test_shape_defects_do_not_block_behaviour_clauses() -> None:
    report = run(StringStatesAndList, clauses=["LC-1", "RS-1", "RS-3", "CN-5"])
    text = report.to_text()
    assert not report.clauses_with(O.BLOCKED), text
    for clause_id in ("LC-1", "RS-1", "RS-3", "CN-5"):
        assert report.outcome(clause_id) is O.PASS, text
    # The shape defects are reported, each under its own clause.
    assert {"ST-1", "SB-1"} <= report.failed, text


class StringStatesRaisingDone(StringStatesAndList):
    """Also reports a raising function DONE: a real RS-3 defect behind ST-1."""

    def register_callback(self, func: Callable[[Any, Any], None]) -> None:
        def done_instead(task: Any, state: Any) -> None:
            if state == "FAILED" and task.get("function") is not None:
                state = "DONE"
            func(task, state)

        super().register_callback(done_instead)


def test_a_real_defect_behind_a_shape_defect_is_reported_under_its_clause() -> None:
    report = run(StringStatesRaisingDone, clauses=["RS-3"])
    assert report.outcome("RS-3") is O.FAIL, report.to_text()
    assert "ended DONE, not FAILED" in "\n".join(report.clauses["RS-3"].evidence)


# -- item 8: every failure is cited by a clause the test declares


async def _judges_lc7(h: Harness) -> None:
    h.expect(True, "LC-7", "a clause this test does not declare")


async def _fails_lc7(h: Harness) -> None:
    h.check(False, "LC-7", "a clause this test does not declare")


@pytest.mark.parametrize("body", [_judges_lc7, _fails_lc7], ids=["holds", "fails"])
def test_the_harness_rejects_an_undeclared_clause(
    body: Callable[[Harness], Any],
) -> None:
    case = Case("lifecycle.bad_test", ("LC-1",), body, frozenset(), 5.0, "")
    result = run_case(case, NoopExecutionBackend)
    assert result.outcome is O.FAIL
    assert "LC-7" in result.error and "does not declare" in result.error
    assert not result.failures  # not the backend's failure


def test_a_broken_test_is_an_error_of_the_run(monkeypatch: pytest.MonkeyPatch) -> None:
    case = Case("lifecycle.bad_test", ("LC-1",), _fails_lc7, frozenset(), 5.0, "")
    monkeypatch.setattr("conformance.runner.cases", lambda: [case])
    report = run(NoopExecutionBackend)
    assert report.errors and "lifecycle.bad_test" in report.errors[0]
    assert report.outcome("LC-1") is O.BLOCKED
    assert not report.ok


def test_tests_declare_the_clauses_they_fail() -> None:
    assert "LC-7" in conformance.case("lifecycle.method_shapes").clauses
    # SC-2's wait was in the SC-3 test, which did not declare it; the two now
    # share one 10,000-task batch, in one test declaring both.
    assert {"SC-2", "SC-3"} <= set(conformance.case("scale.ten_thousand_tasks").clauses)
    assert all("SC-2" in c.clauses for c in conformance.cases() if "SC-3" in c.clauses)


# -- item 5: traces keep the violating event


def _report_with_trace(events: int) -> Report:
    trace = [
        Event("call", f"step_{i}", None, None, "test-loop", float(i))
        for i in range(events - 1)
    ]
    trace.append(
        Event("callback", "callback", "t.1", "DONE", "test-loop", float(events))
    )
    violation = ContractViolation("ST-5", "state DONE delivered inside", trace)
    result = ClauseResult(
        spec.CLAUSES["ST-5"],
        O.FAIL,
        ["states.no_delivery_inside_calls"],
        ["in states.no_delivery_inside_calls:", *violation.evidence()],
    )
    report = Report("x", "x", "x", [], "1.1", "0", "3", "linux", "now")
    report.clauses["ST-5"] = result
    return report


def test_the_text_report_shows_the_violating_event() -> None:
    text = _report_with_trace(30).to_text()
    assert "callback callback uid='t.1' state=DONE" in text, text
    assert "[ST-5] state DONE delivered inside" in text
    assert "-v or --json for the whole trace" in text


# -- item 6: JUnit holds the reason and the times


class ReturnsList(NoopExecutionBackend):
    async def submit_tasks(self, tasks: list[Any]) -> Any:  # type: ignore[override]
        await super().submit_tasks(tasks)
        return []


def test_junit_failure_message_holds_the_reason_and_times() -> None:
    report = run(ReturnsList, clauses=["SB-1"])
    root = ElementTree.fromstring(report.to_junit())
    case = next(
        c for c in root.findall("testcase") if c.get("name", "").startswith("SB-1")
    )
    failure = case.find("failure")
    assert failure is not None
    message = failure.get("message", "")
    assert "submit_tasks returned [], not None" in message, message
    assert "(in " in message
    assert float(case.get("time", "0")) > 0
    out = case.find("system-out")
    assert out is not None and " s" in (out.text or "")


# -- item 7: --repeat and --seed


class FailsOnItsSecondLife(NoopExecutionBackend):
    """cancel_task says True for an unknown uid on every second backend built."""

    built = 0

    def __init__(self) -> None:
        super().__init__()
        type(self).built += 1
        self.broken = type(self).built % 2 == 0

    async def cancel_task(self, uid: str) -> bool:
        if self.broken and uid == "no-such-task":
            return True
        return await super().cancel_task(uid)


def test_repeat_reports_a_clause_that_failed_in_any_run() -> None:
    FailsOnItsSecondLife.built = 0
    report = run(FailsOnItsSecondLife, clauses=["CN-2"], repeat=3, seed=7)
    runs = sorted(t.run for t in report.tests if t.id == "cancellation.unknown_uid")
    assert runs == [1, 2, 3]
    assert report.outcome("CN-2") is O.FAIL, report.to_text()
    assert "runs" in report.clauses["CN-2"].reason
    assert "runs: 3 (seed 7)" in report.to_text()
    assert json.loads(report.dumps())["repeat"] == 3


def test_repeat_must_be_positive() -> None:
    with pytest.raises(ValueError, match="repeat"):
        run(NoopExecutionBackend, repeat=0)


def test_the_seed_shuffles_the_order_repeatably() -> None:
    first = run(NoopExecutionBackend, clauses=["CN-2", "CN-3", "LC-8"], seed=3)
    again = run(NoopExecutionBackend, clauses=["CN-2", "CN-3", "LC-8"], seed=3)
    assert [t.id for t in first.tests] == [t.id for t in again.tests]
    plain = run(NoopExecutionBackend, clauses=["CN-2", "CN-3", "LC-8"])
    assert sorted(t.id for t in first.tests) == sorted(t.id for t in plain.tests)


class LosesTasksCancelledWhileSpawning(LocalExecutionBackend):
    """CN-4: an executable cancelled right after submit is never reported.

    What a backend hit by CPython 3.11's spawn-cancel hang looks like: the
    task cancelled while ``create_subprocess_*`` spawns it never ends.
    """

    def __init__(self) -> None:
        super().__init__()
        self._young: set[str] = set()
        self._lost: set[str] = set()

    def register_callback(self, func: Callable[[Any, Any], None]) -> None:
        def dropping(task: Any, state: Any) -> None:
            if task.get("uid") not in self._lost:
                func(task, state)

        super().register_callback(dropping)

    async def submit_tasks(self, tasks: list[Any]) -> None:
        await super().submit_tasks(tasks)
        for task in tasks:
            if task.get("executable"):
                self._young.add(task["uid"])
                asyncio.get_running_loop().call_later(
                    0.05, self._young.discard, task["uid"]
                )

    async def cancel_task(self, uid: str) -> bool:
        if uid in self._young:
            self._lost.add(uid)
            return True
        return await super().cancel_task(uid)


def test_cancel_during_spawn_catches_a_lost_task() -> None:
    began = time.monotonic()
    report = run(LosesTasksCancelledWhileSpawning, clauses=["CN-4"], deadline_scale=0.5)
    result = report.test("cancellation.cancel_during_spawn")
    assert result.outcome is O.FAIL
    message = next(f.message for f in result.failures if f.clause_id == "CN-4")
    assert "cancelled while they spawned never reached a terminal state" in message
    assert "loop turn(s) after submit" in message
    assert time.monotonic() - began < 60


# -- the watchdog: a backend blocking the loop while a task runs


class ShutdownBlocksTheLoop(LocalExecutionBackend):
    """shutdown() waits for running functions synchronously, on the loop thread."""

    async def shutdown(self) -> None:
        self._executor.shutdown(wait=True)
        await super().shutdown()


def test_a_loop_blocking_shutdown_is_released_and_fails_sd4() -> None:
    if not hasattr(LocalExecutionBackend(), "_executor"):
        pytest.skip("the local backend keeps its executor elsewhere")
    began = time.monotonic()
    report = run(ShutdownBlocksTheLoop, clauses=["SD-4"])
    test = report.test("shutdown.shutdown_bounded_with_stuck_task")
    assert report.outcome("SD-4") is O.FAIL, report.to_text()
    assert "blocked the event loop" in "\n".join(f.message for f in test.failures), (
        report.to_text()
    )
    # Released by the watchdog, not after the blocker's own 20 s limit.
    assert test.duration < 15, test.duration
    assert time.monotonic() - began < 60


def test_cli_repeat_and_seed(capsys: pytest.CaptureFixture[str]) -> None:
    from conformance.__main__ import main

    args = ["reference:NoopExecutionBackend", "--clauses", "CN-2"]
    code = main([*args, "--repeat", "2", "--seed", "4", "-v"])
    out, err = capsys.readouterr()
    assert code == 0, out
    assert "runs: 2 (seed 4)" in out
    # Progress goes to stderr, one line per test off a terminal.
    assert "cancellation.unknown_uid (run 2)" in err
    # -v prints the clause's full text, not its first 60 characters.
    assert spec.CLAUSES["CN-2"].text in out


def test_cli_rejects_a_repeat_below_one(capsys: pytest.CaptureFixture[str]) -> None:
    from conformance.__main__ import main

    with pytest.raises(SystemExit) as exit_info:
        main(["reference:NoopExecutionBackend", "--repeat", "0"])
    assert exit_info.value.code == 2
    assert "must be at least 1, not 0" in capsys.readouterr().err


class CancelsInsideTheCall(NoopExecutionBackend):
    """Reports CANCELED from inside cancel_task, then returns True (ST-5 only)."""

    def __init__(self) -> None:
        super().__init__()
        self._tasks: dict[str, Any] = {}
        self._cb: Callable[[Any, Any], None] = lambda task, state: None

    def register_callback(self, func: Callable[[Any, Any], None]) -> None:
        self._cb = func
        super().register_callback(func)

    async def submit_tasks(self, tasks: list[Any]) -> None:
        for task in tasks:
            self._tasks[task["uid"]] = task  # never run: cancel is all it gets

    async def cancel_task(self, uid: str) -> bool:
        task = self._tasks.pop(uid, None)
        if task is None:
            return False
        self._cb(task, spec.TaskState.CANCELED)
        return True


def test_a_cancel_delivered_inside_the_call_is_st5_not_cn3() -> None:
    async def scenario() -> conformance.ContractMonitor:
        monitor = conformance.watch(CancelsInsideTheCall(), on_violation="record")
        monitor.register_callback(lambda task, state: None)
        await monitor.submit_tasks([{"uid": "t.1", "function": print}])
        assert await asyncio.wait_for(monitor.cancel_task("t.1"), 5) is True
        return monitor

    monitor = asyncio.run(scenario())
    # Before: CN-3 too ("returned True for a task already reported CANCELED").
    assert {v.clause_id for v in monitor.violations} == {"ST-5"}, [
        str(v) for v in monitor.violations
    ]


# -- within(): a deadline without a loop turn -----------------------------------


@pytest.fixture(params=["asyncio.timeout", "python 3.10 fallback"])
def deadline_kind(
    request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> str:
    """Both of `within`'s ways: ``asyncio.timeout``, and the one without it."""
    if request.param == "python 3.10 fallback":
        monkeypatch.delattr(asyncio, "timeout", raising=False)
    elif not hasattr(asyncio, "timeout"):
        pytest.skip("asyncio.timeout is Python 3.11+")
    return str(request.param)


@pytest.mark.asyncio
async def test_within_lets_no_loop_turn_pass_before_the_caller_resumes(
    deadline_kind: str,
) -> None:
    # CN-6's check cancels right after submit: a turn in between would let
    # a backend that completes on the next turn finish the task first.
    turned: list[bool] = []
    asyncio.get_running_loop().call_soon(turned.append, True)

    async def returns_at_once() -> str:
        return "value"

    assert await within(returns_at_once(), 5) == "value"
    assert turned == []


@pytest.mark.asyncio
async def test_within_raises_timeout_error_at_the_deadline(deadline_kind: str) -> None:
    started = time.monotonic()
    with pytest.raises(asyncio.TimeoutError):
        await within(asyncio.sleep(30), 0.05)
    assert time.monotonic() - started < 10


@pytest.mark.asyncio
async def test_within_lets_an_outside_cancel_through(deadline_kind: str) -> None:
    entered = asyncio.Event()

    async def waits() -> None:
        entered.set()
        await asyncio.sleep(30)

    async def caller() -> None:
        await within(waits(), 20)

    task = asyncio.create_task(caller())
    await asyncio.wait_for(entered.wait(), 5)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(task, 5)
