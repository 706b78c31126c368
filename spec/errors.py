"""The exceptions a backend raises to its caller or stores on a failed task."""

from __future__ import annotations

__all__ = [
    "BackendError",
    "BackendShutdownError",
    "CapabilityNotSupportedError",
    "DuplicateTaskError",
    "InvalidTaskError",
    "StandInError",
    "TaskTimeoutError",
    "WorkerLostError",
]


class BackendError(Exception):
    """Base class of every error defined by the contract."""


class InvalidTaskError(BackendError, ValueError):
    """A batch passed to ``submit_tasks`` holds a structurally invalid entry.

    Raised before any task of the batch is accepted (clause SB-2, SB-3).

    Attributes:
        index: Position of the offending entry in the batch.
        uid: The entry's uid, when it has a usable one.
        reason: What is wrong with the entry.
    """

    def __init__(self, index: int, reason: str, uid: str | None = None) -> None:
        self.index = index
        self.uid = uid
        self.reason = reason
        who = (
            f"task {uid!r} at index {index}"
            if uid is not None
            else f"task at index {index}"
        )
        super().__init__(f"invalid {who}: {reason}; no task was submitted")


class DuplicateTaskError(InvalidTaskError):
    """A uid is repeated within a batch, or is already in flight (clause SB-4)."""

    def __init__(self, index: int, uid: str, *, in_flight: bool) -> None:
        where = "is already in flight" if in_flight else "appears twice in the batch"
        super().__init__(index, f"uid {uid!r} {where}", uid=uid)
        self.in_flight = in_flight


class BackendShutdownError(BackendError, RuntimeError):
    """The backend has been shut down and accepts no more tasks (clause SB-7)."""


class CapabilityNotSupportedError(BackendError, NotImplementedError):
    """A task needs a capability the backend does not offer (clause SB-6).

    Stored as a failed task's ``exception``; never raised from ``submit_tasks``.

    Attributes:
        capability: The missing capability's value, e.g. ``"prompts"``.
    """

    def __init__(self, capability: str, detail: str = "") -> None:
        self.capability = capability
        message = f"this backend does not support {capability}"
        super().__init__(f"{message}: {detail}" if detail else message)


class TaskTimeoutError(BackendError, TimeoutError):
    """A task ran past its ``timeout`` and was killed (clause RS-8)."""


class WorkerLostError(BackendError, RuntimeError):
    """The worker (process or remote node) running a task died mid-task."""


class ResourceUnavailableError(BackendError, RuntimeError):
    """A task asks for more resources than the backend has in all (RQ-2).

    Stored as a failed task's ``exception``: such a task could never run, so
    it is failed at once instead of waiting forever.
    """


class StandInError(BackendError):
    """Stands in for a task's exception that could not be sent back.

    A function task run in another process may raise an exception that cannot
    be pickled; the backend then stores this error instead (clause RS-9).

    Attributes:
        type_name: Qualified name of the original exception type.
        message: ``str()`` of the original exception.
    """

    def __init__(self, type_name: str, message: str) -> None:
        self.type_name = type_name
        self.message = message
        super().__init__(f"{type_name}: {message}")

    def __reduce__(self) -> tuple[type[StandInError], tuple[str, str]]:
        return (type(self), (self.type_name, self.message))
