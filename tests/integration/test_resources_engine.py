"""Resource requests through radical.asyncflow 0.6's WorkflowEngine (RQ-1, RQ-2).

The engine passes a decorated task's ``task_description`` to the backend as
``task_backend_specific_kwargs``, where the request keys are read.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest

from reference import LocalExecutionBackend
from spec import ResourceUnavailableError

radical_asyncflow = pytest.importorskip("radical.asyncflow")

pytestmark = [pytest.mark.asyncio, pytest.mark.timeout(60)]


async def test_requests_are_honoured_under_the_engine(tmp_path: Path) -> None:
    backend = await LocalExecutionBackend(cores=2, shutdown_timeout=5)
    flow = await radical_asyncflow.WorkflowEngine.create(
        backend=backend, work_dir=str(tmp_path)
    )
    try:

        @flow.executable_task
        async def span(i: int, task_description: dict[str, Any] = {}) -> str:  # noqa: B006
            out = tmp_path / f"span{i}"
            return f"s=$(date +%s.%N); sleep 0.2; echo $s $(date +%s.%N) > {out}"

        results = await asyncio.wait_for(
            asyncio.gather(
                *(span(i, task_description={"cores_per_rank": 1}) for i in range(8))
            ),
            30,
        )
        assert len(results) == 8
        spans = [
            tuple(map(float, (tmp_path / f"span{i}").read_text().split()))
            for i in range(8)
        ]
        peak = max(sum(1 for b, e in spans if b <= start < e) for start, _ in spans)
        assert peak == 2  # both cores used, never more

        t0 = time.monotonic()
        with pytest.raises(ResourceUnavailableError, match="3 core"):
            await asyncio.wait_for(span(99, task_description={"cores_per_rank": 3}), 5)
        assert time.monotonic() - t0 < 1.0
    finally:
        await asyncio.wait_for(flow.shutdown(), 30)
