"""Turning ``module:attr`` or a registered name into a backend factory."""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable
from typing import Any

import spec

__all__ = [
    "DEFAULT_TARGET",
    "BackendFactory",
    "build_backend",
    "describe",
    "load_target",
]

DEFAULT_TARGET = "reference:LocalExecutionBackend"
"""What ``python -m conformance`` tests when given no target."""

BackendFactory = Callable[[], Any]
"""A backend class, or a zero-argument sync or ``async def`` factory."""


def load_target(target: str) -> BackendFactory:
    """Resolve a target string to a backend factory.

    Args:
        target: ``module:attr`` (``attr`` may be dotted), or the name of a
            backend registered in `spec.ENTRY_POINT_GROUP`.

    Returns:
        The class or factory.

    Raises:
        LookupError: Nothing matches; the message says what was tried.
        TypeError: What was found is not callable.
    """
    if ":" in target:
        module_name, _, attr = target.partition(":")
        try:
            found: Any = importlib.import_module(module_name)
        except ImportError as exc:
            raise LookupError(f"cannot import {module_name!r}: {exc}") from exc
        for part in attr.split("."):
            try:
                found = getattr(found, part)
            except AttributeError:
                raise LookupError(
                    f"{module_name!r} has no attribute {attr!r}"
                ) from None
    else:
        found = spec.load_registered_backend(target)
    if not callable(found):
        raise TypeError(f"{target!r} is {found!r}: not a class or factory")
    return found  # type: ignore[no-any-return]


async def build_backend(factory: BackendFactory) -> Any:
    """Call a factory; await its result if it is a coroutine (an async factory).

    A backend that is itself awaitable (``await Backend()``) is returned as
    built, not awaited: awaiting it is a clause of its own (LC-5).

    Args:
        factory: A backend class, or a zero-argument sync or async factory.

    Returns:
        The backend the factory built.
    """
    result = factory()
    if inspect.iscoroutine(result) or (
        inspect.isawaitable(result) and not hasattr(result, "submit_tasks")
    ):
        result = await result
    return result


def describe(factory: BackendFactory) -> str:
    """Return ``module:qualname`` of a factory, for the report."""
    module = getattr(factory, "__module__", "?")
    name = getattr(factory, "__qualname__", repr(factory))
    return f"{module}:{name}"
