"""The owned process pool under attack, round 3 (issue 20, items 3, 5 and 6).

- a result whose unpickling in the parent raises a `BaseException` fails only
  its task (it killed the pool's dispatcher: every later task FAILED);
- an exception whose pickling raises `SystemExit` in the worker becomes a
  `StandInError`, not a lost worker (RS-9);
- an idle worker killed from outside does not fail the next task sent to it;
- ``max_tasks_per_child`` replaces a worker after exactly that many tasks;
- a script without ``if __name__ == "__main__":`` runs its body once, in the
  caller only, never again in the workers.

Functions are module level: the workers import them by reference.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import AsyncIterator
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import psutil
import pytest
import pytest_asyncio
from _ref_helpers import Recorder, process_gone

from reference import LocalExecutionBackend
from spec import StandInError, TaskState, WorkerLostError

pytestmark = [pytest.mark.asyncio, pytest.mark.timeout(120)]

ROOT = Path(__file__).resolve().parents[2]


# -- what the workers run ------------------------------------------------------


def value_of(i: int) -> int:
    return i


def pid_of(_: int = 0) -> int:
    return os.getpid()


def _interrupt() -> None:
    raise KeyboardInterrupt("raised while loading a result")


class ExitsOnLoad:
    """Pickles in the worker; loading it in the parent calls ``sys.exit``."""

    def __reduce__(self) -> tuple[Any, tuple[str]]:
        return (sys.exit, ("loading this result exits",))


class InterruptsOnLoad:
    """Pickles in the worker; loading it in the parent raises KeyboardInterrupt."""

    def __reduce__(self) -> tuple[Any, tuple[()]]:
        return (_interrupt, ())


def make(kind: str) -> Any:
    return ExitsOnLoad() if kind == "exit" else InterruptsOnLoad()


class ExitsWhenPickled(Exception):
    """An exception whose pickling raises SystemExit (in the worker)."""

    def __reduce__(self) -> Any:
        raise SystemExit("pickling this exception exits")


def raise_exits_when_pickled() -> None:
    raise ExitsWhenPickled("boom")


def fn(uid: str, func: Any, *args: Any) -> dict[str, Any]:
    return {"uid": uid, "function": func, "args": list(args)}


@pytest_asyncio.fixture
async def one(recorder: Recorder) -> AsyncIterator[LocalExecutionBackend]:
    backend = LocalExecutionBackend(processes=1, kill_grace=0.5)
    backend.register_callback(recorder)
    yield backend
    pids = backend.worker_pids()
    await asyncio.wait_for(backend.shutdown(), 30)
    assert all(process_gone(pid) for pid in pids)


# -- item 3: a BaseException while loading a result -----------------------------


@pytest.mark.parametrize("kind", ["exit", "interrupt"])
async def test_a_result_whose_loading_raises_a_base_exception_fails_only_it(
    one: LocalExecutionBackend, recorder: Recorder, kind: str
) -> None:
    # One worker: the bad result comes back while two tasks are queued.
    tasks = [fn("q0", value_of, 0), fn("bad", make, kind), fn("q1", value_of, 1)]
    tasks.append(fn("q2", value_of, 2))
    await one.submit_tasks(tasks)
    await recorder.wait([t["uid"] for t in tasks], timeout=60)
    later = fn("later", value_of, 3)
    await one.submit_tasks([later])
    await recorder.wait(["later"], timeout=60)
    bad = tasks.pop(1)
    assert recorder.states("bad")[-1:] == [TaskState.FAILED]
    assert not isinstance(bad["exception"], WorkerLostError)
    assert "cannot be unpickled" in str(bad["exception"])
    assert type(make(kind)).__name__ in str(bad["exception"])
    assert [recorder.final(t["uid"]) for t in [*tasks, later]] == [TaskState.DONE] * 4
    assert [t["return_value"] for t in [*tasks, later]] == [0, 1, 2, 3]
    assert recorder.violations == []


async def test_an_exception_whose_pickling_exits_becomes_a_stand_in(
    one: LocalExecutionBackend, recorder: Recorder
) -> None:
    tasks = [fn("raises", raise_exits_when_pickled), fn("after", value_of, 5)]
    await one.submit_tasks(tasks)
    await recorder.wait(["raises", "after"], timeout=60)
    assert recorder.final("raises") is TaskState.FAILED
    error = tasks[0]["exception"]
    assert isinstance(error, StandInError), repr(error)
    assert "ExitsWhenPickled" in str(error)
    assert tasks[1]["return_value"] == 5


# -- item 5: an idle worker killed from outside ---------------------------------


async def test_an_idle_worker_killed_from_outside_fails_no_task(
    one: LocalExecutionBackend, recorder: Recorder
) -> None:
    first = fn("first", pid_of)
    await one.submit_tasks([first])
    await recorder.wait(["first"], timeout=60)
    victim = first["return_value"]
    os.kill(victim, signal.SIGKILL)
    # Gone for good, reaped: while its other threads still tear down, a
    # killed worker shows as a zombie that still holds its pipes open.
    deadline = time.monotonic() + 10
    while psutil.pid_exists(victim) and time.monotonic() < deadline:
        await asyncio.sleep(0.01)
    assert not psutil.pid_exists(victim)
    tasks = [fn(f"t{i}", pid_of, i) for i in range(4)]
    await one.submit_tasks(tasks)
    await recorder.wait([t["uid"] for t in tasks], timeout=60)
    states = [recorder.final(t["uid"]) for t in tasks]
    assert states == [TaskState.DONE] * 4, [t.get("exception") for t in tasks]
    assert victim not in {t["return_value"] for t in tasks}


# -- gap: max_tasks_per_child ---------------------------------------------------


async def test_max_tasks_per_child_replaces_a_worker_after_exactly_that_many(
    recorder: Recorder,
) -> None:
    backend = LocalExecutionBackend(ProcessPoolExecutor(1, max_tasks_per_child=2))
    backend.register_callback(recorder)
    tasks = [fn(f"t{i}", pid_of, i) for i in range(4)]
    try:
        await backend.submit_tasks(tasks)
        await recorder.wait([t["uid"] for t in tasks], timeout=60)
    finally:
        await asyncio.wait_for(backend.shutdown(), 30)
    pids = [t["return_value"] for t in tasks]
    assert pids[0] == pids[1] != pids[2] == pids[3], pids


# -- item 6: a script without a __main__ guard ----------------------------------

UNGUARDED = """
    import asyncio, os, sys
    from dataclasses import dataclass

    from reference import LocalExecutionBackend

    with open(sys.argv[1], "a") as log:
        log.write(f"{os.getpid()}\\n")

    @dataclass
    class Point:
        x: int

    def square(p):
        return Point(p.x * p.x)

    def init(tag):
        os.environ["UNGUARDED_TAG"] = tag

    def tag():
        return os.environ.get("UNGUARDED_TAG")

    async def main():
        from concurrent.futures import ProcessPoolExecutor
        for backend in (
            LocalExecutionBackend(processes=2),
            LocalExecutionBackend(
                ProcessPoolExecutor(2, initializer=init, initargs=("set",))
            ),
        ):
            ended = asyncio.Event()
            states = {}

            def record(task, state):
                if state in ("DONE", "FAILED", "CANCELED"):
                    value = task.get("return_value")
                    if isinstance(value, Point):
                        value = value.x
                    states[task["uid"]] = (str(state), value)
                    if len(states) == 5:
                        ended.set()

            backend.register_callback(record)
            tasks = [
                {"uid": f"t{i}", "function": square, "args": [Point(i)]}
                for i in range(4)
            ] + [{"uid": "tag", "function": tag}]
            await backend.submit_tasks(tasks)
            await asyncio.wait_for(ended.wait(), 60)
            await backend.shutdown()
            print(sorted(states.items()))

    asyncio.run(main())
"""


async def test_a_script_without_a_main_guard_runs_its_body_once(
    tmp_path: Path,
) -> None:
    script = tmp_path / "unguarded.py"
    script.write_text(textwrap.dedent(UNGUARDED))
    log = tmp_path / "body.log"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        str(script),
        str(log),
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 100)
    runs = log.read_text().split()
    assert runs == [str(proc.pid)], (runs, err.decode()[-2000:])
    assert proc.returncode == 0, err.decode()[-2000:]
    expected = (
        "[('t0', ('DONE', 0)), ('t1', ('DONE', 1)), ('t2', ('DONE', 4)), "
        "('t3', ('DONE', 9)), ('tag', ('DONE', {}))]"
    )
    assert out.decode().splitlines() == [
        expected.format(None),
        expected.format("'set'"),
    ], err.decode()[-2000:]
    assert b"Traceback" not in err, err.decode()[-2000:]
