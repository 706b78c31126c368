"""The stateful machine's model on its own: no backend, no loop, no files."""

from __future__ import annotations

from pathlib import Path

import spec
from conformance._stateful_model import KINDS, RunModel, build_task, kinds_for

S = spec.TaskState
WORK = Path("/nonexistent/work")


def _model(*kinds: str) -> tuple[RunModel, list[str]]:
    model = RunModel()
    uids = []
    for name in kinds:
        kind = KINDS[name]
        task, release = build_task(kind, model.new_uid(kind), WORK)
        model.track(task, release)
        uids.append(task["uid"])
    return model, uids


def _clauses(findings: list[tuple[str, str]]) -> list[str]:
    return [clause for clause, _ in findings]


def test_each_kind_builds_a_task_of_that_kind() -> None:
    for kind in KINDS.values():
        task, release = build_task(kind, "u", WORK)
        assert task["uid"] == "u"
        assert task["name"] == kind.name
        assert (release is not None) == kind.slow
        expected_kind = (
            None if kind.name == "nothing-to-run" else kind.name.split("-")[1]
        )
        assert spec.task_kind(task) == expected_kind


def test_kinds_follow_capabilities() -> None:
    C = spec.Capability
    assert kinds_for([]) == ("nothing-to-run",)
    assert "slow-executable" in kinds_for([C.EXECUTABLES])
    assert "slow-function" not in kinds_for([C.EXECUTABLES])
    dry = kinds_for([C.DRY_RUN, C.PROMPTS, C.FUNCTIONS])
    assert dry == ("nothing-to-run", "dry-function", "dry-executable", "dry-prompt")


def test_tasks_ending_as_their_kind_says_break_nothing() -> None:
    model, (quick, failing) = _model("quick-function", "failing-function")
    model.deliver(quick, S.RUNNING)
    assert model.unfinished() == [quick, failing]
    model.deliver(quick, S.DONE)
    model.deliver(failing, S.FAILED)
    assert model.findings() == []
    assert model.final_findings() == []


def test_an_unexpected_outcome_blames_the_kind_clause_when_judged() -> None:
    model, (uid,) = _model("failing-function")
    model.deliver(uid, S.DONE)
    assert _clauses(model.findings()) == ["RS-3"]
    assert model.findings(judged={"RS-1"}) == []


def test_canceled_needs_a_promise_or_a_shutdown() -> None:
    model, (kept, broken, stray) = _model(
        "quick-function", "quick-function", "quick-function"
    )
    model.cancel_answered(kept, True, was_terminal=False)
    model.cancel_answered(broken, True, was_terminal=False)
    model.cancel_answered(stray, False, was_terminal=False)
    model.deliver(kept, S.CANCELED)
    model.deliver(broken, S.DONE)
    model.deliver(stray, S.CANCELED)
    findings = model.findings()
    assert _clauses(findings) == ["CN-4", "CN-4"]
    assert broken in findings[0][1] and stray in findings[1][1]


def test_a_promise_after_the_end_is_not_held_against_the_task() -> None:
    model, (uid,) = _model("quick-function")
    model.deliver(uid, S.DONE)
    model.cancel_answered(uid, True, was_terminal=True)
    assert model.findings() == []


def test_shutdown_may_cancel_what_was_unfinished_and_nothing_after_it() -> None:
    model, (done, caught) = _model("quick-function", "slow-function")
    model.deliver(done, S.DONE)
    model.shutdown_called_now()
    assert _clauses(model.shutdown_returned()) == ["SD-2"]
    model.deliver(caught, S.CANCELED)
    assert _clauses(model.findings()) == ["SD-3"]


def test_two_terminal_states_break_st2() -> None:
    model, (uid,) = _model("quick-function")
    model.deliver(uid, S.DONE)
    model.deliver(uid, S.FAILED)
    assert _clauses(model.findings()) == ["ST-2"]
    assert _clauses(model.final_findings()) == ["ST-2"]


def test_slow_tasks_wait_until_released() -> None:
    model, (slow, quick) = _model("slow-executable", "quick-executable")
    assert model.unfinished(slow_too=False) == [quick]
    assert [t.task["uid"] for t in model.waiting()] == [slow]
    model.tracked[slow].released = True
    assert model.waiting() == []
    assert model.unfinished(slow_too=False) == [slow, quick]
