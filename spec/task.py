"""The task dict: what the engine supplies and what the backend writes back.

A task is a plain ``dict``. The engine (radical.asyncflow 0.6) fills in the
description keys; the backend writes the result keys into the *same* dict
object and passes that object to the state callback (clause ST-6).

Backends must ignore keys they do not know: engines add private keys (the
0.6 engine adds ``_tel_task_type`` and ``_tel_executable``) and may add more.
"""

from collections.abc import Callable, Sequence
from typing import Any

from typing_extensions import NotRequired, Required, TypedDict

from spec.services import ServiceInfo

__all__ = [
    "BackendSpecificKwargs",
    "Placement",
    "TaskDescription",
    "TaskDict",
    "TaskMetadata",
    "TaskResult",
]


class BackendSpecificKwargs(TypedDict, total=False):
    """Options in ``task["task_backend_specific_kwargs"]`` the contract defines.

    Backends may accept more keys (the engine passes the decorator's
    ``task_description`` here unchanged); these are the ones with a meaning
    fixed by the contract: the executable options below, and the resource
    request keys of ``spec.ResourceRequest`` (capability ``resources``).
    """

    shell: bool
    """Run ``executable`` and ``arguments`` joined by spaces through ``/bin/sh``.
    Defaults to ``True``, as in radical.asyncflow 0.6."""
    cwd: str
    """Working directory of the child process."""
    env: dict[str, str]
    """Environment of the child process, replacing the inherited one."""
    timeout: float
    """Seconds the child may run; past it, it is killed and the task FAILED."""
    ready: dict[str, str]
    """When a service is ready: ``{"tcp": "host:port"}``, ``{"file": "path"}``
    or ``{"stdout": "regex"}``; started, when missing (`spec.parse_ready`, SV-4)."""
    ready_timeout: float
    """Seconds a service may take to be ready; past it, it is stopped and
    FAILED with `TaskTimeoutError` (SV-5). No limit when missing."""


class TaskMetadata(TypedDict, total=False):
    """Dependency information the engine records on each task."""

    dependencies: list[dict[str, Any]]
    """Descriptions of the tasks this task waits for."""
    input_files: list[str]
    """Files the task reads."""
    output_files: list[str]
    """Files the task writes."""


class TaskDescription(TypedDict, total=False):
    """The keys the engine supplies. Only ``uid`` is required by the contract.

    Exactly one of ``function``, ``executable`` or ``prompt`` should be set
    (non-``None``); a task with none of them is accepted and reported FAILED
    (clause SB-5).
    """

    uid: Required[str]
    """Unique among the tasks in flight on a backend (clause SB-4)."""
    name: str
    """Human-readable name (the decorated function's ``__name__``)."""
    function: Callable[..., Any] | None
    """Callable to run, sync or ``async def``; ``None`` for other kinds."""
    args: Sequence[Any]
    """Positional arguments for ``function``."""
    kwargs: dict[str, Any]
    """Keyword arguments for ``function``."""
    executable: str | None
    """Program to run for an executable task."""
    arguments: list[str]
    """Arguments for ``executable``."""
    prompt: str | None
    """Text for a prompt task (backends with the ``prompts`` capability)."""
    task_backend_specific_kwargs: dict[str, Any]
    """Per-task backend options; see `BackendSpecificKwargs`."""
    capture_stdio: bool
    """Write an executable's output to ``<work_dir>/<uid>.stdout|.stderr``."""
    is_service: bool
    """``True`` for a service: a long-running task others use while it runs
    (capability ``services``, SV-1..SV-8; without it, FAILED per SB-6)."""
    target_backend: str | None
    """Name of the backend the engine routes the task to."""
    workflow_id: str | None
    """Engine-side grouping label."""
    metadata: TaskMetadata
    """Dependency information recorded by the engine."""


class Placement(TypedDict):
    """Where a task ran (capability ``placement``, contract 1.2).

    A backend adds keys of its own freely; these four are fixed by the
    contract, and ``worker`` by backends that run tasks on named workers.
    The ids are tuples (the suite also accepts lists). Read a record, do not
    change it: a backend may hand one record to every task that held the
    same grant in turn (the reference backends do, and theirs raise
    `TypeError` on any change); ``dict(record)`` is a copy to change.
    """

    host: str
    """Host name of the machine the task ran on (``socket.gethostname()`` there)."""
    cores: tuple[int, ...] | None
    """The core ids the task was bound to, sorted, one per core it asked for
    (``ranks * cores_per_rank``); ``None`` where the backend counts cores but
    does not bind them (PL-3 then checks only the GPUs)."""
    gpus: tuple[str, ...]
    """The GPU ids the task was given, exclusively (``CUDA_VISIBLE_DEVICES`` of
    an executable); empty when it asked for none."""
    memory: int
    """The memory granted, in MB: what the task asked for (``ranks *
    mem_per_rank``) where the backend accounts memory, else 0."""
    worker: NotRequired[str]
    """The worker that ran the task, where the backend has named workers (a
    Dask worker's address)."""


class TaskResult(TypedDict, total=False):
    """The keys a backend writes into the task before reporting its state."""

    return_value: Any
    """A function task's return value (awaited for ``async def``)."""
    stdout: str | None
    """Executable output as text, or the path of the capture file."""
    stderr: str | None
    """Executable error output, a failed function's traceback text, or a path."""
    exit_code: int | None
    """An executable's exit status; ``DONE`` if and only if it is ``0``."""
    exception: BaseException | None
    """Why a FAILED task failed."""
    service_info: ServiceInfo
    """What the backend knows about a ready service; written before the
    readiness callback, and the value its future is resolved with (SV-3)."""
    placement: Placement
    """Where the task ran (capability ``placement``, clause PL-1): host,
    core ids, GPU ids, memory granted."""


class TaskDict(TaskDescription, TaskResult, total=False):
    """A whole task dict: the engine's description plus the backend's results."""
