"""End to end: radical.asyncflow 0.6's ``WorkflowEngine`` over each backend.

Times ``n`` independent ``@flow.function_task`` calls gathered, from the
first call to the last result, with a fresh engine and backend per run.
"""

from __future__ import annotations

import asyncio
import signal
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from _measure import Sample
from _subjects import BackendRunner, Unavailable, _dask, _orig, _thread_pool

__all__ = ["DASK_ENGINE_SUBJECT", "ENGINE_SUBJECTS", "EngineSubject", "run_engine"]


@dataclass(frozen=True)
class EngineSubject:
    """A backend to put under the engine."""

    key: str
    label: str
    family: str
    make: Callable[[], Awaitable[Any]]


async def _ours_local() -> Any:
    try:
        from reference import LocalExecutionBackend
    except ImportError as exc:
        raise Unavailable("reference.LocalExecutionBackend not built yet") from exc
    return await LocalExecutionBackend(executor=_thread_pool())


async def _ours_noop() -> Any:
    from reference import NoopExecutionBackend

    return NoopExecutionBackend()


async def _ours_dask() -> Any:
    runner = await _dask()
    assert isinstance(runner, BackendRunner)
    return runner.backend


async def _orig_local() -> Any:
    return await _orig().LocalExecutionBackend(_thread_pool())


async def _orig_noop() -> Any:
    return _orig().NoopExecutionBackend()


ENGINE_SUBJECTS = [
    EngineSubject("engine-ours-local-thread", "engine + ours Local (threads)", "ours",
                  _ours_local),
    EngineSubject("engine-orig-local-thread", "engine + 0.6 Local (threads)", "orig",
                  _orig_local),
    EngineSubject("engine-ours-noop", "engine + ours Noop", "ours", _ours_noop),
    EngineSubject("engine-orig-noop", "engine + 0.6 Noop", "orig", _orig_noop),
]  # fmt: skip

DASK_ENGINE_SUBJECT = EngineSubject(
    "engine-ours-dask", "engine + ours Dask (2 workers x 1 thread)", "ours", _ours_dask
)


async def _trivial(i: int) -> int:
    return i


async def run_engine(subject: EngineSubject, n: int, timeout: float) -> Sample:
    """Run ``n`` gathered function tasks through a fresh engine and backend.

    Raises:
        Unavailable: radical.asyncflow or the backend is missing.
    """
    engine_cls = _orig().WorkflowEngine
    backend = await subject.make()
    loop = asyncio.get_running_loop()
    with tempfile.TemporaryDirectory(prefix="asyncflow-bench-") as work_dir:
        flow = await engine_cls.create(backend=backend, work_dir=work_dir)
        try:
            task = flow.function_task(_trivial)
            # Untimed warm-up: spins up the pool and the engine's run loop.
            await asyncio.wait_for(
                asyncio.gather(*(task(i) for i in range(8))), timeout
            )
            t0 = time.perf_counter()
            futures = [task(i) for i in range(n)]
            results = await asyncio.wait_for(
                asyncio.gather(*futures, return_exceptions=True), timeout
            )
            elapsed = time.perf_counter() - t0
        finally:
            await flow.shutdown()
            # The engine installs handlers it never removes; give Ctrl-C back.
            for sig in (signal.SIGHUP, signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(sig)
    sample = Sample(n=n, seconds=elapsed)
    for result in results:
        if isinstance(result, asyncio.CancelledError):
            sample.canceled += 1
        elif isinstance(result, BaseException):
            sample.failed += 1
            sample.first_error = sample.first_error or repr(result)
        else:
            sample.done += 1
    return sample
