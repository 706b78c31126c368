"""Resource requests through radical.asyncflow 0.6's WorkflowEngine (RQ-1, RQ-2).

The engine passes a decorated task's ``task_description`` to the backend as
``task_backend_specific_kwargs``, where the request keys are read.
"""

from __future__ import annotations

import asyncio
import os
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


@pytest.mark.skipif(
    not hasattr(os, "sched_getaffinity"), reason="needs Linux CPU affinity"
)
async def test_running_executables_never_share_a_core(tmp_path: Path) -> None:
    """PL-2 and PL-3 under the engine: 8 one-core executables on 2 cores.

    Each prints its own ``Cpus_allowed_list`` between two timestamps; at no
    instant do two running tasks hold the same core, and each holds one.
    """
    usable = sorted(os.sched_getaffinity(0))[:2]
    if len(usable) < 2:
        pytest.skip("needs two usable cores")
    backend = await LocalExecutionBackend(cores=usable, shutdown_timeout=5)
    flow = await radical_asyncflow.WorkflowEngine.create(
        backend=backend, work_dir=str(tmp_path)
    )
    try:

        @flow.executable_task
        async def where(i: int, task_description: dict[str, Any] = {}) -> str:  # noqa: B006
            out = tmp_path / f"where{i}"
            return (
                "s=$(date +%s.%N); "
                "c=$(grep Cpus_allowed_list: /proc/$$/status | cut -f2); "
                f"sleep 0.1; echo $s $(date +%s.%N) $c > {out}"
            )

        await asyncio.wait_for(
            asyncio.gather(
                *(where(i, task_description={"cores_per_rank": 1}) for i in range(8))
            ),
            30,
        )
        seen = [(tmp_path / f"where{i}").read_text().split() for i in range(8)]
        spans = [(float(s), float(e), cores) for s, e, cores in seen]
        assert {cores for _, _, cores in spans} <= {str(c) for c in usable}
        for i, (start, end, cores) in enumerate(spans):
            for other_start, other_end, other_cores in spans[i + 1 :]:
                if start < other_end and other_start < end:
                    assert cores != other_cores, (spans, i)
    finally:
        await asyncio.wait_for(flow.shutdown(), 30)
