"""What a worker's `Outcome` means for the task dict: pure, no Parsl, no loop.

`apply_outcome` writes an outcome's results into the task the way the
contract says (RS-1..RS-6) and returns the state to report;
`load_exception` rebuilds an exception or a `spec.StandInError` naming its
type; `unsendable_error` names the part of a task that cannot be pickled.
"""

from __future__ import annotations

from typing import Any

import cloudpickle

from reference import _calls
from reference._calls import load_exception
from reference.parsl import _worker as _w
from spec import BackendError, TaskState

__all__ = ["apply_outcome", "load_exception", "unsendable_error"]


def apply_outcome(task: dict[str, Any], outcome: _w.Outcome) -> TaskState:
    """Write ``outcome``'s results into ``task``; return DONE or FAILED.

    For `reference.parsl._worker.OK`, `FAILED` and `EXITED`; a `SKIPPED`
    outcome for a task the backend did not cancel (a stale claim) fails it
    with a `BackendError` saying so.
    """
    status, payload, stderr, type_name, message = outcome
    if status in (_w.OK, _w.EXITED) and payload is not None:
        try:
            value = cloudpickle.loads(payload)
        except KeyboardInterrupt:
            raise
        except BaseException as exc:  # its own code ran: even SystemExit (RS-12)
            error = BackendError(
                f"the result of task {task.get('uid')!r} arrived but cannot be "
                f"unpickled here: {exc!r}"
            )
            error.__cause__ = exc
            task.update(exception=error, stderr=str(error))
            return TaskState.FAILED
    if status == _w.OK:
        task["return_value"] = value
        return TaskState.DONE
    if status == _w.EXITED:
        stdout, err, exit_code, exception = value
        task.update(stdout=stdout, stderr=err, exit_code=exit_code)
        if exception is not None:
            task["exception"] = exception
        return TaskState.DONE if exit_code == 0 else TaskState.FAILED
    if status == _w.FAILED:
        task["exception"] = load_exception(payload, type_name, message)
        task["stderr"] = stderr
        return TaskState.FAILED
    error = BackendError(
        f"the Parsl worker answered {status!r} for task {task.get('uid')!r}, "
        "which the backend did not ask for"
    )
    task.update(exception=error, stderr=str(error))
    return TaskState.FAILED


def unsendable_error(uid: str, task: dict[str, Any], exc: Exception) -> TypeError:
    """The error failing a task that cannot be pickled, naming the part at fault."""
    fields = ("function", "args", "kwargs", *_w.EXEC_FIELDS[1:])
    parts = [(name, task[name]) for name in fields if name in task]
    return _calls.unsendable_error(uid, parts, exc, "Parsl")
