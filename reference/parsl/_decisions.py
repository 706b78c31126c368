"""What becomes of a task whose Parsl task was lost: a pure decision.

Parsl loses a Parsl task in two ways, and the backend hears of each
differently:

- its worker died while running it: Parsl fails it with ``WorkerLost``
  (``ManagerLost`` for a whole worker pool);
- its worker returned, then died before the result left the worker's
  queue: the future never completes, and the backend finds the worker's
  *done* marker with no result (`reference.parsl._claims.done_path`).

`after_loss` decides, for each task of the lost Parsl task still owed a
result, whether it runs again (alone, in a Parsl task of its own) or fails
with `spec.WorkerLostError` (RS-12). No loop, threads or Parsl here:
tests/parsl/test_parsl_units.py calls it directly.
"""

from __future__ import annotations

import enum

__all__ = ["MAX_RUNS", "AfterLoss", "after_loss"]

MAX_RUNS = 3
"""Times a function task is sent to Parsl, at most, before a loss fails it."""


class AfterLoss(enum.Enum):
    """What becomes of a task still owed a result when its Parsl task was lost."""

    RUN_AGAIN = "run again, alone, in a child process of a worker"
    FAIL = "fail with WorkerLostError"


def after_loss(*, executable: bool, live: int, returned: bool, runs: int) -> AfterLoss:
    """Decide for one task of a lost Parsl task (RS-12).

    - An executable fails: it may have had effects, and is never run twice.
    - A function that has already run `MAX_RUNS` times fails: something
      keeps taking its workers down.
    - A function whose worker *returned* (the result, not the worker, was
      lost) runs again: it did not kill its worker, whether it ran in a
      chunk or alone.
    - A function whose worker died while running it with others still owed
      a result (``live`` > 1) runs again, alone: one death convicts none of
      them, and alone, the one that kills its worker fails by itself.
    - A function whose worker died while running it alone fails: it is the
      one that killed its worker (or it was killed from outside).

    Args:
        executable: The task runs an executable.
        live: Tasks of the lost Parsl task still owed a result, this one
            included.
        returned: The worker left its done marker: the Parsl task returned
            and only its result was lost.
        runs: Times this task has been sent to Parsl, the lost one included.
    """
    if executable or runs >= MAX_RUNS:
        return AfterLoss.FAIL
    if returned or live > 1:
        return AfterLoss.RUN_AGAIN
    return AfterLoss.FAIL
