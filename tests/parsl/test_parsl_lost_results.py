"""A result Parsl loses (its worker killed right after) is found and re-run.

Parsl's worker pool can lose a finished task's result when the worker is
SIGKILLed before its result left the worker's queue: the future then never
completes. A fake DataFlowKernel plays that here, deterministically: it runs
a Parsl task in a thread (the worker leaves its done marker) and never
completes its future; or fails it as a dead worker, as Parsl does.
"""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import pytest
from _parsl_helpers import Recorder, add

from spec import TaskState, WorkerLostError

pytest.importorskip("parsl")
from reference.parsl import ParslExecutionBackend, _settle

pytestmark = pytest.mark.asyncio


class WorkerLost(Exception):
    """Named as Parsl's: the backend knows a dead worker by that name."""


class _LosingDFK:
    """Runs every Parsl task in a thread, but plays a loss for the first ones.

    ``plan[n]`` says what becomes of the n-th Parsl task submitted: "lose"
    runs it and never completes its future (its result lost), "die" fails it
    with ``WorkerLost`` without running it (its worker died); past the plan,
    a task runs and completes.
    """

    def __init__(self, run_dir: Path, plan: list[str]) -> None:
        self.run_dir = str(run_dir)
        self.executors = {"fake": object()}  # no interchange: ready at once
        self.plan = plan
        self.submitted: list[int] = []

    def submit(self, func: Any, app_args: Any, **_: Any) -> Future[Any]:
        future: Future[Any] = Future()
        n = len(self.submitted)
        fate = self.plan[n] if n < len(self.plan) else "run"
        self.submitted.append(len(app_args[1]) if isinstance(app_args[1], list) else 1)
        if fate == "die":
            future.set_exception(WorkerLost("worker 0 died"))
            return future

        def run() -> None:
            result = func(*app_args)
            if fate != "lose":
                future.set_result(result)

        threading.Thread(target=run, daemon=True).start()
        return future


async def _run(
    dfk: _LosingDFK, tasks: list[dict[str, Any]], chunk_size: int
) -> Recorder:
    backend = ParslExecutionBackend(dfk=dfk, chunk_size=chunk_size)
    recorder = Recorder()
    backend.register_callback(recorder)
    try:
        await backend.submit_tasks(tasks)
        await recorder.wait(*(t["uid"] for t in tasks), timeout=30)
    finally:
        await asyncio.wait_for(backend.shutdown(), 30)
    return recorder


@pytest.fixture(autouse=True)
def _fast_sweep(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_settle, "_SWEEP_PERIOD", 0.05)


async def test_lost_result_reruns_each_function_alone(tmp_path: Path) -> None:
    dfk = _LosingDFK(tmp_path, ["lose"])
    tasks = [{"uid": f"t{i}", "function": add, "args": (i, 1)} for i in range(3)]
    recorder = await _run(dfk, tasks, chunk_size=3)
    assert [recorder.states[t["uid"]] for t in tasks] == [[TaskState.DONE]] * 3
    assert [t["return_value"] for t in tasks] == [1, 2, 3]
    assert dfk.submitted == [3, 1, 1, 1]  # the chunk, then each alone


async def test_lost_result_of_a_task_running_alone_reruns_it(tmp_path: Path) -> None:
    # Issue 24's flake, replayed: the chunk's worker dies, each task runs
    # again alone, and the first of those returns but its result is lost
    # (its worker took the next task and died): it runs a third time.
    dfk = _LosingDFK(tmp_path, ["die", "lose"])
    tasks = [{"uid": f"t{i}", "function": add, "args": (i, 1)} for i in range(3)]
    recorder = await _run(dfk, tasks, chunk_size=3)
    assert [recorder.states[t["uid"]] for t in tasks] == [[TaskState.DONE]] * 3
    assert [t["return_value"] for t in tasks] == [1, 2, 3]
    assert dfk.submitted == [3, 1, 1, 1, 1]


async def test_a_result_lost_every_time_fails_in_the_end(tmp_path: Path) -> None:
    dfk = _LosingDFK(tmp_path, ["lose"] * 10)
    task = {"uid": "t", "function": add, "args": (1, 1)}
    recorder = await _run(dfk, [task], chunk_size=1)
    assert recorder.states["t"] == [TaskState.FAILED]
    assert isinstance(task["exception"], WorkerLostError)
    assert "result was lost" in str(task["exception"])
    assert dfk.submitted == [1, 1, 1]  # MAX_RUNS runs, no more
