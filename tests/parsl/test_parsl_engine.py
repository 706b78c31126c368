"""The Parsl backend under radical.asyncflow 0.6's WorkflowEngine: a diamond."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from _parsl_helpers import add, async_add

pytest.importorskip("parsl")
asyncflow = pytest.importorskip("radical.asyncflow")
from reference.parsl import ParslExecutionBackend  # noqa: E402


@pytest.mark.asyncio
async def test_diamond_of_functions_and_executables(
    dfk: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # the engine writes its work dir under cwd
    backend = ParslExecutionBackend(dfk=dfk)
    flow = await asyncflow.WorkflowEngine.create(backend=backend)
    try:

        @flow.function_task
        async def top() -> int:
            return await async_add(1, 2)

        @flow.function_task
        async def left(x: int) -> int:
            return add(x, 10)

        @flow.executable_task
        async def right(x: int) -> str:
            # The engine builds the command before ``x`` resolves: it orders
            # the task after ``top``, and the command does not use ``x``.
            return "echo right"

        @flow.function_task
        async def bottom(a: int, b: str) -> str:
            return f"{a}|{b.strip()}"

        @flow.function_task
        async def broken() -> None:
            raise KeyError("missing thing")

        t = top()
        result = await asyncio.wait_for(bottom(left(t), right(t)), 90)
        assert result == "13|right"
        with pytest.raises(Exception, match="missing thing"):
            await asyncio.wait_for(broken(), 60)
    finally:
        await asyncio.wait_for(flow.shutdown(), 60)
    assert backend.state().value == "SHUTDOWN"
