"""One worker process of `reference._procpool.ProcessPool`, as the parent sees it.

How a worker is started (without the caller's ``__main__``) and waited for,
the parent's ends of its pipes, its binding to a job's cores, signals to its
process group and its burial; and the dispatcher slot that owns it. The pool
decides when each happens; what runs inside the worker is
`reference._procworker`.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
import pickle
import signal
import threading
from collections.abc import Callable, Iterable
from multiprocessing.connection import Connection, wait
from multiprocessing.context import BaseContext
from typing import Any

import cloudpickle

from reference import _procstart
from reference._procworker import MSG_READY, PROTOCOL, parse, worker_main
from spec import StandInError

__all__ = [
    "Slot",
    "Worker",
    "default_context",
    "dumps_call",
    "start_worker",
    "wait_ready",
]

logger = logging.getLogger("reference")


def default_context(context: BaseContext | None = None) -> BaseContext:
    """The start method workers use: ``context`` unless it forks.

    A plain ``fork`` copies the parent with its threads' locks in whatever
    state they are (the parent runs an event loop and dispatcher threads,
    and starts replacement workers while they run), so ``fork`` is replaced
    by ``forkserver`` (``spawn`` where there is none).
    """
    if context is not None and context.get_start_method() != "fork":
        return context
    methods = multiprocessing.get_all_start_methods()
    return multiprocessing.get_context(
        "forkserver" if "forkserver" in methods else "spawn"
    )


def dumps_call(value: tuple[Any, ...], uid: str) -> bytes:
    """Pickle a task's ``(function, args, kwargs)`` for a worker.

    The C pickler is several times faster and suffices for module-level
    functions; ``__main__`` ones go by value (a worker does not share the
    parent's ``__main__``, see `reference._procstart`), as do lambdas,
    closures, local functions and anything else naming ``__main__``.
    """
    if getattr(value[0], "__module__", None) != "__main__":
        try:
            plain = pickle.dumps(value, PROTOCOL)
        except Exception:
            pass  # cloudpickle below
        else:
            # Something refers to ``__main__`` by name (an argument's class, a
            # partial of a __main__ function): workers have no such module.
            if b"__main__" not in plain:
                return plain
    try:
        data: bytes = cloudpickle.dumps(value, PROTOCOL)
    except Exception as exc:
        raise pickle.PicklingError(
            f"function task {uid!r} cannot be sent to a process pool: "
            f"its function or arguments cannot be pickled ({exc})"
        ) from exc
    return data


class Worker:
    """One worker process and the parent's ends of its pipes."""

    __slots__ = (
        "home",
        "jobs",
        "lifeline",
        "pid",
        "process",
        "reaped",
        "results",
        "tasks_run",
    )

    def __init__(
        self,
        process: Any,
        jobs: Connection,
        results: Connection,
        lifeline: Connection,
    ) -> None:
        self.process = process
        self.pid: int = process.pid
        self.jobs = jobs
        self.results = results
        self.lifeline = lifeline
        self.tasks_run = 0
        # Its own CPU affinity, read before it is first bound for a job.
        self.home: set[int] | None = None
        # Set by its dispatcher once reaped. Other threads read this flag, never
        # ``process.exitcode``: polling a forkserver child from two threads at
        # once can leave one blocked forever reading its exit status.
        self.reaped = False

    def signal_group(self, sig: int) -> None:
        """Send ``sig`` to the worker's group (to it alone before its setsid)."""
        if self.reaped:
            return  # its pid may belong to someone else by now
        try:
            os.killpg(self.pid, sig)
        except ProcessLookupError:
            with contextlib.suppress(OSError):
                os.kill(self.pid, sig)  # not yet its own group leader
        except OSError:
            pass

    def close(self) -> None:
        for conn in (self.jobs, self.results, self.lifeline):
            conn.close()

    def bind(self, cores: Iterable[int] | None) -> None:
        """Bind the worker to ``cores`` (``None``: back to its own affinity).

        Called only while it waits for a job, so the job runs bound from its
        first instruction; what the job starts inherits the binding.
        """
        with contextlib.suppress(OSError):  # it died; its dispatcher sees it
            if cores is None:
                if self.home is not None:
                    os.sched_setaffinity(self.pid, self.home)
                return
            if self.home is None:
                self.home = os.sched_getaffinity(self.pid)
            os.sched_setaffinity(self.pid, cores)

    def bury(self, kill_grace: float, retire: bool = False) -> int | None:
        """Reap the dead (or retiring) worker and anything left of its group.

        Returns:
            Its exit code.
        """
        if retire:
            with contextlib.suppress(OSError):
                self.jobs.close()  # it exits when its pipe closes
            if not wait([self.process.sentinel], kill_grace):
                self.signal_group(signal.SIGKILL)
        else:
            # The leader is gone or going; children that trapped SIGTERM are not.
            self.signal_group(signal.SIGKILL)
        self.process.join()
        code = self.process.exitcode
        self.reaped = True
        with contextlib.suppress(OSError):
            os.killpg(self.pid, signal.SIGKILL)  # the group outlives its leader
        self.close()
        return code  # type: ignore[no-any-return]


def start_worker(
    context: BaseContext,
    name: str,
    initializer: Callable[..., object] | None,
    initargs: tuple[Any, ...],
) -> Worker:
    """Start a worker process (not yet ready: see `wait_ready`)."""
    jobs_r, jobs_w = context.Pipe(duplex=False)
    results_r, results_w = context.Pipe(duplex=False)
    life_r, life_w = context.Pipe(duplex=False)
    init = None
    if initializer is not None:  # by value: it may live in __main__
        init = cloudpickle.dumps((initializer, initargs), PROTOCOL)
    process = context.Process(  # type: ignore[attr-defined]
        target=worker_main,
        args=(jobs_r, results_w, life_r, init),
        name=f"asyncflow-{name}-worker",
    )
    try:
        _procstart.start(process)  # without the caller's __main__
    finally:
        for conn in (jobs_r, results_w, life_r):
            conn.close()
    return Worker(process, jobs_w, results_r, life_w)


def wait_ready(worker: Worker, name: str) -> BaseException | None:
    """Wait until a new worker is ready; the error that broke it, if it is not.

    A worker is not ready when its initializer raised (the error says so,
    caused by what it raised) or it died first.
    """
    results = worker.results
    ready = wait([results, worker.process.sentinel])
    message = None
    if results in ready:
        with contextlib.suppress(EOFError, OSError):
            message = results.recv_bytes()
    if message is not None and message[0] == MSG_READY:
        return None
    if message is None:
        return RuntimeError("a new worker process died before it was ready")
    _, type_name, payload = parse(message)
    try:
        exc, text = pickle.loads(payload)
    except Exception as load_error:
        exc, text = StandInError(type_name, str(load_error)), ""
    error = RuntimeError(
        f"the process pool's initializer failed in a new worker: {exc!r}"
    )
    error.__cause__ = exc
    logger.error("process pool %r: initializer failed\n%s", name, text)
    return error


class Slot:
    """One dispatcher thread and the worker it owns (replaced when it dies)."""

    __slots__ = ("job", "kill", "thread", "wake_r", "wake_w", "worker")

    def __init__(self) -> None:
        self.job: Any = None
        self.kill = False
        self.worker: Worker | None = None
        self.thread: threading.Thread | None = None
        self.wake_r, self.wake_w = os.pipe()
        os.set_blocking(self.wake_r, False)

    def close_wake(self) -> None:
        for fd in (self.wake_r, self.wake_w):
            with contextlib.suppress(OSError):
                os.close(fd)
