"""An owned pool of worker processes for function tasks, one task per worker.

The stdlib `ProcessPoolExecutor` cannot say which task a dead worker held
(a crash breaks the whole pool) and moves ``max_workers + 1`` calls into its
call queue ahead of time (a queued task cancelled afterwards still runs).
`ProcessPool` owns its workers instead:

- each worker process has at most one task in flight, sent by a dispatcher
  thread of the parent that owns that worker; queued tasks stay in the
  parent, so a task cancelled before it is sent never starts;
- a worker that dies fails exactly the task it was running (``LOST``); the
  dispatcher starts a replacement and the pool carries on;
- `ProcessPool.cancel` of a running task sends SIGTERM to the worker's
  process group (each worker starts its own session), SIGKILL after
  ``kill_grace``; the task's ``STOPPED`` notice comes once the worker is dead;
- a return value that pickles in the worker but cannot be unpickled here
  fails only its task, with an error naming the value's type.

Pickling (cloudpickle where plain pickle cannot) and unpickling run in the
dispatcher threads, off the event loop. Workers never outlive the parent:
each watches a lifeline pipe and kills its own process group when the parent
goes away, however it goes.

What runs inside a worker, and the messages it exchanges with its dispatcher,
is `reference._procworker`. Notices go to the ``push`` callable the backend gives, as
``(job, kind, value, text)`` tuples with the kinds of `reference._workers`.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import pickle
import signal
import threading
import weakref
from collections import deque
from collections.abc import Callable, Iterable
from multiprocessing.connection import wait
from multiprocessing.context import BaseContext
from typing import Any

from reference import _workers
from reference._core import CancelDecision
from reference._placement import placement
from reference._procslot import (
    Slot,
    Worker,
    default_context,
    dumps_call,
    start_worker,
    wait_ready,
)
from reference._procworker import MSG_DONE, parse
from spec import StandInError

__all__ = ["ProcessPool", "default_context"]

logger = logging.getLogger("reference")


_FINISHED = "finished"
"""``job.worker`` once its result has come back: too late to cancel."""

Notice = tuple[Any, int, Any, "str | None"]


_LIVE_POOLS: weakref.WeakSet[ProcessPool] = weakref.WeakSet()


@atexit.register
def _kill_at_exit() -> None:
    # Registered after multiprocessing's own exit handler, so it runs first:
    # that handler joins every child, which would wait forever on idle workers.
    for pool in list(_LIVE_POOLS):
        pool.kill_all()


class ProcessPool:
    """Worker processes owned by one backend, each running one task at a time.

    ``put`` and ``cancel`` are called on the backend's event loop; the work
    happens in one dispatcher thread per worker. Jobs are the backend's
    handles: the pool reads ``job.call`` (``(function, args, kwargs)``) and
    ``job.uid``, sets
    ``job.canceled`` (under its lock, in `cancel`), and keeps its own mark in
    ``job.worker`` (``None`` until a worker takes it).

    Args:
        size: Most workers at once; they start as tasks arrive.
        push: The backend's thread-safe ``push((job, kind, value, text))``.
        context: The multiprocessing context to start workers with (see
            `default_context`).
        initializer: Called in each new worker before its first task.
        initargs: Arguments for ``initializer``.
        kill_grace: Seconds between SIGTERM and SIGKILL when a running task
            is cancelled.
        max_tasks_per_child: Replace a worker after this many tasks.
        name: For thread and process names.
    """

    def __init__(
        self,
        size: int,
        push: Callable[[Notice], None],
        *,
        context: BaseContext | None = None,
        initializer: Callable[..., object] | None = None,
        initargs: Iterable[Any] = (),
        kill_grace: float = 2.0,
        max_tasks_per_child: int | None = None,
        name: str = "pool",
    ) -> None:
        if isinstance(size, bool) or not isinstance(size, int) or size < 1:
            raise ValueError(f"a process pool needs at least 1 worker, got {size!r}")
        self.size = size
        self.context = default_context(context)
        self.initializer = initializer
        self.initargs = tuple(initargs)
        self.kill_grace = kill_grace
        self.max_tasks_per_child = max_tasks_per_child
        self.name = name
        self._push = push
        self._queue: deque[Any] = deque()
        self._lock = threading.Condition(threading.Lock())
        self._slots: list[Slot] = []
        self._idle = 0
        self._closed = False
        self._broken: BaseException | None = None
        _LIVE_POOLS.add(self)

    # -- on the event loop ---------------------------------------------------

    def put(self, jobs: Iterable[Any]) -> None:
        """Queue jobs; start dispatchers (and their workers) as needed."""
        with self._lock:
            if self._closed:
                return
            queue = self._queue
            queue.extend(jobs)
            wanted = min(self.size - len(self._slots), len(queue) - self._idle)
            new = [Slot() for _ in range(max(0, wanted))]
            self._slots.extend(new)
            if self._idle:
                self._lock.notify(len(queue))
        for slot in new:
            slot.thread = threading.Thread(
                target=self._dispatch,
                args=(slot,),
                name=f"asyncflow-{self.name}-dispatch",
                daemon=True,  # never holds up the interpreter's exit
            )
            slot.thread.start()

    def cancel(self, job: Any) -> CancelDecision:
        """Cancel ``job``: mark it so it never starts, or stop its worker.

        Returns:
            `CancelDecision.NEVER_RUNS` if it was queued (report CANCELED
            now), `CancelDecision.STOPPING` if it was running (its worker is
            being killed: a ``STOPPED`` notice follows once the worker is
            dead), `CancelDecision.CANNOT_STOP` if its result has already
            come back (too late: the outcome stands).
        """
        with self._lock:
            where = job.worker
            if where is _FINISHED:
                return CancelDecision.CANNOT_STOP
            job.canceled = True
            if where is None:
                return CancelDecision.NEVER_RUNS
            slot: Slot = where
            if slot.job is job and not slot.kill:
                slot.kill = True
                with contextlib.suppress(OSError):
                    os.write(slot.wake_w, b"k")
            return CancelDecision.STOPPING

    def close(self) -> None:
        """Stop taking work: queued jobs are dropped, busy workers are killed.

        Returns at once; `alive` tells when every worker is gone, and
        `kill_all` forces it.
        """
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._queue.clear()
            for slot in self._slots:
                if slot.job is not None and not slot.kill:
                    slot.kill = True
                    with contextlib.suppress(OSError):
                        os.write(slot.wake_w, b"k")
            self._lock.notify_all()

    def alive(self) -> bool:
        """Tell whether a dispatcher thread or a worker process is still alive."""
        for slot in list(self._slots):
            thread, worker = slot.thread, slot.worker
            if thread is not None and thread.is_alive():
                return True
            if worker is not None and not worker.reaped:
                return True
        return False

    def kill_all(self) -> None:
        """SIGKILL every worker's process group now (shutdown's last resort)."""
        self.close()
        for slot in list(self._slots):
            worker = slot.worker
            if worker is not None:
                # Only a signal: its pipes belong to its dispatcher thread.
                worker.signal_group(signal.SIGKILL)

    def pids(self) -> list[int]:
        """The pids of the live workers (for tests and diagnostics)."""
        return [
            slot.worker.pid
            for slot in list(self._slots)
            if slot.worker is not None and not slot.worker.reaped
        ]

    # -- in a dispatcher thread ------------------------------------------------

    def _take(self, slot: Slot) -> Any:
        """Wait for the next job that is not cancelled; ``None`` once closed."""
        with self._lock:
            while True:
                if self._closed:
                    return None
                queue = self._queue
                while queue:
                    job = queue.popleft()
                    if not job.canceled:  # a cancelled job never starts (CN-6)
                        job.worker = slot
                        slot.job = job
                        return job
                self._idle += 1
                self._lock.wait()
                self._idle -= 1

    def _dispatch(self, slot: Slot) -> None:
        try:
            self._serve(slot)
        except BaseException as exc:  # e.g. a worker cannot be started at all
            logger.exception("process pool %r: dispatcher failed", self.name)
            error = RuntimeError(f"the process pool cannot run tasks: {exc!r}")
            error.__cause__ = exc
            with self._lock:
                job, slot.job = slot.job, None
                self._broken = error
            if job is not None:
                job.worker = _FINISHED
                self._push((job, _workers.FAILED, error, str(error)))
            self._fail_queue(error)
        finally:
            self._retire(slot)

    def _serve(self, slot: Slot) -> None:
        while True:
            if slot.worker is None and not self._start_worker(slot):
                return
            job = self._take(slot)
            if job is None:
                return
            if not self._replace_if_dead(slot):
                self._settle(slot, job)  # closed: shutdown reports it CANCELED
                if self._broken is not None:
                    self._push((job, _workers.FAILED, self._broken, str(self._broken)))
                return
            self._run(slot, job)
            del job  # hold no finished job while waiting for the next (SC-1)

    def _replace_if_dead(self, slot: Slot) -> bool:
        """Replace the slot's worker if it died while idle; False if none can start.

        A worker killed from outside between tasks did not die of the task
        taken next: that task goes to a live worker, not to a dead pipe.
        """
        worker = slot.worker
        if worker is None:
            return False
        # An idle worker sends nothing: its results pipe at EOF (closed as it
        # died, before the forkserver may have reaped it) or its sentinel
        # ready means it is gone.
        if not wait([worker.results, worker.process.sentinel], 0):
            return True
        self._bury(slot, worker)
        return self._start_worker(slot)

    def _run(self, slot: Slot, job: Any) -> None:
        worker = slot.worker
        assert worker is not None
        try:
            data = dumps_call(job.call, job.uid)
        except BaseException as exc:
            self._settle(slot, job)
            self._push((job, _workers.FAILED, exc, str(exc)))
            return
        # With resource accounting the worker runs the job on its cores
        # (PL-3) and is given its own affinity back before the outcome is
        # pushed (PL-4).
        grant = getattr(job, "grant", None)
        cores = None if grant is None else grant.core_ids
        if grant is not None:
            job.task["placement"] = placement(cores, grant.gpus, grant.memory)
        if cores is not None:
            worker.bind(cores)
        self._push((job, _workers.RUNNING, None, None))
        with contextlib.suppress(OSError):  # it died; the wait below sees it
            worker.jobs.send_bytes(data)
        del data
        self._await_outcome(slot, worker, job, cores is not None)

    def _await_outcome(
        self, slot: Slot, worker: Worker, job: Any, bound: bool = False
    ) -> None:
        results = worker.results
        sentinel = worker.process.sentinel
        message: bytes | None = None
        dead = False
        while True:
            ready = wait([results, sentinel, slot.wake_r])
            if results in ready:
                try:
                    message = results.recv_bytes()
                except (EOFError, OSError):
                    dead = True
                break
            if sentinel in ready:
                dead = True
                break
            self._drain_wake(slot)
            if slot.kill:
                self._stop(slot, worker)
                self._settle(slot, job)
                self._push((job, _workers.STOPPED, None, None))
                return
        if bound and not dead:
            worker.bind(None)  # idle again: unbound before its outcome is out
        with self._lock:
            kill = slot.kill
        if kill:
            # Cancelled as it finished (or died): the function has stopped
            # either way, so its outcome is discarded and CANCELED reported;
            # a worker that sent its reply is idle and is kept.
            if dead or message is None:
                self._bury(slot, worker)
            self._settle(slot, job)
            self._push((job, _workers.STOPPED, None, None))
            return
        if dead or message is None:
            code = self._bury(slot, worker)
            self._settle(slot, job)
            self._push((job, _workers.LOST, code, None))
            return
        worker.tasks_run += 1
        self._settle(slot, job)
        self._push(self._outcome(job, message))
        limit = self.max_tasks_per_child
        if limit is not None and worker.tasks_run >= limit:
            self._bury(slot, worker, retire=True)

    def _outcome(self, job: Any, message: bytes) -> Notice:
        kind, type_name, payload = parse(message)
        try:
            value = pickle.loads(payload)
        except BaseException as exc:  # even SystemExit: it fails this task alone
            what = "return value" if kind == MSG_DONE else "exception"
            error = pickle.UnpicklingError(
                f"task {job.uid!r}: its {what}, a {type_name} object, was pickled "
                f"in the worker process but cannot be unpickled here: {exc!r}"
            )
            error.__cause__ = exc
            if kind == MSG_DONE:
                return (job, _workers.FAILED, error, str(error))
            return (job, _workers.FAILED, StandInError(type_name, str(exc)), str(error))
        if kind == MSG_DONE:
            return (job, _workers.DONE, value, None)
        error_sent, text = value
        return (job, _workers.FAILED, error_sent, text)

    def _settle(self, slot: Slot, job: Any) -> None:
        with self._lock:
            slot.job = None
            slot.kill = False
            job.worker = _FINISHED
        self._drain_wake(slot)

    @staticmethod
    def _drain_wake(slot: Slot) -> None:
        with contextlib.suppress(OSError):
            while os.read(slot.wake_r, 64):
                pass

    def _stop(self, slot: Slot, worker: Worker) -> None:
        """TERM the worker's group, KILL it after the grace; return once it is dead."""
        worker.signal_group(signal.SIGTERM)
        sentinel = worker.process.sentinel
        if not wait([sentinel], self.kill_grace):
            worker.signal_group(signal.SIGKILL)
        self._bury(slot, worker)

    def _bury(self, slot: Slot, worker: Worker, retire: bool = False) -> int | None:
        """Reap a dead (or retiring) worker and its group; free its slot."""
        code = worker.bury(self.kill_grace, retire)
        slot.worker = None
        return code

    def _start_worker(self, slot: Slot) -> bool:
        """Start a worker for ``slot`` and wait until it is ready; False if closed."""
        if self._closed:
            return False
        if self._broken is not None:
            self._fail_queue(self._broken)
            return False
        worker = start_worker(self.context, self.name, self.initializer, self.initargs)
        slot.worker = worker
        if self._is_closed():  # closed as it started: kill_all may have missed it
            worker.signal_group(signal.SIGKILL)
            self._bury(slot, worker)
            return False
        error = wait_ready(worker, self.name)
        if error is None:
            return True
        self._bury(slot, worker)
        with self._lock:
            self._broken = error
        self._fail_queue(error)
        return False

    def _is_closed(self) -> bool:
        # A call, not the attribute: mypy would keep its narrowing from above.
        return self._closed

    def _fail_queue(self, error: BaseException) -> None:
        """Fail every queued job: no worker can be started to run them."""
        with self._lock:
            jobs = [job for job in self._queue if not job.canceled]
            self._queue.clear()
            for job in jobs:
                job.worker = _FINISHED
        for job in jobs:
            self._push((job, _workers.FAILED, error, str(error)))

    def _retire(self, slot: Slot) -> None:
        worker = slot.worker
        if worker is not None:
            worker.signal_group(signal.SIGKILL)
            with contextlib.suppress(Exception):
                self._bury(slot, worker)
        with self._lock:
            job, slot.job = slot.job, None
        slot.close_wake()
        if job is not None and not self._closed:  # pragma: no cover - a bug
            self._push((job, _workers.LOST, None, None))
        # A broken pool keeps failing what arrives, from the slot's next use.
        if self._broken is not None:
            with self._lock:
                if slot in self._slots:
                    self._slots.remove(slot)
