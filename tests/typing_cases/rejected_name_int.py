"""Rejected: ``name`` is a str (LC-8)."""

from _valid_backend import ValidBackend

from spec import ExecutionBackend


class IntNameAttr(ValidBackend):
    name: int = 3  # type: ignore[assignment]


backend: ExecutionBackend = IntNameAttr()  # E: assignment name
