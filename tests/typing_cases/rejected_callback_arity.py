"""Rejected: the callback is called with ``(task, state)``; one argument is too few."""

from collections.abc import Callable
from typing import Any

from _valid_backend import ValidBackend

from spec import ExecutionBackend


class OneArgCallback(ValidBackend):
    def register_callback(  # type: ignore[override]
        self, func: Callable[[dict[str, Any]], None]
    ) -> None:
        pass


backend: ExecutionBackend = OneArgCallback()  # E: assignment register_callback
