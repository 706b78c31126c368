"""Accepted: the reference backends satisfy the core and the drop-in protocols."""

from reference import LocalExecutionBackend, NoopExecutionBackend
from spec import (
    AsyncflowBackend,
    ExecutionBackend,
    SupportsAsyncContext,
    SupportsAsyncInit,
)

core: ExecutionBackend = NoopExecutionBackend()
drop_in: AsyncflowBackend = NoopExecutionBackend(name="noop")
context: SupportsAsyncContext = NoopExecutionBackend()

local_core: ExecutionBackend = LocalExecutionBackend()
local_drop_in: AsyncflowBackend = LocalExecutionBackend(name="local")
local_context: SupportsAsyncContext = LocalExecutionBackend()
local_init: SupportsAsyncInit = LocalExecutionBackend()


async def created() -> LocalExecutionBackend:
    """``create`` takes the class's own arguments, checked, and returns it."""
    backend = await LocalExecutionBackend.create(name="made", resources=True)
    await LocalExecutionBackend.create(cores="two")  # type: ignore[arg-type]
    return backend
