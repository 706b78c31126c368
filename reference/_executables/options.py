"""Reading an executable task: its options and its command line."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from reference._base import duration


@dataclass(frozen=True)
class ExecOptions:
    """The contract's backend-specific options for one executable task.

    Attributes:
        shell: Run through ``/bin/sh`` with executable and arguments joined.
        cwd: Working directory of the child, or ``None`` for the parent's.
        env: The child's whole environment, or ``None`` to inherit.
        timeout: Seconds the child may run, or ``None`` for no limit.
        capture_stdio: Write output to files instead of returning it.
    """

    shell: bool = True
    cwd: str | None = None
    env: dict[str, str] | None = None
    timeout: float | None = None
    capture_stdio: bool = False


def _child_env(env: object) -> dict[str, str]:
    """Check the ``env`` option and return it as the child's environment.

    Names and values are converted with ``str`` (so ``{"N": 1}`` works), but
    a ``None`` value is refused rather than passed on as the text "None":
    it is almost always a variable the caller meant to unset or forgot to
    fill in. Names may not be empty or hold ``=`` or NUL, values may not
    hold NUL: the operating system cannot pass them on.
    """
    if not isinstance(env, Mapping):
        raise ValueError(f"'env' must be a dict, got {type(env).__name__}")
    child: dict[str, str] = {}
    for key, value in env.items():
        if key is None or value is None:
            raise ValueError(
                f"'env' entry {key!r}: {value!r} has a None "
                f"{'name' if key is None else 'value'}; leave the variable out "
                "instead (env replaces the whole environment)"
            )
        name, text = str(key), str(value)
        if not name or "=" in name or "\0" in name:
            raise ValueError(
                f"'env' has an invalid variable name {name!r}: it must be "
                "non-empty and hold neither '=' nor a NUL byte"
            )
        if "\0" in text:
            raise ValueError(f"'env' value of {name!r} contains a NUL byte")
        child[name] = text
    return child


def parse_options(task: Mapping[str, Any]) -> ExecOptions:
    """Read an executable task's options.

    Args:
        task: The task dict; ``task_backend_specific_kwargs`` may be missing
            or ``None``. Unknown keys in it are ignored.

    Returns:
        The options, with the contract's defaults filled in.

    Raises:
        ValueError: An option has the wrong type or value (the task should
            be reported FAILED with it).
    """
    raw = task.get("task_backend_specific_kwargs") or {}
    if not isinstance(raw, Mapping):
        raise ValueError(
            "task_backend_specific_kwargs must be a dict, got " + type(raw).__name__
        )
    shell = raw.get("shell", True)
    cwd = raw.get("cwd")
    env = raw.get("env")
    timeout = raw.get("timeout")
    if cwd is not None:
        if not isinstance(cwd, (str, os.PathLike)):
            raise ValueError(f"'cwd' must be a path, got {type(cwd).__name__}")
        cwd = os.fspath(cwd)
        if "\0" in (cwd if isinstance(cwd, str) else os.fsdecode(cwd)):
            raise ValueError(f"'cwd' contains a NUL byte: {cwd!r}")
    if env is not None:
        env = _child_env(env)
    if timeout is not None:
        try:
            timeout = duration("timeout", timeout)
        except TypeError as exc:  # one error type for every bad option
            raise ValueError(str(exc)) from exc
    return ExecOptions(
        shell=bool(shell),
        cwd=os.fsdecode(cwd) if cwd is not None else None,
        env=env,
        timeout=timeout,
        capture_stdio=bool(task.get("capture_stdio", False)),
    )


def build_command(task: Mapping[str, Any], options: ExecOptions) -> str | list[str]:
    """Build what to run.

    Args:
        task: The task dict, with ``executable`` and optional ``arguments``.
        options: From `parse_options`.

    Returns:
        With ``shell``, one string: executable and arguments joined by spaces
        (as radical.asyncflow 0.6 does; quoting is the caller's business).
        Without, the argv list.

    Raises:
        ValueError: ``executable`` is not a string or ``arguments`` not a list.
    """
    executable = task.get("executable")
    if not isinstance(executable, str) or not executable:
        raise ValueError(f"'executable' must be a non-empty str, got {executable!r}")
    arguments = task.get("arguments") or []
    if isinstance(arguments, (str, bytes)) or not isinstance(arguments, (list, tuple)):
        raise ValueError(
            f"'arguments' must be a list of str, got {type(arguments).__name__}"
        )
    argv = [executable, *(str(a) for a in arguments)]
    for position, arg in enumerate(argv):
        if "\0" in arg:
            what = "'executable'" if position == 0 else f"argument {position - 1}"
            raise ValueError(f"{what} contains a NUL byte: {arg!r}")
    return " ".join(argv) if options.shell else argv


# Longest file name most file systems take (NAME_MAX), in bytes.
