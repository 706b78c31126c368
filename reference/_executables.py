"""Executable tasks, as plain functions usable from sync and async code alike.

The local backend runs executables with asyncio subprocesses; other backends
(the Dask one runs them on remote workers, in plain threads) reuse the same
rules, so the rules live here, free of any event loop:

- `parse_options(task)` reads ``task_backend_specific_kwargs`` into an
  `ExecOptions` (``shell`` defaults to ``True``, as in radical.asyncflow 0.6),
  raising `ValueError` for an option of the wrong type.
- `build_command(task, options)` gives the shell string (executable and
  arguments joined by spaces) or the argv list.
- `capture_paths(work_dir, uid)` gives ``<work_dir>/<uid>.stdout|.stderr``;
  `open_capture_files` creates them for a child to write into.
- `spawn_error(exc, task, options)` turns the `OSError` of a failed spawn into
  an exception that names the missing executable or directory.
- `exit_exception(task, options, exit_code, stderr)` is the exception stored
  on a task whose child exited non-zero (``None`` except for a shell's 127,
  "command not found"); `timeout_error` the one for a task killed at its
  timeout.
- `signal_group`, `group_alive` and `kill_group` send signals to a child's
  whole process group (children are started with ``start_new_session=True``,
  so the group id is the child's pid); `kill_group` is the blocking TERM,
  grace, KILL sequence.
- `run_executable(task, work_dir, kill_grace, spawn=, preexec_fn=)` runs one
  executable task to completion synchronously with `subprocess` and writes
  its results into the task dict, returning whether it is DONE. The Dask
  worker runs executables with it: ``spawn`` wraps the start of the child so
  a caller can make it atomic with its own bookkeeping (refuse a cancelled
  task, register the child so it can be killed), ``preexec_fn`` runs in the
  child before it executes.
- `decode` turns captured bytes into text without ever raising.
"""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import IO, Any, TypeAlias

from spec import TaskTimeoutError

__all__ = [
    "ExecOptions",
    "Spawner",
    "build_command",
    "capture_paths",
    "decode",
    "exit_exception",
    "group_alive",
    "kill_group",
    "open_capture_files",
    "parse_options",
    "run_executable",
    "signal_group",
    "spawn_error",
    "timeout_error",
]

_SHELL_NOT_FOUND = 127  # what POSIX shells exit with for "command not found"


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
    if cwd is not None and not isinstance(cwd, (str, os.PathLike)):
        raise ValueError(f"'cwd' must be a path, got {type(cwd).__name__}")
    if env is not None:
        if not isinstance(env, Mapping):
            raise ValueError(f"'env' must be a dict, got {type(env).__name__}")
        env = {str(k): str(v) for k, v in env.items()}
    if timeout is not None:
        if isinstance(timeout, bool) or not isinstance(timeout, (int, float)):
            raise ValueError(f"'timeout' must be seconds, got {timeout!r}")
        if timeout <= 0:
            raise ValueError(f"'timeout' must be positive, got {timeout!r}")
        timeout = float(timeout)
    return ExecOptions(
        shell=bool(shell),
        cwd=os.fspath(cwd) if cwd is not None else None,
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
    return " ".join(argv) if options.shell else argv


def capture_paths(work_dir: str, uid: str) -> tuple[str, str]:
    """Return the ``(stdout, stderr)`` capture file paths of a task.

    Args:
        work_dir: The backend's ``_work_dir``.
        uid: The task's uid.

    Returns:
        ``<work_dir>/<uid>.stdout`` and ``<work_dir>/<uid>.stderr``.
    """
    base = os.path.join(work_dir, uid)
    return base + ".stdout", base + ".stderr"


def open_capture_files(work_dir: str, uid: str) -> tuple[IO[bytes], IO[bytes]]:
    """Create (truncate) a task's capture files and open them for the child.

    The caller passes them as the child's stdout/stderr and closes them once
    the child is started. ``work_dir`` is created if missing.

    Args:
        work_dir: The backend's ``_work_dir``.
        uid: The task's uid.

    Returns:
        The open ``(stdout, stderr)`` binary files.
    """
    os.makedirs(work_dir, exist_ok=True)
    out_path, err_path = capture_paths(work_dir, uid)
    out = open(out_path, "wb")  # noqa: SIM115 - handed to the child, closed by caller
    try:
        err = open(err_path, "wb")  # noqa: SIM115
    except BaseException:
        out.close()
        raise
    return out, err


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


def signal_group(pgid: int, sig: int) -> bool:
    """Send ``sig`` to a process group.

    Args:
        pgid: The group id (the pid of a child started in a new session).
        sig: A signal number, e.g. ``signal.SIGTERM``.

    Returns:
        Whether the group still existed.
    """
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        return False
    except PermissionError:
        # Only zombies left on some systems (macOS); nothing to signal.
        return False
    return True


def group_alive(pgid: int) -> bool:
    """Tell whether any process of the group still exists (zombies count)."""
    return signal_group(pgid, 0)


def kill_group(
    pgid: int,
    grace: float,
    *,
    reap: Callable[[], object] | None = None,
    poll: float = 0.02,
) -> None:
    """Terminate a process group: TERM, then KILL after ``grace`` seconds. Blocks.

    Args:
        pgid: The group id.
        grace: Seconds to wait after SIGTERM before SIGKILL.
        reap: Optional zero-argument callable that reaps the group leader if
            it has exited (e.g. ``popen.poll``): an unreaped leader is a
            zombie that keeps the group "alive" for the whole grace period.
        poll: Seconds between checks.
    """
    if not signal_group(pgid, signal.SIGTERM):
        return
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        if reap is not None:
            reap()
        if not group_alive(pgid):
            return
        time.sleep(poll)
    signal_group(pgid, signal.SIGKILL)


Spawner: TypeAlias = Callable[
    [Callable[[], subprocess.Popen[bytes]]], subprocess.Popen[bytes]
]
"""A hook around the start of a child: called with ``start``, returns its result.

``start`` takes no arguments, starts the child and returns its ``Popen``
(raising `OSError` when it cannot). The hook must call it at most once and
return what it returned, or raise to leave the child unstarted.
"""


def _start(start: Callable[[], subprocess.Popen[bytes]]) -> subprocess.Popen[bytes]:
    return start()


def run_executable(
    task: dict[str, Any],
    work_dir: str,
    kill_grace: float = 2.0,
    *,
    spawn: Spawner = _start,
    preexec_fn: Callable[[], object] | None = None,
) -> bool:
    """Run one executable task to completion, synchronously, and record results.

    Writes ``stdout``, ``stderr``, ``exit_code`` and ``exception`` into
    ``task`` following the contract (RS-4..RS-8); ``exit_code`` stays
    ``None`` when the child never started (bad options, capture files that
    cannot be created, a failed spawn). At its timeout the child's whole
    process group gets SIGTERM, then SIGKILL after ``kill_grace`` seconds.
    Meant for worker threads and remote workers; never call it on an event
    loop.

    Args:
        task: The task dict (``executable``, ``arguments``, ``capture_stdio``,
            ``task_backend_specific_kwargs``).
        work_dir: Directory for ``capture_stdio`` files.
        kill_grace: Seconds between SIGTERM and SIGKILL at a timeout.
        spawn: A `Spawner` wrapping the start of the child, so a caller can
            make the start atomic with its own bookkeeping (the Dask worker
            refuses a cancelled task under its lock, and registers the child
            there so that a cancel can kill it). By default it just starts it.
        preexec_fn: Called in the child between fork and exec (as
            ``subprocess.Popen``'s argument of that name). The parent may
            run threads, so it must not take locks or import anything.

    Returns:
        Whether the task is DONE (exit code 0); otherwise it is FAILED and
        ``task["exception"]`` may say why.

    Raises:
        Exception: Whatever ``spawn`` raises other than an `OSError`; the
            task is then left untouched and no child runs.
    """
    try:
        options = parse_options(task)
        command = build_command(task, options)
    except ValueError as exc:
        task.update(exception=exc, stderr=str(exc), stdout=None, exit_code=None)
        return False
    out: Any = subprocess.PIPE
    err: Any = subprocess.PIPE
    if options.capture_stdio:
        try:
            out, err = open_capture_files(work_dir, task["uid"])
        except OSError as exc:
            task.update(exception=exc, stderr=str(exc), stdout=None, exit_code=None)
            return False

    def start() -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            command,
            shell=options.shell,
            cwd=options.cwd,
            env=options.env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=err,
            start_new_session=True,
            preexec_fn=preexec_fn,
        )

    try:
        try:
            proc = spawn(start)
        except OSError as exc:
            error = spawn_error(exc, task, options)
            task.update(exception=error, stderr=str(error), stdout=None, exit_code=None)
            return False
    finally:
        if options.capture_stdio:
            out.close()
            err.close()
    timed_out = False
    try:
        raw_out, raw_err = proc.communicate(timeout=options.timeout)
    except subprocess.TimeoutExpired:
        timed_out = True
        kill_group(proc.pid, kill_grace, reap=proc.poll)
        raw_out, raw_err = proc.communicate()
    finally:
        if proc.poll() is None:  # interrupted: leave nothing behind
            kill_group(proc.pid, 0.0)
            proc.wait()
    exit_code = proc.returncode
    if options.capture_stdio:
        stdout, stderr = capture_paths(work_dir, task["uid"])
    else:
        stdout, stderr = decode(raw_out), decode(raw_err)
    task.update(stdout=stdout, stderr=stderr, exit_code=exit_code)
    if timed_out:
        task["exception"] = timeout_error(task, options.timeout or 0.0)
        return False
    task["exception"] = exit_exception(task, options, exit_code, stderr)
    return exit_code == 0
