"""What an exited, failed or timed-out child leaves in its task."""

from __future__ import annotations

import errno
import os
from collections.abc import Mapping
from typing import Any

from reference._executables.options import ExecOptions
from spec import TaskTimeoutError

_SHELL_NOT_FOUND = 127  # what POSIX shells exit with for "command not found"


def spawn_error(
    exc: OSError, task: Mapping[str, Any], options: ExecOptions
) -> Exception:
    """Explain a failed spawn in terms of the task.

    Args:
        exc: What ``Popen``/``create_subprocess_*`` raised.
        task: The task dict.
        options: Its options.

    Returns:
        A `FileNotFoundError` / `PermissionError` (same type as ``exc`` where
        possible) whose message names the executable or the ``cwd`` at fault;
        its ``__cause__`` is ``exc``.
    """
    executable = task.get("executable")
    missing_cwd = options.cwd is not None and not os.path.isdir(options.cwd)
    if missing_cwd:
        message = f"working directory {options.cwd!r} of task {task.get('uid')!r}"
        message += " does not exist" if exc.errno == errno.ENOENT else f": {exc}"
    elif exc.errno == errno.ENOENT:
        message = f"executable {executable!r} not found (task {task.get('uid')!r})"
    elif exc.errno == errno.EACCES:
        message = f"executable {executable!r} is not executable (permission denied)"
    else:
        message = f"could not start executable {executable!r}: {exc}"
    error: Exception
    try:
        error = type(exc)(exc.errno, message)
    except Exception:  # an OSError subclass with another signature
        error = OSError(exc.errno, message)
    error.__cause__ = exc
    return error


def record_exit(
    task: dict[str, Any],
    options: ExecOptions,
    exit_code: int,
    stdout: str,
    stderr: str,
    *,
    timed_out: bool,
) -> bool:
    """Write an exited child's results into ``task``; say whether it is DONE.

    The one place an executable's exit is recorded, for the local backend
    and the synchronous runner alike: ``stdout``, ``stderr`` and
    ``exit_code`` always; ``exception`` only when there is one (a timeout,
    or a shell's "command not found").

    Returns:
        ``True`` for DONE (exit status 0, not timed out), else ``False``.
    """
    task.update(stdout=stdout, stderr=stderr, exit_code=exit_code)
    if timed_out:
        task["exception"] = timeout_error(task, options.timeout or 0.0)
        return False
    error = exit_exception(task, options, exit_code, stderr)
    if error is not None:
        task["exception"] = error
    return exit_code == 0


def exit_exception(
    task: Mapping[str, Any], options: ExecOptions, exit_code: int, stderr: str
) -> Exception | None:
    """Return the exception to store for a child that exited ``exit_code``.

    Args:
        task: The task dict.
        options: Its options.
        exit_code: The child's exit status (negative: killed by a signal).
        stderr: The child's error output (text, or the capture file path).

    Returns:
        ``None`` for ordinary exits: the task keeps ``exit_code`` and
        ``stderr``, which the engine turns into its error, as radical.asyncflow
        0.6 did. A `FileNotFoundError` naming the executable when a shell
        exits 127 ("command not found").
    """
    if options.shell and exit_code == _SHELL_NOT_FOUND:
        detail = stderr.strip() if not options.capture_stdio else f"see {stderr}"
        return FileNotFoundError(
            errno.ENOENT,
            f"executable {task.get('executable')!r} not found: the shell exited "
            f"127 ({detail})",
        )
    return None


def timeout_error(task: Mapping[str, Any], timeout: float) -> TaskTimeoutError:
    """Return the error for a task whose child was killed at its timeout.

    Args:
        task: The task dict.
        timeout: The timeout, in seconds.

    Returns:
        A `spec.TaskTimeoutError` naming the task and the timeout.
    """
    return TaskTimeoutError(
        f"task {task.get('uid')!r} ran past its timeout of {timeout:g} s; "
        f"its process group was killed"
    )


def decode(data: bytes | None) -> str:
    """Decode captured output as UTF-8, replacing undecodable bytes."""
    return data.decode("utf-8", errors="replace") if data else ""
