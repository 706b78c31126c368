"""Capabilities: what a backend offers beyond the core contract.

A backend declares the behavioural ones in a ``capabilities`` attribute; the
structural ones (methods it has) are also found by protocol membership.
`capabilities_of` merges both, and the conformance suite checks exactly that
set: clauses of capabilities a backend does not claim are not applicable.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from typing import Protocol, runtime_checkable

from spec import protocols

__all__ = [
    "DEFAULT_CAPABILITIES",
    "Capability",
    "SupportsCapabilities",
    "capabilities_of",
]


class Capability(str, enum.Enum):
    """One optional part of the contract a backend may offer."""

    FUNCTIONS = "functions"
    """Runs function tasks (sync and ``async def`` callables)."""
    EXECUTABLES = "executables"
    """Runs executable tasks as child processes."""
    PROMPTS = "prompts"
    """Runs prompt tasks."""
    CAPTURE_STDIO = "capture_stdio"
    """Honours ``capture_stdio`` by writing ``<work_dir>/<uid>.stdout|.stderr``."""
    TIMEOUT = "timeout"
    """Honours ``task_backend_specific_kwargs["timeout"]`` for executables."""
    DRY_RUN = "dry_run"
    """Runs nothing: every runnable task ends DONE with placeholder results."""
    ASYNC_INIT = "async_init"
    """``await backend`` returns the ready backend."""
    ASYNC_CONTEXT = "async_context"
    """``async with backend`` enters and shuts it down on exit."""
    ENGINE_ATTACHMENT = "engine_attachment"
    """Has ``_work_dir``, ``is_attached`` and ``attached_to`` for the engine."""
    DATA_LINKING = "data_linking"
    """Has the data-linking flags and hooks the engine calls."""
    TASK_BUILDING = "task_building"
    """Has ``build_task(uid, task_desc, task_specific_kwargs)``."""
    CRASH_ISOLATION = "crash_isolation"
    """A worker that dies fails only the task it was running (contract 1.1)."""
    PREEMPTIVE_CANCEL = "preemptive_cancel"
    """Cancelling a running function task stops the function (contract 1.1)."""
    RESOURCES = "resources"
    """Honours resource requests (``ranks``, ``cores_per_rank``, ...) (1.1)."""
    SERVICES = "services"
    """Runs service tasks (``is_service``) and reports when they are ready (1.2)."""
    PLACEMENT = "placement"
    """Binds each task to the cores and GPUs it was granted and reports them in
    ``task["placement"]`` (1.2); declared with ``resources``."""

    def __str__(self) -> str:
        return self.value


DEFAULT_CAPABILITIES: frozenset[Capability] = frozenset(
    {Capability.FUNCTIONS, Capability.EXECUTABLES}
)
"""Assumed for a backend that declares no ``capabilities`` attribute."""


@runtime_checkable
class SupportsCapabilities(Protocol):
    """A backend that declares its capabilities."""

    @property
    def capabilities(self) -> Iterable[Capability]:
        """The capabilities this backend offers."""
        ...


_STRUCTURAL: dict[Capability, type] = {
    Capability.ASYNC_INIT: protocols.SupportsAsyncInit,
    Capability.ASYNC_CONTEXT: protocols.SupportsAsyncContext,
    Capability.ENGINE_ATTACHMENT: protocols.EngineAttachable,
    Capability.DATA_LINKING: protocols.SupportsDataLinking,
    Capability.TASK_BUILDING: protocols.SupportsTaskBuilding,
}
"""The capabilities a backend has by having their methods (protocol membership)."""


def capabilities_of(backend: object) -> frozenset[Capability]:
    """Return the capabilities a backend offers.

    The declared set (``backend.capabilities``) is used if present, otherwise
    `DEFAULT_CAPABILITIES`; structural capabilities found by protocol
    membership are added to either.

    Args:
        backend: Any object; usually an `ExecutionBackend`.

    Returns:
        The merged capability set.

    Raises:
        TypeError: If ``capabilities`` holds something other than
            `Capability` members (or their string values).
    """
    if isinstance(backend, SupportsCapabilities):
        declared: set[Capability] = set()
        for item in backend.capabilities:
            try:
                declared.add(Capability(item))
            except ValueError:
                raise TypeError(
                    f"{type(backend).__name__}.capabilities holds {item!r}, "
                    f"which is not a spec.Capability"
                ) from None
    else:
        declared = set(DEFAULT_CAPABILITIES)
    declared.update(
        cap for cap, proto in _STRUCTURAL.items() if isinstance(backend, proto)
    )
    return frozenset(declared)
