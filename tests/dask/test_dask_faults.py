"""Faults on the Dask backend: each one costs only the task that caused it.

A bad argument, a worker that dies, a callback that raises, odd uids and odd
option values: the task at fault fails (or the call returns False), and every
other task is reported as if nothing happened.
"""

from __future__ import annotations

import asyncio
import math
from pathlib import Path
from typing import Any

import pytest
from _dask_helpers import (
    Recorder,
    Unsendable,
    add,
    exit_worker,
    exit_worker_once_released,
    exit_worker_when,
    pid_then_sleep,
    return_cancel_bomb,
    run_batch,
)

from spec import TaskState, WorkerLostError

pytest.importorskip("distributed")
from reference.dask import DaskExecutionBackend

pytestmark = pytest.mark.asyncio


async def test_unsendable_executable_argument_fails_only_its_task(
    address: str,
) -> None:
    tasks: list[dict[str, Any]] = [
        {"uid": f"echo{i}", "executable": "echo", "arguments": [str(i)]}
        for i in range(3)
    ]
    tasks.insert(
        1, {"uid": "bad", "executable": "echo", "arguments": ["a", Unsendable()]}
    )
    recorder = await run_batch(address, tasks)
    bad = tasks.pop(1)
    assert recorder.states["bad"] == [TaskState.FAILED]
    message = str(bad["exception"])
    assert "arguments[1]" in message and "Unsendable" in message, message
    for i, task in enumerate(tasks):
        assert recorder.states[task["uid"]] == [TaskState.DONE]
        assert task["stdout"] == f"{i}\n"


async def test_unsendable_function_argument_is_named(address: str) -> None:
    tasks: list[dict[str, Any]] = [
        {"uid": "ok", "function": add, "args": (1, 2)},
        {"uid": "bad", "function": add, "args": (1,), "kwargs": {"b": Unsendable()}},
    ]
    recorder = await run_batch(address, tasks, chunk_size=2)
    assert recorder.states == {"ok": [TaskState.DONE], "bad": [TaskState.FAILED]}
    assert tasks[0]["return_value"] == 3
    assert "kwargs['b']" in str(tasks[1]["exception"])


@pytest.mark.parametrize("chunk_size", [None, 4])
async def test_a_dying_worker_fails_only_the_task_it_ran(
    address: str, chunk_size: int | None
) -> None:
    # 16 tasks on 2 single-thread workers: chunked, with innocent neighbours
    # in the culprit's chunk and in chunks queued on the same worker.
    tasks: list[dict[str, Any]] = [
        {"uid": f"t{i}", "function": add, "args": (i, 100)} for i in range(16)
    ]
    tasks[5] = {"uid": "t5", "function": exit_worker}
    recorder = await run_batch(address, tasks, chunk_size=chunk_size)
    assert recorder.states["t5"] == [TaskState.FAILED]
    assert isinstance(tasks[5]["exception"], WorkerLostError)
    for i, task in enumerate(tasks):
        if i != 5:
            assert recorder.states[task["uid"]] == [TaskState.DONE], task["uid"]
            assert task["return_value"] == i + 100


async def test_an_innocent_task_rerun_in_isolation_can_be_canceled(
    address: str, tmp_path: Path
) -> None:
    psutil = pytest.importorskip("psutil")
    pid_file = tmp_path / "pid"
    tasks: list[dict[str, Any]] = [
        {"uid": "culprit", "function": exit_worker},
        {"uid": "sleeper", "function": pid_then_sleep, "args": (str(pid_file), 60)},
    ]
    backend = DaskExecutionBackend(address=address, chunk_size=2)  # one chunk
    recorder = Recorder()
    backend.register_callback(recorder)
    try:
        await backend.submit_tasks(tasks)
        await recorder.wait("culprit", timeout=90)

        async def pid_written() -> None:
            while not pid_file.exists():
                await asyncio.sleep(0.02)

        # The sleeper runs again, alone, in a child process of a worker.
        await asyncio.wait_for(pid_written(), 60)
        pid = int(pid_file.read_text())
        assert await backend.cancel_task("sleeper") is True
        await recorder.wait("sleeper")
        assert recorder.states["sleeper"] == [TaskState.CANCELED]
        # CANCELED came after the child was killed, not after its 60 s.
        assert not psutil.pid_exists(pid) or (
            psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
        )
    finally:
        await asyncio.wait_for(backend.shutdown(), 60)
    assert recorder.states["culprit"] == [TaskState.FAILED]
    assert isinstance(tasks[0]["exception"], WorkerLostError)
    assert "exit code 7" in str(tasks[0]["exception"])


async def test_a_callback_raising_cancelled_error_loses_nothing(address: str) -> None:
    backend = DaskExecutionBackend(address=address)
    recorder = Recorder()

    def hostile(task: dict[str, Any], state: TaskState) -> None:
        recorder(task, state)
        raise asyncio.CancelledError  # a BaseException, not an Exception

    backend.register_callback(hostile)
    try:
        for batch in range(3):  # later batches are still reported
            uids = [f"b{batch}-{i}" for i in range(10)]
            await backend.submit_tasks(
                [{"uid": u, "function": add, "args": (i,)} for i, u in enumerate(uids)]
            )
            await recorder.wait(*uids)
            assert all(recorder.states[u] == [TaskState.DONE] for u in uids)
    finally:
        await asyncio.wait_for(backend.shutdown(), 60)


async def test_a_result_that_raises_cancelled_error_when_loaded_fails_alone(
    address: str,
) -> None:
    backend = DaskExecutionBackend(address=address, chunk_size=4)
    recorder = Recorder()
    backend.register_callback(recorder)
    first: list[dict[str, Any]] = [
        {"uid": f"a{i}", "function": add, "args": (i,)} for i in range(4)
    ]
    first[1] = {"uid": "a1", "function": return_cancel_bomb}  # in one chunk
    later: list[dict[str, Any]] = [
        {"uid": f"b{i}", "function": add, "args": (i,)} for i in range(4)
    ]
    try:
        await backend.submit_tasks(first)
        await recorder.wait(*(t["uid"] for t in first))
        await backend.submit_tasks(later)  # the consumer still reports
        await recorder.wait(*(t["uid"] for t in later))
    finally:
        await asyncio.wait_for(backend.shutdown(), 60)
    assert recorder.states["a1"] == [TaskState.FAILED]
    assert "CancelledError" in str(first[1]["exception"])
    for task in [*first[:1], *first[2:], *later]:
        assert recorder.states[task["uid"]] == [TaskState.DONE], task["uid"]


@pytest.mark.parametrize("uid", [["x"], {"a": 1}, {1}, None, 3, Path("x"), b"x"])
async def test_cancel_with_an_odd_uid_returns_false(address: str, uid: Any) -> None:
    backend = DaskExecutionBackend(address=address)
    try:
        assert await backend.cancel_task(uid) is False
    finally:
        await backend.shutdown()


@pytest.mark.parametrize("timeout", [math.inf, 1e20, math.nan, -1.0, "5"])
async def test_an_out_of_range_timeout_fails_naming_the_option(
    address: str, timeout: Any
) -> None:
    tasks: list[dict[str, Any]] = [
        {
            "uid": "odd",
            "executable": "echo",
            "task_backend_specific_kwargs": {"timeout": timeout},
        },
        {"uid": "fine", "executable": "echo", "arguments": ["ok"]},
    ]
    recorder = await run_batch(address, tasks)
    assert recorder.states == {"odd": [TaskState.FAILED], "fine": [TaskState.DONE]}
    error = tasks[0]["exception"]
    assert isinstance(error, (TypeError, ValueError)), repr(error)
    assert "timeout" in str(error) and repr(timeout) in str(error), str(error)


async def test_a_result_lost_with_its_worker_before_it_was_fetched_still_arrives(
    tmp_path: Path,
) -> None:
    # Issue 11's flake, made certain: "a" finished on the only worker, then
    # "x" killed that worker before the consumer fetched a's result. Dask
    # recomputes "a" on the restarted worker; it must end DONE with its value,
    # not FAILED because its future was no longer "finished" when settled.
    from distributed import LocalCluster

    go = tmp_path / "go"
    seen: list[str] = []
    async with LocalCluster(
        n_workers=1,
        threads_per_worker=1,
        processes=True,
        dashboard_address=":0",
        scheduler_kwargs={"allowed_failures": 0},
        asynchronous=True,
    ) as cluster:
        backend = DaskExecutionBackend(address=cluster.scheduler_address, chunk_size=1)
        recorder = Recorder()
        backend.register_callback(recorder)
        settle = backend._settler.settle

        async def settle_after_the_loss(batch: list[Any]) -> None:
            # The first time a's future comes back finished, let "x" kill the
            # worker holding a's result, and settle only once Dask said so.
            entry = backend._jobs.get("a")
            chunk = entry.chunk if entry is not None else None
            for future in batch:
                if chunk is not None and future.key == chunk.key and not seen:
                    seen.append(future.status)
                    go.touch()
                    while future.status == "finished":
                        await asyncio.sleep(0.01)
                    seen.append(future.status)
            await settle(batch)

        backend._settler.settle = settle_after_the_loss  # type: ignore[method-assign]
        tasks: list[dict[str, Any]] = [
            {"uid": "a", "function": add, "args": (1, 2)},
            {"uid": "x", "function": exit_worker_when, "args": (str(go),)},
        ]
        try:
            await backend.submit_tasks(tasks)
            await recorder.wait("a", "x", timeout=120)
        finally:
            await asyncio.wait_for(backend.shutdown(), 60)
    assert seen == ["finished", "lost"]
    assert recorder.states == {"a": [TaskState.DONE], "x": [TaskState.FAILED]}, tasks[
        0
    ].get("exception")
    assert tasks[0]["return_value"] == 3
    assert isinstance(tasks[1]["exception"], WorkerLostError)


@pytest.mark.timeout(300)  # a worker death and restart, on a loaded machine
async def test_an_executable_queued_behind_a_worker_killer_runs_again(
    tmp_path: Path, one_worker: str
) -> None:
    # Issue 20 item 7: one worker of one thread, chunk_size=1; the executable
    # waits on that worker behind a function that kills it. Dask fails both;
    # the executable never started, so it runs again (RS-12: queued tasks
    # complete) instead of failing with WorkerLostError.
    started, go = tmp_path / "started", tmp_path / "go"
    backend = DaskExecutionBackend(address=one_worker, chunk_size=1)
    recorder = Recorder()
    backend.register_callback(recorder)
    killer: dict[str, Any] = {
        "uid": "killer",
        "function": exit_worker_once_released,
        "args": (str(started), str(go)),
    }
    exe: dict[str, Any] = {"uid": "exe", "executable": "echo", "arguments": ["ran"]}

    async def queued_on_the_worker() -> None:
        while not started.exists():
            await asyncio.sleep(0.02)
        await backend.submit_tasks([exe])
        while True:
            job = backend._jobs.get("exe")
            if job is not None and job.chunk is not None:
                processing = await backend._link.client.processing()
                if any(job.key in keys for keys in processing.values()):
                    return  # on the worker, behind the killer
            await asyncio.sleep(0.02)

    try:
        await asyncio.wait_for(backend, 120)
        await backend.submit_tasks([killer])
        await asyncio.wait_for(queued_on_the_worker(), 60)
        go.touch()
        await recorder.wait("killer", "exe", timeout=120)
    finally:
        go.touch()
        await asyncio.wait_for(backend.shutdown(), 60)
    assert recorder.states["killer"] == [TaskState.FAILED]
    assert isinstance(killer["exception"], WorkerLostError)
    assert recorder.states["exe"] == [TaskState.DONE], exe.get("exception")
    assert exe["stdout"] == "ran\n"
