"""The Dask backend under radical.asyncflow 0.6's WorkflowEngine."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from _dask_helpers import add, async_add, raise_key_error

pytest.importorskip("distributed")
asyncflow = pytest.importorskip("radical.asyncflow")
from reference.dask import DaskExecutionBackend  # noqa: E402


@pytest.mark.asyncio
async def test_workflow_engine_runs_functions_executables_and_failures(
    address: str, tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # the engine writes its work dir under cwd
    backend = DaskExecutionBackend(address=address)
    flow = await asyncflow.WorkflowEngine.create(backend=backend)
    try:

        @flow.function_task
        async def plus(a: int, b: int) -> int:
            return await async_add(a, b)

        @flow.function_task
        async def double(x: int) -> int:
            return add(x, x)

        @flow.executable_task
        async def greet() -> str:
            return "echo hello from dask"

        @flow.function_task
        async def broken() -> None:
            raise_key_error()

        result = await asyncio.wait_for(double(plus(1, 2)), 60)
        assert result == 6
        out = await asyncio.wait_for(greet(), 60)
        assert "hello from dask" in out
        with pytest.raises(Exception, match="missing thing"):
            await asyncio.wait_for(broken(), 60)
    finally:
        await asyncio.wait_for(flow.shutdown(), 60)
    assert backend.state().value == "SHUTDOWN"


@pytest.mark.asyncio
async def test_requests_are_honoured_under_the_engine(tmp_path: Any) -> None:
    # Issue 13's "done when", on Dask: 8 executables asking for 1 of 2 cores
    # never run more than 2 at once; 3 cores on 2 fails with
    # ResourceUnavailableError at once (before any worker could take it).
    from spec import ResourceUnavailableError

    backend = DaskExecutionBackend(cores=2)
    flow = await asyncflow.WorkflowEngine.create(
        backend=backend, work_dir=str(tmp_path)
    )
    try:

        @flow.executable_task
        async def span(i: int, task_description: dict[str, Any] = {}) -> str:  # noqa: B006
            out = tmp_path / f"span{i}"
            return f"s=$(date +%s.%N); sleep 0.5; echo $s $(date +%s.%N) > {out}"

        results = await asyncio.wait_for(
            asyncio.gather(
                *(span(i, task_description={"cores_per_rank": 1}) for i in range(8))
            ),
            60,
        )
        assert len(results) == 8
        spans = [
            tuple(map(float, (tmp_path / f"span{i}").read_text().split()))
            for i in range(8)
        ]
        peak = max(sum(1 for b, e in spans if b <= start < e) for start, _ in spans)
        assert peak == 2  # both cores used, never more

        with pytest.raises(ResourceUnavailableError, match="3 core"):
            await asyncio.wait_for(span(99, task_description={"cores_per_rank": 3}), 5)
    finally:
        await asyncio.wait_for(flow.shutdown(), 60)
