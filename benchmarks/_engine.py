"""End to end: radical.asyncflow 0.6's ``WorkflowEngine`` over each backend.

Times ``n`` independent tasks created with ``@flow.function_task`` (or
``@flow.executable_task``) and gathered, from the first call to the last
result, with a fresh engine and backend per run.

The engine's own cost per task sets a ceiling: the same workflow over the
noop backend, which completes every task at once. Each subject is measured
right after a run of that ceiling (the noop backend on the same kind of
task), so the two share the machine's load of that moment, and a subject's
ratio is the median of those per-run ratios.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import inspect
import signal
import tempfile
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from typing import Any

from _measure import Sample
from _subjects import BackendRunner, Unavailable, _dask, _orig, _thread_pool, pool_sizes

__all__ = [
    "CEILINGS",
    "ENGINE_SUBJECTS",
    "EngineSubject",
    "engine_subjects",
    "run_engine",
]


@dataclass(frozen=True)
class EngineSubject:
    """A backend to put under the engine, and the kind of task it runs."""

    key: str
    label: str
    family: str
    make: Callable[[], Awaitable[Any]]
    kind: str = "async-fn"
    """``async-fn``, ``sync-fn`` or ``exec``: what each task is."""
    ceiling: str | None = None
    """Key of the noop subject measured next to this one (``None``: a ceiling)."""
    in_process: bool = True
    """All its work runs in this process (threads, the loop): CPU time is comparable."""


def _local(
    executor: str | None = "threads", **options: Any
) -> Callable[[], Awaitable[Any]]:
    async def make() -> Any:
        try:
            from reference import LocalExecutionBackend
        except ImportError as exc:
            raise Unavailable("reference.LocalExecutionBackend not built yet") from exc
        known = inspect.signature(LocalExecutionBackend).parameters
        missing = [name for name in options if name not in known]
        if missing:
            raise Unavailable(f"LocalExecutionBackend has no option {missing[0]!r}")
        pool = (
            _thread_pool()
            if executor == "threads"
            else ProcessPoolExecutor(pool_sizes()[1])
            if executor == "processes"
            else None
        )
        return await LocalExecutionBackend(executor=pool, **options)

    return make


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


CEILINGS = {"async-fn": "engine-ours-noop", "exec": "engine-ours-noop-exec"}
"""The noop subject each kind of task is divided by (sync tasks: as async)."""

_FN, _EX = CEILINGS["async-fn"], CEILINGS["exec"]

ENGINE_SUBJECTS = [
    EngineSubject(_FN, "engine + ours Noop (function tasks): the ceiling",
                  "ceiling", _ours_noop),
    EngineSubject(_EX, "engine + ours Noop (executable tasks): the ceiling",
                  "ceiling", _ours_noop, "exec"),
    EngineSubject("engine-ours-local-thread", "engine + ours Local (threads), async fn",
                  "ours", _local(), "async-fn", _FN),
    EngineSubject("engine-ours-local-thread-sync",
                  "engine + ours Local (threads), sync fn", "ours", _local(),
                  "sync-fn", _FN),
    EngineSubject("engine-ours-local-on-loop",
                  "engine + ours Local (async_on_loop=True), async fn", "ours",
                  _local(async_on_loop=True), "async-fn", _FN),
    EngineSubject("engine-ours-local-process",
                  "engine + ours Local (processes), async fn", "ours",
                  _local(executor="processes"), "async-fn", _FN, False),
    EngineSubject("engine-ours-local-exec", "engine + ours Local, /bin/true", "ours",
                  _local(executor=None), "exec", _EX, False),
    EngineSubject("engine-orig-local-thread", "engine + 0.6 Local (threads), async fn",
                  "orig", _orig_local, "async-fn", _FN),
    EngineSubject("engine-orig-noop", "engine + 0.6 Noop", "orig", _orig_noop,
                  "async-fn", _FN),
]  # fmt: skip

DASK_ENGINE_SUBJECT = EngineSubject(
    "engine-ours-dask",
    "engine + ours Dask (2 workers x 1 thread), async fn",
    "ours",
    _ours_dask,
    "async-fn",
    _FN,
    False,
)


def engine_subjects(with_dask: bool) -> list[EngineSubject]:
    """The engine catalogue, ceilings first."""
    return ENGINE_SUBJECTS + ([DASK_ENGINE_SUBJECT] if with_dask else [])


async def _trivial(i: int) -> int:
    return i


def _trivial_sync(i: int) -> int:
    return i


def _as_async_for_the_engine(func: Callable[..., Any]) -> Callable[..., Any]:
    """Let ``@flow.function_task`` take a sync function.

    The 0.6 engine refuses functions that ``asyncio.iscoroutinefunction``
    does not accept, so every engine task is an ``async def``. Marking the
    sync function (`inspect.markcoroutinefunction` on Python 3.12+, the
    marker asyncio itself reads before that) passes it through unchanged:
    the backend then receives and runs a plain sync function.
    """
    mark = getattr(inspect, "markcoroutinefunction", None)
    if mark is not None:
        return mark(func)  # type: ignore[no-any-return]
    func._is_coroutine = asyncio.coroutines._is_coroutine  # type: ignore[attr-defined]
    return func


async def _true(task_description: dict[str, Any] | None = None) -> str:
    return "/bin/true"


# The engine reads the default as the task's backend options: /bin/true
# itself, no shell, as the executables workload runs it.
_true.__defaults__ = ({"shell": False},)


def _make_task(flow: Any, kind: str) -> Callable[[int], Any]:
    if kind == "async-fn":
        return flow.function_task(_trivial)  # type: ignore[no-any-return]
    if kind == "sync-fn":
        return flow.function_task(_as_async_for_the_engine(_trivial_sync))  # type: ignore[no-any-return]
    if kind == "exec":
        task = flow.executable_task(_true)
        return lambda i: task()
    raise ValueError(f"unknown engine task kind {kind!r}")


async def run_engine(
    subject: EngineSubject,
    n: int,
    timeout: float,
    timed: Callable[
        [], contextlib.AbstractContextManager[Any]
    ] = contextlib.nullcontext,
) -> Sample:
    """Run ``n`` gathered tasks through a fresh engine and backend.

    Args:
        subject: The backend and the kind of task.
        n: How many tasks.
        timeout: Seconds the batch may take.
        timed: Entered around the timed region only (a profiler, say).

    Raises:
        Unavailable: radical.asyncflow or the backend is missing.
    """
    engine_cls = _orig().WorkflowEngine
    backend = await subject.make()
    loop = asyncio.get_running_loop()
    with tempfile.TemporaryDirectory(prefix="asyncflow-bench-") as work_dir:
        flow = await engine_cls.create(backend=backend, work_dir=work_dir)
        try:
            task = _make_task(flow, subject.kind)
            # Untimed warm-up: spins up the pool and the engine's run loop.
            await asyncio.wait_for(
                asyncio.gather(*(task(i) for i in range(8))), timeout
            )
            # As in the throughput section: every subject starts the timed
            # part with the collector's counts at zero.
            gc.collect()
            with timed():
                c0, t0 = time.process_time(), time.perf_counter()
                futures = [task(i) for i in range(n)]
                results = await asyncio.wait_for(
                    asyncio.gather(*futures, return_exceptions=True), timeout
                )
                elapsed = time.perf_counter() - t0
                cpu = time.process_time() - c0
        finally:
            await flow.shutdown()
            # The engine installs handlers it never removes; give Ctrl-C back.
            for sig in (signal.SIGHUP, signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(sig)
    sample = Sample(n=n, seconds=elapsed, cpu_seconds=cpu)
    for result in results:
        if isinstance(result, asyncio.CancelledError):
            sample.canceled += 1
        elif isinstance(result, BaseException):
            sample.failed += 1
            sample.first_error = sample.first_error or repr(result)
        else:
            sample.done += 1
    return sample
