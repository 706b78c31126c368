"""Cancel on the Dask backend: CANCELED is reported only once it is true.

A task sent to Dask is reported CANCELED only after every worker knows of
the cancel (or its chunk came back): from then on it cannot start. These
tests cancel tasks queued behind busy workers, and tasks of a large batch
at every stage, and check that no task starts after its CANCELED arrived.
"""

from __future__ import annotations

import asyncio
import random
import time
from pathlib import Path
from typing import Any

import pytest
from _dask_helpers import Recorder, block, note_start

from spec import TaskState

pytest.importorskip("distributed")
from reference.dask import DaskExecutionBackend

pytestmark = pytest.mark.asyncio


async def _until(predicate: Any, timeout: float = 60.0) -> None:
    async def poll() -> None:
        while not predicate():
            await asyncio.sleep(0.01)

    await asyncio.wait_for(poll(), timeout)


async def test_tasks_canceled_in_the_queue_never_start(
    address: str, tmp_path: Path
) -> None:
    backend = DaskExecutionBackend(address=address, chunk_size=1)
    recorder = Recorder()
    backend.register_callback(recorder)
    release = tmp_path / "release"
    starts = tmp_path / "starts"
    starts.mkdir()
    busy = [
        {
            "uid": f"busy{i}",
            "function": block,
            "args": (str(tmp_path / f"b{i}"), str(release)),
        }
        for i in range(2)
    ]
    queued = [
        {"uid": f"q{i}", "function": note_start, "args": (str(starts), f"q{i}")}
        for i in range(20)
    ]
    try:
        await backend.submit_tasks(busy)
        # Both single-thread workers are busy from here on.
        await _until(lambda: all((tmp_path / f"b{i}").exists() for i in range(2)))
        await backend.submit_tasks(queued)
        await _until(lambda: all(backend._jobs[t["uid"]].chunk for t in queued))
        # All 20 are on Dask now, queued behind the busy ones.
        for task in queued:
            assert await backend.cancel_task(task["uid"]) is True
        await recorder.wait(*(t["uid"] for t in queued))
        release.touch()  # the workers are free the moment CANCELED arrived
        await recorder.wait("busy0", "busy1")
        # Two more tasks, queued after the canceled ones: once they have run,
        # a canceled task that was going to run would have run.
        after = [
            {"uid": f"after{i}", "function": note_start, "args": (str(starts), f"a{i}")}
            for i in range(2)
        ]
        await backend.submit_tasks(after)
        await recorder.wait("after0", "after1")
    finally:
        release.touch()
        await asyncio.wait_for(backend.shutdown(), 60)
    assert all(recorder.states[t["uid"]] == [TaskState.CANCELED] for t in queued)
    assert sorted(p.name for p in starts.iterdir()) == ["a0", "a1"]


async def test_no_task_starts_after_its_canceled_arrived(
    address: str, tmp_path: Path
) -> None:
    backend = DaskExecutionBackend(address=address)
    arrived: dict[str, float] = {}
    recorder = Recorder()

    def callback(task: dict[str, Any], state: TaskState) -> None:
        arrived[task["uid"]] = time.time()
        recorder(task, state)

    backend.register_callback(callback)
    tasks = [
        {
            "uid": f"t{i}",
            "function": note_start,
            "args": (str(tmp_path), f"t{i}", 0.002),
        }
        for i in range(400)
    ]
    rng = random.Random(7)
    canceled: list[str] = []
    try:
        await backend.submit_tasks(tasks)
        # Cancel a random tenth at each of several moments: some still queued
        # here, some on Dask, some running or finished on a worker.
        for _ in range(8):
            for task in rng.sample(tasks, 40):
                uid = task["uid"]
                if uid not in canceled and await backend.cancel_task(uid):
                    canceled.append(uid)
            await asyncio.sleep(0.1)  # spreads the cancels over the run
        await recorder.wait(*(t["uid"] for t in tasks), timeout=90)
    finally:
        await asyncio.wait_for(backend.shutdown(), 60)
    assert canceled, "some cancel must have come in time"
    for task in tasks:
        uid = task["uid"]
        if uid in canceled:
            assert recorder.states[uid] == [TaskState.CANCELED], uid  # CN-4
            started = tmp_path / uid
            if started.exists():  # it started, so before its CANCELED (CN-6)
                assert float(started.read_text()) < arrived[uid], uid
        else:
            assert recorder.states[uid] == [TaskState.DONE], uid


# -- a running function cannot be stopped: its outcome stands -------------------


async def test_cancel_of_a_running_function_is_refused_and_it_ends_done(
    address: str, tmp_path: Path
) -> None:
    backend = DaskExecutionBackend(address=address, chunk_size=1)
    recorder = Recorder()
    backend.register_callback(recorder)
    started, release = tmp_path / "started", tmp_path / "release"
    task = {"uid": "runner", "function": block, "args": (str(started), str(release))}
    try:
        await backend.submit_tasks([task])
        await _until(started.exists)
        # It runs in a worker thread, which cannot be stopped: not CANCELED.
        assert await backend.cancel_task("runner") is False
        release.touch()
        await recorder.wait("runner")
    finally:
        release.touch()
        await asyncio.wait_for(backend.shutdown(), 60)
    assert recorder.states["runner"] == [TaskState.DONE]
    assert task["return_value"] == "released"


async def test_queued_functions_are_canceled_and_never_run_behind_running_ones(
    address: str, tmp_path: Path
) -> None:
    # Chunks of two: each busy task has a queued one behind it in its chunk,
    # and one more chunk waits behind both busy workers.
    backend = DaskExecutionBackend(address=address, chunk_size=2)
    recorder = Recorder()
    backend.register_callback(recorder)
    release = tmp_path / "release"
    starts = tmp_path / "starts"
    starts.mkdir()

    def busy(i: int) -> dict[str, Any]:
        return {
            "uid": f"busy{i}",
            "function": block,
            "args": (str(tmp_path / f"b{i}"), str(release)),
        }

    def queued(i: int) -> dict[str, Any]:
        return {"uid": f"q{i}", "function": note_start, "args": (str(starts), f"q{i}")}

    tasks = [busy(0), queued(0), busy(1), queued(1), queued(2), queued(3)]
    try:
        await backend.submit_tasks(tasks)
        await _until(lambda: all((tmp_path / f"b{i}").exists() for i in range(2)))
        answers = await asyncio.gather(*(backend.cancel_task(t["uid"]) for t in tasks))
        assert answers == [False, True, False, True, True, True]
        for i in range(4):  # CANCELED once the cancel said True
            assert recorder.states[f"q{i}"] == [TaskState.CANCELED]
        release.touch()
        await recorder.wait("busy0", "busy1")
        # Tasks queued after the canceled ones: once they have run, a
        # canceled one that was going to run would have run.
        after = [
            {"uid": f"after{i}", "function": note_start, "args": (str(starts), f"a{i}")}
            for i in range(2)
        ]
        await backend.submit_tasks(after)
        await recorder.wait("after0", "after1")
    finally:
        release.touch()
        await asyncio.wait_for(backend.shutdown(), 60)
    assert recorder.states["busy0"] == recorder.states["busy1"] == [TaskState.DONE]
    assert tasks[0]["return_value"] == tasks[2]["return_value"] == "released"
    for i in range(4):
        assert recorder.states[f"q{i}"] == [TaskState.CANCELED]
        assert not (starts / f"q{i}").exists(), f"q{i} ran after its CANCELED"


async def test_true_means_canceled_once_and_never_run_under_load(
    address: str, tmp_path: Path
) -> None:
    # Many cancels, made concurrently (they share calls to the workers), mixed
    # with completions; two tasks are surely running when canceled.
    backend = DaskExecutionBackend(address=address)
    recorder = Recorder()
    backend.register_callback(recorder)
    release = tmp_path / "release"
    starts = tmp_path / "starts"
    starts.mkdir()
    blockers = [
        {
            "uid": f"busy{i}",
            "function": block,
            "args": (str(tmp_path / f"b{i}"), str(release)),
        }
        for i in range(2)
    ]
    tasks = [
        {
            "uid": f"t{i}",
            "function": note_start,
            "args": (str(starts), f"t{i}", 0.002),
        }
        for i in range(400)
    ]
    rng = random.Random(11)
    answers: dict[str, bool] = {}

    async def cancel(uid: str) -> None:
        answers[uid] = await backend.cancel_task(uid)

    try:
        await backend.submit_tasks(blockers)
        await _until(lambda: all((tmp_path / f"b{i}").exists() for i in range(2)))
        await backend.submit_tasks(tasks)
        await cancel("busy0")
        release.touch()  # from here on, tasks complete while cancels go out
        await cancel("busy1")
        for _ in range(8):
            picked = [t["uid"] for t in rng.sample(tasks, 40)]
            await asyncio.gather(*(cancel(u) for u in picked if u not in answers))
            await asyncio.sleep(0.05)
        await recorder.wait(*(t["uid"] for t in [*blockers, *tasks]), timeout=90)
        after = [
            {"uid": f"after{i}", "function": note_start, "args": (str(starts), f"a{i}")}
            for i in range(2)
        ]
        await backend.submit_tasks(after)
        await recorder.wait("after0", "after1")
    finally:
        release.touch()
        await asyncio.wait_for(backend.shutdown(), 60)
    assert answers["busy0"] is False
    assert answers["busy1"] is False
    for task in [*blockers, *tasks]:
        uid = task["uid"]
        if answers.get(uid):
            assert recorder.states[uid] == [TaskState.CANCELED], uid  # CN-4
            assert not (starts / uid).exists(), f"{uid} ran, yet was CANCELED"
        else:
            assert recorder.states[uid] == [TaskState.DONE], uid
            assert task["return_value"] in (uid, "released"), uid


async def test_without_the_workers_answer_cancel_is_refused_and_outcomes_stand(
    address: str, tmp_path: Path
) -> None:
    backend = DaskExecutionBackend(address=address, chunk_size=1)
    recorder = Recorder()
    backend.register_callback(recorder)
    release = tmp_path / "release"
    tasks = [
        {
            "uid": f"busy{i}",
            "function": block,
            "args": (str(tmp_path / f"b{i}"), str(release)),
        }
        for i in range(2)
    ]
    tasks.append({"uid": "queued", "function": block, "args": ("/dev/null", "/")})

    async def unreachable(*args: Any) -> None:
        raise OSError("the scheduler cannot be reached (injected)")

    try:
        await backend.submit_tasks(tasks)
        await _until(lambda: all((tmp_path / f"b{i}").exists() for i in range(2)))
        await _until(lambda: backend._jobs["queued"].chunk is not None)
        backend._link.cancel_remote = unreachable  # type: ignore[method-assign]
        # Nobody can say whether they started: not CANCELED.
        answers = await asyncio.gather(*(backend.cancel_task(t["uid"]) for t in tasks))
        assert answers == [False, False, False]
        release.touch()
        await recorder.wait(*(t["uid"] for t in tasks))
    finally:
        release.touch()
        await asyncio.wait_for(backend.shutdown(), 60)
    for task in tasks:
        assert recorder.states[task["uid"]] == [TaskState.DONE]
        assert task["return_value"] == "released"
