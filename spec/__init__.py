"""The execution-backend contract of radical.asyncflow, explicit and typed.

Everything a backend author needs is importable from here: the protocols to
type-check against, the state enums and their transition tables, the task
dict's TypedDicts, the error types, the clause list and the capabilities.
``spec`` imports nothing from ``reference`` or ``conformance``.
"""

from __future__ import annotations

from spec.capabilities import (
    DEFAULT_CAPABILITIES,
    Capability,
    SupportsCapabilities,
    capabilities_of,
)
from spec.clauses import CLAUSES, Area, Clause, Level, clause
from spec.discovery import (
    ENTRY_POINT_GROUP,
    load_registered_backend,
    registered_backends,
)
from spec.errors import (
    BackendError,
    BackendShutdownError,
    CapabilityNotSupportedError,
    DuplicateTaskError,
    InvalidTaskError,
    ResourceUnavailableError,
    StandInError,
    TaskTimeoutError,
    WorkerLostError,
)
from spec.protocols import (
    AsyncflowBackend,
    EngineAttachable,
    ExecutionBackend,
    SupportsAsyncContext,
    SupportsAsyncInit,
    SupportsDataLinking,
    SupportsTaskBuilding,
    TaskArg,
    TaskStateCallback,
    TaskStatesMap,
)
from spec.resources import (
    RESOURCE_KEYS,
    ResourceCapacity,
    ResourceDemand,
    ResourceRequest,
    SupportsResources,
    resource_demand,
)
from spec.services import (
    ProbeKind,
    ReadyProbe,
    ServiceCallback,
    ServiceInfo,
    ServiceStateCallback,
    is_service,
    parse_ready,
)
from spec.states import (
    BACKEND_TRANSITIONS,
    TASK_TRANSITIONS,
    TERMINAL_STATES,
    BackendState,
    TaskState,
    is_terminal,
)
from spec.task import (
    BackendSpecificKwargs,
    Placement,
    TaskDescription,
    TaskDict,
    TaskMetadata,
    TaskResult,
)
from spec.validation import TaskKind, task_kind, validate_batch

CONTRACT_VERSION = "1.2"
"""Version of the contract (the clause list and the protocols).

The minor number grows when clauses are added; the major number when an
existing clause or protocol member changes meaning.
"""

__version__ = "0.1.0"
"""Version of the ``asyncflow-backend-spec`` distribution."""

__all__ = [
    "BACKEND_TRANSITIONS",
    "CLAUSES",
    "CONTRACT_VERSION",
    "DEFAULT_CAPABILITIES",
    "ENTRY_POINT_GROUP",
    "RESOURCE_KEYS",
    "TASK_TRANSITIONS",
    "TERMINAL_STATES",
    "Area",
    "AsyncflowBackend",
    "BackendError",
    "BackendShutdownError",
    "BackendSpecificKwargs",
    "BackendState",
    "Capability",
    "CapabilityNotSupportedError",
    "Clause",
    "DuplicateTaskError",
    "EngineAttachable",
    "ExecutionBackend",
    "InvalidTaskError",
    "Level",
    "Placement",
    "ProbeKind",
    "ReadyProbe",
    "ResourceCapacity",
    "ResourceDemand",
    "ResourceRequest",
    "ResourceUnavailableError",
    "ServiceCallback",
    "ServiceInfo",
    "ServiceStateCallback",
    "StandInError",
    "SupportsAsyncContext",
    "SupportsAsyncInit",
    "SupportsCapabilities",
    "SupportsDataLinking",
    "SupportsResources",
    "SupportsTaskBuilding",
    "TaskArg",
    "TaskDescription",
    "TaskDict",
    "TaskKind",
    "TaskMetadata",
    "TaskResult",
    "TaskState",
    "TaskStateCallback",
    "TaskStatesMap",
    "TaskTimeoutError",
    "WorkerLostError",
    "__version__",
    "capabilities_of",
    "clause",
    "is_service",
    "is_terminal",
    "load_registered_backend",
    "parse_ready",
    "registered_backends",
    "resource_demand",
    "task_kind",
    "validate_batch",
]
