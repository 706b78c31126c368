"""Both reference backends under radical.asyncflow 0.6's real WorkflowEngine."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from reference import LocalExecutionBackend, NoopExecutionBackend

radical_asyncflow = pytest.importorskip("radical.asyncflow")
WorkflowEngine = radical_asyncflow.WorkflowEngine

pytestmark = pytest.mark.asyncio


@pytest_asyncio.fixture
async def local_flow(tmp_path: Path) -> AsyncIterator[Any]:
    backend = LocalExecutionBackend(kill_grace=0.5)
    flow = await WorkflowEngine.create(backend=backend, work_dir=str(tmp_path))
    yield flow
    await asyncio.wait_for(flow.shutdown(), 30)
    assert backend.state() == "SHUTDOWN"


@pytest_asyncio.fixture
async def noop_flow(tmp_path: Path) -> AsyncIterator[Any]:
    backend = NoopExecutionBackend()
    flow = await WorkflowEngine.create(backend=backend, work_dir=str(tmp_path))
    yield flow
    await asyncio.wait_for(flow.shutdown(), 30)
    assert backend.state() == "SHUTDOWN"


async def wait_running(future: Any, timeout: float = 20.0) -> None:
    """Wait until the engine has marked the task's future RUNNING."""

    async def poll() -> None:
        while getattr(future, "state", None) != "RUNNING":
            await asyncio.sleep(0.01)

    await asyncio.wait_for(poll(), timeout)


async def test_local_functions_executables_and_a_dependency_chain(
    local_flow: Any, tmp_path: Path
) -> None:
    flow = local_flow

    @flow.function_task
    async def inc(x: int) -> int:
        return x + 1

    @flow.executable_task
    async def echo(word: str) -> str:
        return f"echo {word}"

    @flow.executable_task(capture_stdio=True)
    async def captured() -> str:
        return "echo into-a-file"

    first = inc(1)
    second = inc(first)  # a dependency: runs after `first`, gets its result
    third = inc(second)
    assert await asyncio.wait_for(third, 30) == 4
    assert await asyncio.wait_for(echo("hello"), 30) == "hello\n"
    path = await asyncio.wait_for(captured(), 30)
    assert Path(path).read_text() == "into-a-file\n"
    assert Path(path).is_relative_to(tmp_path)


async def test_local_failures_keep_their_type(local_flow: Any) -> None:
    flow = local_flow

    @flow.function_task
    async def broken() -> None:
        raise LookupError("no such thing")

    @flow.executable_task
    async def exits_nonzero() -> str:
        return "ls /no-such-directory-here"

    @flow.function_task
    async def after(x: Any) -> Any:
        return x

    failing = broken()
    with pytest.raises(LookupError, match="no such thing"):
        await asyncio.wait_for(failing, 30)
    # The engine turns a non-zero exit's stderr into a RuntimeError.
    with pytest.raises(RuntimeError, match="no-such-directory-here"):
        await asyncio.wait_for(exits_nonzero(), 30)
    # A task depending on a failed one fails too, without hanging (a hang
    # would raise TimeoutError, which is not a DependencyFailureError).
    with pytest.raises(
        radical_asyncflow.errors.DependencyFailureError, match="dependency failure"
    ):
        await asyncio.wait_for(after(broken()), 30)


async def test_local_cancel_of_a_running_executable(local_flow: Any) -> None:
    flow = local_flow

    @flow.executable_task
    async def sleeper() -> str:
        return "sleep 60"

    future = sleeper()
    await wait_running(future)
    future.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(future, 30)


async def test_local_thousand_tasks_gathered(local_flow: Any) -> None:
    flow = local_flow

    @flow.function_task
    async def square(x: int) -> int:
        return x * x

    results = await asyncio.wait_for(
        asyncio.gather(*[square(i) for i in range(1000)]), 90
    )
    assert results == [i * i for i in range(1000)]


async def test_noop_under_the_engine(noop_flow: Any) -> None:
    flow = noop_flow

    @flow.function_task
    async def step(x: Any) -> Any:
        return x

    @flow.executable_task
    async def command() -> str:
        return "/bin/false"

    chain = step(step(step(1)))
    assert await asyncio.wait_for(chain, 30) == "Dummy Output"
    assert await asyncio.wait_for(command(), 30) == "Dummy Output"
    results = await asyncio.wait_for(
        asyncio.gather(*[step(i) for i in range(1000)]), 60
    )
    assert results == ["Dummy Output"] * 1000


async def test_noop_cancel_before_delivery(noop_flow: Any) -> None:
    flow = noop_flow

    @flow.function_task
    async def step() -> int:
        return 1

    future = step()
    future.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(future, 30)


async def test_local_async_on_loop_under_the_engine(tmp_path: Path) -> None:
    backend = LocalExecutionBackend(async_on_loop=True)
    flow = await WorkflowEngine.create(backend=backend, work_dir=str(tmp_path))
    engine_loop = asyncio.get_running_loop()
    stopped = asyncio.Event()
    try:

        @flow.function_task
        async def inc(x: int) -> int:
            # On the engine's own loop: no thread hand-off.
            assert asyncio.get_running_loop() is engine_loop
            return x + 1

        @flow.function_task
        async def forever() -> None:
            try:
                await asyncio.sleep(3600)
            finally:
                stopped.set()

        chain = inc(inc(inc(1)))
        many = asyncio.gather(*[inc(i) for i in range(500)])
        assert await asyncio.wait_for(chain, 30) == 4
        assert await asyncio.wait_for(many, 60) == [i + 1 for i in range(500)]
        future = forever()
        await wait_running(future)
        future.cancel()  # the engine asks the backend to cancel it
        with pytest.raises(asyncio.CancelledError):
            await asyncio.wait_for(future, 30)
        # The coroutine itself was stopped, not just forgotten.
        await asyncio.wait_for(stopped.wait(), 30)
    finally:
        await asyncio.wait_for(flow.shutdown(), 30)
