"""A task granted no GPU sees none (issue 20, item 2; RQ-4, RQ-6).

With ``CUDA_VISIBLE_DEVICES=0,1`` in the environment, an executable asking
for no GPU ran with ``0,1`` while another task held GPU 0.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from _ref_helpers import Recorder

from reference import LocalExecutionBackend
from spec import TaskState

pytestmark = pytest.mark.timeout(60)


def _recording(tmp: Path, uid: str, **options: Any) -> dict[str, Any]:
    body = f'sleep 0.2; echo "[${{CUDA_VISIBLE_DEVICES-unset}}]" > {tmp / uid}'
    return {
        "uid": uid,
        "executable": "/bin/sh",
        "arguments": ["-c", body],
        "task_backend_specific_kwargs": {"shell": False, **options},
    }


@pytest.mark.asyncio
@pytest.mark.parametrize("gpus", [None, ["0", "1"]], ids=["from-env", "given"])
async def test_an_executable_granted_no_gpu_sees_none(
    tmp_path: Path,
    recorder: Recorder,
    monkeypatch: pytest.MonkeyPatch,
    gpus: list[str] | None,
) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1")
    backend = LocalExecutionBackend(
        resources=True,
        cores=4,
        bind=False,  # 4 counted cores, whatever this machine has
        gpus=gpus,
        shutdown_timeout=5,
    )
    backend.register_callback(recorder)
    tasks = [
        _recording(tmp_path, "holder", gpus_per_rank=1),
        _recording(tmp_path, "plain"),
        _recording(tmp_path, "own-env", env={"CUDA_VISIBLE_DEVICES": "0,1"}),
        _recording(tmp_path, "zero", gpus_per_rank=0),
    ]
    try:
        await backend.submit_tasks(tasks)
        await recorder.wait([t["uid"] for t in tasks], timeout=20)
    finally:
        await asyncio.wait_for(backend.shutdown(), 15)
    for task in tasks:
        assert recorder.final(task["uid"]) is TaskState.DONE, task.get("stderr")
    seen = {t["uid"]: (tmp_path / t["uid"]).read_text().strip() for t in tasks}
    assert seen == {"holder": "[0]", "plain": "[]", "own-env": "[]", "zero": "[]"}
