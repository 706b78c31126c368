"""The worker side of the Dask backend: what runs inside a Dask worker.

Dask calls these plain functions on a worker; results travel back as
`Outcome` tuples (`reference.dask._outcomes`). Function tasks arrive in
chunks (many tasks per Dask task, which is what makes 10,000 trivial tasks
cheap); coroutines run on one event loop per worker thread that lives as
long as the thread, rather than a fresh ``asyncio.run`` per task.

Executable tasks run one per Dask task, as a child in its own session
(process group), through the shared sync runner
`reference._executables.run_executable`. Its ``spawn`` hook starts the
child through the worker's `KeyRegistry`, so `cancel_keys` (sent to every
worker with ``client.run``) can kill the whole group, and a key canceled
before its child starts never starts it (CN-6).
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable
from typing import Any

import cloudpickle

from reference._executables import group_alive, signal_group
from reference._executables import run_executable as _run_to_completion
from reference._isolated import DIE_WITH_PARENT, isolated_outcome, start_isolated
from reference._outcomes import gather_outcomes
from reference._workers import thread_loop
from reference.dask import _outcomes
from reference.dask._outcomes import SKIPPED, Outcome, Ran, Where, failure
from reference.dask._registry import CanceledBeforeStart, KeyRegistry

__all__ = [
    "ExecutableJob",
    "FunctionBatch",
    "cancel_keys",
    "run_executable",
    "run_functions",
]


class FunctionBatch:
    """A chunk of function tasks: ``(key, pickled (function, args, kwargs))`` each.

    A plain object rather than a list, because Dask walks lists, tuples and
    dicts in task arguments looking for keys, which is wasted work here.

    Attributes:
        items: The tasks.
        isolated: Run each task in a child process of the worker, so that a
            task killing its process (``os._exit``, a segfault, the OOM
            killer) costs only that task; the client asks for it when a
            worker died with the chunk on it.
        key: The Dask task's key (the chunk's), under which the keys this
            chunk started are remembered once it returns.
        one_at_a_time: Run ``async def`` functions one after the other too,
            not concurrently: with resource accounting the chunk holds one
            core, and each of its tasks asked for one (RQ-1).
    """

    def __init__(
        self,
        items: list[tuple[str, bytes]],
        isolated: bool = False,
        key: str = "",
        one_at_a_time: bool = False,
    ) -> None:
        self.items = items
        self.isolated = isolated
        self.key = key
        self.one_at_a_time = one_at_a_time


class ExecutableJob:
    """One executable task as sent to a worker (opaque to Dask, as above).

    Attributes:
        key: Unique per submission; what `cancel_keys` names.
        task: The executable's part of the task dict, pickled by the client:
            a value that cannot be pickled fails its own task there, never
            the ``client.map`` carrying others.
        work_dir: Directory for ``capture_stdio`` files.
        grace: Seconds between SIGTERM and SIGKILL at a timeout.
        gpus: Whole GPUs the task holds (resource accounting, RQ-4).
        gpu_pool: The worker's GPU ids, among which ``gpus`` are taken; set
            for every executable where GPUs are accounted, so one granted
            none sees none (RQ-6).
    """

    def __init__(
        self,
        key: str,
        task: bytes,
        work_dir: str,
        grace: float,
        gpus: int = 0,
        gpu_pool: tuple[str, ...] = (),
    ):
        self.key = key
        self.task = task
        self.work_dir = work_dir
        self.grace = grace
        self.gpus = gpus
        self.gpu_pool = gpu_pool


_registry = KeyRegistry()
"""This worker process's keys (one per process: `cancel_keys` reaches it)."""

_gpu_lock = threading.Lock()
# GPU ids free on this worker, per pool (the ids the client declared for it).
# Dask's "GPU" resource bounds how many the running tasks hold in all; this
# says which ones, so no two running tasks are given the same id (RQ-4).
_free_gpus: dict[tuple[str, ...], list[str]] = {}


def _take_gpus(pool: tuple[str, ...], count: int) -> tuple[str, ...]:
    """Hand out ``count`` ids of ``pool`` exclusively until `_give_gpus`."""
    with _gpu_lock:
        free = _free_gpus.setdefault(pool, list(pool))
        if count > len(free):  # Dask's accounting forbids it; never share
            raise RuntimeError(
                f"asked for {count} GPU(s) of {list(pool)}, but only "
                f"{free} are free on this worker"
            )
        taken = tuple(free[:count])
        del free[:count]
        return taken


def _give_gpus(pool: tuple[str, ...], ids: tuple[str, ...]) -> None:
    with _gpu_lock:
        _free_gpus.setdefault(pool, []).extend(ids)


# -- cancellation ---------------------------------------------------------------


async def cancel_keys(
    keys: list[str],
    grace: float,
    chunks: list[str] | None = None,
    dask_worker: Any = None,
) -> tuple[list[str], list[str]]:
    """Cancel tasks by key on this worker; run through ``client.run``.

    Children running for the keys get SIGTERM on their whole process group,
    then SIGKILL after ``grace`` seconds (CN-5); keys not started yet are
    remembered so they never start (CN-6). A function already started here
    in a worker thread (running, or finished with its result not yet
    collected) cannot be stopped: its key is returned, and its outcome
    stands. A coroutine, so Dask runs it on the worker's event loop without
    blocking it during the grace period.

    Args:
        keys: Item keys (unique per submission) of the tasks to cancel.
        grace: Seconds between SIGTERM and SIGKILL.
        chunks: The key of the Dask task carrying each item (same order);
            ``None`` when unknown (every key is then marked or killed).
        dask_worker: The Dask worker, passed by ``client.run``: a chunk
            whose result it holds ran here.

    Returns:
        The keys whose children were killed here (they were running here, so
        nowhere else), and the keys that started here in a worker thread and
        could not be stopped.
    """
    held = getattr(dask_worker, "data", None) or {}
    found = _registry.mark_canceled(
        keys, chunks if chunks is not None else [""] * len(keys), held
    )
    killed = [key for key, _ in found.children]
    groups = [c.pid for _, c in found.children if signal_group(c.pid, signal.SIGTERM)]
    deadline = time.monotonic() + grace
    while groups and time.monotonic() < deadline:
        await asyncio.sleep(0.02)
        groups = [g for g in groups if group_alive(g)]
    for pgid in groups:
        signal_group(pgid, signal.SIGKILL)
    # The runner thread reaps its leader; wait briefly so that, on return,
    # the group is gone rather than merely signalled.
    deadline = time.monotonic() + 1.0
    while groups and time.monotonic() < deadline:
        await asyncio.sleep(0.01)
        groups = [g for g in groups if group_alive(g)]
    return killed, found.unstoppable


# -- function tasks -------------------------------------------------------------


def _where(gpus: tuple[str, ...] = ()) -> Where:
    """Where this worker runs tasks: its host, its address, the GPUs given."""
    try:
        from distributed import get_worker

        worker = str(get_worker().address)
    except Exception:  # outside a Dask worker (the unit tests call directly)
        worker = ""
    return {"host": socket.gethostname(), "worker": worker, "gpus": list(gpus)}


def run_functions(batch: FunctionBatch) -> list[Outcome]:
    """Run a chunk of function tasks; the Dask task the client submits.

    Sync functions run one after the other in this worker thread; the
    coroutines of ``async def`` functions then run concurrently on the
    thread's persistent event loop (one after the other as well, with
    ``one_at_a_time``). An isolated batch runs each task in a child
    process instead (`_run_isolated`). A key canceled before its turn is
    skipped (CN-6).

    Args:
        batch: The tasks.

    Returns:
        One `Outcome` per item, in order, in a `Ran` saying where they ran.
    """
    items = batch.items
    chunk = batch.key
    if batch.isolated:
        return Ran([_run_isolated(key, blob, chunk) for key, blob in items], _where())
    outcomes: list[Outcome] = [SKIPPED] * len(items)
    pending: list[tuple[int, Any]] = []
    begun: list[str] = []
    try:
        for index, (key, blob) in enumerate(items):
            if not _registry.start_function(key, chunk):
                continue  # canceled first: SKIPPED
            begun.append(key)
            started = _outcomes.start_item(blob)
            if isinstance(started, tuple):
                outcomes[index] = started
            elif batch.one_at_a_time:
                outcomes[index] = thread_loop().run_until_complete(
                    _outcomes.await_outcome(started)
                )
            else:
                pending.append((index, started))
        if pending:
            done = thread_loop().run_until_complete(
                gather_outcomes([a for _, a in pending])
            )
            for (index, _), outcome in zip(pending, done, strict=True):
                outcomes[index] = outcome
    finally:
        _registry.functions_returned(chunk, begun)
    return Ran(outcomes, _where())


# -- function tasks in a child process ------------------------------------------


def _run_isolated(key: str, blob: bytes, chunk: str = "") -> Outcome:
    """Run one function task in a child process of this worker.

    The child (`reference._isolated.start_isolated`) is registered under
    ``key`` like an executable's, so a cancel kills it (and a key canceled
    first never starts it); it dies with the worker (Linux). If it dies
    before sending its outcome, the task fails with `spec.WorkerLostError`
    (RS-12), and only this task.
    """
    try:
        child = _registry.spawn(key, start_isolated)
    except CanceledBeforeStart:
        return SKIPPED
    try:
        out, _ = child.communicate(blob)
    finally:
        _registry.child_ended(key, chunk)
        signal_group(child.pid, signal.SIGKILL)  # whatever it started goes too
    return isolated_outcome(child.returncode, out, "Dask")


# -- executable tasks -----------------------------------------------------------


def _with_gpus(task: dict[str, Any], gpus: tuple[str, ...]) -> None:
    """Give the task only its own GPUs (RQ-4), none if it has none (RQ-6)."""
    # env replaces the whole environment: start from the task's own, or ours.
    options = task.setdefault("task_backend_specific_kwargs", {})
    env = options.get("env")
    env = dict(os.environ if env is None else env)
    env["CUDA_VISIBLE_DEVICES"] = ",".join(gpus)
    options["env"] = env


def run_executable(job: ExecutableJob) -> Outcome:
    """Run one executable task to completion; the Dask task the client submits.

    The shared `reference._executables.run_executable` does the work; this
    adds the worker's part: the child starts through the registry unless its
    key was canceled first (CN-6), is registered there for `cancel_keys`,
    and dies with the worker (Linux).

    Args:
        job: The task.

    Returns:
        The `Outcome`: `EXITED` with ``(stdout, stderr, exit_code,
        exception, where)`` pickled once the child ran, `FAILED` when it could not
        start, `CANCELED` when canceled before it started.
    """
    key = job.key
    try:
        task = cloudpickle.loads(job.task)
    except Exception as exc:
        return failure(
            RuntimeError(
                f"the Dask worker cannot unpickle the executable task: {exc!r}"
            )
        )
    gpus: tuple[str, ...] = ()
    if job.gpus:
        try:
            gpus = _take_gpus(job.gpu_pool, job.gpus)
        except RuntimeError as exc:
            return failure(exc)
    if job.gpu_pool:  # GPUs are accounted: none granted, none seen (RQ-6, PL-3)
        _with_gpus(task, gpus)
    spawned = False

    def spawn(start: Callable[[], subprocess.Popen[bytes]]) -> subprocess.Popen[bytes]:
        nonlocal spawned
        child = _registry.spawn(key, start)
        spawned = True
        return child

    try:
        _run_to_completion(
            task,
            job.work_dir,
            job.grace,
            spawn=spawn,
            preexec_fn=DIE_WITH_PARENT,
        )
    except CanceledBeforeStart:
        return SKIPPED
    finally:
        if gpus:
            _give_gpus(job.gpu_pool, gpus)
        _registry.child_ended(key, key, spawned=spawned)
    if task["exit_code"] is None:  # bad options, capture files or spawn
        return failure(task["exception"], stderr=task["stderr"])
    results = (
        task["stdout"],
        task["stderr"],
        task["exit_code"],
        task.get("exception"),
        _where(gpus),
    )
    return (_outcomes.EXITED, cloudpickle.dumps(results), "", "", "")
