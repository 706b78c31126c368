"""Signals to a child's process group and its marked descendants; killing."""

from __future__ import annotations

import contextlib
import itertools
import os
import secrets
import signal
import sys
import time
from collections.abc import Callable, Collection, Iterable, Mapping


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


DRAIN = 0.5
"""Seconds output is still read once a task's leader is dead and its processes
killed: whatever holds the pipes after that (a descendant that could not be
tracked) no longer delays the task's report."""
