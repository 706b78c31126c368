"""Turning a target string into a backend factory.

A target is loaded the way Python loads code: ``module:attr`` imports
``module`` as ``python -m`` would (the current directory is searched when
the module is not found elsewhere, so a backend file beside you works under
the ``asyncflow-conformance`` script and ``pytest --backend`` too);
``path/to/file.py:attr`` imports that file as ``python path/to/file.py``
would (its folder first on ``sys.path``, so its sibling modules import); a
bare name is a backend registered in `spec.ENTRY_POINT_GROUP`. Whatever
cannot be loaded raises one `TargetError` whose message shows these forms.
"""

from __future__ import annotations

import importlib
import inspect
import os
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import spec

__all__ = [
    "DEFAULT_TARGET",
    "TARGET_FORMS",
    "BackendFactory",
    "TargetError",
    "build_backend",
    "describe",
    "load_target",
]

DEFAULT_TARGET = "reference:LocalExecutionBackend"
"""What ``python -m conformance`` tests when given no target."""

BackendFactory = Callable[[], Any]
"""A backend class, or a zero-argument sync or ``async def`` factory."""

TARGET_FORMS = (
    "a target is one of:\n"
    "  module:attr           a backend class or zero-argument factory in an\n"
    "                        importable module or a module in the current\n"
    "                        directory, e.g. mybackend:MyBackend (attr may be dotted)\n"
    "  path/to/file.py:attr  the same in a Python file, e.g. ./mybackend.py:MyBackend\n"
    "  NAME                  a backend registered in the entry-point group\n"
    f"                        {spec.ENTRY_POINT_GROUP!r}, e.g. local or noop"
)
"""The accepted target forms, as every `TargetError` message ends."""


class TargetError(LookupError, TypeError):
    """A target names nothing that can be loaded as a backend factory.

    The message says what went wrong, then lists the accepted forms
    (`TARGET_FORMS`). It is a `LookupError` (nothing found) and, for code
    written against earlier versions that caught a non-callable target's
    error, a `TypeError`.

    Attributes:
        target: The target string as given.
        reason: What went wrong, without the list of forms.
    """

    def __init__(self, target: str, reason: str) -> None:
        super().__init__(f"cannot load target {target!r}: {reason}\n{TARGET_FORMS}")
        self.target = target
        self.reason = reason


def load_target(target: str) -> BackendFactory:
    """Resolve a target string to a backend factory.

    Args:
        target: ``module:attr`` (``attr`` may be dotted), ``path/to/file.py:attr``,
            or the name of a backend registered in `spec.ENTRY_POINT_GROUP`.

    Returns:
        The class or factory.

    Raises:
        TargetError: The module or file cannot be imported (the message keeps
            the import error, e.g. a ``SyntaxError`` with its line), has no
            such attribute, nothing is registered under the name, or what was
            found is not callable.
    """
    if not isinstance(target, str) or not target.strip():
        raise TargetError(str(target), "empty target")
    if ":" in target:
        where, _, attr = target.rpartition(":")
        if not where or not attr:
            raise TargetError(target, "expected module:attr or path/to/file.py:attr")
        if _looks_like_path(where):
            found: Any = _import_file(target, where)
        else:
            found = _import_module(target, where)
        for part in attr.split("."):
            try:
                found = getattr(found, part)
            except AttributeError:
                raise TargetError(
                    target, f"{where!r} has no attribute {attr!r}"
                ) from None
    elif _looks_like_path(target):
        raise TargetError(
            target, f"name the class or factory in the file: {target}:ClassName"
        )
    else:
        try:
            found = spec.load_registered_backend(target)
        except LookupError as exc:
            raise TargetError(target, str(exc)) from None
    if not callable(found):
        raise TargetError(target, f"found {found!r}: not a class or factory")
    return found  # type: ignore[no-any-return]


def _looks_like_path(where: str) -> bool:
    return where.endswith(".py") or "/" in where or os.sep in where


def _cwd_on_path() -> bool:
    cwd = os.path.realpath(os.getcwd())
    return any(
        os.path.realpath(entry or os.curdir) == cwd
        for entry in sys.path
        if isinstance(entry, str)
    )


def _import_module(target: str, name: str) -> ModuleType:
    try:
        return _import(target, name)
    except ModuleNotFoundError as exc:
        missing = exc.name or ""
        # Retry from the current directory only when the target's own module
        # (or its top package) is what was not found, never when the module
        # was found but one of its own imports is missing; and only where
        # `python -m` would have searched the current directory, but the
        # console script and pytest do not.
        if not (name == missing or name.startswith(missing + ".")) or _cwd_on_path():
            raise TargetError(target, f"cannot import {name!r}: {exc}") from exc
    sys.path.insert(0, os.getcwd())
    importlib.invalidate_caches()
    try:
        return _import(target, name)
    except ModuleNotFoundError as exc:
        raise TargetError(
            target,
            f"cannot import {name!r}: {exc} (searched sys.path and the "
            f"current directory {os.getcwd()})",
        ) from exc


def _import_file(target: str, where: str) -> ModuleType:
    path = Path(where).expanduser()
    if not path.is_file():
        raise TargetError(target, f"no file {where!r}")
    if path.suffix != ".py":
        raise TargetError(target, f"{where!r} is not a .py file")
    path = path.resolve()
    name = path.stem
    if not name.isidentifier():
        raise TargetError(
            target, f"{path.name!r} cannot be imported: {name!r} is not a module name"
        )
    loaded = sys.modules.get(name)
    if loaded is None:
        folder = str(path.parent)
        # As `python path/to/file.py` does: its folder first, so the file's
        # own imports of its siblings work, and it is importable by name (a
        # process pool's child unpickles its classes by reference).
        if folder not in sys.path:
            sys.path.insert(0, folder)
        importlib.invalidate_caches()
        try:
            loaded = _import(target, name)
        except ModuleNotFoundError as exc:
            raise TargetError(target, f"importing {where!r}: {exc}") from exc
    origin = getattr(loaded, "__file__", None)
    if origin is None or Path(origin).resolve() != path:
        raise TargetError(
            target,
            f"{where!r} would be imported as {name!r}, but that name is already "
            f"the module {origin or loaded!r}; rename the file",
        )
    return loaded


def _import(target: str, name: str) -> ModuleType:
    """Import ``name``; an error other than a missing module becomes a `TargetError`."""
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError:
        raise
    except SystemExit as exc:
        # A script's main() run at import (no __name__ guard): the module
        # asked the process to end, which is not a backend to test.
        raise TargetError(
            target,
            f"importing {name!r} called sys.exit({exc.code!r}); a module to "
            "test must not end the program when imported (guard its main() "
            'with `if __name__ == "__main__":`)',
        ) from exc
    except Exception as exc:
        raise TargetError(
            target, f"importing {name!r} raised {type(exc).__name__}: {exc}"
        ) from exc


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
