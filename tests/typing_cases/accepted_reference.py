"""Accepted: the reference backends satisfy the core and the drop-in protocols."""

from reference import NoopExecutionBackend
from spec import AsyncflowBackend, ExecutionBackend, SupportsAsyncContext

core: ExecutionBackend = NoopExecutionBackend()
drop_in: AsyncflowBackend = NoopExecutionBackend(name="noop")
context: SupportsAsyncContext = NoopExecutionBackend()
