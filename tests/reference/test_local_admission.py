"""Resource accounting in the local backend with thread-side admission.

Pullers admit function jobs themselves; executables, process-pool jobs and
cancels give their cores back on the event loop. These tests check that the
two meet: FIFO across kinds and the capacity, measured from timestamps the
tasks write; that cores come back exactly once whatever ends a task; and
that a puller needs no loop turn to take the next job.
"""

from __future__ import annotations

import asyncio
import inspect
import os
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from _ref_helpers import Recorder

from reference import LocalExecutionBackend
from spec import TaskState, WorkerLostError

pytestmark = [pytest.mark.asyncio, pytest.mark.timeout(60)]


def _record_span(path: str, seconds: float) -> None:
    start = time.time()
    time.sleep(seconds)
    Path(path).write_text(f"{start} {time.time()}")


def _function(tmp: Path, uid: str, seconds: float, cores: int) -> dict[str, Any]:
    return {
        "uid": uid,
        "function": _record_span,
        "args": (str(tmp / uid), seconds),
        "task_backend_specific_kwargs": {"cores_per_rank": cores},
    }


def _executable(tmp: Path, uid: str, seconds: float, cores: int) -> dict[str, Any]:
    # The same clock as time.time(): seconds since the epoch.
    body = (
        f"start=$(date +%s.%N); sleep {seconds}; "
        f'echo "$start $(date +%s.%N)" > {tmp / uid}'
    )
    return {
        "uid": uid,
        "executable": "/bin/sh",
        "arguments": ["-c", body],
        "task_backend_specific_kwargs": {"shell": False, "cores_per_rank": cores},
    }


def _free(backend: LocalExecutionBackend) -> int:
    pool = backend._resources
    assert pool is not None
    return pool.free_cores


def _assert_in_order_within(spans: list[tuple[float, ...]], cores: int) -> None:
    """Check ``(start, end, cores)`` spans, in arrival order, for RQ-5 and RQ-1.

    In arrival order, a task holds its cores from its admission, which is
    no later than the start of any task after it: stretch each span back
    to the earliest start that follows it. A backend that let a later task
    overtake one waiting at the head, or ran more than it has, shows a
    moment where the stretched spans hold more than the capacity.
    """
    held = [
        (min([start, *(later[0] for later in spans[i + 1 :])]), end, n)
        for i, (start, end, n) in enumerate(spans)
    ]
    for moment, _, _ in held:
        busy = sum(n for begin, end, n in held if begin <= moment < end)
        assert busy <= cores, f"{busy} cores held at {moment} of {cores}"


async def _whole_again(backend: LocalExecutionBackend, cores: int) -> None:
    """Wait (bounded) until every core is free: a puller gives its job's back
    just after the outcome is pushed, so the last one may lag the callback."""
    for _ in range(500):
        if _free(backend) == cores:
            return
        await asyncio.sleep(0.01)
    assert _free(backend) == cores


async def test_a_puller_takes_the_next_job_while_the_loop_is_blocked(
    recorder: Recorder,
) -> None:
    backend = LocalExecutionBackend(ThreadPoolExecutor(4), cores=1)
    backend.register_callback(recorder)
    started, release, second_ran = (threading.Event() for _ in range(3))

    def first() -> None:
        started.set()
        release.wait(10)

    tasks = [
        {"uid": "first", "function": first},
        {"uid": "second", "function": second_ran.set},
    ]
    try:
        await backend.submit_tasks(tasks)
        assert await asyncio.to_thread(started.wait, 10)
        release.set()
        # Block the event loop on purpose: the core "first" gives back must
        # reach "second" in the pool thread, with no loop turn.
        assert second_ran.wait(10), "the next job waited for the event loop"
        await recorder.wait(["first", "second"])
    finally:
        await asyncio.wait_for(backend.shutdown(), 15)
    assert [recorder.final(t["uid"]) for t in tasks] == [TaskState.DONE] * 2


@pytest.mark.parametrize("holder", ["function", "executable"])
async def test_cores_coming_back_wake_a_puller_for_each_job_that_fits(
    holder: str, tmp_path: Path, recorder: Recorder
) -> None:
    # Two cores held by one task; behind it two one-core functions that
    # each wait for the other: both must run at once once the cores return,
    # whether a puller gives them back (a function) or the loop (an executable).
    backend = LocalExecutionBackend(ThreadPoolExecutor(4), cores=2)
    backend.register_callback(recorder)
    both = threading.Barrier(2, timeout=10)
    gate = tmp_path / "gate"
    if holder == "function":
        big = {
            "uid": "big",
            "function": lambda: [
                time.sleep(0.01) for _ in range(500) if not gate.exists()
            ],
            "task_backend_specific_kwargs": {"cores_per_rank": 2},
        }
    else:
        big = {
            "uid": "big",
            "executable": "/bin/sh",
            "arguments": ["-c", f"while [ ! -e {gate} ]; do sleep 0.01; done"],
            "task_backend_specific_kwargs": {"shell": False, "cores_per_rank": 2},
        }
    pair = [{"uid": f"pair{i}", "function": both.wait} for i in range(2)]
    try:
        await backend.submit_tasks([big, *pair])
        await recorder.wait(["big"], TaskState.RUNNING)
        assert recorder.last.get("pair0") is None  # it waits for its core
        gate.touch()
        await recorder.wait(["big", "pair0", "pair1"], timeout=20)
        await _whole_again(backend, 2)
    finally:
        await asyncio.wait_for(backend.shutdown(), 15)
    states = {u: recorder.final(u) for u in ("big", "pair0", "pair1")}
    assert states == dict.fromkeys(states, TaskState.DONE), [
        t.get("exception") for t in pair
    ]


async def test_mixed_kinds_keep_arrival_order_and_the_capacity(
    tmp_path: Path, recorder: Recorder
) -> None:
    cores = 3
    # Counted, not bound: 3 cores whatever this machine has.
    backend = LocalExecutionBackend(ThreadPoolExecutor(6), cores=cores, bind=False)
    backend.register_callback(recorder)
    plan = [
        ("fn", 1, 0.15), ("exec", 2, 0.15), ("fn", 3, 0.1), ("exec", 1, 0.1),
        ("fn", 1, 0.1), ("fn", 2, 0.1), ("exec", 3, 0.05), ("fn", 1, 0.1),
        ("exec", 1, 0.1), ("fn", 2, 0.05), ("fn", 1, 0.05), ("exec", 2, 0.05),
    ]  # fmt: skip
    tasks = [
        (_function if kind == "fn" else _executable)(tmp_path, f"t{i:02}", secs, n)
        for i, (kind, n, secs) in enumerate(plan)
    ]
    try:
        await backend.submit_tasks(tasks)
        await recorder.wait([t["uid"] for t in tasks], timeout=30)
        await _whole_again(backend, cores)
    finally:
        await asyncio.wait_for(backend.shutdown(), 15)
    assert [recorder.final(t["uid"]) for t in tasks] == [TaskState.DONE] * len(tasks)
    spans = [
        (*map(float, (tmp_path / t["uid"]).read_text().split()), plan[i][1])
        for i, t in enumerate(tasks)
    ]
    _assert_in_order_within(spans, cores)


async def test_a_task_that_raises_or_is_canceled_gives_its_cores_back_once(
    tmp_path: Path, recorder: Recorder
) -> None:
    backend = LocalExecutionBackend(ThreadPoolExecutor(4), cores=2, kill_grace=0.5)
    backend.register_callback(recorder)
    entered = threading.Event()

    def raises() -> None:
        raise RuntimeError("boom")

    async def sleeps() -> None:
        entered.set()
        await asyncio.sleep(30)

    gate = tmp_path / "never"
    tasks = [
        {"uid": "raises", "function": raises},
        {"uid": "async", "function": sleeps},
        {
            "uid": "exec",
            "executable": "/bin/sh",
            "arguments": ["-c", f"while [ ! -e {gate} ]; do sleep 0.01; done"],
            "task_backend_specific_kwargs": {"shell": False},
        },
        *(
            {"uid": f"after{i}", "function": time.sleep, "args": (0.01,)}
            for i in range(6)
        ),
    ]
    try:
        await backend.submit_tasks(tasks)
        await recorder.wait(["raises"])
        await asyncio.to_thread(entered.wait, 10)
        await recorder.wait(["exec"], TaskState.RUNNING)
        assert _free(backend) == 0  # the coroutine and the executable
        assert await backend.cancel_task("async") is True
        assert await backend.cancel_task("exec") is True
        await recorder.wait([t["uid"] for t in tasks], timeout=20)
        await _whole_again(backend, 2)
    finally:
        await asyncio.wait_for(backend.shutdown(), 15)
    assert recorder.final("raises") is TaskState.FAILED
    assert recorder.final("async") is TaskState.CANCELED
    assert recorder.final("exec") is TaskState.CANCELED
    assert all(recorder.final(f"after{i}") is TaskState.DONE for i in range(6))


async def test_a_dead_worker_gives_its_cores_back_once(recorder: Recorder) -> None:
    backend = LocalExecutionBackend(processes=1, cores=1, shutdown_timeout=10)
    backend.register_callback(recorder)
    tasks = [
        {"uid": "dies", "function": os._exit, "args": (3,)},
        {"uid": "next", "function": abs, "args": (-1,)},
    ]
    try:
        await backend.submit_tasks(tasks)
        await recorder.wait(["dies", "next"], timeout=40)
        assert _free(backend) == 1
    finally:
        await asyncio.wait_for(backend.shutdown(), 20)
    assert isinstance(tasks[0].get("exception"), WorkerLostError)
    assert recorder.final("next") is TaskState.DONE and tasks[1]["return_value"] == 1


async def test_shutdown_with_jobs_waiting_ready_and_running(
    recorder: Recorder,
) -> None:
    # One puller, two cores: one job runs, one is admitted and waits for
    # the thread, the rest wait for cores. Shutdown reports them all.
    backend = LocalExecutionBackend(ThreadPoolExecutor(1), cores=2, shutdown_timeout=3)
    backend.register_callback(recorder)
    started, release = threading.Event(), threading.Event()

    def first() -> None:
        started.set()
        release.wait(10)

    tasks = [{"uid": "first", "function": first}] + [
        {"uid": f"w{i}", "function": abs, "args": (i,)} for i in range(5)
    ]
    try:
        await backend.submit_tasks(tasks)
        assert await asyncio.to_thread(started.wait, 10)
    finally:
        t0 = time.monotonic()
        closing = asyncio.ensure_future(backend.shutdown())
        await asyncio.sleep(0.1)
        release.set()
        await asyncio.wait_for(closing, 15)
    assert time.monotonic() - t0 < 10
    assert recorder.violations == []
    assert {recorder.final(t["uid"]) for t in tasks} <= {
        TaskState.CANCELED,
        TaskState.DONE,
    }
    assert all(recorder.final(t["uid"]) is not None for t in tasks)
    assert all(recorder.final(f"w{i}") is TaskState.CANCELED for i in range(5))


async def test_an_admission_that_finds_the_lock_busy_is_tried_again(
    recorder: Recorder,
) -> None:
    # The loop never waits for the pool's lock (a puller holding it may have
    # lost the GIL); it queues the jobs and admits them on a later turn.
    backend = LocalExecutionBackend(ThreadPoolExecutor(2), cores=2)
    backend.register_callback(recorder)
    pool = backend._resources
    assert pool is not None
    tasks = [{"uid": f"t{i}", "function": abs, "args": (-i,)} for i in range(20)]
    try:
        with pool.lock:  # as a puller would hold it
            await backend.submit_tasks(tasks)
            for _ in range(5):
                await asyncio.sleep(0)
            assert len(pool) == len(tasks)  # queued, none admitted yet
            assert recorder.events == []
        await recorder.wait([t["uid"] for t in tasks], timeout=20)
        await _whole_again(backend, 2)
    finally:
        await asyncio.wait_for(backend.shutdown(), 15)
    assert [t["return_value"] for t in tasks] == list(range(20))


async def test_an_executor_shut_down_under_the_backend_fails_every_waiting_task(
    recorder: Recorder,
) -> None:
    # Each failed task gives its core back, which admits the next one, whose
    # puller cannot be started either: that must not recurse once per task.
    pool = ThreadPoolExecutor(2)
    pool.shutdown()
    backend = LocalExecutionBackend(pool, cores=2)
    backend.register_callback(recorder)
    tasks = [{"uid": f"t{i}", "function": int} for i in range(3000)]
    depth = len(inspect.stack(0))
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(depth + 150)  # a few frames a task would exceed it
    try:
        await backend.submit_tasks(tasks)
        await recorder.wait([t["uid"] for t in tasks], timeout=30)
        assert _free(backend) == 2
    finally:
        sys.setrecursionlimit(limit)
        await asyncio.wait_for(backend.shutdown(), 15)
    assert {recorder.final(t["uid"]) for t in tasks} == {TaskState.FAILED}
    assert isinstance(tasks[-1]["exception"], RuntimeError)
    assert recorder.violations == []


async def test_default_functions_around_a_big_executable_keep_order_and_capacity(
    tmp_path: Path, recorder: Recorder
) -> None:
    # Default functions (no request: one core each) run from the ready
    # queue on the cores the pullers hold; an executable asking for both
    # cores arrives behind them and must wait for all of them to start,
    # and the functions after it for it. Some waiting functions are
    # canceled on the way: those never run, and every core comes back.
    cores = 2
    backend = LocalExecutionBackend(ThreadPoolExecutor(4), cores=cores, bind=False)
    backend.register_callback(recorder)
    entered, release = threading.Event(), threading.Event()

    def first(path: str) -> None:
        start = time.time()
        entered.set()
        release.wait(10)
        Path(path).write_text(f"{start} {time.time()}")

    def default(uid: str) -> dict[str, Any]:
        return {
            "uid": uid,
            "function": _record_span,
            "args": (str(tmp_path / uid), 0.002),
        }

    before = [{"uid": "b00", "function": first, "args": (str(tmp_path / "b00"),)}]
    before += [default(f"b{i:02}") for i in range(1, 30)]
    big = _executable(tmp_path, "x", 0.05, cores)
    after = [default(f"a{i:02}") for i in range(30)]
    tasks = [*before, big, *after]
    try:
        await backend.submit_tasks(before)
        assert await asyncio.to_thread(entered.wait, 10)
        await backend.submit_tasks([big])
        pool = backend._resources
        assert pool is not None
        for _ in range(500):  # dispatched on a later turn: queued in the pool
            if len(pool):
                break
            await asyncio.sleep(0.001)
        assert len(pool) == 1
        await backend.submit_tasks(after)
        canceled = [t["uid"] for t in (*before[5::7], *after[::5])]
        for uid in canceled:
            await backend.cancel_task(uid)
        release.set()
        await recorder.wait([t["uid"] for t in tasks], timeout=30)
        await _whole_again(backend, cores)
    finally:
        release.set()
        await asyncio.wait_for(backend.shutdown(), 15)
    assert recorder.violations == []
    ran = []
    for t in tasks:
        state = recorder.final(t["uid"])
        span = tmp_path / t["uid"]
        if state is TaskState.CANCELED:
            assert not span.exists(), f"{t['uid']} ran after its CANCELED"
            continue
        assert state is TaskState.DONE, (t["uid"], state, t.get("exception"))
        start, end = map(float, span.read_text().split())
        ran.append((start, end, cores if t is big else 1))
    assert all(recorder.final(t["uid"]) is TaskState.CANCELED for t in after[::5])
    _assert_in_order_within(ran, cores)
