"""The queue of function jobs for a thread pool, and what admits them.

Async functions run on one persistent event loop per worker thread (or
worker process), never on a fresh ``asyncio.run`` loop per task. In a thread
pool, a few long-lived "puller" calls (`JobQueue.pull`, whose loop is
`reference._pull.pull`) take queued jobs one at a time and hand their
notices (started, done, failed, stopped) straight to the backend's
thread-safe ``push``; `reference._procpool` runs `call` in its worker
processes. The notice kinds are `reference._pull`'s, named here too.
"""

from __future__ import annotations

import asyncio
import functools
import operator
import threading
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from typing import Any, NamedTuple

from reference._calls import call, sendable, thread_loop
from reference._core import CancelDecision
from reference._pull import (
    ADMITTED,
    DONE,
    FAILED,
    LOST,
    RUNNING,
    STOPPED,
    Binding,
    pull,
)
from reference._resources import ResourcePool
from spec import ResourceDemand

__all__ = [
    "ADMITTED",
    "DONE",
    "FAILED",
    "LOST",
    "RUNNING",
    "STOPPED",
    "CoroutineStop",
    "JobQueue",
    "call",
    "sendable",
    "thread_loop",
]

# What JobQueue.stop found, besides a coroutine to stop (`CoroutineStop`).
NOT_STARTED = CancelDecision.NEVER_RUNS
UNSTOPPABLE = CancelDecision.CANNOT_STOP


class CoroutineStop(NamedTuple):
    """How to stop a job's coroutine running in a pool thread (`JobQueue.stop`).

    Attributes:
        loop: The pool thread's event loop.
        cancel: Run it on ``loop`` (``call_soon_threadsafe``) to throw
            `asyncio.CancelledError` into the coroutine; it does nothing once
            the coroutine has ended.
    """

    loop: asyncio.AbstractEventLoop
    cancel: Callable[[], None]


_is_canceled: Callable[[Any], bool] = operator.attrgetter("canceled")
"""Whether a job waiting for resources was canceled (it is then skipped)."""

_is_threaded: Callable[[Any], bool] = operator.attrgetter("threaded")

_ONE_CORE = ResourceDemand(cores=1)


class JobQueue:
    """Function jobs waiting for a pool thread, and the pullers that run them.

    Instead of one executor call (a `concurrent.futures.Future` and a work
    item) per task, the backend keeps at most ``width`` `pull` calls in the
    pool; each takes the next job, runs it, and takes another until the
    queue is empty. Per task that leaves only the backend's job and its
    notices, few enough objects that a 10,000-task batch no longer sets off
    full garbage collections on the event loop (SC-3); and since each puller
    takes one job at a time, a slow task holds up no other task while a
    thread is free.

    ``put`` runs on the event loop, ``pull`` in pool threads: the lock only
    makes "the queue is empty, this puller stops" and "jobs were added, are
    there enough pullers" exclusive, so no job is left without a puller.
    Jobs need ``canceled`` (checked just before a job starts: a cancelled job
    never starts), ``task`` (the task dict with its ``function``) and
    ``coro`` (``None``; set while an ``async def`` function runs, so `stop`
    can cancel it on its loop) and ``ended``, which the puller sets once the
    function has returned or raised, before it pushes the outcome.

    With a `ResourcePool` (resource accounting), jobs wait in the pool, in
    arrival order with every other kind of job, and the pullers admit them
    themselves, under the pool's lock, which this queue then shares: a
    puller that has run a job hands its grant to the job at the head when
    that job asks for the same cores, or gives it back and takes the head
    if it fits; either way with no trip through the event loop. When more
    is free than it takes and the next head fits too, it starts one more
    puller, which does the same in turn. The event loop admits with `admit`
    (new jobs) and after `release` (grants it gives back). Pool jobs also
    need ``grant`` (what they hold) and ``threaded`` (true for a job the
    pullers run; any other job a puller admits, an executable say, is
    pushed to the backend as `ADMITTED`, holding its grant). The grant of a
    job a puller has taken (``pulled``) is given back by that puller, as it
    asks for its next job; any other grant by the backend, as it reports
    the job.

    Default jobs (thread jobs asking for one core) that arrive with no job
    waiting in the pool skip it: they join the ready queue, holding
    nothing, and each runs on one core a puller takes as it starts the job:
    the one its last job held (the default path: no count changes, the
    thread stays bound), else a free one. No one-by-one admission, and no
    tuple per job in the pool's queue: with accounting on, the default
    path costs what it costs with it off. Order holds (RQ-5): the ready
    queue's jobs all arrived before every job the pool queues, so a free
    core goes to them first, and none is admitted from the pool while a
    default job waits in the ready queue.

    ``pull`` calls ``_next(None)`` (``_next_admitted`` with a pool) first,
    then again with the job it has just run: that call is where its grant
    comes back, so it must follow every job, whatever its outcome.

    Args:
        push: The backend's thread-safe ``push((job, kind, value, text))``.
        width: Most pullers at once: the pool's worker count.
        pool: The resources jobs must hold to run, or ``None``.

    Attributes:
        spawn: Submits one more `pull` to the pool (set by the backend);
            a puller that frees more than it takes starts a puller with it.
        binding: Builds each puller's `reference._pull.Binding` from the pool.
    """

    __slots__ = (
        "_jobs",
        "_lock",
        "_one_core",
        "_pool",
        "_pullers",
        "_push",
        "_starting",
        "binding",
        "closed",
        "spawn",
        "width",
    )

    def __init__(
        self,
        push: Callable[[tuple[Any, int, Any, str | None]], None],
        width: int,
        pool: ResourcePool[Any] | None = None,
    ) -> None:
        self._jobs: deque[Any] = deque()
        self._pool = pool
        # The shared grant of one core: what a default job runs on.
        self._one_core = None if pool is None else pool.shared_grant(_ONE_CORE)
        self._lock = threading.Lock() if pool is None else pool.lock
        self._pullers = 0
        # Pullers submitted that have not yet asked for a job.
        self._starting = 0
        self._push = push
        self.closed = False
        self.spawn: Callable[[], object] | None = None
        self.width = width
        # How a puller binds its thread to its jobs' cores (a seam for the
        # mutants).
        self.binding: Callable[[ResourcePool[Any] | None], Binding] = Binding

    def put(self, jobs: Iterable[Any]) -> int:
        """Queue jobs; return how many new pullers the caller must submit.

        Never more than the backlog, nor more than ``width`` in all.
        """
        with self._lock:
            if self.closed:
                return 0
            self._jobs.extend(jobs)
            return self._wanted()

    def _wanted(self, most: int | None = None) -> int:
        # Under the lock: pullers to add for the jobs ready to run (no more
        # than ``most``, when given).
        wanted = min(self.width - self._pullers, len(self._jobs))
        if most is not None:
            wanted = min(wanted, most)
        if wanted <= 0:
            return 0
        self._pullers += wanted
        self._starting += wanted
        return wanted

    def retire(self, count: int) -> list[Any]:
        """Forget ``count`` pullers that could not be submitted.

        Returns:
            The queued jobs, taken out, if no puller is left to run them.
        """
        with self._lock:
            self._pullers -= count
            self._starting -= count
            if self._pullers > 0:
                return []
            stranded = list(self._jobs)
            self._jobs.clear()
            return stranded

    def close(self) -> None:
        """Drop the queued jobs; pullers stop after the job they are running."""
        with self._lock:
            self.closed = True
            self._jobs.clear()
            if self._pool is not None:
                self._pool.clear()

    # -- resource accounting -------------------------------------------------

    def admit(
        self, jobs: Sequence[Any], demands: Sequence[ResourceDemand] | ResourceDemand
    ) -> tuple[list[Any], int] | None:
        """Queue jobs for their resources, then admit what fits (event loop).

        It never waits for the lock, as it runs for every batch: a puller
        that lost the GIL while holding it would stall the event loop until
        the interpreter switches threads again (milliseconds). If the lock
        is busy, the jobs are queued in the pool at once (a deque append
        needs no lock) and ``None`` asks the caller to try the admission
        again on a later loop turn; until then the pullers may admit the
        new jobs themselves.

        A batch of default jobs (thread jobs, one demand for one core) that
        finds no job waiting in the pool joins the ready queue instead.

        Args:
            jobs: New jobs, in arrival order.
            demands: What each asks for, or one demand all of them ask for;
                each fits the pool's whole capacity.

        Returns:
            The admitted jobs that are not for the pullers (the caller
            launches them), and how many new pullers the caller must submit
            for the admitted ones that are; ``None`` if the lock was busy.
        """
        pool = self._pool
        assert pool is not None  # only a queue with a pool admits
        if self.closed:
            return [], 0
        if not self._lock.acquire(blocking=False):
            self._enqueue(pool, jobs, demands)
            return None
        try:
            if (
                not pool.waiting
                and isinstance(demands, ResourceDemand)
                and pool.shared_grant(demands) is self._one_core
                and all(map(_is_threaded, jobs))
            ):
                # Default jobs with none queued ahead of them: no admission
                # one by one, they join the ready queue and run on the cores
                # the pullers hold or take (`_next_admitted`). A puller
                # each, for the cores free and not yet spoken for.
                self._jobs.extend(jobs)
                return [], self._wanted(pool.free_cores - self._starting)
            self._enqueue(pool, jobs, demands)
            others: list[Any] = []
            if pool.waiting:
                self._admit_locked(pool, others)
            return others, self._wanted()
        finally:
            self._lock.release()

    @staticmethod
    def _enqueue(
        pool: ResourcePool[Any],
        jobs: Sequence[Any],
        demands: Sequence[ResourceDemand] | ResourceDemand,
    ) -> None:
        # A deque append needs no lock: the pullers only take from the left.
        if isinstance(demands, ResourceDemand):
            pool.enqueue_each(jobs, demands)
        else:
            pool.enqueue_all(zip(jobs, demands, strict=True))

    def release(self, job: Any) -> bool:
        """Give back the grant of a job no puller took (event loop).

        Returns:
            Whether jobs still wait for resources (the caller admits them).
        """
        pool = self._pool
        assert pool is not None
        with self._lock:
            grant = job.grant
            if grant is not None:
                job.grant = None
                pool.release(grant)
            # Ready default jobs may have waited for that core, with no
            # puller left to run them (every core was held elsewhere).
            return not self.closed and bool(pool.waiting or self._jobs)

    def _admit_locked(self, pool: ResourcePool[Any], others: list[Any]) -> None:
        # Under the lock: every head job that fits now, in order; the
        # pullers' own go to the ready queue, the rest to ``others``.
        ready = self._jobs
        if ready and ready[-1].grant is None:
            # Default jobs in the ready queue wait for cores: they arrived
            # first, so what is free is theirs (their pullers take it).
            return
        take = pool.take
        while (taken := take(_is_canceled)) is not None:
            job, grant = taken
            job.grant = grant
            if job.threaded:
                ready.append(job)
            else:
                others.append(job)

    def _next(self, done: Any = None) -> Any:
        """The next job for this puller, or ``None``: the puller then stops.

        Without a pool; `_next_admitted` is its counterpart with one.

        Args:
            done: The job this puller has just run (``None`` at its start).
        """
        if done is None:
            with self._lock:
                self._starting -= 1  # this puller has started
        jobs = self._jobs
        while True:
            try:
                job = jobs.popleft()  # atomic: no lock on the hot path
            except IndexError:
                with self._lock:
                    if jobs and not self.closed:
                        continue  # refilled in between: keep pulling
                    self._pullers -= 1
                    return None
            if self.closed:
                with self._lock:
                    self._pullers -= 1
                return None
            with self._lock:  # exclusive with stop(): started or canceled, never both
                if job.canceled:  # a canceled job never starts (CN-6)
                    continue
                job.pulled = True
            return job

    def _next_admitted(self, done: Any) -> Any:
        # `_next` with a pool. One lock for all of it: give back what
        # ``done`` held, take the oldest job that may run, and wake one more
        # puller if what is free fits the next too. The oldest is in the
        # ready queue, if it holds any (its jobs arrived before every job
        # the pool queues), else the pool's head if it fits now (RQ-5). It
        # runs once per job: the default path (a default job on the core
        # this puller holds, nothing else free) returns from the middle.
        pool = self._pool
        assert pool is not None
        jobs = self._jobs
        others: list[Any] | None = None
        job: Any = None
        with self._lock:
            if done is None:
                self._starting -= 1  # this puller has started
                grant = None
            else:
                grant = done.grant
                done.grant = None  # released once, here: a puller took it
            while jobs:
                job = jobs.popleft()
                if job.canceled:
                    # Canceled while ready: it never starts (CN-6); a grant
                    # it holds comes back as the backend reports it CANCELED.
                    job = None
                    continue
                if job.grant is None:
                    # A default job: it runs on one core, the one that came
                    # back if that is all that did (no count changes, the
                    # thread stays bound), else one that is free.
                    one_core = self._one_core
                    if grant is None or grant.lane is not one_core:
                        if grant is not None:
                            pool.release(grant)
                        assert one_core is not None  # a queue with a pool has it
                        grant = pool.take_cores(one_core)
                        if grant is None:
                            # Every core is held: their holders run it.
                            jobs.appendleft(job)
                            job = None
                            break
                    job.grant = grant
                    grant = None
                job.pulled = True
                if grant is None and not pool.free_cores:
                    return job  # nothing else free: no one to wake
                break
            if grant is not None:
                waiting = pool.waiting
                if job is None and waiting and not self.closed:
                    # The ready queue is empty. `Grant.passes_to`, inline:
                    # the pool's head asks for exactly the cores that came
                    # back. It takes them over: the pool's counts do not
                    # change, and the thread stays bound where it is.
                    head, need = waiting[0]
                    plain = need.plain
                    if (
                        plain is not None
                        and plain is grant.lane
                        and head.threaded
                        and not head.canceled
                    ):
                        waiting.popleft()
                        head.grant = grant
                        head.pulled = True
                        if not pool.free_cores:
                            return head  # nothing else free: no one to wake
                        job = head
                        grant = None
                if grant is not None:
                    pool.release(grant)
            if job is None:
                if self.closed or jobs:
                    # Closed, or a ready default job waits for a core that
                    # its holders will give it: this puller stops.
                    self._pullers -= 1
                    return None
                job, others = self._take_locked(pool)
            wake = (
                job is not None
                and pool.free_cores
                and not self._starting
                and self._pullers < self.width
                and (jobs or (pool.waiting and pool.head_fits()))
            )
            if wake:
                # More is free than this puller takes (a bigger grant came
                # back, or a puller left while the loop queued more): one more
                # puller, which wakes the next in turn if more still fits.
                self._pullers += 1
                self._starting += 1
        if others:
            for admitted in others:
                self._push((admitted, ADMITTED, None, None))
        if wake:
            self._start(1)
        return job

    def _take_locked(self, pool: ResourcePool[Any]) -> tuple[Any, list[Any] | None]:
        # Under the lock, the ready queue empty: the pool's head if it fits
        # now. Jobs the pullers do not run that are admitted on the way are
        # returned for the event loop. No job: this puller stops.
        others: list[Any] | None = None
        job: Any = None
        take = pool.take
        while (taken := take(_is_canceled)) is not None:
            job, grant = taken
            job.grant = grant
            if job.threaded:
                break
            # An executable, say: the event loop launches it.
            (others := others or []).append(job)
            job = None
        if job is None:
            self._pullers -= 1
        else:
            job.pulled = True
        return job, others

    def _start(self, count: int) -> None:
        # From a pool thread; the caller is a live puller, so a job left
        # without a new puller still has it.
        for started in range(count):
            try:
                assert self.spawn is not None  # set by the backend
                self.spawn()
            except Exception:  # the executor was shut down under us
                with self._lock:
                    self._pullers -= count - started
                    self._starting -= count - started
                return

    def stop(self, job: Any) -> CoroutineStop | CancelDecision:
        """Cancel ``job`` if it can be stopped; say what became of it.

        Under the lock, exclusive with a puller taking the job and with
        `reference._pull` publishing its coroutine.

        Returns:
            `NOT_STARTED`: it is marked canceled and will never start.
            `UNSTOPPABLE`: a puller has taken it and it is not a coroutine
            (a sync function running in a thread, or one that has just
            returned); it is left alone and its outcome stands.
            Otherwise a `CoroutineStop` for its running coroutine: it is
            marked canceled, and the caller runs it (the job is then
            `CancelDecision.STOPPING`).
        """
        with self._lock:
            if job.pulled and job.coro is None:
                return UNSTOPPABLE
            job.canceled = True
            if job.coro is None:
                return NOT_STARTED
            loop, puller = job.coro
            return CoroutineStop(loop, functools.partial(puller.cancel, job))

    def pull(self) -> None:
        """Run queued jobs in this pool thread until none is left (a puller).

        The loop itself is `reference._pull.pull`; this queue supplies what
        it needs: the next job (admitted, with a pool), the backend's push,
        the thread's binding and the lock `stop` shares.
        """
        pool = self._pool
        pull(
            self._next if pool is None else self._next_admitted,
            self._push,
            self.binding(pool),
            self._lock,
            placed=pool is not None,
        )
