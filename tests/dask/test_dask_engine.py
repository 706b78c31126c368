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
