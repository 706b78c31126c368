"""What escapes the backend's own tasks and threads is shown with the failure.

A backend whose own asyncio task (or thread) crashes leaves its tasks
without a state: the failure is a missing terminal state after a wait. The
report must also say what the backend raised, with its traceback, next to
that clause (issue 23, item 3).
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import conformance
from conformance import Outcome
from reference import NoopExecutionBackend


class CrashesInItsTask(NoopExecutionBackend):
    """Runs each batch in a task of its own, which raises before reporting."""

    async def submit_tasks(self, tasks: list[dict[str, Any]]) -> None:
        if not tasks:
            return await super().submit_tasks(tasks)
        asyncio.get_running_loop().create_task(self._explode_in_task(len(tasks)))
        return None

    async def _explode_in_task(self, n: int) -> None:
        await asyncio.sleep(0)
        raise ValueError(f"boom in the backend's task ({n} tasks lost)")


class CrashesInItsThread(NoopExecutionBackend):
    """Hands each batch to a thread of its own, which raises before reporting."""

    async def submit_tasks(self, tasks: list[dict[str, Any]]) -> None:
        if not tasks:
            return await super().submit_tasks(tasks)
        threading.Thread(target=self._explode_in_thread, name="worker-7").start()
        return None

    def _explode_in_thread(self) -> None:
        raise KeyError("boom in the backend's thread")


class CrashesButReports(NoopExecutionBackend):
    """Conforms, but a stray task of its own raises once per batch."""

    async def submit_tasks(self, tasks: list[dict[str, Any]]) -> None:
        await super().submit_tasks(tasks)
        asyncio.get_running_loop().create_task(self._stray())

    async def _stray(self) -> None:
        raise RuntimeError("stray")


def _stopping_failure(report: conformance.Report) -> Any:
    test = next(t for t in report.tests if t.id == "results.dry_run_runs_nothing")
    return next(f for f in test.failures if f.clause_id == test.stopped_by)


# RS-10's one test (dry_run_runs_nothing) submits tasks and waits for their
# states: on these backends they never come. Cited by no other test, so no
# slow stateful test runs along.


def test_a_crash_in_the_backends_task_is_shown_with_the_missing_state() -> None:
    report = conformance.run(CrashesInItsTask, clauses=["RS-10"], deadline_scale=0.25)
    failure = _stopping_failure(report)
    assert "never reached a terminal state" in failure.message
    assert "ValueError(\"boom in the backend's task" in failure.message
    text = "\n".join(failure.evidence)
    assert "Task exception was never retrieved" in text
    assert "in _explode_in_task" in text  # the traceback, down to the raise
    # Right after the message, before the trace: never cut from the report.
    assert failure.evidence[1].startswith("escaped from an asyncio task")


def test_a_crash_in_the_backends_thread_is_shown_too() -> None:
    report = conformance.run(CrashesInItsThread, clauses=["RS-10"], deadline_scale=0.25)
    failure = _stopping_failure(report)
    assert "escape from thread 'worker-7'" in failure.message
    assert 'KeyError("boom in the backend\'s thread")' in failure.message
    assert any("in _explode_in_thread" in line for line in failure.evidence)


def test_a_crash_that_fails_nothing_is_noted_not_failed() -> None:
    report = conformance.run(CrashesButReports, clauses=["RS-10"])
    assert report.outcome("RS-10") is Outcome.PASS, report.to_text()
    notes = [n for t in report.tests for n in t.notes]
    assert any("RuntimeError('stray')" in n and "did not fail" in n for n in notes)


def test_handlers_are_given_back_after_the_run() -> None:
    hook = threading.excepthook
    conformance.run(CrashesInItsThread, clauses=["RS-10"], deadline_scale=0.25)
    assert threading.excepthook is hook


def test_the_report_shows_the_traceback_without_verbose() -> None:
    report = conformance.run(CrashesInItsTask, clauses=["RS-10"], deadline_scale=0.25)
    text = report.to_text()  # evidence cut to 8 lines, but never the escape
    assert "escaped from an asyncio task or loop callback" in text
    assert "in _explode_in_task" in text
    assert "ValueError: boom in the backend's task" in text
