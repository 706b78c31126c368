"""Everything measured: our backends, radical.asyncflow 0.6's, raw baselines.

Each subject is built fresh for every repetition (construction and a short
warm-up are outside the timed region), runs one batch, and is closed.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import os
import time
import warnings
from collections.abc import Awaitable, Callable
from concurrent.futures import Executor, ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Protocol

from _measure import Counter, Sample
from _workloads import (
    make_tasks,
    run_on_process_loop,
    run_on_thread_loop,
    run_with_asyncio_run,
    sync_noop,
)

__all__ = [
    "Runner",
    "Subject",
    "Unavailable",
    "build_and_warm",
    "dask_subjects",
    "parsl_backend",
    "parsl_subjects",
    "pool_sizes",
    "subjects",
    "subprocess_bound",
]


class Unavailable(Exception):
    """A subject cannot run here (a package or backend is missing)."""


def pool_sizes() -> tuple[int, int]:
    """Worker counts shared by every pool: (threads, processes).

    The defaults of `ThreadPoolExecutor` and `ProcessPoolExecutor`, spelled
    out so that every subject gets exactly the same pool.
    """
    cpus = os.cpu_count() or 1
    return min(32, cpus + 4), cpus


def subprocess_bound() -> int:
    """The concurrency bound the raw subprocess loop uses.

    Our `LocalExecutionBackend`'s default ``max_processes``, so the raw loop
    runs with the same bound as the backend it is compared with.
    """
    try:
        from reference import LocalExecutionBackend
    except ImportError:
        return _DEFAULT_SUBPROCESS_BOUND
    param = inspect.signature(LocalExecutionBackend).parameters.get("max_processes")
    if param is not None and isinstance(param.default, int):
        return param.default
    return _DEFAULT_SUBPROCESS_BOUND


_DEFAULT_SUBPROCESS_BOUND = 64


class Runner(Protocol):
    """One built subject, ready to run one batch."""

    async def run(self, tasks: list[dict[str, Any]], timeout: float) -> Sample:
        """Run ``tasks``; return when every one is terminal."""
        ...

    async def close(self) -> None:
        """Release pools, processes and backends."""
        ...


# -- backends ---------------------------------------------------------------


class BackendRunner:
    """Drives any backend through ``register_callback`` and ``submit_tasks``."""

    def __init__(self, backend: Any, closers: list[Callable[[], Any]] | None = None):
        self.backend = backend
        self._closers = closers or []

    async def run(self, tasks: list[dict[str, Any]], timeout: float) -> Sample:
        counter = Counter(len(tasks))
        self.backend.register_callback(counter)
        t0 = time.perf_counter()
        await self.backend.submit_tasks(tasks)
        t1 = time.perf_counter()
        await counter.wait(timeout)
        sample = counter.sample
        sample.seconds = counter.t_last - t0
        sample.submit_seconds = t1 - t0
        return sample

    async def close(self) -> None:
        await self.backend.shutdown()
        for closer in self._closers:
            result = closer()
            if asyncio.iscoroutine(result):
                await result


def _thread_pool() -> ThreadPoolExecutor:
    return ThreadPoolExecutor(max_workers=pool_sizes()[0])


def _process_pool() -> ProcessPoolExecutor:
    return ProcessPoolExecutor(max_workers=pool_sizes()[1])


async def _ours_noop() -> Runner:
    from reference import NoopExecutionBackend

    return BackendRunner(NoopExecutionBackend())


def _ours_local(
    make_pool: Callable[[], Executor] | None, **options: Any
) -> Callable[[], Awaitable[Runner]]:
    async def build() -> Runner:
        try:
            from reference import LocalExecutionBackend
        except ImportError as exc:
            raise Unavailable("reference.LocalExecutionBackend not built yet") from exc
        executor = make_pool() if make_pool is not None else None
        try:
            backend = LocalExecutionBackend(executor=executor, **options)
        except TypeError as exc:  # an older backend without these options
            raise Unavailable(f"LocalExecutionBackend({options}): {exc}") from exc
        return BackendRunner(await backend)

    return build


def _orig() -> Any:
    try:
        import radical.asyncflow as orig
    except ImportError as exc:
        raise Unavailable("radical.asyncflow 0.6 is not installed") from exc
    return orig


async def _orig_noop() -> Runner:
    return BackendRunner(_orig().NoopExecutionBackend())


def _orig_local(make_pool: Callable[[], Executor]) -> Callable[[], Awaitable[Runner]]:
    async def build() -> Runner:
        backend = await _orig().LocalExecutionBackend(make_pool())
        return BackendRunner(backend)

    return build


async def _dask() -> Runner:
    try:
        import distributed  # noqa: F401
    except ImportError as exc:
        raise Unavailable(
            "dask.distributed is not installed: pip install '.[dask]'"
        ) from exc
    try:
        from reference.dask import DaskExecutionBackend
    except ImportError as exc:
        raise Unavailable(f"reference.dask is not available: {exc}") from exc
    # Its own LocalCluster, started by the await (untimed) and closed on shutdown.
    for name in ("distributed", "tornado"):
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", message="Port .* is already in use")
    backend = DaskExecutionBackend(n_workers=2, threads_per_worker=1)
    return BackendRunner(await backend)


# -- raw baselines ----------------------------------------------------------


class ExecutorBaseline:
    """``loop.run_in_executor`` on a bare pool, one call per task."""

    def __init__(self, pool: Executor, fn: Callable[[int], int]) -> None:
        self.pool = pool
        self.fn = fn

    async def run(self, tasks: list[dict[str, Any]], timeout: float) -> Sample:
        loop = asyncio.get_running_loop()
        counter = Counter(len(tasks))
        pool, fn, count = self.pool, self.fn, counter.count_future
        t0 = time.perf_counter()
        for task in tasks:
            loop.run_in_executor(pool, fn, *task["args"]).add_done_callback(count)
        await counter.wait(timeout)
        counter.sample.seconds = counter.t_last - t0
        return counter.sample

    async def close(self) -> None:
        self.pool.shutdown(wait=True)


def _executor(
    make_pool: Callable[[], Executor], fn: Callable[[int], int]
) -> Callable[[], Awaitable[Runner]]:
    async def build() -> Runner:
        return ExecutorBaseline(make_pool(), fn)

    return build


class SubprocessBaseline:
    """A bare ``asyncio.create_subprocess_exec`` loop, bounded and gathered."""

    def __init__(self, bound: int) -> None:
        self.bound = bound

    async def run(self, tasks: list[dict[str, Any]], timeout: float) -> Sample:
        counter = Counter(len(tasks))
        sem = asyncio.Semaphore(self.bound)
        pipe = asyncio.subprocess.PIPE

        async def one(task: dict[str, Any]) -> None:
            async with sem:
                proc = await asyncio.create_subprocess_exec(
                    task["executable"], *task["arguments"], stdout=pipe, stderr=pipe
                )
                await proc.communicate()
            if proc.returncode != 0:
                raise RuntimeError(f"exit code {proc.returncode}")

        t0 = time.perf_counter()
        futures = [asyncio.ensure_future(one(task)) for task in tasks]
        for fut in futures:
            fut.add_done_callback(counter.count_future)
        await asyncio.wait_for(
            asyncio.gather(*futures, return_exceptions=True), timeout
        )
        await counter.wait(timeout)
        counter.sample.seconds = counter.t_last - t0
        return counter.sample

    async def close(self) -> None:
        return None


async def _subprocess() -> Runner:
    return SubprocessBaseline(subprocess_bound())


class PosixSpawnBaseline:
    """The machine's limit for executables: bare ``os.posix_spawn`` + ``os.waitpid``.

    Keeps ``width`` children alive, starting the next as soon as one is
    reaped, with no pipes, no process group and no event loop: the loop
    thread blocks in ``waitpid`` (this baseline measures spawning, nothing
    else). ``waitpid(-1)`` reaps any child of this process, so a child that
    is not one of ours fails the run rather than being silently lost.
    """

    def __init__(self, width: int) -> None:
        self.width = width

    async def run(self, tasks: list[dict[str, Any]], timeout: float) -> Sample:
        counter = Counter(len(tasks))
        env = dict(os.environ)
        ours: set[int] = set()
        t0 = time.perf_counter()
        started = 0
        while started < len(tasks) or ours:
            while started < len(tasks) and len(ours) < self.width:
                task = tasks[started]
                path = task["executable"]
                ours.add(os.posix_spawn(path, [path, *task["arguments"]], env))
                started += 1
            pid, status = os.waitpid(-1, 0)
            if pid not in ours:
                raise RuntimeError(f"reaped pid {pid}, not a child of this baseline")
            ours.discard(pid)
            code = os.waitstatus_to_exitcode(status)
            counter(
                {"exception": f"exit code {code}"} if code else "",
                "FAILED" if code else "DONE",
            )
            if time.perf_counter() - t0 > timeout:
                raise TimeoutError(f"posix_spawn loop over {timeout} s")
        counter.sample.seconds = counter.t_last - t0
        return counter.sample

    async def close(self) -> None:
        return None


async def _posix_spawn() -> Runner:
    return PosixSpawnBaseline(subprocess_bound())


class CallSoonBaseline:
    """One ``loop.call_soon`` per task, calling the same counting callback."""

    async def run(self, tasks: list[dict[str, Any]], timeout: float) -> Sample:
        loop = asyncio.get_running_loop()
        counter = Counter(len(tasks))
        call_soon = loop.call_soon
        t0 = time.perf_counter()
        for task in tasks:
            call_soon(counter, task, "DONE")
        await counter.wait(timeout)
        counter.sample.seconds = counter.t_last - t0
        return counter.sample

    async def close(self) -> None:
        return None


async def _call_soon() -> Runner:
    return CallSoonBaseline()


# -- the catalogue ------------------------------------------------------------


@dataclass(frozen=True)
class Subject:
    """One thing measured on one workload."""

    key: str
    """Stable id used in the JSON and by the targets."""
    label: str
    """What the table prints."""
    family: str
    """``raw``, ``ours`` or ``orig`` (radical.asyncflow 0.6)."""
    workload: str
    build: Callable[[], Awaitable[Runner]]
    warmup: int = 0
    """Tasks run once, untimed, after building (spins up pool workers)."""
    n_override: int | None = None
    """Run at this many tasks instead of the workload's N (said in the table)."""
    baseline: str | None = None
    """Key of the raw subject on the same workload this one is divided by."""
    extra: dict[str, Any] = field(default_factory=dict)


RES = "ours-local-thread-res"
"""The local backend on threads with resource accounting on (T16)."""


def _warm() -> int:
    threads, processes = pool_sizes()
    return 4 * max(threads, processes)


def subjects(
    orig_async_n: int | None = None, orig_sync_n: int | None = None
) -> list[Subject]:
    """The throughput catalogue, in table order.

    Args:
        orig_async_n: Task count for radical.asyncflow 0.6's local backend on
            async functions (its cost per task grows with N), or ``None`` for
            the workload's own N.
        orig_sync_n: Task count for 0.6's local backend on sync functions,
            which it cannot run (every one fails).
    """
    w = _warm()
    th, pr = _thread_pool, _process_pool
    a, s, e, n = "async-fn", "sync-fn", "exec", "noop"
    tl, pl = "raw-thread-loop", "raw-process-loop"
    return [
        # async functions
        Subject(tl, "raw thread pool, loop per thread", "raw", a,
                _executor(th, run_on_thread_loop), w),
        Subject("raw-thread-asyncio-run", "raw thread pool, asyncio.run per call",
                "raw", a, _executor(th, run_with_asyncio_run), w, baseline=tl),
        Subject(pl, "raw process pool, loop per process", "raw", a,
                _executor(pr, run_on_process_loop), w),
        Subject("ours-local-thread", "ours Local (threads)", "ours", a,
                _ours_local(th), w, baseline=tl),
        Subject("ours-local-process", "ours Local (processes)", "ours", a,
                _ours_local(pr), w, baseline=pl),
        # T16: resource accounting on (a task counts one core of the
        # machine's), against the same backend with it off.
        Subject(RES, "ours Local (threads), resources on", "ours", a,
                _ours_local(th, resources=True), w, baseline="ours-local-thread"),
        Subject("orig-local-thread", "0.6 Local (threads)", "orig", a,
                _orig_local(th), w, orig_async_n, baseline=tl),
        Subject("orig-local-process", "0.6 Local (processes)", "orig", a,
                _orig_local(pr), w, baseline=pl),
        # sync functions
        Subject("raw-thread", "raw thread pool", "raw", s,
                _executor(th, sync_noop), w),
        Subject("raw-process", "raw process pool", "raw", s,
                _executor(pr, sync_noop), w),
        Subject("ours-local-thread", "ours Local (threads)", "ours", s,
                _ours_local(th), w, baseline="raw-thread"),
        Subject("ours-local-process", "ours Local (processes)", "ours", s,
                _ours_local(pr), w, baseline="raw-process"),
        Subject(RES, "ours Local (threads), resources on", "ours", s,
                _ours_local(th, resources=True), w, baseline="ours-local-thread"),
        # 0.6 runs every function with asyncio.run: sync ones all fail, fast.
        Subject("orig-local-thread", "0.6 Local (threads)", "orig", s,
                _orig_local(th), 0, orig_sync_n, baseline="raw-thread"),
        # executables
        Subject("raw-subprocess", "raw create_subprocess_exec loop", "raw", e,
                _subprocess, 4),
        Subject("raw-posix-spawn", "bare posix_spawn + waitpid loop", "raw", e,
                _posix_spawn, 4),
        Subject("ours-local", "ours Local", "ours", e, _ours_local(None), 4,
                baseline="raw-posix-spawn"),
        Subject("orig-local", "0.6 Local", "orig", e, _orig_local(th), 4,
                baseline="raw-subprocess"),
        # noop
        Subject("raw-call-soon", "raw loop.call_soon", "raw", n, _call_soon),
        Subject("ours-noop", "ours Noop", "ours", n, _ours_noop,
                baseline="raw-call-soon"),
        Subject("orig-noop", "0.6 Noop", "orig", n, _orig_noop,
                baseline="raw-call-soon"),
    ]  # fmt: skip


def dask_subjects(ns: list[int]) -> list[Subject]:
    """The Dask backend on a 2-worker, 1-thread LocalCluster, at each N."""
    return [
        Subject(f"dask-2x1-{n}", f"ours Dask (2 workers x 1 thread), N={n:,}",
                "ours", "async-fn", _dask, 8, n,
                extra={"note": "T11 (absolute): >= 615 tasks/s at N=10,000"})
        for n in ns
    ]  # fmt: skip


async def build_and_warm(subject: Subject, timeout: float) -> Runner:
    """Build a subject and run its untimed warm-up batch."""
    runner = await subject.build()
    if subject.warmup:
        tasks = make_tasks(subject.workload, subject.warmup, "warmup")
        try:
            await runner.run(tasks, timeout)
        except BaseException:
            await runner.close()
            raise
    return runner


# -- Parsl ------------------------------------------------------------------


def _parsl_dfk() -> Any:
    """The process-wide local DataFlowKernel both Parsl subjects run on.

    The workers must import ``_workloads`` (Parsl's python_app pickles the
    task function by reference), so this directory is put on their path
    before the DataFlowKernel starts them.
    """
    try:
        from reference.parsl._shared import _shared_dfk
    except ImportError as exc:
        raise Unavailable(
            f"Parsl is not installed: pip install '.[parsl]' ({exc})"
        ) from exc
    here = os.path.dirname(os.path.abspath(__file__))
    path = os.environ.get("PYTHONPATH", "")
    if here not in path.split(os.pathsep):
        os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (here, path) if p)
    dfk = _shared_dfk()
    # Parsl logs every task to its run directory, as it does by default; the
    # benchmark's own stderr handler must not print those records too.
    logging.getLogger("parsl").propagate = False
    return dfk


class ParslAppBaseline:
    """Parsl's own ``python_app``, one app call per task, awaited on the loop."""

    def __init__(self, dfk: Any) -> None:
        from parsl import python_app

        self.app = python_app(sync_noop, data_flow_kernel=dfk)

    async def run(self, tasks: list[dict[str, Any]], timeout: float) -> Sample:
        t0 = time.perf_counter()
        futures = [asyncio.wrap_future(self.app(*t["args"])) for t in tasks]
        t1 = time.perf_counter()
        results = await asyncio.wait_for(
            asyncio.gather(*futures, return_exceptions=True), timeout
        )
        failed = sum(isinstance(r, BaseException) for r in results)
        return Sample(
            n=len(tasks),
            seconds=time.perf_counter() - t0,
            submit_seconds=t1 - t0,
            done=len(tasks) - failed,
            failed=failed,
        )

    async def close(self) -> None:
        """The shared DataFlowKernel outlives the subject (closed at exit)."""


async def _parsl_app() -> Runner:
    dfk = await asyncio.to_thread(_parsl_dfk)
    return ParslAppBaseline(dfk)


async def _parsl_ours() -> Runner:
    dfk = await asyncio.to_thread(_parsl_dfk)
    from reference.parsl import ParslExecutionBackend

    return BackendRunner(await ParslExecutionBackend(dfk=dfk))


async def parsl_backend() -> Any:
    """Our Parsl backend on the shared DataFlowKernel (for the engine section)."""
    runner = await _parsl_ours()
    assert isinstance(runner, BackendRunner)
    return runner.backend


def parsl_subjects(n: int) -> list[Subject]:
    """Our Parsl backend and Parsl's python_app, on one local htex (2 workers)."""
    return [
        Subject("parsl-app", "Parsl python_app (htex, 2 local workers)", "raw",
                "sync-fn", _parsl_app, 100, n),
        Subject("parsl-ours", "ours Parsl (same executor)", "ours", "sync-fn",
                _parsl_ours, 100, n, baseline="parsl-app",
                extra={"note": "T17: >= 0.8x Parsl python_app"}),
    ]  # fmt: skip
