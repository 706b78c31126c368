"""The pure core (`reference._core`): the job table and its reporting rules.

No threads, no processes, no event loop: the table is built and fed events.
"""

from __future__ import annotations

import sys

import pytest

from reference._core import JobTable, Ticket


def _table(*uids: str) -> tuple[JobTable[Ticket], list[Ticket]]:
    table: JobTable[Ticket] = JobTable()
    jobs = [Ticket(uid) for uid in uids]
    table.add(jobs)
    return table, jobs


def test_a_job_settles_once_only() -> None:
    table, (a, b) = _table("a", "b")
    assert table.settle(a) is True
    # A late outcome (a duplicate notice, a CANCELED racing a DONE) is dropped.
    assert table.settle(a) is False
    assert table.get("a") is None
    assert table.get("b") is b
    assert len(table) == 1


def test_a_new_job_under_a_settled_uid_is_not_settled_by_the_old_one() -> None:
    table, (old,) = _table("x")
    assert table.settle(old)
    new = Ticket("x")
    table.add([new])
    assert table.settle(old) is False  # the old job's late result
    assert table.in_flight(new)
    assert table.settle(new) is True


def test_a_canceled_job_owes_no_result_but_is_still_in_flight() -> None:
    table, (job,) = _table("c")
    assert table.owes_result(job)
    job.canceled = True
    assert not table.owes_result(job)
    assert table.in_flight(job)  # its CANCELED is still owed
    assert table.settle(job)


def test_running_is_allowed_only_while_true_and_before_the_end() -> None:
    table, (job, other) = _table("r", "o")
    assert table.may_report_running(job, ended=False)
    # Its work has already returned: RUNNING is no longer true (ST-3).
    assert not table.may_report_running(job, ended=True)
    table.settle(job)
    assert not table.may_report_running(job, ended=False)  # after the end
    other.canceled = True
    assert not table.may_report_running(other, ended=False)


@pytest.mark.parametrize("uid", [None, 3, ["a"], {"a": 1}, b"a", float("nan")])
def test_get_never_raises_whatever_the_uid(uid: object) -> None:
    table, _ = _table("a")
    assert table.get(uid) is None


def test_cancel_all_marks_every_job_and_leaves_their_reporting_to_the_caller() -> None:
    table, jobs = _table("a", "b", "c")
    table.settle(jobs[1])
    left = table.cancel_all()
    assert left == [jobs[0], jobs[2]]
    assert all(job.canceled for job in left)
    assert [table.settle(job) for job in left] == [True, True]
    assert len(table) == 0


def test_an_emptied_table_does_not_stay_sized_for_its_largest_batch() -> None:
    table, jobs = _table(*(f"t{i}" for i in range(5000)))
    empty = sys.getsizeof({})
    for job in jobs:
        table.settle(job)
    assert sys.getsizeof(table.jobs) == empty  # SC-1
    table.add([Ticket("again")])
    table.clear()
    assert len(table) == 0
