"""What the dispatcher decides, apart from Parsl: pure functions, tested alone.

`prepare` turns one function or executable task into what a worker runs
(pickled) and the resource specification Parsl gets, or the exception to
fail the task with; `chunk_size` says how many function tasks share a Parsl
task; `pick_executor` chooses the executor of a configuration.
"""

from __future__ import annotations

from typing import Any

from reference._base import function_call
from reference.parsl import _worker as _w
from reference.parsl._config import resource_spec
from reference.parsl._outcomes import unsendable_error
from spec import BackendError, TaskKind, resource_demand

__all__ = ["MAX_CHUNK", "chunk_size", "pick_executor", "prepare"]

MAX_CHUNK = 64
"""Function tasks per Parsl task, at most."""


def prepare(
    task: dict[str, Any], kind: TaskKind, *, mpi: bool
) -> tuple[bytes, dict[str, Any]] | Exception:
    """Pickle one task for a worker and map its resource request.

    Args:
        task: A function or executable task.
        kind: Which of the two it is.
        mpi: The executor places MPI tasks (see `resource_spec`).

    Returns:
        ``(payload, parsl_resource_specification)``, or the exception the
        task fails with: a malformed request or call (`ValueError`, RQ-3), a
        request Parsl cannot place (`spec.CapabilityNotSupportedError`), a
        part that cannot be pickled (`TypeError` naming it).
    """
    uid = task["uid"]
    options = task.get("task_backend_specific_kwargs")
    try:
        demand = resource_demand(options if isinstance(options, dict) else None)
    except ValueError as exc:
        return exc
    is_function = kind is TaskKind.FUNCTION
    spec = resource_spec(uid, demand, function=is_function, mpi=mpi)
    if isinstance(spec, Exception):
        return spec
    try:
        if is_function:
            return _w.dumps_call(*function_call(task)), spec
        return _w.dumps_task({k: task.get(k) for k in _w.EXEC_FIELDS}), spec
    except ValueError as exc:
        return exc
    except Exception as exc:
        return unsendable_error(uid, task, exc)


def chunk_size(backlog: int, workers: int) -> int:
    """Function tasks per Parsl task for a backlog of ``backlog`` tasks.

    Enough to amortize Parsl's cost per task, few enough that every worker
    gets work (four chunks each).
    """
    return max(1, min(MAX_CHUNK, backlog // (4 * max(workers, 1))))


def pick_executor(executors: dict[str, Any], label: str | None) -> tuple[str, Any]:
    """The executor to run on: ``label``, or the configuration's only one.

    Args:
        executors: A DataFlowKernel's executors by label (Parsl's own
            ``_parsl_internal`` is never chosen).
        label: The label asked for, or ``None``.

    Raises:
        spec.BackendError: ``label`` is not there, or is ``None`` with
            several executors to choose from.
    """
    mine = {name: ex for name, ex in executors.items() if name != "_parsl_internal"}
    if label is None:
        if len(mine) != 1:
            raise BackendError(
                f"the Parsl configuration has executors {sorted(mine)}; name the "
                "one to use: ParslExecutionBackend(config, executor=...)"
            )
        label = next(iter(mine))
    if label not in mine:
        raise BackendError(f"no Parsl executor labelled {label!r}: {sorted(mine)}")
    return label, mine[label]
