"""A resource request too large to count, on Dask (issue 20, item 1; RQ-3).

Before: `spec.resource_demand` raised `OverflowError`, and the whole slice of
the submit (bystanders too) was FAILED "dispatch failed: OverflowError".
Now only the bad task fails, with a `ValueError` naming the key.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from _dask_helpers import Recorder, add

from spec import TaskState

pytest.importorskip("distributed")
from reference.dask import DaskExecutionBackend

pytestmark = pytest.mark.asyncio


async def test_only_the_overflowing_task_fails() -> None:
    backend = DaskExecutionBackend(cores=2, gpus=["0"])
    recorder = Recorder()
    backend.register_callback(recorder)
    requests: list[tuple[str, dict[str, Any]]] = [
        ("gpus_per_rank", {"gpus_per_rank": 10**400}),
        ("ranks", {"ranks": 10**400}),
        ("gpus_per_rank", {"ranks": 2, "gpus_per_rank": 1e308}),
    ]
    bad = [
        {
            "uid": f"bad{i}",
            "function": add,
            "args": (1,),
            "task_backend_specific_kwargs": request,
        }
        for i, (_, request) in enumerate(requests)
    ]
    fine = {"uid": "fine", "function": add, "args": (1, 2)}
    try:
        await backend.submit_tasks([bad[0], fine, *bad[1:]])
        await recorder.wait("fine", *(t["uid"] for t in bad), timeout=60)
    finally:
        await asyncio.wait_for(backend.shutdown(), 60)
    assert recorder.states["fine"] == [TaskState.DONE]
    assert fine["return_value"] == 3
    for task, (key, _) in zip(bad, requests, strict=True):
        assert recorder.states[task["uid"]] == [TaskState.FAILED]
        assert isinstance(task["exception"], ValueError), repr(task["exception"])
        assert repr(key) in str(task["exception"])
