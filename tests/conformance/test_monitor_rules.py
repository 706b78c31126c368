"""The monitor's rules on their own: no backend, no loop, no threads."""

from __future__ import annotations

from typing import Any

import spec
from conformance.monitor._findings import (
    backend_state_findings,
    expected_rejection,
    rejection_findings,
)
from conformance.monitor._ledger import FINISHED_MEMORY, TaskLedger

S = spec.TaskState
B = spec.BackendState
LOOP = 1


def _task(uid: str = "t1") -> dict[str, Any]:
    return {"uid": uid, "function": print}


def _clauses(findings: Any) -> list[str]:
    return [f.clause_id for f in findings]


def _deliver(
    ledger: TaskLedger,
    task: Any,
    state: Any,
    *,
    thread: int = LOOP,
    inside: bool = False,
) -> list[str]:
    verdict = ledger.judge_delivery(
        ledger.generation,
        task,
        state,
        thread=thread,
        thread_name="x",
        inside_call=inside,
    )
    if verdict.state is not None:
        ledger.record(task["uid"], verdict.state)
    return _clauses(verdict.findings)


def _accepted(*tasks: dict[str, Any]) -> TaskLedger:
    ledger = TaskLedger()
    ledger.accept(list(tasks), LOOP)
    assert ledger.submit_returned(list(tasks), None, None) == []
    return ledger


def test_a_clean_life_breaks_nothing_and_ends_finished() -> None:
    task = _task()
    ledger = _accepted(task)
    for state in (S.RUNNING, S.DONE):
        assert _deliver(ledger, task, state) == []
    assert ledger.in_flight == {}
    assert ledger.finished == {"t1": S.DONE}


def test_a_second_terminal_state_is_st3_and_changes_nothing() -> None:
    task = _task()
    ledger = _accepted(task)
    _deliver(ledger, task, S.DONE)
    assert _deliver(ledger, task, S.FAILED) == ["ST-3"]
    assert ledger.finished["t1"] is S.DONE


def test_a_refused_transition_is_not_recorded() -> None:
    task = _task()
    ledger = _accepted(task)
    _deliver(ledger, task, S.RUNNING)
    verdict = ledger.judge_delivery(
        0, task, S.RUNNING, thread=LOOP, thread_name="x", inside_call=False
    )
    assert _clauses(verdict.findings) == ["ST-3"]
    assert verdict.state is None
    assert ledger.in_flight["t1"].last is S.RUNNING


def test_each_delivery_rule_is_named_in_check_order() -> None:
    task = _task()
    ledger = _accepted(task)
    ledger.generation = 2  # the delivery below goes to generation 0
    verdict = ledger.judge_delivery(
        0, dict(task), "DONE", thread=2, thread_name="worker", inside_call=True
    )
    assert _clauses(verdict.findings) == ["LC-4", "ST-5", "ST-1", "ST-4", "ST-6"]
    assert "worker" in verdict.findings[3].message


def test_deliveries_for_unknown_tasks_name_why() -> None:
    ledger = TaskLedger()
    ledger.rejected["bad"] = "SB-4"
    assert _deliver(ledger, _task("never"), S.DONE) == ["ST-2"]
    assert _deliver(ledger, _task("bad"), S.DONE) == ["SB-4"]
    verdict = ledger.judge_delivery(
        0, "not a dict", S.DONE, thread=LOOP, thread_name="x", inside_call=False
    )
    assert _clauses(verdict.findings) == ["ST-6"]


def test_a_promised_cancel_must_end_canceled() -> None:
    kept, broken = _task("kept"), _task("broken")
    ledger = _accepted(kept, broken)
    for task in (kept, broken):
        known, finished = ledger.cancel_started(task["uid"])
        assert (known, finished) == (True, False)
        assert ledger.cancel_returned(task["uid"], known, True) == []
    assert _deliver(ledger, kept, S.CANCELED) == []
    assert _deliver(ledger, broken, S.DONE) == ["CN-4"]


def test_cancel_answers_are_judged_by_what_was_known() -> None:
    task = _task()
    ledger = _accepted(task)
    _deliver(ledger, task, S.FAILED)
    assert _clauses(ledger.cancel_returned("t1", False, True)) == ["CN-3"]
    assert _clauses(ledger.cancel_returned("nope", False, True)) == ["CN-2"]
    assert _clauses(ledger.cancel_returned("nope", False, 0)) == ["CN-1"]
    assert ledger.cancel_returned("nope", False, False) == []
    # In flight when the call began, reported FAILED during it: promise broken.
    assert _clauses(ledger.cancel_returned("t1", True, True)) == ["CN-4"]
    assert _clauses(ledger.cancel_raised([], False, False, ValueError())) == ["CN-2"]
    assert _clauses(ledger.cancel_raised("t1", False, True, ValueError())) == ["CN-3"]
    assert _clauses(ledger.cancel_raised("t1", True, False, ValueError())) == ["CN-1"]


def test_bad_batches_expect_their_clause() -> None:
    assert expected_rejection([_task(), _task()], ()).clause_id == "SB-4"  # type: ignore[union-attr]
    assert expected_rejection([_task()], ("t1",)).clause_id == "SB-4"  # type: ignore[union-attr]
    assert expected_rejection(["x"], ()) == ("SB-2", spec.InvalidTaskError, 0)
    assert expected_rejection([{"uid": 1}], ()).clause_id == "SB-3"  # type: ignore[union-attr]
    assert expected_rejection([_task()], ()) is None
    ledger = TaskLedger()
    ledger.shut_down = True
    assert ledger.expected_for([_task()]) == ("SB-7", spec.BackendShutdownError, -1)


def test_raising_for_a_valid_batch_names_the_clause() -> None:
    def clause(tasks: Any, exc: Exception, accepted_any: bool = True) -> list[str]:
        return _clauses(rejection_findings(tasks, None, exc, accepted_any))

    assert clause([_task()], RuntimeError()) == ["SB-1"]
    assert clause([_task()], RuntimeError(), accepted_any=False) == ["LC-1"]
    assert clause([_task()], spec.CapabilityNotSupportedError("x")) == ["SB-6"]
    assert clause([{"uid": "a", "what": 1}], RuntimeError()) == ["SB-5"]
    assert clause([], RuntimeError()) == ["SB-8"]
    expected = expected_rejection(["x"], ())
    wrong_index = spec.InvalidTaskError(3, "bad")
    assert _clauses(rejection_findings(["x"], expected, wrong_index, True)) == ["SB-2"]
    assert _clauses(rejection_findings(["x"], expected, ValueError(), True)) == ["SB-2"]
    right = spec.InvalidTaskError(0, "bad")
    assert rejection_findings(["x"], expected, right, True) == []


def test_a_raising_submit_forgets_its_batch_and_flags_half_submission() -> None:
    first, second = _task("a"), _task("b")
    ledger = TaskLedger()
    uids = ledger.accept([first, second], LOOP)
    _deliver(ledger, first, S.RUNNING)
    findings = ledger.submit_raised([first, second], uids, None, RuntimeError())
    assert _clauses(findings) == ["SB-1", "LC-1"]
    assert findings[0].uid == "a"
    assert ledger.in_flight == {}


def test_accepting_a_bad_batch_remembers_its_uids() -> None:
    ledger = TaskLedger()
    batch = [_task(), _task()]
    expected = ledger.expected_for(batch)
    assert _clauses(ledger.submit_returned(batch, expected, "x")) == ["SB-4", "SB-1"]
    assert ledger.rejected == {"t1": "SB-4"}
    assert ledger.accepted_any


def test_backend_state_only_moves_forward() -> None:
    assert backend_state_findings(None, B.RUNNING) == []
    assert _clauses(backend_state_findings(B.SHUTDOWN, B.RUNNING)) == ["LC-3"]
    assert _clauses(backend_state_findings(None, "running")) == ["LC-2"]


def test_shutdown_findings() -> None:
    ledger = _accepted(*(_task(f"t{i}") for i in range(7)))
    (left,) = ledger.unfinished_findings()
    assert left.clause_id == "SD-2"
    assert left.uid == "t0"
    assert "7 accepted" in left.message and "and 2 more" in left.message
    assert _clauses(ledger.shutdown_state_findings(B.RUNNING, "LC-6")) == ["LC-6"]
    assert ledger.shutdown_state_findings(B.SHUTDOWN) == []


def test_finished_memory_is_bounded() -> None:
    ledger = TaskLedger()
    count = FINISHED_MEMORY + 2
    ledger.accept([_task(f"u{i}") for i in range(count)], LOOP)
    for i in range(count):
        ledger.record(f"u{i}", S.DONE)
    assert len(ledger.finished) == FINISHED_MEMORY
    assert "u0" not in ledger.finished and f"u{count - 1}" in ledger.finished
