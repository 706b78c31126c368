"""Thread-side admission (`reference._workers.JobQueue` with a `ResourcePool`).

The pullers admit jobs themselves while the "event loop" here is the test's
own thread, playing the backend's part: it queues jobs, launches the ones the
pullers hand back (executables, say), gives back their grants and cancels
jobs. Every grant a job receives or returns is recorded as it happens, so the
capacity (RQ-1), strict arrival order (RQ-5), GPU exclusivity (RQ-4) and
"released exactly once" are checked exactly, not from timing.
"""

from __future__ import annotations

import queue
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from reference import _workers
from reference._resources import Grant, ResourcePool
from spec import ResourceCapacity, ResourceDemand

pytestmark = pytest.mark.timeout(120)

_GPUS = ("g0", "g1")
_ONE_CORE = ResourceDemand(cores=1)


@dataclass
class _World:
    """What the jobs saw, recorded under one lock."""

    cores: int
    lock: threading.Lock = field(default_factory=threading.Lock)
    held: int = 0
    running: int = 0
    gpus_held: set[str] = field(default_factory=set)
    admitted: list[int] = field(default_factory=list)
    released: list[int] = field(default_factory=list)
    ran: list[int] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


class _Job:
    """A job as JobQueue sees it; its ``grant`` records every change."""

    def __init__(
        self, world: _World, index: int, cores: int, gpus: int, threaded: bool
    ) -> None:
        self.world = world
        self.index = index
        self.cores = cores
        self.gpus = gpus
        self.threaded = threaded
        self.canceled = False
        self.pulled = False
        self.ended = False
        self.coro: Any = None
        self.stopped_before_start = False
        self.started = threading.Event()
        self.gate: threading.Event | None = None
        self._grant: Grant | None = None
        self.task = {"function": self.run, "args": (), "kwargs": {}}

    @property
    def demand(self) -> ResourceDemand:
        return ResourceDemand(cores=self.cores, gpus=float(self.gpus))

    @property
    def grant(self) -> Grant | None:
        return self._grant

    @grant.setter
    def grant(self, grant: Grant | None) -> None:
        w = self.world
        with w.lock:
            if grant is not None:
                if self._grant is not None:
                    w.errors.append(f"job {self.index} granted twice")
                w.admitted.append(self.index)
                w.held += grant.cores
                if w.held > w.cores:
                    w.errors.append(f"{w.held} cores held of {w.cores}")
                if w.gpus_held & set(grant.gpus) or len(grant.gpus) != self.gpus:
                    w.errors.append(f"job {self.index} got GPUs {grant.gpus}")
                w.gpus_held |= set(grant.gpus)
            elif self._grant is not None:
                w.held -= self._grant.cores
                w.gpus_held -= set(self._grant.gpus)
                w.released.append(self.index)
            self._grant = grant

    def run(self) -> int:
        w = self.world
        with w.lock:
            if self.stopped_before_start:
                w.errors.append(f"job {self.index} ran after its cancel")
            if self._grant is None:
                w.errors.append(f"job {self.index} ran holding nothing")
            w.running += self.cores
            if w.running > w.cores:
                w.errors.append(f"{w.running} cores running of {w.cores}")
            w.ran.append(self.index)
        self.started.set()
        if self.gate is not None:
            self.gate.wait(10)
        time.sleep(0.0005 * (self.index % 3))
        with w.lock:
            w.running -= self.cores
        return self.index


class _Loop:
    """The backend's part, played in the test's thread."""

    def __init__(self, world: _World, width: int) -> None:
        self.world = world
        self.pool: ResourcePool[Any] = ResourcePool(
            ResourceCapacity(world.cores, _GPUS)
        )
        self.events: queue.Queue[Any] = queue.Queue()
        self.jobs = _workers.JobQueue(self.events.put, width, self.pool)
        self.executor = ThreadPoolExecutor(width)
        self.jobs.spawn = lambda: self.executor.submit(self.jobs.pull)
        self.terminal: set[int] = set()
        self.launched: set[int] = set()

    def admit(
        self,
        jobs: list[_Job] = (),  # type: ignore[assignment]
        *,
        default: bool = False,
    ) -> int:
        """Queue ``jobs``; return how many pullers that started.

        ``default``: every job is a thread job asking for the default (one
        core), passed as the backend passes such a batch: one demand.
        """
        demands: list[ResourceDemand] | ResourceDemand
        demands = _ONE_CORE if default else [job.demand for job in jobs]
        admitted = self.jobs.admit(jobs, demands)
        while admitted is None:  # a puller holds the lock: try again
            time.sleep(0)
            admitted = self.jobs.admit([], [])
        others, pullers = admitted
        for _ in range(pullers):
            self.jobs.spawn()  # type: ignore[misc]
        for job in others:
            self.launch(job)
        return pullers

    def launch(self, job: _Job) -> None:
        # An executable, say: it runs elsewhere and its end comes back here.
        self.launched.add(job.index)

        def run() -> None:
            job.run()
            self.events.put((job, "finished"))

        threading.Thread(target=run).start()

    def cancel(self, job: _Job) -> None:
        if job.index in self.terminal or job.index in self.launched:
            return
        if self.jobs.stop(job) == _workers.NOT_STARTED:
            job.stopped_before_start = True
            self.finish(job)

    def finish(self, job: _Job) -> None:
        self.terminal.add(job.index)
        # As the backend's _finish: a grant no puller took comes back here.
        if job.grant is not None and not job.pulled and self.jobs.release(job):
            self.admit()

    def run_until(self, count: int) -> None:
        while len(self.terminal) < count:
            notice = self.events.get(timeout=20)
            job, kind = notice[0], notice[1]
            if kind == "finished":
                self.finish(job)
            elif kind == _workers.ADMITTED:
                # As the backend's _drain: one canceled since is not launched
                # (its grant came back with its cancel).
                if not job.canceled:
                    self.launch(job)
            elif kind in (_workers.DONE, _workers.FAILED):
                assert kind == _workers.DONE, notice
                self.terminal.add(job.index)

    def close(self) -> None:
        self.jobs.close()
        self.executor.shutdown(wait=True)


def _check(world: _World, loop: _Loop, jobs: list[_Job]) -> None:
    assert world.errors == []
    # Strict arrival order: no job is admitted before an earlier one (RQ-5).
    assert world.admitted == sorted(world.admitted)
    canceled = {j.index for j in jobs if j.stopped_before_start}
    assert sorted(world.ran) == [j.index for j in jobs if j.index not in canceled]
    # Every grant came back, once: the pool is whole again.
    assert sorted(world.released) == sorted(world.admitted)
    assert world.held == 0 and not world.gpus_held
    assert loop.pool.free_cores == world.cores
    assert sorted(loop.pool._free_gpus) == sorted(_GPUS)


_job_spec = st.tuples(
    st.integers(1, 4),  # cores (capped at the capacity below)
    st.integers(0, 2),  # GPUs, for jobs the pullers do not run
    st.booleans(),  # run by the pullers
    st.booleans(),  # cancel it once it is queued
)


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(
    cores=st.integers(1, 4),
    width=st.integers(1, 4),
    specs=st.lists(_job_spec, min_size=1, max_size=24),
    batches=st.integers(1, 3),
)
def test_random_mixes_keep_capacity_order_and_release_once(
    cores: int, width: int, specs: list[tuple[int, int, bool, bool]], batches: int
) -> None:
    world = _World(cores)
    loop = _Loop(world, width)
    jobs = [
        _Job(world, i, min(c, cores), 0 if threaded else g, threaded)
        for i, (c, g, threaded, _) in enumerate(specs)
    ]
    to_cancel = [job for job, spec in zip(jobs, specs, strict=True) if spec[3]]
    try:
        size = -(-len(jobs) // batches)
        for start in range(0, len(jobs), size):
            loop.admit(jobs[start : start + size])
            for job in to_cancel:
                if job.index < start + size:
                    loop.cancel(job)
        loop.run_until(len(jobs))
    finally:
        loop.close()
    _check(world, loop, jobs)


def test_a_puller_hands_back_a_job_it_does_not_run_and_goes_on() -> None:
    world = _World(2)
    loop = _Loop(world, 2)
    jobs = [
        _Job(world, 0, 2, 0, True),
        _Job(world, 1, 1, 1, False),  # an executable with a GPU
        _Job(world, 2, 1, 0, True),
    ]
    try:
        loop.admit(jobs)
        loop.run_until(len(jobs))
    finally:
        loop.close()
    _check(world, loop, jobs)
    assert world.admitted == [0, 1, 2]
    assert loop.launched == {1}


def test_a_canceled_head_is_skipped_when_cores_come_back_in_a_thread() -> None:
    world = _World(1)
    loop = _Loop(world, 1)
    first, canceled, last = (_Job(world, i, 1, 0, True) for i in range(3))
    first.gate = threading.Event()
    try:
        loop.admit([first, canceled, last])
        assert first.started.wait(10)
        loop.cancel(canceled)  # waiting at the head, holding nothing
        assert canceled.stopped_before_start
        first.gate.set()  # its core goes to the next head that is owed it
        loop.run_until(3)
    finally:
        loop.close()
    _check(world, loop, [first, canceled, last])
    assert world.ran == [0, 2]


def test_a_canceled_job_holding_a_grant_gives_it_back_once() -> None:
    # Two cores, one puller: the second job is admitted (it holds a core)
    # but waits for a thread; canceled there, its core comes back from the
    # loop, and the puller skips it.
    world = _World(2)
    loop = _Loop(world, 1)
    first, canceled, last = (_Job(world, i, 1, 0, True) for i in range(3))
    first.gate = threading.Event()
    try:
        loop.admit([first, canceled, last])
        assert first.started.wait(10)
        assert canceled.grant is not None and not canceled.pulled
        loop.cancel(canceled)
        assert canceled.grant is None
        first.gate.set()
        loop.run_until(3)
    finally:
        loop.close()
    _check(world, loop, [first, canceled, last])
    assert world.ran == [0, 2]


# -- default jobs: the ready queue, on the cores the pullers hold ------------


def _defaults(world: _World, first: int, count: int) -> list[_Job]:
    return [_Job(world, i, 1, 0, True) for i in range(first, first + count)]


def test_default_jobs_with_none_queued_ahead_join_the_ready_queue() -> None:
    # Not admitted one by one: they wait in the ready queue and the pullers
    # started are as many as the cores free, not one per job up to width.
    world = _World(2)
    loop = _Loop(world, 4)
    jobs = _defaults(world, 0, 10)
    jobs[0].gate = threading.Event()
    try:
        assert loop.admit(jobs, default=True) == 2
        assert not loop.pool.waiting
        assert jobs[0].started.wait(10)
        jobs[0].gate.set()
        loop.run_until(len(jobs))
    finally:
        loop.close()
    _check(world, loop, jobs)


def test_default_jobs_behind_a_queued_job_wait_behind_it() -> None:
    world = _World(2)
    loop = _Loop(world, 2)
    holder = _Job(world, 0, 2, 0, True)  # holds both cores
    holder.gate = threading.Event()
    queued = _Job(world, 1, 2, 0, False)  # an executable asking for both
    later = _defaults(world, 2, 3)
    jobs = [holder, queued, *later]
    try:
        loop.admit([holder])
        assert holder.started.wait(10)
        loop.admit([queued])
        loop.admit(later, default=True)
        # In the pool's queue, behind the executable: not ready to run.
        assert [job for job, _ in loop.pool.waiting] == [queued, *later]
        assert not loop.jobs._jobs
        holder.gate.set()
        loop.run_until(len(jobs))
    finally:
        loop.close()
    _check(world, loop, jobs)
    assert world.admitted == [0, 1, 2, 3, 4]


def test_a_job_queued_behind_ready_default_jobs_does_not_overtake_them() -> None:
    # One puller (width 1) runs the first default job on one of two cores;
    # the other core is free, but the executable queued after the default
    # jobs must wait until both have started (RQ-5).
    world = _World(2)
    loop = _Loop(world, 1)
    ready = _defaults(world, 0, 3)
    ready[0].gate = threading.Event()
    executable = _Job(world, 3, 1, 0, False)
    jobs = [*ready, executable]
    try:
        assert loop.admit(ready, default=True) == 1
        assert ready[0].started.wait(10)
        loop.admit([executable])
        assert executable.grant is None and not loop.launched
        ready[0].gate.set()
        loop.run_until(len(jobs))
    finally:
        loop.close()
    _check(world, loop, jobs)
    assert world.admitted == [0, 1, 2, 3]


def test_ready_default_jobs_start_when_a_core_held_elsewhere_comes_back() -> None:
    # Every core is held by an executable when the default jobs arrive, so
    # no puller starts for them; the executable's core, given back by the
    # loop, must start one (or they would wait forever).
    world = _World(1)
    loop = _Loop(world, 2)
    executable = _Job(world, 0, 1, 0, False)
    executable.gate = threading.Event()
    later = _defaults(world, 1, 3)
    jobs = [executable, *later]
    try:
        loop.admit([executable])
        assert executable.started.wait(10)
        assert loop.admit(later, default=True) == 0
        executable.gate.set()
        loop.run_until(len(jobs))
    finally:
        loop.close()
    _check(world, loop, jobs)
    assert world.ran == [0, 1, 2, 3]


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(
    cores=st.integers(1, 3),
    width=st.integers(1, 4),
    batches=st.lists(
        st.tuples(
            st.booleans(),  # a batch of default jobs (else mixed)
            st.lists(_job_spec, min_size=1, max_size=8),
        ),
        min_size=1,
        max_size=5,
    ),
)
def test_default_and_mixed_batches_keep_capacity_order_and_release_once(
    cores: int,
    width: int,
    batches: list[tuple[bool, list[tuple[int, int, bool, bool]]]],
) -> None:
    world = _World(cores)
    loop = _Loop(world, width)
    jobs: list[_Job] = []
    try:
        for default, specs in batches:
            first = len(jobs)
            batch = [
                _Job(world, first + i, 1, 0, True)
                if default
                else _Job(world, first + i, min(c, cores), 0 if t else g, t)
                for i, (c, g, t, _) in enumerate(specs)
            ]
            jobs += batch
            loop.admit(batch, default=default)
            for job, spec in zip(batch, specs, strict=True):
                if spec[3]:
                    loop.cancel(job)
        loop.run_until(len(jobs))
    finally:
        loop.close()
    _check(world, loop, jobs)
