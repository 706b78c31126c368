"""The Dask backend's decisions, apart from the cluster: pure functions.

What a chunk's outcomes mean (`settlement`), what runs again after a worker
died (`after_loss`), what a cancel may report (`read_replies`,
`cancel_stopped`), how big a chunk is and what Dask resources it holds
(`chunk_size`, `dask_resources`), and which requests can never run
(`refusal`). No loop, threads or client here: tests/dask/test_dask_units.py
calls them directly.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple

import cloudpickle

from reference._calls import load_exception
from reference._resources import function_refusal, unavailable
from reference.dask import _outcomes
from reference.dask._outcomes import Outcome
from spec import (
    BackendError,
    CapabilityNotSupportedError,
    ResourceCapacity,
    ResourceDemand,
    StandInError,
    TaskKind,
    TaskState,
)

__all__ = [
    "MAX_LOSSES",
    "AfterLoss",
    "Replies",
    "Settlement",
    "after_loss",
    "cancel_stopped",
    "chunk_size",
    "dask_resources",
    "read_replies",
    "refusal",
    "settlement",
]

MAX_LOSSES = 3
"""Worker deaths a task survives (run again isolated) before it fails."""
MAX_CHUNK = 64
"""Function tasks per Dask task, at most."""


# -- outcomes -> states ----------------------------------------------------------


class Settlement(NamedTuple):
    """What one task's `Outcome` reports (a tuple: one is made per task).

    Attributes:
        state: DONE, FAILED, or CANCELED (a worker skipped it: it did not
            run and will not, so CANCELED is true).
        fields: Results to write into the task dict, if any.
        error: The exception of a FAILED task (written with ``stderr``).
        stderr: Its traceback text, or ``None`` for ``str(error)``.
        where: Where an executable ran (host, worker, GPUs), if it said.
    """

    state: TaskState
    fields: dict[str, Any] | None = None
    error: BaseException | None = None
    stderr: str | None = None
    where: Mapping[str, Any] | None = None


def settlement(kind: TaskKind | None, outcome: Outcome) -> Settlement:
    """Read one task's outcome into what is reported (RS-1, RS-2, RS-5).

    Loading the payload runs the task's own unpickling code: what it raises
    (a `BaseException` included) is the caller's to contain.
    """
    status, payload, stderr, type_name, message = outcome
    if status == _outcomes.CANCELED:
        return Settlement(TaskState.CANCELED)
    if status == _outcomes.FAILED:
        fields = (
            {} if kind is TaskKind.FUNCTION else {"stdout": None, "exit_code": None}
        )
        error = load_exception(payload, type_name, message)
        return Settlement(TaskState.FAILED, fields, error, stderr)
    if kind is TaskKind.EXECUTABLE and status == _outcomes.EXITED:
        stdout, err, exit_code, exception, *where = cloudpickle.loads(payload)
        fields = {
            "stdout": stdout,
            "stderr": err,
            "exit_code": exit_code,
            "exception": exception,
        }
        return Settlement(
            TaskState.DONE if exit_code == 0 else TaskState.FAILED,
            fields,
            where=where[0] if where else None,
        )
    if kind is TaskKind.FUNCTION and status == _outcomes.OK:
        try:
            value = cloudpickle.loads(payload)
        except Exception as exc:
            error = StandInError(type(exc).__qualname__, str(exc))
            return Settlement(TaskState.FAILED, error=error)
        return Settlement(TaskState.DONE, {"return_value": value})
    error = BackendError(f"the Dask worker sent an unknown outcome {status!r}")
    return Settlement(TaskState.FAILED, error=error)


# -- a lost worker -----------------------------------------------------------------


class AfterLoss(enum.Enum):
    """What becomes of a task still owed a result when its worker died."""

    RUN_AGAIN = "run again, alone in a child process of a worker"
    FAIL = "fail with WorkerLostError"


def after_loss(losses: int) -> AfterLoss:
    """Decide for a task whose worker died for the ``losses``-th time (RS-12).

    Dask fails every task the dead worker held, running or queued, and
    cannot say which of them was running, so one death convicts no one: a
    function task runs again alone in a child process, where a crash costs
    only that process, and an executable runs again in a child of its own
    as before (it died with the worker, or never started). A task whose
    worker died `MAX_LOSSES` times fails: it is taking workers down.
    """
    return AfterLoss.RUN_AGAIN if losses < MAX_LOSSES else AfterLoss.FAIL


# -- what a cancel may report --------------------------------------------------------


@dataclass(frozen=True)
class Replies:
    """The workers' answers to one cancel call, read.

    Attributes:
        killed: Keys whose children were killed (they ran there, nowhere else).
        unstoppable: Keys that started in a worker thread.
        complete: Every worker answered; a key in neither set was marked on
            all of them, so it never starts.
    """

    killed: frozenset[str]
    unstoppable: frozenset[str]
    complete: bool


def read_replies(answers: Mapping[str, Any] | None) -> Replies:
    """Read ``client.run``'s answers (``None`` when the call itself failed)."""
    killed: set[str] = set()
    unstoppable: set[str] = set()
    complete = bool(answers)
    for reply in (answers or {}).values():
        if isinstance(reply, (tuple, list)) and len(reply) == 2:
            killed.update(reply[0])
            unstoppable.update(reply[1])
        else:  # a worker failed to answer: it may hold the task
            complete = False
    return Replies(frozenset(killed), frozenset(unstoppable), complete)


def cancel_stopped(
    key: str,
    replies: Replies,
    *,
    in_thread: bool,
    outcome_arrived: bool,
    skipped: bool,
) -> bool:
    """Whether a canceled task was stopped, so CANCELED is true (CN-4, CN-6).

    Args:
        key: The task's key.
        replies: The workers' answers.
        in_thread: It is a function run in a worker thread (not isolated).
        outcome_arrived: Its outcome came while the cancel was on its way.
        skipped: That outcome says a worker skipped it.
    """
    if outcome_arrived and in_thread:
        # A thread-run function's outcome says for certain whether it ran,
        # whatever a worker may have forgotten since.
        return skipped
    if key in replies.killed:  # it ran there, so nowhere else
        return True
    if replies.complete:
        return key not in replies.unstoppable
    # Cannot know, unless its outcome says it was skipped.
    return outcome_arrived and skipped


# -- chunks ------------------------------------------------------------------------


def chunk_size(configured: int | None, backlog: int, nthreads: int) -> int:
    """Function tasks per Dask task: as configured, or from the backlog.

    Enough chunks to keep every thread busy four times over, at most
    `MAX_CHUNK` tasks each.
    """
    if configured is not None:
        return configured
    return max(1, min(MAX_CHUNK, backlog // (4 * nthreads)))


def dask_resources(
    demands: Iterable[ResourceDemand], memory_accounted: bool
) -> dict[str, int]:
    """The Dask resources a Dask task running tasks of ``demands`` holds.

    A chunk runs its members one after another in one thread, so it holds
    the largest request among them (chunks hold one-core tasks, or one
    task).
    """
    found = list(demands)
    held = {"CPU": max(d.cores for d in found)}
    gpus = max(d.whole_gpus for d in found)
    if gpus:
        held["GPU"] = gpus
    if memory_accounted:
        memory = max(d.memory for d in found)
        if memory:
            held["MEMORY"] = memory
    return held


def refusal(
    uid: str, kind: TaskKind | None, demand: ResourceDemand, capacity: ResourceCapacity
) -> BackendError | None:
    """Why a task with a valid ``demand`` can never run here, if it cannot.

    The task is then FAILED at once (RQ-2), never left pending in Dask.
    """
    if kind is TaskKind.FUNCTION:
        found = function_refusal(uid, demand)
        if found is not None:
            return found
    if demand.ranks > 1:
        return CapabilityNotSupportedError(
            "ranks > 1 on Dask",
            f"task {uid!r} asks for {demand.ranks} ranks; the Dask backend "
            "has no MPI launcher (use cores_per_rank for one multi-core process)",
        )
    if not demand.fits(capacity):
        return unavailable(uid, demand, capacity)
    return None
