"""Accepted: the chaos backend is a drop-in backend wrapping any core backend."""

from reference import NoopExecutionBackend
from reference.chaos import ChaosBackend
from spec import (
    AsyncflowBackend,
    ExecutionBackend,
    SupportsAsyncContext,
    SupportsAsyncInit,
)

inner: ExecutionBackend = NoopExecutionBackend()
wrapped: ExecutionBackend = ChaosBackend(inner, seed=3)
drop_in: AsyncflowBackend = ChaosBackend(name="chaos")
context: SupportsAsyncContext = ChaosBackend(inner)
init: SupportsAsyncInit = ChaosBackend()
