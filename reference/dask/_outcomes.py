"""What a Dask worker sends back: the shared `Outcome` tuples, and where a chunk ran.

The `Outcome` itself, and how a worker packages a result or an exception
into one, is shared with the Parsl worker (`reference._outcomes`, re-exported
here); this module adds what only the Dask backend sends: the `CANCELED`
status of a key canceled before it started, and `Ran`, a chunk's outcomes
with where it ran.
"""

from __future__ import annotations

from typing import Any

from reference._outcomes import (
    EXITED,
    FAILED,
    OK,
    Outcome,
    await_outcome,
    dumps_function_item,
    failure,
    start_item,
    success,
)

__all__ = [
    "CANCELED",
    "EXITED",
    "FAILED",
    "OK",
    "SKIPPED",
    "Outcome",
    "Ran",
    "Where",
    "await_outcome",
    "dumps_function_item",
    "failure",
    "start_item",
    "success",
]

CANCELED = "canceled"
"""Outcome status: the task was canceled before it started."""

Where = dict[str, Any]
"""Where a Dask task ran: ``{"host", "worker", "gpus"}``, for its placement."""


class Ran(list):  # type: ignore[type-arg]
    """A chunk's outcomes (a list, one per task) and where the chunk ran.

    A list, so that code reading the outcomes needs no change; ``where``
    rides along for the placement (PL-1).
    """

    __slots__ = ("where",)

    def __init__(self, outcomes: list[Any], where: Where | None) -> None:
        super().__init__(outcomes)
        self.where = where

    def __reduce__(self) -> tuple[Any, ...]:
        return (Ran, (list(self), self.where))


SKIPPED: Outcome = (CANCELED, None, "", "", "")
"""The outcome of a task a worker did not start: its key was canceled first."""
