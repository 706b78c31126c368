"""A puller hands a job out, or `stop` cancels it: never both (CN-4, CN-6).

`JobQueue._next` takes a job and `JobQueue.stop` (on the event loop) cancels
one; the queue's lock makes "started" and "canceled" exclusive. The race is
made deterministic here: reading the job's ``canceled`` flag inside ``_next``
starts `stop` on another thread, and lets it finish first unless the lock
keeps it out (the worst interleaving for a ``_next`` that reads unlocked).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import pytest

from reference._resources import ResourcePool
from reference._workers import NOT_STARTED, UNSTOPPABLE, JobQueue
from spec import ResourceCapacity, ResourceDemand

pytestmark = pytest.mark.timeout(30)


class _RacingJob:
    """A job whose first ``canceled`` read by ``_next`` races a `stop`."""

    def __init__(self, queue: JobQueue) -> None:
        self.queue = queue
        self.task = {"uid": "racing", "function": abs, "args": (-1,)}
        self.pulled = False
        self.coro: Any = None
        self.ended = False
        self.grant = None
        self.threaded = True
        self.decision: Any = None
        self.armed = False
        self.racer: threading.Thread | None = None
        self._canceled = False

    def _stop(self) -> None:
        self.decision = self.queue.stop(self)

    @property
    def canceled(self) -> bool:
        seen = self._canceled
        if self.armed:
            self.armed = False
            self.racer = threading.Thread(target=self._stop)
            self.racer.start()
            if not self.queue._lock.locked():
                self.racer.join()  # nothing keeps stop() out: it ends first
        return seen

    @canceled.setter
    def canceled(self, value: bool) -> None:
        self._canceled = value


def _hand_out_racing(job: _RacingJob, next_job: Callable[[Any], Any]) -> Any:
    """Hand ``job`` out with ``next_job`` while a `stop` races it; return it."""
    job.armed = True
    taken = next_job(None)  # as the puller's first call
    assert job.racer is not None, "the hand-out never looked at the canceled flag"
    job.racer.join(10)
    assert not job.racer.is_alive()
    if taken is job:
        # Handed out: stop must say it could not prevent the start.
        assert job.decision is UNSTOPPABLE, job.decision
        assert job.pulled
    else:
        assert job.decision is NOT_STARTED and taken is None
    return taken


def test_stop_during_hand_out_never_lets_a_canceled_job_run() -> None:
    queue = JobQueue(lambda notice: None, width=1)
    job = _RacingJob(queue)
    assert queue.put([job]) == 1
    _hand_out_racing(job, queue._next)


def test_stop_before_hand_out_keeps_the_job_from_running() -> None:
    queue = JobQueue(lambda notice: None, width=1)
    job = _RacingJob(queue)
    queue.put([job])
    assert queue.stop(job) is NOT_STARTED
    assert queue._next(None) is None  # skipped: it never starts (CN-6)
    assert not job.pulled


def test_stop_during_hand_out_of_a_default_job_with_resources() -> None:
    # With accounting on, a default job waits in the ready queue holding
    # nothing and takes its core as it is handed out: a cancel that wins
    # the race leaves it unstarted and the core free.
    pool: ResourcePool[Any] = ResourcePool(ResourceCapacity(1))
    queue = JobQueue(lambda notice: None, width=1, pool=pool)
    job = _RacingJob(queue)
    assert queue.admit([job], ResourceDemand(cores=1)) == ([], 1)
    assert not pool.waiting  # the ready queue, not the pool's
    if _hand_out_racing(job, queue._next_admitted) is job:
        assert job.grant is not None and pool.free_cores == 0
    else:
        assert job.grant is None and pool.free_cores == 1
