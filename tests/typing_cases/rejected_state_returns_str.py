"""Rejected: ``state()`` returns a ``BackendState`` member, not any str (LC-2)."""

from _valid_backend import ValidBackend

from spec import ExecutionBackend


class StrState(ValidBackend):
    def state(self) -> str:  # type: ignore[override]
        return "IDLE"


backend: ExecutionBackend = StrState()  # E: assignment state
