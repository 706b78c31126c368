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
