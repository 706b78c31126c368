"""The pure core of the reference backends: which state may be reported when.

No threads, processes or event loop here: `JobTable` is the table of jobs in
flight and the reporting rules every backend follows, `CancelDecision` what a
runner found when asked to cancel a job. The I/O parts (pullers, the process
pool, the child runners, the Dask client) carry the decisions out; this
module is tested by feeding it events (tests/reference/test_core_jobs.py).
"""

from __future__ import annotations

import enum
from typing import Generic, TypeVar

__all__ = ["CancelDecision", "JobTable", "Ticket"]


class CancelDecision(enum.Enum):
    """What cancelling a job found; what the backend reports follows from it.

    Attributes:
        NEVER_RUNS: It had not started and never will: CANCELED may be
            reported at once (on a later loop turn, ST-5).
        STOPPING: It was running and is being stopped: CANCELED is reported
            once it has stopped, never before (CN-5, CN-8).
        CANNOT_STOP: It is running and cannot be interrupted, or its result
            is already back: its own outcome stands and ``cancel_task``
            returns False (a True would promise a CANCELED, CN-4).
    """

    NEVER_RUNS = "will never run"
    STOPPING = "stopped"
    CANNOT_STOP = "cannot stop"


class Ticket:
    """What the table knows of one job: its uid and whether it is canceled.

    Backends subclass it (`reference._base.Job`) to carry their own fields.

    Attributes:
        uid: The task's uid.
        canceled: ``cancel_task`` or ``shutdown`` took it: a result that
            still arrives is dropped, and a queued job never starts.
    """

    __slots__ = ("canceled", "uid")

    def __init__(self, uid: str) -> None:
        self.uid = uid
        self.canceled = False


_T = TypeVar("_T", bound=Ticket)


class JobTable(Generic[_T]):
    """The jobs in flight under their uids, and the rules for reporting them.

    Every accepted job gets exactly one terminal state (ST-2): `settle`
    removes it and says whether this caller is the one to report it, so a
    second outcome (a late result, a duplicate notice, a CANCELED racing a
    DONE) is dropped. A canceled job's result is not wanted (`owes_result`),
    and RUNNING may be reported only before the terminal state and
    only while it is still true (ST-3).

    Once empty, the mapping is replaced by a fresh one: a dict never
    shrinks, and an emptied one would stay sized for the largest batch (SC-1).
    """

    __slots__ = ("jobs",)

    def __init__(self) -> None:
        self.jobs: dict[str, _T] = {}

    def __len__(self) -> int:
        return len(self.jobs)

    def add(self, jobs: list[_T]) -> None:
        """Register accepted jobs as in flight (the batch is already validated)."""
        table = self.jobs
        for job in jobs:
            table[job.uid] = job

    def get(self, uid: object) -> _T | None:
        """The job in flight under ``uid``; ``None`` for anything else (CN-2).

        Never raises, whatever ``uid`` is (an unhashable list included).
        """
        return self.jobs.get(uid) if isinstance(uid, str) else None

    def in_flight(self, job: _T) -> bool:
        """Whether ``job`` (this very object) is still unsettled."""
        return self.jobs.get(job.uid) is job

    def owes_result(self, job: _T) -> bool:
        """Whether ``job``'s outcome is wanted: in flight and not canceled."""
        return not job.canceled and self.jobs.get(job.uid) is job

    def may_report_running(self, job: _T, ended: bool) -> bool:
        """Whether RUNNING is true and allowed for ``job`` now (ST-3).

        Args:
            job: The job a runner has started.
            ended: Whether its work has already returned or raised: RUNNING
                is then no longer true, and being optional it is skipped.
        """
        return not ended and self.owes_result(job)

    def settle(self, job: _T) -> bool:
        """Take ``job`` out of flight; True if the caller must report it (ST-2).

        False when it was already settled (its terminal state was reported)
        or another job now holds its uid.
        """
        uid = job.uid
        jobs = self.jobs
        if jobs.get(uid) is not job:
            return False
        del jobs[uid]
        if not jobs:
            self.jobs = {}
        return True

    def cancel_all(self) -> list[_T]:
        """Mark every job in flight canceled (shutdown, SD-2).

        Returns:
            The jobs, still in flight: the caller settles and reports each
            CANCELED, whatever its work is still doing.
        """
        jobs = list(self.jobs.values())
        for job in jobs:
            job.canceled = True
        return jobs

    def clear(self) -> None:
        """Forget every job without reporting anything (after shutdown, SD-3)."""
        self.jobs = {}
