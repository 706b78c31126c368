"""The worker side of the Dask backend: what runs inside a Dask worker.

Nothing here imports ``distributed``: Dask calls these plain functions on a
worker, so a worker needs only this distribution installed (and the task
functions importable). Results travel back as `Outcome` tuples of plain
strings and bytes, never as live objects, so a return value or exception
that cannot be pickled fails only its own task, with a message saying why.

Function tasks arrive in chunks (many tasks per Dask task, which is what
makes 10,000 trivial tasks cheap). Coroutines run on one event loop per
worker thread that lives as long as the thread, rather than a fresh
``asyncio.run`` per task.

Executable tasks run one per Dask task, as a child in its own session
(process group), through the shared sync runner
`reference._executables.run_executable`. Its ``spawn`` hook lets this module
keep a per-process registry mapping each task's key to its child, so
`cancel_keys` (sent to every worker with ``client.run``) can kill the whole
group; a key canceled before its child starts is remembered so the child
never starts.

A function running in a worker thread cannot be stopped, so `cancel_keys`
answers, per key, whether the task was stopped (marked before it started,
or its child killed) or had already started a function there (its outcome
stands). The worker tracks which function keys have started for that: the
check-and-start in `run_functions` and the check-and-mark in `cancel_keys`
take the same lock, so each key is either started or marked, never both.
"""

from __future__ import annotations

import asyncio
import ctypes
import inspect
import os
import pickle
import signal
import subprocess
import sys
import threading
import time
import traceback
from collections.abc import Callable, Sequence
from typing import Any

import cloudpickle

from reference._executables import group_alive, signal_group
from reference._executables import run_executable as _run_to_completion
from reference._workers import thread_loop
from spec import WorkerLostError

__all__ = [
    "CANCELED",
    "EXITED",
    "FAILED",
    "OK",
    "ExecutableJob",
    "FunctionBatch",
    "Outcome",
    "cancel_keys",
    "dumps_function_item",
    "isolated_main",
    "run_executable",
    "run_functions",
]

OK = "ok"
"""Outcome status: the task succeeded; ``payload`` pickles its result."""
FAILED = "failed"
"""Outcome status: the task failed; ``payload`` pickles the exception."""
CANCELED = "canceled"
"""Outcome status: the task was canceled before it started."""
EXITED = "exited"
"""Outcome status: an executable ran; ``payload`` pickles its results."""

Outcome = tuple[str, bytes | None, str, str, str]
"""``(status, payload, stderr, type_name, message)`` sent back per task.

``payload`` is cloudpickled: the return value (functions), the
``(stdout, stderr, exit_code, exception)`` results (executables), or the
exception; ``None`` when it could not be pickled, in which case
``type_name`` and ``message`` describe what could not be sent.
"""


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
        self.key = key  # the Dask task's key: what `cancel_keys` is told
        self.one_at_a_time = one_at_a_time


class ExecutableJob:
    """One executable task as sent to a worker (opaque to Dask, as above).

    Attributes:
        key: Unique per submission; what `cancel_keys` names.
        task: The executable's part of the task dict (``uid``, ``executable``,
            ``arguments``, ``capture_stdio``, ``task_backend_specific_kwargs``),
            pickled by the client: a value that cannot be pickled fails its
            own task there, never the ``client.map`` carrying others.
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


_FORGET_CANCELED_AFTER = 600.0  # seconds a canceled-but-unseen key is remembered
_lock = threading.Lock()
_children: dict[str, subprocess.Popen[bytes]] = {}
_canceled: dict[str, float] = {}
# Function keys started in a worker thread, chunk still running: item -> chunk.
_running: dict[str, str] = {}
# Chunk key -> the keys it started, once it returned: covers the moment
# between its return and Dask holding its result (then `cancel_keys` sees
# the result in the worker's data). Bounded, oldest first out.
_returned: dict[str, frozenset[str]] = {}
_RETURNED_KEPT = 1024
# GPU ids free on this worker, per pool (the ids the client declared for it).
# Dask's "GPU" resource bounds how many the running tasks hold in all; this
# says which ones, so no two running tasks are given the same id (RQ-4).
_free_gpus: dict[tuple[str, ...], list[str]] = {}


def _take_gpus(pool: tuple[str, ...], count: int) -> tuple[str, ...]:
    """Hand out ``count`` ids of ``pool`` exclusively until `_give_gpus`."""
    with _lock:
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
    with _lock:
        _free_gpus.setdefault(pool, []).extend(ids)


# -- cancellation registry ------------------------------------------------------


def _note_returned(chunk: str, started: Sequence[str]) -> None:
    """Remember what ``chunk`` started; call with ``_lock`` held."""
    if chunk and started:
        _returned[chunk] = frozenset(started)
        while len(_returned) > _RETURNED_KEPT:
            del _returned[next(iter(_returned))]


def _mark_canceled(
    keys: Sequence[str], chunks: Sequence[str], held: Any
) -> tuple[list[tuple[str, subprocess.Popen[bytes]]], list[str]]:
    """Cancel ``keys`` here: the children running for them, and the unstoppable.

    A key with a child (an executable, or an isolated function) is marked
    and its child returned, to be killed. A key whose function started in a
    worker thread here, running or finished (its chunk returned, or its
    result held in ``held``, the worker's data), cannot be stopped: it is
    returned as unstoppable and not marked. Any other key is marked, so it
    never starts here.
    """
    now = time.monotonic()
    found: list[tuple[str, subprocess.Popen[bytes]]] = []
    unstoppable: list[str] = []
    with _lock:
        if _canceled:
            stale = [
                k for k, t in _canceled.items() if now - t > _FORGET_CANCELED_AFTER
            ]
            for key in stale:
                del _canceled[key]
        for key, chunk in zip(keys, chunks, strict=True):
            child = _children.get(key)
            if child is not None:
                _canceled[key] = now
                found.append((key, child))
            elif (
                key in _running
                or key in _returned.get(chunk, ())
                or (chunk and chunk in held)
            ):
                unstoppable.append(key)
            else:
                _canceled[key] = now
        return found, unstoppable


async def cancel_keys(
    keys: list[str],
    grace: float,
    chunks: list[str] | None = None,
    dask_worker: Any = None,
) -> tuple[list[str], list[str]]:
    """Cancel tasks by key on this worker; run through ``client.run``.

    Children running for the keys get SIGTERM on their whole process group,
    then SIGKILL after ``grace`` seconds; keys not started yet are remembered
    so they never start. A function already started here in a worker thread
    (running, or finished with its result not yet collected) cannot be
    stopped: its key is returned, and its outcome stands. It is a coroutine
    so Dask runs it on the worker's event loop without blocking it during
    the grace period.

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
    children, unstoppable = _mark_canceled(
        keys, chunks if chunks is not None else [""] * len(keys), held
    )
    killed = [key for key, _ in children]
    groups = [c.pid for _, c in children if signal_group(c.pid, signal.SIGTERM)]
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
    return killed, unstoppable


# -- outcomes -------------------------------------------------------------------


def _failure(exc: BaseException, stderr: str | None = None) -> Outcome:
    """Package an exception, falling back to its description if it won't pickle."""
    type_name = f"{type(exc).__module__}.{type(exc).__qualname__}"
    text = stderr if stderr is not None else _traceback_text(exc)
    try:
        payload = cloudpickle.dumps(exc)
        cloudpickle.loads(payload)  # some exceptions pickle but cannot be rebuilt
    except Exception:
        payload = None
    return (FAILED, payload, text, type_name, str(exc))


def _success(value: object) -> Outcome:
    try:
        return (OK, cloudpickle.dumps(value), "", "", "")
    except Exception as exc:
        error = TypeError(
            f"the return value ({type(value).__qualname__}) cannot be pickled "
            f"to send it back from the Dask worker: {exc}"
        )
        return _failure(error, stderr=str(error))


def _traceback_text(exc: BaseException) -> str:
    return "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))


# -- function tasks -------------------------------------------------------------


def dumps_function_item(
    function: Callable[..., Any], args: Sequence[Any], kwargs: dict[str, Any]
) -> bytes:
    """Pickle one function task for `run_functions` (done on the client)."""
    blob: bytes = cloudpickle.dumps((function, tuple(args), kwargs))
    return blob


async def _await_outcome(awaitable: Any) -> Outcome:
    try:
        value = await awaitable
    except BaseException as exc:  # a task's own CancelledError is its failure too
        return _failure(exc)
    return _success(value)


async def _gather(awaitables: list[Any]) -> list[Outcome]:
    return list(await asyncio.gather(*(_await_outcome(a) for a in awaitables)))


def _start_item(blob: bytes) -> Outcome | Any:
    """Call one task's function: its `Outcome`, or the awaitable it returned."""
    try:
        function, args, kwargs = cloudpickle.loads(blob)
    except Exception as exc:
        return _failure(
            RuntimeError(
                f"the Dask worker cannot unpickle the task's function: {exc!r} "
                "(is its module installed on the workers?)"
            )
        )
    try:
        result = function(*args, **kwargs)
    except BaseException as exc:  # even SystemExit fails only its own task
        return _failure(exc)
    if inspect.isawaitable(result):
        return result
    return _success(result)


def run_functions(batch: FunctionBatch) -> list[Outcome]:
    """Run a chunk of function tasks; the Dask task the client submits.

    Sync functions run one after the other in this worker thread; the
    coroutines of ``async def`` functions then run concurrently on the
    thread's persistent event loop (one after the other as well, with
    ``one_at_a_time``). An isolated batch runs each task in a
    child process instead (`_run_isolated`).

    Args:
        batch: The tasks.

    Returns:
        One `Outcome` per item, in order.
    """
    items = batch.items
    chunk = getattr(batch, "key", "")
    if batch.isolated:
        return [_run_isolated(key, blob, chunk) for key, blob in items]
    outcomes: list[Outcome | None] = [None] * len(items)
    pending: list[tuple[int, Any]] = []
    begun: list[str] = []
    try:
        for index, (key, blob) in enumerate(items):
            with _lock:  # atomic with cancel_keys: marked, or started, not both
                if _canceled.pop(key, None) is not None:
                    outcomes[index] = (CANCELED, None, "", "", "")
                    continue
                _running[key] = chunk
            begun.append(key)
            started = _start_item(blob)
            if isinstance(started, tuple):
                outcomes[index] = started
            elif batch.one_at_a_time:
                outcomes[index] = thread_loop().run_until_complete(
                    _await_outcome(started)
                )
            else:
                pending.append((index, started))
        if pending:
            done = thread_loop().run_until_complete(_gather([a for _, a in pending]))
            for (index, _), outcome in zip(pending, done, strict=True):
                outcomes[index] = outcome
    finally:
        with _lock:
            for key in begun:
                _running.pop(key, None)
            _note_returned(chunk, begun)
    return [o if o is not None else (CANCELED, None, "", "", "") for o in outcomes]


# -- function tasks in a child process ------------------------------------------

_ISOLATED_MAIN = "from reference._dask_worker import isolated_main; isolated_main()"


def _run_isolated(key: str, blob: bytes, chunk: str = "") -> Outcome:
    """Run one function task in a child process of this worker.

    The child is registered under ``key`` like an executable's, so a cancel
    kills it (and a key canceled first never starts it); it dies with the
    worker (Linux). If it dies before sending its outcome, the task fails
    with `WorkerLostError`, and only this task.
    """
    env = dict(os.environ)
    # The worker's import path, so the child finds what the task's pickle names.
    env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if isinstance(p, str) and p)
    with _lock:  # atomic with cancel_keys, as for executables
        if _canceled.pop(key, None) is not None:
            return (CANCELED, None, "", "", "")
        child = subprocess.Popen(
            [sys.executable, "-c", _ISOLATED_MAIN],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=env,
            start_new_session=True,  # cancel_keys kills its process group
            preexec_fn=_preexec,  # only a prctl call: safe after fork
        )
        _children[key] = child
    try:
        out, _ = child.communicate(blob)
    finally:
        with _lock:
            _children.pop(key, None)
            # Canceled while running: it was killed, and said so. Else it ran.
            if _canceled.pop(key, None) is None:
                _note_returned(chunk, [key])
        signal_group(child.pid, signal.SIGKILL)  # whatever it started goes too
    if child.returncode == 0:
        try:
            outcome: Outcome = pickle.loads(out)
        except Exception:
            pass
        else:
            return outcome
    code = child.returncode
    how = f"signal {signal.Signals(-code).name}" if code < 0 else f"exit code {code}"
    error = WorkerLostError(
        f"the process running the task died ({how}) before returning a result; "
        "the task ran alone in it because a Dask worker had died with its chunk"
    )
    return _failure(error, stderr=str(error))


def isolated_main() -> None:
    """The child of `_run_isolated`: run the task read from stdin, write the outcome.

    Not for direct use. The function's own prints go to stderr, so that
    stdout carries only the pickled `Outcome`.
    """
    result = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    started = _start_item(sys.stdin.buffer.read())
    if not isinstance(started, tuple):
        loop = asyncio.new_event_loop()
        try:
            started = loop.run_until_complete(_await_outcome(started))
        finally:
            loop.close()
    result.write(pickle.dumps(started))
    result.close()


# -- executable tasks -----------------------------------------------------------


_PR_SET_PDEATHSIG = 1
# Resolved once here: the forked child must only call it, not look it up.
_prctl: Any = ctypes.CDLL(None).prctl if sys.platform == "linux" else None


def _die_with_parent() -> None:  # pragma: no cover - runs in the forked child
    """Ask Linux to SIGKILL the child if its worker dies (a lost worker)."""
    _prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


_preexec: Callable[[], None] | None = _die_with_parent if _prctl is not None else None


class _CanceledBeforeStart(Exception):
    """Raised by the spawn hook: the key was canceled, its child never starts."""


def run_executable(job: ExecutableJob) -> Outcome:
    """Run one executable task to completion; the Dask task the client submits.

    The shared `reference._executables.run_executable` does the work; this
    adds the worker's part: the child starts under the registry lock unless
    its key was canceled first, is registered there for `cancel_keys`, and
    dies with the worker (Linux).

    Args:
        job: The task.

    Returns:
        The `Outcome`: `EXITED` with ``(stdout, stderr, exit_code,
        exception)`` pickled once the child ran, `FAILED` when it could not
        start, `CANCELED` when canceled before it started.
    """
    key = job.key
    try:
        task = cloudpickle.loads(job.task)
    except Exception as exc:
        return _failure(
            RuntimeError(
                f"the Dask worker cannot unpickle the executable task: {exc!r}"
            )
        )

    gpus: tuple[str, ...] = ()
    if job.gpus:
        try:
            gpus = _take_gpus(job.gpu_pool, job.gpus)
        except RuntimeError as exc:
            return _failure(exc)
    if job.gpu_pool:
        # Only its own GPUs, none if it asked for none (RQ-4, RQ-6): env
        # replaces the whole environment, so start from the task's own env,
        # or the worker's.
        options = task.setdefault("task_backend_specific_kwargs", {})
        env = options.get("env")
        env = dict(os.environ if env is None else env)
        env["CUDA_VISIBLE_DEVICES"] = ",".join(gpus)
        options["env"] = env
    spawned = False

    def spawn(start: Callable[[], subprocess.Popen[bytes]]) -> subprocess.Popen[bytes]:
        nonlocal spawned
        with _lock:  # atomic with cancel_keys: canceled before start, never starts
            if _canceled.pop(key, None) is not None:
                raise _CanceledBeforeStart
            child = start()
            spawned = True
            _children[key] = child
            return child

    try:
        _run_to_completion(
            task,
            job.work_dir,
            job.grace,
            spawn=spawn,
            preexec_fn=_preexec,  # only a prctl call: safe after fork
        )
    except _CanceledBeforeStart:
        return (CANCELED, None, "", "", "")
    finally:
        if gpus:
            _give_gpus(job.gpu_pool, gpus)
        with _lock:
            _children.pop(key, None)
            # Canceled while running: it was killed, and said so. Else it ran.
            if _canceled.pop(key, None) is None and spawned:
                _note_returned(key, [key])
    if task["exit_code"] is None:  # bad options, capture files or spawn
        return _failure(task["exception"], stderr=task["stderr"])
    results = (task["stdout"], task["stderr"], task["exit_code"], task.get("exception"))
    return (EXITED, cloudpickle.dumps(results), "", "", "")
