"""Executable tasks, as plain functions usable from sync and async code alike.

The local backend runs executables with asyncio subprocesses; other backends
(the Dask one runs them on remote workers, in plain threads) reuse the same
rules, so the rules live here, free of any event loop:

- `parse_options(task)` reads ``task_backend_specific_kwargs`` into an
  `ExecOptions` (``shell`` defaults to ``True``, as in radical.asyncflow 0.6),
  raising `ValueError` for an option of the wrong type or value (``timeout``
  through `reference._base.duration`; ``env`` names and values, ``cwd``).
- `build_command(task, options)` gives the shell string (executable and
  arguments joined by spaces) or the argv list; NUL bytes are refused.
- `capture_paths(work_dir, uid)` gives ``<work_dir>/<name>.stdout|.stderr``,
  ``name`` being the uid, encoded by `capture_name` when it could name a
  file outside ``work_dir`` (RS-11); `open_capture` creates them (empty)
  for a child to write into (`open_capture_fds` as raw descriptors).
- `spawn_error(exc, task, options)` turns the `OSError` of a failed spawn into
  an exception that names the missing executable or directory.
- `record_exit(task, options, exit_code, stdout, stderr, timed_out=)` writes
  an exited child's results into the task (the one place, for the local
  backend and the sync runner) and says whether it is DONE.
- `exit_exception(task, options, exit_code, stderr)` is the exception stored
  on a task whose child exited non-zero (``None`` except for a shell's 127,
  "command not found"); `timeout_error` the one for a task killed at its
  timeout.
- `signal_group`, `group_alive` and `kill_group` send signals to a child's
  whole process group (children are started with ``start_new_session=True``,
  so the group id is the child's pid); `kill_group` is the blocking TERM,
  grace, KILL sequence.
- `new_mark`, `marked_env` and `signal_marked` reach descendants that left
  the group: each task's child gets a mark in its environment
  (`MARK_VARIABLE`), which its descendants inherit, and `signal_marked`
  finds the processes carrying it in ``/proc`` (best effort: Linux only,
  and a process that replaced its environment is not found).
- `run_executable(task, work_dir, kill_grace, spawn=, preexec_fn=)` runs one
  executable task to completion synchronously with `subprocess` and writes
  its results into the task dict, returning whether it is DONE; a timeout
  is reported within the grace plus `DRAIN` whatever holds the pipes. The Dask
  worker runs executables with it: ``spawn`` wraps the start of the child so
  a caller can make it atomic with its own bookkeeping (refuse a cancelled
  task, register the child so it can be killed), ``preexec_fn`` runs in the
  child before it executes.
- `decode` turns captured bytes into text without ever raising.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import itertools
import os
import secrets
import selectors
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass
from typing import IO, Any, TypeAlias

from reference._base import duration
from spec import TaskTimeoutError

__all__ = [
    "DRAIN",
    "MARK_VARIABLE",
    "ExecOptions",
    "Spawner",
    "build_command",
    "capture_name",
    "capture_paths",
    "decode",
    "exit_exception",
    "group_alive",
    "kill_group",
    "marked_env",
    "new_mark",
    "open_capture",
    "open_capture_fds",
    "open_capture_files",
    "parse_options",
    "pidfds_work",
    "proc_stat",
    "record_exit",
    "run_executable",
    "signal_group",
    "signal_marked",
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
_NAME_MAX = 255
_SUFFIX_LEN = len(".stdout")
# Characters a uid may hold and still name its capture files as it is: "/"
# and NUL cannot be in a file name, and "%" is what the encoding uses.
_ENCODED = {"/": "%2F", "\0": "%00", "%": "%25"}
_KEPT_PREFIX = 64  # characters of an over-long name kept before its hash


def capture_name(uid: str) -> str:
    """Return the file name (without suffix) under which a uid's output is kept.

    An ordinary uid is its own name: ``task.1`` gives ``task.1.stdout``. A
    uid that cannot be one file name inside the work dir is encoded, so
    that no uid can name a file outside it (RS-11) and two uids never share
    a name:

    - ``/`` becomes ``%2F``, NUL ``%00`` and ``%`` itself ``%25`` (so
      ``../x`` is ``..%2Fx`` and ``/abs/x`` is ``%2Fabs%2Fx``); characters
      the file system encoding cannot hold become ``%uXXXX``. Only a uid
      needing one of these is touched, and every encoded name holds a ``%``
      that no name left as is has, so the mapping stays one-to-one and can
      be undone.
    - a name whose ``.stdout`` file would exceed 255 bytes is cut to its
      first 64 characters followed by ``%%`` and the SHA-256 of the uid.

    ``.`` and ``..`` need nothing: the suffix makes them plain names
    (``...stdout``) inside the work dir.

    Args:
        uid: The task's uid.

    Returns:
        A single path component.
    """
    if len(uid) <= 60 and uid.isascii() and not any(c in uid for c in _ENCODED):
        return uid  # the common case: nothing to encode, surely short enough
    name = "".join(_ENCODED.get(c, c) for c in uid)
    try:
        size = len(os.fsencode(name))
    except UnicodeEncodeError:
        name = "".join(_encodable(c) for c in name)
        size = len(os.fsencode(name))
    if size + _SUFFIX_LEN > _NAME_MAX:
        digest = hashlib.sha256(uid.encode("utf-8", "surrogatepass")).hexdigest()
        head = name[:_KEPT_PREFIX]
        while len(os.fsencode(head)) > _KEPT_PREFIX:  # multi-byte characters
            head = head[:-1]
        cut = head.rfind("%", len(head) - 5)  # never end inside a %XX / %uXXXX
        if cut != -1:
            head = head[:cut]
        name = f"{head}%%{digest}"
    return name


def _encodable(char: str) -> str:
    try:
        os.fsencode(char)
    except UnicodeEncodeError:
        return f"%u{ord(char):04X}"
    return char


def capture_paths(work_dir: str, uid: str) -> tuple[str, str]:
    """Return the ``(stdout, stderr)`` capture file paths of a task.

    Args:
        work_dir: The backend's ``_work_dir``.
        uid: The task's uid.

    Returns:
        ``<work_dir>/<name>.stdout`` and ``<work_dir>/<name>.stderr``, with
        ``name`` from `capture_name`: the uid itself unless it has to be
        encoded to stay one file name inside ``work_dir``.
    """
    base = os.path.join(work_dir, capture_name(uid))
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
    return open_capture(capture_paths(work_dir, uid))


def open_capture(paths: tuple[str, str]) -> tuple[IO[bytes], IO[bytes]]:
    """Create (truncate) the ``(stdout, stderr)`` files at ``paths``; open them.

    Their directory is created if missing. Truncated, never appended to: a
    resubmitted uid starts with empty files.

    Args:
        paths: From `capture_paths`.

    Returns:
        The open ``(stdout, stderr)`` binary files.
    """
    out_path, err_path = paths
    os.makedirs(os.path.dirname(out_path) or ".", exist_ok=True)
    out = open(out_path, "wb")  # noqa: SIM115 - handed to the child, closed by caller
    try:
        err = open(err_path, "wb")  # noqa: SIM115
    except BaseException:
        out.close()
        raise
    return out, err


_CAPTURE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_CLOEXEC", 0)


def open_capture_fds(paths: tuple[str, str]) -> tuple[int, int]:
    """`open_capture` as raw descriptors, for a spawn that takes them.

    The same files, flags and mode as ``open(path, "wb")`` (truncated, not
    inheritable), without building file objects; the directory is created
    only when the first open finds it missing. The caller closes both
    descriptors once the child is started.

    Args:
        paths: From `capture_paths`.

    Returns:
        The open ``(stdout, stderr)`` descriptors.
    """
    out_path, err_path = paths
    try:
        out = os.open(out_path, _CAPTURE_FLAGS, 0o666)
    except FileNotFoundError:
        os.makedirs(os.path.dirname(out_path) or ".", exist_ok=True)
        out = os.open(out_path, _CAPTURE_FLAGS, 0o666)
    try:
        err = os.open(err_path, _CAPTURE_FLAGS, 0o666)
    except BaseException:
        os.close(out)
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


MARK_VARIABLE = "ASYNCFLOW_TASK_MARK"
"""Environment variable that tags every process a task starts (escaped or not).

Its value is a comma-separated chain of marks: a task's child gets the
chain of the process that started it (if that process is itself a task
of some backend) with the task's own mark appended, so an outer backend
still finds the processes of an inner one.
"""

_MARK_BYTES = MARK_VARIABLE.encode() + b"="
_MARK_SALT = secrets.token_hex(4)
_mark_counter = itertools.count()


def new_mark(scope: str | None = None) -> str:
    """Return a mark no other task (of any process) has.

    Args:
        scope: A mark of the caller's own (e.g. one per backend); the new
            mark is then ``<scope>.<n>``, so ``signal_marked(prefixes=[scope
            + "."])`` reaches every task of that scope.

    Returns:
        The mark: letters, digits, ``-`` and ``.`` only.
    """
    if scope is not None:
        return f"{scope}.{next(_mark_counter)}"
    # The pid keeps marks apart in forked processes, which share the salt.
    return f"{_MARK_SALT}{os.getpid():x}-{next(_mark_counter)}"


def marked_env(
    env: Mapping[str, str] | None, mark: str
) -> dict[str, str] | dict[bytes, bytes]:
    """Return a child's environment: ``env`` (or ours) plus the task's mark.

    Args:
        env: The task's ``env`` option (the whole environment), or ``None``
            to inherit this process's environment.
        mark: From `new_mark`.

    Returns:
        A new dict (of bytes, when it copies this process's environment);
        ``env`` is not changed.
    """
    # The encoded environment itself, where there is one: reading and
    # copying it skips decoding every entry (about 40 us for a
    # dict(os.environ)) on each spawn.
    raw = getattr(os.environ, "_data", None) if os.name == "posix" else None
    if isinstance(raw, dict):
        outer_bytes = raw.get(_MARK_BYTES[:-1])
        outer = os.fsdecode(outer_bytes) if outer_bytes else None
    else:
        raw = None
        outer = os.environ.get(MARK_VARIABLE)
    chain = f"{outer},{mark}" if outer else mark
    if env is None:
        if raw is not None:
            inherited: dict[bytes, bytes] = dict(raw)
            inherited[_MARK_BYTES[:-1]] = os.fsencode(chain)
            return inherited
        env = os.environ
    child = dict(env)
    child[MARK_VARIABLE] = chain
    return child


def _has_mark(pid: int, marks: frozenset[bytes], prefixes: tuple[bytes, ...]) -> bool:
    try:
        with open(f"/proc/{pid}/environ", "rb") as file:
            data = file.read()
    except OSError:  # gone, not ours to read, or no /proc
        return False
    if _MARK_BYTES not in data:
        return False
    for entry in data.split(b"\0"):
        if entry.startswith(_MARK_BYTES):
            for mark in entry[len(_MARK_BYTES) :].split(b","):
                if mark in marks or mark.startswith(prefixes):
                    return True
    return False


def signal_marked(
    sig: int,
    marks: Iterable[str] = (),
    prefixes: Iterable[str] = (),
    *,
    skip_groups: Collection[int] = (),
) -> int:
    """Send ``sig`` to every process carrying one of ``marks`` (or prefixes).

    Finds them by their environment in ``/proc`` (Linux), so it reaches a
    task's descendants that left its process group (``setsid``) and were
    re-parented away from it. It cannot find a process that replaced its
    environment when it executed (``env -i``), and finds nothing where
    there is no ``/proc``: tracking escaped descendants is best effort.
    Where pidfds work, each process is signalled through one opened before
    its mark is checked, so a pid reused in between is never hit.

    Args:
        sig: The signal.
        marks: Marks from `new_mark`; a process matches one exactly.
        prefixes: A process matches a mark starting with one of these.
        skip_groups: Process groups already signalled: their members are
            left alone, so none gets the signal twice (a second SIGTERM
            means "force" to some programs).

    Returns:
        How many processes were signalled.
    """
    wanted = frozenset(m.encode() for m in marks)
    starts = tuple(p.encode() for p in prefixes)
    if not wanted and not starts:
        return 0
    try:
        names = os.listdir("/proc")
    except OSError:
        return 0
    me = os.getpid()
    pidfds = _pidfds_work()
    sent = 0
    for name in names:
        if not name.isdigit() or int(name) == me:
            continue
        pid = int(name)
        if not _has_mark(pid, wanted, starts) or _in_groups(pid, skip_groups):
            continue
        if not pidfds:
            with contextlib.suppress(OSError):
                os.kill(pid, sig)
                sent += 1
            continue
        try:
            pidfd = os.pidfd_open(pid)
        except OSError:
            continue  # gone already
        try:
            if _has_mark(pid, wanted, starts):  # still the same process
                signal.pidfd_send_signal(pidfd, sig)
                sent += 1
        except OSError:
            pass
        finally:
            os.close(pidfd)
    return sent


def _in_groups(pid: int, groups: Collection[int]) -> bool:
    if not groups:
        return False
    try:
        return os.getpgid(pid) in groups
    except OSError:
        return False


_pidfd_state: list[bool] = []


def pidfds_work() -> bool:
    """Probe once whether pidfds work here (Linux >= 5.3, not filtered out).

    The one probe of the package: `reference._children` watches children
    through pidfds when it is true, and signals go through them when
    `signal.pidfd_send_signal` exists too.
    """
    if not _pidfd_state:
        works = False
        if sys.platform == "linux" and hasattr(os, "pidfd_open"):
            try:
                os.close(os.pidfd_open(os.getpid()))
                works = True
            except OSError:
                pass
        _pidfd_state.append(works)
    return _pidfd_state[0]


def _pidfds_work() -> bool:
    """Whether signals can go through pidfds (no pid reuse between look and kill)."""
    return pidfds_work() and hasattr(signal, "pidfd_send_signal")


def proc_stat(pid: int | str) -> list[bytes] | None:
    """The fields of ``/proc/<pid>/stat`` after the command name; ``None`` if unread.

    The first is the state (``b"Z"`` for a zombie), the third the process
    group. ``None`` when the process is gone or there is no ``/proc``.
    """
    try:
        with open(f"/proc/{pid}/stat", "rb") as file:
            return file.read().rpartition(b")")[2].split()
    except OSError:
        return None


def _running(pgid: int, marks: Iterable[str]) -> bool:
    """Tell whether a process of the group, or one carrying a mark, still runs.

    Unlike `group_alive`, zombies do not count: a killed grandchild is
    re-parented to PID 1, which may take its time to reap it, and waiting
    for that would cost the whole grace period.
    """
    try:
        names = os.listdir("/proc")
    except OSError:  # no /proc: zombies count after all
        return group_alive(pgid) or signal_marked(0, marks) > 0
    wanted = frozenset(m.encode() for m in marks)
    for name in names:
        if not name.isdigit():
            continue
        fields = proc_stat(name)
        if fields is None or fields[0] in (b"Z", b"X"):
            continue
        if int(fields[2]) == pgid or (wanted and _has_mark(int(name), wanted, ())):
            return True
    return False


def kill_group(
    pgid: int,
    grace: float,
    *,
    reap: Callable[[], object] | None = None,
    poll: float = 0.02,
    mark: str | None = None,
) -> None:
    """Terminate a process group: TERM, then KILL after ``grace`` seconds. Blocks.

    Returns as soon as the group (and every process carrying ``mark``) is
    gone, so a child that exits on TERM costs no grace period.

    Args:
        pgid: The group id.
        grace: Seconds to wait after SIGTERM before SIGKILL.
        reap: Optional zero-argument callable that reaps the group leader if
            it has exited (e.g. ``popen.poll``): an unreaped leader is a
            zombie that keeps the group "alive" for the whole grace period.
        poll: Seconds between checks.
        mark: The task's mark (`new_mark`): its processes that left the
            group get the same signals (`signal_marked`).
    """
    marks = (mark,) if mark is not None else ()
    in_group = signal_group(pgid, signal.SIGTERM)
    escaped = signal_marked(signal.SIGTERM, marks, skip_groups=(pgid,))
    if not in_group and not escaped:
        return
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        if reap is not None:
            reap()
        if not _running(pgid, marks):
            return
        time.sleep(poll)
    signal_group(pgid, signal.SIGKILL)
    signal_marked(signal.SIGKILL, marks, skip_groups=(pgid,))


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


DRAIN = 0.5
"""Seconds output is still read once a task's leader is dead and its processes
killed: whatever holds the pipes after that (a descendant that could not be
tracked) no longer delays the task's report."""

# Longest single wait: selectors take milliseconds as a C int, so a timeout of
# 1e9 s in one wait would overflow.
_MAX_WAIT = 3600.0


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
    process group, and its descendants that left the group (found by their
    mark, `signal_marked`), get SIGTERM, then SIGKILL after ``kill_grace``
    seconds; output is then read for at most `DRAIN` seconds more, so a
    process that still holds the pipes cannot delay the result (CN-7). The
    same happens when the leader is killed by a signal from elsewhere (a
    canceller killing the group): the task is over. Meant for worker
    threads and remote workers; never call it on an event loop.

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
    mark = new_mark()
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
            env=marked_env(options.env, mark),
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
    try:
        raw_out, raw_err, timed_out = _wait(proc, options.timeout, kill_grace, mark)
    finally:
        if proc.poll() is None:  # interrupted: leave nothing behind
            signal_group(proc.pid, signal.SIGKILL)
            signal_marked(signal.SIGKILL, (mark,))
            proc.wait()
        for pipe in (proc.stdout, proc.stderr):
            if pipe is not None:
                pipe.close()
    exit_code = proc.returncode
    if options.capture_stdio:
        stdout, stderr = capture_paths(work_dir, task["uid"])
    else:
        stdout, stderr = decode(raw_out), decode(raw_err)
    return record_exit(task, options, exit_code, stdout, stderr, timed_out=timed_out)


def _wait(
    proc: subprocess.Popen[bytes], timeout: float | None, grace: float, mark: str
) -> tuple[bytes, bytes, bool]:
    """Read a child's pipes until it exited and they closed, or its time is up.

    Returns:
        ``(stdout, stderr, timed_out)``.
    """
    chunks: dict[int, list[bytes]] = {}
    now = time.monotonic()
    deadline = None if timeout is None else now + timeout
    drain_end: float | None = None
    timed_out = False
    pidfd = os.pidfd_open(proc.pid) if _pidfds_work() else None
    with selectors.DefaultSelector() as selector:
        for pipe in (proc.stdout, proc.stderr):
            if pipe is not None:
                chunks[pipe.fileno()] = []
                selector.register(pipe.fileno(), selectors.EVENT_READ)
        if pidfd is not None:
            selector.register(pidfd, selectors.EVENT_READ)
        try:
            while True:
                exited = proc.poll() is not None
                if exited and len(selector.get_map()) == 0:
                    break
                now = time.monotonic()
                if deadline is not None and now >= deadline and not timed_out:
                    timed_out = True
                    kill_group(proc.pid, grace, reap=proc.poll, mark=mark)
                    drain_end = time.monotonic() + DRAIN
                    continue
                if exited and drain_end is None and (proc.returncode or 0) < 0:
                    # Killed from outside (a cancel): whatever still holds the
                    # pipes is not waited for beyond the drain.
                    signal_group(proc.pid, signal.SIGKILL)
                    signal_marked(signal.SIGKILL, (mark,))
                    drain_end = now + DRAIN
                if drain_end is not None and now >= drain_end:
                    # Something still holds the pipes: look once more (a
                    # process caught mid-exec shows no environment), then go.
                    signal_marked(signal.SIGKILL, (mark,))
                    break
                wait = _MAX_WAIT
                for end in (deadline if not timed_out else None, drain_end):
                    if end is not None:
                        wait = min(wait, end - now)
                if pidfd is None and not exited:
                    wait = min(wait, 0.05)  # no pidfd: poll for the exit
                for key, _ in selector.select(max(wait, 0.0)):
                    fd = key.fd
                    if fd == pidfd:
                        selector.unregister(fd)
                        proc.wait()  # readable pidfd: it has exited
                        continue
                    try:
                        data = os.read(fd, 1 << 16)
                    except OSError:
                        data = b""
                    if data:
                        chunks[fd].append(data)
                    else:
                        selector.unregister(fd)
        finally:
            if pidfd is not None:
                os.close(pidfd)
    if proc.poll() is None:  # only after a drain: the leader got SIGKILL
        proc.wait()
    out = b"".join(chunks[proc.stdout.fileno()]) if proc.stdout else b""
    err = b"".join(chunks[proc.stderr.fileno()]) if proc.stderr else b""
    return out, err, timed_out
