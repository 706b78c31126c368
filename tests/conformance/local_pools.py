"""Factories for the reference local backend's configurations, as conformance targets.

``python -m conformance tests.conformance.local_pools:process_pool`` (from the
repository root) runs the suite against the process-pool configuration;
``:async_on_loop`` against the one that runs coroutines on the caller's loop.
"""

from __future__ import annotations

from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor

from reference import LocalExecutionBackend


def thread_pool() -> LocalExecutionBackend:
    """The default configuration: functions in a thread pool."""
    return LocalExecutionBackend(ThreadPoolExecutor(4))


def one_thread() -> LocalExecutionBackend:
    """A thread pool of one: the suite must not need two workers."""
    return LocalExecutionBackend(ThreadPoolExecutor(1))


def async_on_loop() -> LocalExecutionBackend:
    """``async def`` function tasks on the caller's event loop, sync ones in threads."""
    return LocalExecutionBackend(ThreadPoolExecutor(4), async_on_loop=True)


def process_pool() -> LocalExecutionBackend:
    """Functions in a process pool of two workers."""
    return LocalExecutionBackend(ProcessPoolExecutor(2))


def with_resources() -> LocalExecutionBackend:
    """Resource accounting on: 2 cores and two made-up GPU ids."""
    return LocalExecutionBackend(
        ThreadPoolExecutor(4), cores=2, gpus=["0", "1"], memory=1024
    )
