"""The backend contract as ``typing.Protocol`` classes.

`ExecutionBackend` is the small core every backend satisfies. The optional
parts are separate protocols, composed the way ``collections.abc`` composes
``Sized`` and ``Iterable``: a backend offers what it has, and mypy checks
each part it claims. `AsyncflowBackend` is the composition radical.asyncflow
0.6's ``WorkflowEngine`` needs for a drop-in backend.

Why the parameter types are loose: a protocol method's parameters are
contravariant, so the protocol must name the *widest* type an engine passes.
A task parameter typed with the `TaskDict` TypedDict would reject backends
annotated ``dict[str, Any]`` (and vice versa); tasks are therefore typed
`TaskArg` (``Any``), and the TypedDicts document the keys. Every parameter
is positional-only, so implementations may name their parameters freely.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Generator
from types import TracebackType
from typing import Any, Protocol, TypeAlias, runtime_checkable

from typing_extensions import Self

from spec.states import BackendState

__all__ = [
    "AsyncflowBackend",
    "EngineAttachable",
    "ExecutionBackend",
    "SupportsAsyncContext",
    "SupportsAsyncInit",
    "SupportsDataLinking",
    "SupportsTaskBuilding",
    "TaskArg",
    "TaskStateCallback",
    "TaskStatesMap",
]

TaskArg: TypeAlias = Any
"""How the protocols type a task dict: deliberately ``Any`` (see module doc)."""

TaskStateCallback: TypeAlias = Callable[[Any, str], None]
"""The engine's state callback, called as ``func(task, state)``.

``task`` is the submitted dict; ``state`` a `TaskState` member. Backends may
annotate the parameter more loosely (``Callable[..., None]``) or with
narrower argument types (``Callable[[dict[str, Any], TaskState], None]``).
A backend with the ``services`` capability also calls it as
``func(task, RUNNING, service_callback=...)`` when a service is ready, and
only for tasks with ``is_service`` true (SV-2): an engine that submits
services registers a `spec.ServiceStateCallback`.
"""


@runtime_checkable
class TaskStatesMap(Protocol):
    """What ``get_task_states_map()`` returns: the state names the engine reads.

    radical.asyncflow 0.6 compares callback states with these attributes and
    with ``terminal_states`` (clause LC-7).
    """

    @property
    def DONE(self) -> str:
        """The ``DONE`` state value."""
        ...

    @property
    def RUNNING(self) -> str:
        """The ``RUNNING`` state value."""
        ...

    @property
    def CANCELED(self) -> str:
        """The ``CANCELED`` state value."""
        ...

    @property
    def FAILED(self) -> str:
        """The ``FAILED`` state value."""
        ...

    @property
    def terminal_states(self) -> Collection[str]:
        """The terminal state values: ``DONE``, ``FAILED``, ``CANCELED``."""
        ...


@runtime_checkable
class ExecutionBackend(Protocol):
    """The core contract every execution backend satisfies.

    A backend is ready to accept tasks as soon as it is constructed (LC-1).
    """

    @property
    def name(self) -> str:
        """Name of the backend in an engine's backend registry (LC-8)."""
        ...

    def state(self) -> BackendState:
        """Return the backend's lifecycle state; synchronous (LC-2, LC-3)."""
        ...

    def register_callback(self, func: TaskStateCallback, /) -> None:
        """Set the one callback that receives every task state (LC-4).

        The callback is called as ``func(task, state)`` on the event-loop
        thread that submitted the task (ST-4), never from inside
        ``submit_tasks`` or ``cancel_task`` (ST-5). For a ready service, a
        backend with the ``services`` capability adds the keyword
        ``service_callback`` (SV-2, `spec.ServiceStateCallback`).
        """
        ...

    def get_task_states_map(self) -> TaskStatesMap:
        """Return the names of the task states the callback delivers (LC-7)."""
        ...

    async def submit_tasks(self, tasks: list[TaskArg], /) -> None:
        """Accept a batch of tasks and return before they finish (SB-1).

        The batch is validated first; an invalid entry raises a spec error
        and no task of the batch is accepted (SB-2, SB-3, SB-4). After
        shutdown it raises `BackendShutdownError` (SB-7).
        """
        ...

    async def cancel_task(self, uid: str, /) -> bool:
        """Cancel a task; ``True`` iff it will be reported ``CANCELED`` (CN-1..CN-4).

        Returns ``False``, never raises, for unknown or finished uids.
        """
        ...

    async def shutdown(self) -> None:
        """Stop the backend (SD-1..SD-5, LC-3).

        Idempotent. Reports every unfinished task ``CANCELED`` before it
        returns, leaves no child process behind, returns in bounded time, and
        no callback follows it.
        """
        ...


@runtime_checkable
class SupportsAsyncInit(Protocol):
    """A backend that can be awaited: ``backend = await Backend()`` (LC-5)."""

    def __await__(self) -> Generator[Any, None, Self]:
        """Finish any asynchronous set-up and return the backend itself."""
        ...


@runtime_checkable
class SupportsAsyncContext(Protocol):
    """A backend usable as ``async with backend:`` (LC-6)."""

    async def __aenter__(self) -> Self:
        """Return the ready backend."""
        ...

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc_value: BaseException | None,
        traceback: TracebackType | None,
        /,
    ) -> bool | None:
        """Shut the backend down."""
        ...


@runtime_checkable
class EngineAttachable(Protocol):
    """The attributes radical.asyncflow 0.6 sets when it attaches a backend (CP-1)."""

    _work_dir: str
    """Directory for ``capture_stdio`` files; the engine overwrites it."""
    is_attached: bool
    """``True`` once an engine has attached the backend."""
    attached_to: list[str]
    """UIDs of the engines the backend was attached to, most recent last."""


@runtime_checkable
class SupportsDataLinking(Protocol):
    """The data-linking flags and hooks the engine calls (CP-2).

    The engine calls a hook only when the matching flag is true.
    """

    @property
    def supports_implicit_data_linking(self) -> bool:
        """Whether the engine should call `link_implicit_data_deps`."""
        ...

    @property
    def supports_explicit_data_linking(self) -> bool:
        """Whether the engine should call `link_explicit_data_deps`."""
        ...

    def link_implicit_data_deps(self, src_task: TaskArg, dst_task: TaskArg, /) -> None:
        """Make ``src_task``'s outputs visible to ``dst_task``."""
        ...

    def link_explicit_data_deps(
        self,
        src_task: TaskArg = None,
        dst_task: TaskArg = None,
        file_name: str | None = None,
        file_path: str | None = None,
    ) -> Any:
        """Stage one file for ``dst_task``; the engine reads ``result["target"]``."""
        ...


@runtime_checkable
class SupportsTaskBuilding(Protocol):
    """A backend with the 0.6 engine's task-building hook (CP-3)."""

    def build_task(
        self, uid: str, task_desc: TaskArg, task_specific_kwargs: TaskArg, /
    ) -> None:
        """Prepare a task before submission; may do nothing."""
        ...


@runtime_checkable
class AsyncflowBackend(
    ExecutionBackend,
    EngineAttachable,
    SupportsDataLinking,
    SupportsTaskBuilding,
    Protocol,
):
    """Everything radical.asyncflow 0.6's ``WorkflowEngine`` uses: a drop-in backend."""

    def task_state_cb(self, task: TaskArg, state: str, /) -> None:
        """Hook called with every state the backend reports, before the callback.

        Engines never call it; it is the one place a subclass can observe
        every state change. A no-op in the reference backends.
        """
        ...
