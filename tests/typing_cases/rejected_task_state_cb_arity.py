"""Rejected: ``task_state_cb`` takes ``(task, state)`` (radical 0.6's local had none)."""

from _valid_backend import ValidBackend

from spec import AsyncflowBackend


class NoArgStateCb(ValidBackend):
    def task_state_cb(self) -> None:  # type: ignore[override]
        pass


backend: AsyncflowBackend = NoArgStateCb()  # E: assignment task_state_cb
