"""What runs inside a Parsl worker: function chunks, isolated re-runs, executables.

Nothing here imports Parsl: the worker calls these plain functions, so it
needs only this distribution installed (and the task functions importable).
Results travel back as `Outcome` tuples of strings and bytes, never as live
objects, so a return value or exception that cannot be pickled fails only
its own task, with a message saying why.

Every task is claimed (`reference.parsl._claims.claim`) just before it
starts; a task whose claim a cancel took is skipped (`SKIPPED`). A missing
claims directory means the worker cannot see the backend's (`MISSING`): the
task is not run, since a cancel could not reach it.
"""

from __future__ import annotations

import os
import shlex
import signal
import socket
import subprocess
import threading
from collections.abc import Callable
from typing import Any

import cloudpickle

from reference._executables import kill_group, signal_group
from reference._executables import run_executable as _run_to_completion
from reference._isolated import DIE_WITH_PARENT, isolated_outcome, start_isolated
from reference._outcomes import (
    EXITED,
    FAILED,
    OK,
    Outcome,
    failure,
    gather_outcomes,
    start_item,
)
from reference._outcomes import dumps_function_item as dumps_call
from reference._workers import thread_loop
from reference.parsl._claims import (
    STARTED,
    ClaimsMissingError,
    claim,
    kill_path,
    mark_done,
)

__all__ = [
    "EXEC_FIELDS",
    "EXITED",
    "FAILED",
    "KILLED",
    "MISSING",
    "OK",
    "SKIPPED",
    "Outcome",
    "dumps_call",
    "dumps_task",
    "run_executable",
    "run_functions",
    "run_isolated",
    "with_mpi_prefix",
]

SKIPPED = "skipped"
"""A cancel claimed the task first: it never started."""
MISSING = "missing"
"""The worker cannot see the claims directory; ``message`` says where it looked."""
KILLED = "killed"
"""An executable was killed on the backend's request (a cancel): stopped."""


_KILL_POLL = 0.05  # seconds between looks for a running executable's kill request


def _missing(directory: str) -> Outcome:
    where = f"{socket.gethostname()} (pid {os.getpid()})"
    return (MISSING, None, "", "", f"{directory!r} does not exist on {where}")


def _claimed(directory: str, key: str) -> Outcome | None:
    """Claim ``key`` for this worker: ``None`` to run it, else its outcome."""
    try:
        if claim(directory, key, STARTED):
            return None
    except ClaimsMissingError:
        return _missing(directory)
    return (SKIPPED, None, "", "", "")


def run_functions(
    claims: str,
    items: list[tuple[str, bytes]],
    parsl_resource_specification: dict[str, Any] | None = None,
) -> list[Outcome]:
    """Run a chunk of function tasks: the Parsl task the backend submits.

    Sync functions run one after the other; the coroutines of ``async def``
    functions then run concurrently on this thread's persistent loop.

    Args:
        claims: The claims directory.
        items: ``(key, cloudpickled (function, args, kwargs))`` per task.
        parsl_resource_specification: Parsl passes the task's resource
            specification to the function; not used here.

    Returns:
        One `Outcome` per item, in order.
    """
    outcomes: list[Outcome | None] = []
    pending: list[tuple[int, Any]] = []
    for key, blob in items:
        refused = _claimed(claims, key)
        started = refused if refused is not None else start_item(blob)
        if not isinstance(started, tuple):
            pending.append((len(outcomes), started))
            started = None
        outcomes.append(started)
    if pending:
        gathered = thread_loop().run_until_complete(
            gather_outcomes([a for _, a in pending])
        )
        for (index, _), outcome in zip(pending, gathered, strict=True):
            outcomes[index] = outcome
    if items:
        mark_done(claims, items[0][0])
    return [o if o is not None else failure(RuntimeError("lost")) for o in outcomes]


def run_isolated(
    claims: str,
    key: str,
    blob: bytes,
    parsl_resource_specification: dict[str, Any] | None = None,
) -> Outcome:
    """Run one function task in a child process of this worker.

    The Parsl task the backend submits for a function run again after its
    Parsl task was lost: if the function kills its process, the child dies,
    not this worker, and the task fails alone with `spec.WorkerLostError`
    (`reference._isolated`). This worker lives on, so it cannot take with
    it the result it returned just before, nor leave its pool's result
    queue locked (docs/parsl.md, Lost workers).

    Returns:
        The child's `Outcome`; `SKIPPED` or `MISSING` when not run.

    Args:
        claims: The claims directory.
        key: The task's key.
        blob: The cloudpickled ``(function, args, kwargs)``.
        parsl_resource_specification: Passed by Parsl; not used here.
    """
    refused = _claimed(claims, key)
    if refused is not None:
        return refused
    child = start_isolated()
    try:
        out, _ = child.communicate(blob)
    finally:
        signal_group(child.pid, signal.SIGKILL)  # whatever it started goes too
        mark_done(claims, key)
    return isolated_outcome(child.returncode, out, "Parsl")


class _Watcher:
    """Kills a running child once its kill request appears (a cancel)."""

    def __init__(self, path: str, grace: float) -> None:
        self.path = path
        self.grace = grace
        self.killed = False
        self.done = threading.Event()
        self.thread: threading.Thread | None = None

    def watch(self, child: subprocess.Popen[bytes]) -> None:
        self.thread = threading.Thread(target=self._run, args=(child,), daemon=True)
        self.thread.start()

    def _run(self, child: subprocess.Popen[bytes]) -> None:
        while not self.done.wait(_KILL_POLL):
            if os.path.exists(self.path):
                if child.poll() is None:
                    self.killed = True
                    kill_group(child.pid, self.grace)
                return

    def stop(self) -> None:
        self.done.set()
        if self.thread is not None:
            self.thread.join()


def run_executable(
    claims: str,
    key: str,
    blob: bytes,
    work_dir: str,
    grace: float,
    parsl_resource_specification: dict[str, Any] | None = None,
) -> Outcome:
    """Run one executable task to completion: the Parsl task the backend submits.

    `reference._executables.run_executable` does the work; this adds the
    claim, a watcher that kills the child's process group when the backend
    asks (`_Watcher`), and the child's death with its worker (Linux).

    Args:
        claims: The claims directory.
        key: The task's key.
        blob: The cloudpickled executable part of the task dict.
        work_dir: Directory for ``capture_stdio`` files.
        grace: Seconds between SIGTERM and SIGKILL (timeout or cancel).
        parsl_resource_specification: Passed by Parsl; not used here.

    Returns:
        `EXITED` with the results once the child ran; `KILLED` when a cancel
        killed it; `FAILED` when it could not start; `SKIPPED` or `MISSING`.
    """
    try:
        task = cloudpickle.loads(blob)
    except Exception as exc:
        return failure(RuntimeError(f"cannot unpickle the executable task: {exc!r}"))
    refused = _claimed(claims, key)
    if refused is not None:
        return refused
    if (parsl_resource_specification or {}).get("num_ranks"):
        with_mpi_prefix(task, os.environ.get("PARSL_MPI_PREFIX", ""))
    watcher = _Watcher(kill_path(claims, key), grace)

    def spawn(start: Callable[[], subprocess.Popen[bytes]]) -> subprocess.Popen[bytes]:
        child = start()
        watcher.watch(child)
        return child

    try:
        _run_to_completion(
            task, work_dir, grace, spawn=spawn, preexec_fn=DIE_WITH_PARENT
        )
    finally:
        watcher.stop()
        mark_done(claims, key)
    code = task.get("exit_code")
    if code is None:  # bad options, capture files or spawn
        return failure(task["exception"], stderr=task["stderr"])
    if watcher.killed and code < 0:
        return (KILLED, None, "", "", "")
    results = (task["stdout"], task["stderr"], code, task.get("exception"))
    return (EXITED, cloudpickle.dumps(results), "", "", "")


def with_mpi_prefix(task: dict[str, Any], prefix: str) -> None:
    """Start an executable task through Parsl's MPI launcher prefix, if any.

    In MPI mode Parsl sets ``PARSL_MPI_PREFIX`` (``mpiexec -n 4 ...``) for
    the task it runs; the executable is started through it, with the shell
    or as the first words of the argv.
    """
    words = shlex.split(prefix)
    if not words:
        return
    shell = (task.get("task_backend_specific_kwargs") or {}).get("shell", True)
    if shell:
        task["executable"] = f"{prefix} {task['executable']}"
    else:
        task["arguments"] = [
            *words[1:],
            task["executable"],
            *(task.get("arguments") or []),
        ]
        task["executable"] = words[0]


EXEC_FIELDS = (
    "uid",
    "executable",
    "arguments",
    "capture_stdio",
    "task_backend_specific_kwargs",
)
"""The parts of an executable task a worker needs."""


def dumps_task(part: dict[str, Any]) -> bytes:
    """Pickle an executable task's `EXEC_FIELDS` for `run_executable`."""
    blob: bytes = cloudpickle.dumps(part)
    return blob
