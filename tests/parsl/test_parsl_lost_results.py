"""A result Parsl loses (its worker killed right after) is found and re-run.

Parsl's worker pool can lose a finished task's result when the worker is
SIGKILLed before its result left the worker's queue: the future then never
completes. A fake DataFlowKernel plays that here, deterministically: it runs
the first Parsl task in a thread (the worker leaves its done marker) and
never completes its future.
"""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import pytest
from _parsl_helpers import Recorder, add

from spec import TaskState

pytest.importorskip("parsl")
from reference.parsl import ParslExecutionBackend
from reference.parsl import _backend as backend_module

pytestmark = pytest.mark.asyncio


class _LosingDFK:
    """Runs every Parsl task in a thread; loses the first one's result."""

    def __init__(self, run_dir: Path) -> None:
        self.run_dir = str(run_dir)
        self.executors = {"fake": object()}  # no interchange: ready at once
        self.submitted: list[int] = []

    def submit(self, func: Any, app_args: Any, **_: Any) -> Future[Any]:
        future: Future[Any] = Future()
        lose = not self.submitted
        self.submitted.append(len(app_args[1]) if isinstance(app_args[1], list) else 1)

        def run() -> None:
            result = func(*app_args)
            if not lose:
                future.set_result(result)

        threading.Thread(target=run, daemon=True).start()
        return future


async def test_lost_result_reruns_each_function_alone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(backend_module, "_SWEEP_PERIOD", 0.05)
    dfk = _LosingDFK(tmp_path)
    backend = ParslExecutionBackend(dfk=dfk, chunk_size=3)
    recorder = Recorder()
    backend.register_callback(recorder)
    tasks = [{"uid": f"t{i}", "function": add, "args": (i, 1)} for i in range(3)]
    try:
        await backend.submit_tasks(tasks)
        await recorder.wait("t0", "t1", "t2", timeout=30)
    finally:
        await asyncio.wait_for(backend.shutdown(), 30)
    assert [recorder.states[t["uid"]] for t in tasks] == [[TaskState.DONE]] * 3
    assert [t["return_value"] for t in tasks] == [1, 2, 3]
    assert dfk.submitted == [3, 1, 1, 1]  # the chunk, then each alone
