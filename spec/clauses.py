"""The contract's clauses, one stable ID each, kept as data.

The docs render this list, the conformance suite tags each test with the ID
it checks, and the protocol docstrings cite the IDs they govern. IDs are
never reused: a withdrawn clause keeps its number.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

from spec.capabilities import Capability

__all__ = ["CLAUSES", "Area", "Clause", "Level", "clause"]


class Level(str, enum.Enum):
    """How binding a clause is (RFC 2119 keywords)."""

    MUST = "MUST"
    SHOULD = "SHOULD"
    MAY = "MAY"

    def __str__(self) -> str:
        return self.value


class Area(str, enum.Enum):
    """The part of the contract a clause belongs to; its ID prefix."""

    LC = "Lifecycle"
    SB = "Submission"
    ST = "States and callbacks"
    RS = "Results"
    CN = "Cancellation"
    SD = "Shutdown"
    SC = "Scale"
    CP = "Engine compatibility"
    RQ = "Resources"
    SV = "Services"
    PL = "Placement"


@dataclass(frozen=True)
class Clause:
    """One rule of the contract.

    Attributes:
        id: Stable identifier, ``AREA-N`` (e.g. ``"ST-2"``).
        level: MUST, SHOULD or MAY.
        text: The rule in one sentence.
        capability: The capability the clause applies under; ``None`` means
            every backend.
    """

    id: str
    level: Level
    text: str
    capability: Capability | None = None

    @property
    def area(self) -> Area:
        """The area named by the ID's prefix."""
        return Area[self.id.split("-", 1)[0]]


_M, _S = Level.MUST, Level.SHOULD
_C = Capability

_CLAUSE_LIST = (
    # Lifecycle
    Clause("LC-1", _M, "A backend accepts tasks as soon as it is constructed."),
    Clause(
        "LC-2",
        _M,
        "`state()` is a synchronous method returning a `BackendState` member.",
    ),
    Clause(
        "LC-3",
        _M,
        "The backend state only moves forward, INITIALIZED -> RUNNING -> "
        "SHUTDOWN, and is SHUTDOWN once `shutdown()` has returned.",
    ),
    Clause(
        "LC-4",
        _M,
        "`register_callback(func)` sets the one callback: every later "
        "state is delivered to `func(task, state)` and to no earlier callback.",
    ),
    Clause(
        "LC-5",
        _M,
        "`await backend` returns the backend itself, ready for tasks.",
        _C.ASYNC_INIT,
    ),
    Clause(
        "LC-6",
        _M,
        "`async with backend as b` binds the backend and shuts it down on exit.",
        _C.ASYNC_CONTEXT,
    ),
    Clause(
        "LC-7",
        _M,
        "`get_task_states_map()` has DONE, RUNNING, CANCELED and FAILED "
        "equal to the `TaskState` values, and `terminal_states` equal to "
        "{DONE, FAILED, CANCELED}.",
    ),
    Clause("LC-8", _M, "`name` is a string."),
    # Submission
    Clause(
        "SB-1",
        _M,
        "`submit_tasks(tasks)` is a coroutine function that returns None "
        "before the submitted tasks finish.",
    ),
    Clause(
        "SB-2",
        _M,
        "A batch holding an entry that is not a dict raises "
        "`InvalidTaskError` naming its index, and no task of the batch is accepted.",
    ),
    Clause(
        "SB-3",
        _M,
        "A batch holding a task without a string `uid` raises "
        "`InvalidTaskError`, and no task of the batch is accepted.",
    ),
    Clause(
        "SB-4",
        _M,
        "A uid repeated in a batch or already in flight raises "
        "`DuplicateTaskError` and no task of the batch is accepted; a uid whose "
        "task has finished may be submitted again.",
    ),
    Clause(
        "SB-5",
        _M,
        "A task with none of `function`, `executable` or `prompt` is "
        "accepted and reported FAILED with an exception saying so.",
    ),
    Clause(
        "SB-6",
        _M,
        "A task that needs a capability the backend does not declare is "
        "accepted and reported FAILED with `CapabilityNotSupportedError`, "
        "never left hanging.",
    ),
    Clause(
        "SB-7",
        _M,
        "`submit_tasks` after `shutdown()` raises `BackendShutdownError`, "
        "and no callback follows for that batch.",
    ),
    Clause("SB-8", _M, "An empty batch is accepted and reports nothing."),
    Clause(
        "SB-9",
        _M,
        "One task that fails (for any reason) does not affect the other "
        "tasks of its batch.",
    ),
    Clause(
        "SB-10",
        _M,
        "The backend does not depend on the batch list after `submit_tasks` "
        "returns: the caller may clear or reuse it and every task is still "
        "reported.",
    ),
    # States and callbacks
    Clause(
        "ST-1", _M, "Every state delivered to the callback is a `TaskState` member."
    ),
    Clause(
        "ST-2",
        _M,
        "Every accepted task is reported in exactly one terminal state "
        "(DONE, FAILED or CANCELED).",
    ),
    Clause(
        "ST-3",
        _M,
        "RUNNING is reported at most once per task and only before its "
        "terminal state; nothing is reported after the terminal state.",
    ),
    Clause(
        "ST-4",
        _M,
        "The callback runs on the thread of the event loop that called `submit_tasks`.",
    ),
    Clause(
        "ST-5",
        _M,
        "The callback is never invoked while `submit_tasks` or "
        "`cancel_task` is executing (no re-entrant delivery).",
    ),
    Clause(
        "ST-6",
        _M,
        "The callback receives the very dict object that was submitted, "
        "with the results written into it.",
    ),
    Clause(
        "ST-7",
        _M,
        "A callback that raises is logged; the backend keeps running and "
        "still reports every other task.",
    ),
    Clause(
        "ST-8",
        _M,
        "A callback that raises `asyncio.CancelledError` (or any other "
        "exception but `KeyboardInterrupt` and `SystemExit`) is treated as "
        "in ST-7: every other task is still reported, and no finished task "
        "is reported again.",
    ),
    # Results
    Clause(
        "RS-1",
        _M,
        "A sync function task is reported DONE with its return value in "
        "`return_value`, called with the task's `args` and `kwargs`.",
        _C.FUNCTIONS,
    ),
    Clause(
        "RS-2",
        _M,
        "An `async def` function task is awaited; `return_value` holds "
        "the awaited result.",
        _C.FUNCTIONS,
    ),
    Clause(
        "RS-3",
        _M,
        "A function task that raises is reported FAILED with the raised "
        "exception (type kept) in `exception` and the traceback text in `stderr`.",
        _C.FUNCTIONS,
    ),
    Clause(
        "RS-4",
        _M,
        "An executable task gets `stdout` and `stderr` as text and "
        "`exit_code`, and is DONE if and only if `exit_code == 0`.",
        _C.EXECUTABLES,
    ),
    Clause(
        "RS-5",
        _M,
        "An executable that does not exist is reported FAILED with an "
        "exception naming it.",
        _C.EXECUTABLES,
    ),
    Clause(
        "RS-6",
        _M,
        "With `capture_stdio`, `stdout` and `stderr` are the paths "
        "`<work_dir>/<uid>.stdout` and `.stderr`, which exist when the state is "
        "delivered.",
        _C.CAPTURE_STDIO,
    ),
    Clause(
        "RS-7",
        _M,
        "The `shell` (default true), `cwd` and `env` backend-specific "
        "options are honoured for executables.",
        _C.EXECUTABLES,
    ),
    Clause(
        "RS-8",
        _M,
        "An executable running past its `timeout` is killed and reported "
        "FAILED with `TaskTimeoutError`.",
        _C.TIMEOUT,
    ),
    Clause(
        "RS-9",
        _S,
        "A function exception that cannot be sent back is replaced by a "
        "`StandInError` naming the original type.",
        _C.FUNCTIONS,
    ),
    Clause(
        "RS-10",
        _M,
        "A backend declaring `dry_run` reports every runnable task DONE "
        "without running it.",
        _C.DRY_RUN,
    ),
    Clause(
        "RS-11",
        _M,
        "With `capture_stdio`, the capture files are inside `<work_dir>` "
        "whatever the uid (`../x`, an absolute path, a separator).",
        _C.CAPTURE_STDIO,
    ),
    Clause(
        "RS-12",
        _M,
        "A worker that dies fails only the task it was running, with "
        "`WorkerLostError`; queued tasks and tasks on other workers complete.",
        _C.CRASH_ISOLATION,
    ),
    Clause(
        "RS-13",
        _M,
        "A prompt task that succeeds is DONE with its answer as a `str` in "
        "both `stdout` and `return_value`.",
        _C.PROMPTS,
    ),
    Clause(
        "RS-14",
        _M,
        "A prompt task that fails is FAILED with an exception object (never "
        "a string) in `exception` and the reason in `stderr`.",
        _C.PROMPTS,
    ),
    # Cancellation
    Clause("CN-1", _M, "`cancel_task(uid)` is a coroutine function returning a bool."),
    Clause(
        "CN-2",
        _M,
        "`cancel_task` returns False, and does not raise, for an unknown uid.",
    ),
    Clause(
        "CN-3",
        _M,
        "`cancel_task` returns False, and does not raise, for a task "
        "already reported in a terminal state.",
    ),
    Clause(
        "CN-4",
        _M,
        "When `cancel_task` returns True the task is reported CANCELED "
        "exactly once and never DONE or FAILED.",
    ),
    Clause(
        "CN-5",
        _M,
        "Cancelling a running executable terminates its whole process "
        "group (TERM, then KILL after a grace period); no process survives.",
        _C.EXECUTABLES,
    ),
    Clause(
        "CN-6",
        _S,
        "A task that has not started yet can be cancelled "
        "(`cancel_task` returns True) and never starts.",
    ),
    Clause(
        "CN-7",
        _M,
        "A timed-out or cancelled executable is reported within its timeout "
        "(or the cancel) plus the kill grace and a short drain, even when a "
        "descendant that left its process group holds the output pipes.",
        _C.EXECUTABLES,
    ),
    Clause(
        "CN-8",
        _M,
        "When `cancel_task` returns True for a running function task, the "
        "function stops: nothing it would do after the cancel plus the kill "
        "grace happens.",
        _C.PREEMPTIVE_CANCEL,
    ),
    Clause(
        "CN-9",
        _M,
        "A task that `cancel_task` reported CANCELED has no effects after the "
        "report, whatever the backend's capabilities: a backend that cannot "
        "stop a running function returns False for it and lets it finish.",
    ),
    # Shutdown
    Clause(
        "SD-1", _M, "`shutdown()` is idempotent: a second call returns without error."
    ),
    Clause(
        "SD-2",
        _M,
        "Every accepted task that has not reached a terminal state is "
        "reported CANCELED before `shutdown()` returns.",
    ),
    Clause("SD-3", _M, "No callback is invoked after `shutdown()` has returned."),
    Clause(
        "SD-4", _M, "`shutdown()` returns in bounded time even while a task is stuck."
    ),
    Clause(
        "SD-5", _M, "No child process started by the backend outlives `shutdown()`."
    ),
    # Scale
    Clause(
        "SC-1",
        _S,
        "A finished task is not retained: once reported terminal, the "
        "backend holds no reference to its dict.",
    ),
    Clause(
        "SC-2",
        _M,
        "A batch of 10,000 tasks is accepted and every task reaches a terminal state.",
    ),
    Clause(
        "SC-3",
        _S,
        "Submitting 10,000 tasks does not stall the event loop for more "
        "than 50 ms at a time.",
    ),
    Clause(
        "SC-4",
        _M,
        "Child processes are bounded in number: a batch of many "
        "executables does not exhaust file descriptors.",
        _C.EXECUTABLES,
    ),
    # Engine compatibility
    Clause(
        "CP-1",
        _M,
        "`_work_dir` is a str, `is_attached` a bool and `attached_to` a "
        "list, all writable by the engine.",
        _C.ENGINE_ATTACHMENT,
    ),
    Clause(
        "CP-2",
        _M,
        "The data-linking flags are bools and the hooks accept the engine's calls.",
        _C.DATA_LINKING,
    ),
    Clause(
        "CP-3",
        _M,
        "`build_task(uid, task_desc, task_specific_kwargs)` accepts the engine's call.",
        _C.TASK_BUILDING,
    ),
    # Resources
    Clause(
        "RQ-1",
        _M,
        "The requests of the tasks running at once never add up to more than "
        "the backend's `capacity` (cores, GPUs, memory).",
        _C.RESOURCES,
    ),
    Clause(
        "RQ-2",
        _M,
        "A request larger than the whole capacity is FAILED at once with "
        "`ResourceUnavailableError`, never left pending.",
        _C.RESOURCES,
    ),
    Clause(
        "RQ-3",
        _M,
        "A malformed request (`ranks=0`, a negative or non-numeric value) is "
        "FAILED with an error naming the key and the value.",
        _C.RESOURCES,
    ),
    Clause(
        "RQ-4",
        _M,
        "GPUs are handed out whole and exclusively: an executable sees only "
        "its own in `CUDA_VISIBLE_DEVICES`, shared with no task running at "
        "the same time.",
        _C.RESOURCES,
    ),
    Clause(
        "RQ-5",
        _M,
        "A request that fits the capacity eventually runs, even while smaller "
        "tasks keep arriving (no starvation).",
        _C.RESOURCES,
    ),
    Clause(
        "RQ-6",
        _M,
        "An executable granted no GPU sees none: its `CUDA_VISIBLE_DEVICES` "
        "is set and empty, even where the backend's environment or the task's "
        "own `env` lists GPUs.",
        _C.RESOURCES,
    ),
    # Services (contract 1.2)
    Clause(
        "SV-1",
        _M,
        "A task with `is_service` true is a service: the backend never ends it "
        "for running long (a `timeout` applies only when the task gives one); "
        "it ends when it exits by itself, is canceled, or the backend shuts down.",
        _C.SERVICES,
    ),
    Clause(
        "SV-2",
        _M,
        "Once a service is ready, the callback is invoked once more for it, "
        "with state RUNNING and the keyword `service_callback`, after its first "
        "RUNNING and before its terminal state (the one RUNNING that ST-3 does "
        "not count); no other task gets `service_callback`.",
        _C.SERVICES,
    ),
    Clause(
        "SV-3",
        _M,
        "`service_callback(future, task, state)`, called on the event-loop "
        "thread, resolves `future` with the service's info unless it is already "
        'done; the same info is in `task["service_info"]`, a dict with '
        "`probe` and one of `pid`, `worker` or `dry_run`.",
        _C.SERVICES,
    ),
    Clause(
        "SV-4",
        _M,
        "A service with a `ready` probe (`tcp`, `file` or `stdout`) is not "
        "announced ready before the probe holds, and its info names what "
        "matched; a malformed `ready` or `ready_timeout` fails the task with an "
        "error naming it.",
        _C.SERVICES,
    ),
    Clause(
        "SV-5",
        _M,
        "A service that exits, fails or passes its `ready_timeout` before it is "
        "ready is reported FAILED when that happens, without waiting for the "
        "rest of the timeout (with `TaskTimeoutError` when the timeout passes), "
        "and is never passed a `service_callback`.",
        _C.SERVICES,
    ),
    Clause(
        "SV-6",
        _M,
        "A service that ends after it was ready is reported like any task: DONE "
        "on exit code 0 or a return, FAILED with its exit code or exception "
        "otherwise.",
        _C.SERVICES,
    ),
    Clause(
        "SV-7",
        _M,
        "Cancelling a ready service, or shutting the backend down, stops its "
        "whole process group, and the service is reported CANCELED.",
        _C.SERVICES,
    ),
    Clause(
        "SV-8",
        _M,
        "A function service that is an async generator function is ready at its "
        'first `yield`, with the yielded value in `service_info["value"]`, '
        "and runs on until the generator ends, raises or is canceled.",
        _C.SERVICES,
    ),
    # Placement
    Clause(
        "PL-1",
        _M,
        'Every task that started carries `task["placement"]` (a '
        "`spec.Placement`) when its terminal state is delivered: the host, "
        "one core id per core it asked for (or `None` where cores are not "
        "bound), one GPU id per whole GPU, and the memory granted.",
        _C.PLACEMENT,
    ),
    Clause(
        "PL-2",
        _M,
        "Tasks running at the same time never share a core id or a GPU id in "
        "their placements, and every id is one the capacity names "
        "(`core_ids`, `gpus`).",
        _C.PLACEMENT,
    ),
    Clause(
        "PL-3",
        _M,
        "A task runs where its placement says: an executable's CPU affinity "
        "and `CUDA_VISIBLE_DEVICES`, and a function task's "
        "`os.sched_getaffinity(0)`, equal its placement's cores and GPUs.",
        _C.PLACEMENT,
    ),
    Clause(
        "PL-4",
        _M,
        "Binding lasts only while tasks run: once no task is in flight, the "
        "threads and worker processes that ran tasks, and the backend's own "
        "threads, have the CPU affinity they had before.",
        _C.PLACEMENT,
    ),
)

CLAUSES: Mapping[str, Clause] = MappingProxyType({c.id: c for c in _CLAUSE_LIST})
"""Every clause, keyed by ID, in the order the docs present them."""


def clause(clause_id: str) -> Clause:
    """Look a clause up by its ID.

    Args:
        clause_id: An ID such as ``"ST-2"``.

    Returns:
        The clause.

    Raises:
        KeyError: If no clause has that ID; the message lists the areas.
    """
    try:
        return CLAUSES[clause_id]
    except KeyError:
        areas = ", ".join(a.name for a in Area)
        raise KeyError(
            f"no contract clause {clause_id!r}; "
            f"IDs look like AREA-N with AREA in {areas}"
        ) from None
