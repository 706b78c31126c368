"""Which child processes are alive: psutil when installed, else ``/proc``.

psutil is optional (it is not a runtime dependency). Without it, Linux's
``/proc`` gives the same answers; elsewhere the checks report themselves
unavailable rather than guess. A process is identified by its pid *and* its
start time, so a recycled pid is never mistaken for the original.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from collections.abc import Iterable, Mapping

__all__ = [
    "ProcessInfo",
    "alive",
    "available",
    "descendants",
    "describe",
    "kill",
    "snapshot",
    "wait_gone",
]

try:  # optional: a better view of the process tree where it is installed
    import psutil as _psutil
except ImportError:  # pragma: no cover - depends on the environment
    _psutil = None

ProcessInfo = tuple[float, str]
"""(start time, command line) of a process."""

# Helper processes multiprocessing starts once per interpreter and keeps on
# purpose; they belong to the interpreter, not to the backend under test.
_INTERPRETER_HELPERS = (
    "multiprocessing.forkserver",
    "multiprocessing.resource_tracker",
)


def available() -> bool:
    """Tell whether child processes can be inspected on this platform."""
    return _psutil is not None or os.path.isdir("/proc/self")


def _proc_stat(pid: int) -> tuple[int, str, float] | None:
    """Return (ppid, state, start time) from ``/proc/<pid>/stat``."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            raw = fh.read().decode(errors="replace")
    except OSError:
        return None
    # The command name is parenthesised and may contain spaces: split after it.
    fields = raw[raw.rfind(")") + 2 :].split()
    return int(fields[1]), fields[0], float(fields[19])


def _proc_cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            return fh.read().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return ""


def descendants(root: int | None = None) -> dict[int, ProcessInfo]:
    """Return the living descendants of ``root`` (default: this process).

    Args:
        root: A pid; defaults to ``os.getpid()``.

    Returns:
        pid -> (start time, command line), without zombies and without the
        interpreter-wide multiprocessing helpers. Empty if unavailable.
    """
    root = os.getpid() if root is None else root
    found: dict[int, ProcessInfo] = {}
    if _psutil is not None:
        try:
            children = _psutil.Process(root).children(recursive=True)
        except _psutil.Error:
            return {}
        for child in children:
            try:
                if child.status() == _psutil.STATUS_ZOMBIE:
                    continue
                found[child.pid] = (child.create_time(), " ".join(child.cmdline()))
            except _psutil.Error:
                continue
    elif os.path.isdir("/proc/self"):
        parents: dict[int, list[int]] = {}
        stats: dict[int, tuple[int, str, float]] = {}
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                stat = _proc_stat(int(entry))
                if stat is not None:
                    stats[int(entry)] = stat
                    parents.setdefault(stat[0], []).append(int(entry))
        todo = list(parents.get(root, ()))
        while todo:
            pid = todo.pop()
            todo.extend(parents.get(pid, ()))
            ppid_state_start = stats[pid]
            if ppid_state_start[1] != "Z":
                found[pid] = (ppid_state_start[2], _proc_cmdline(pid))
    return {
        pid: info
        for pid, info in found.items()
        if not any(helper in info[1] for helper in _INTERPRETER_HELPERS)
    }


def _is_alive(pid: int, started: float) -> bool:
    if _psutil is not None:
        try:
            proc = _psutil.Process(pid)
            return bool(
                abs(proc.create_time() - started) < 0.01
                and proc.status() != _psutil.STATUS_ZOMBIE
            )
        except _psutil.Error:
            return False
    stat = _proc_stat(pid)
    return stat is not None and stat[1] != "Z" and stat[2] == started


def snapshot(pids: Iterable[int]) -> dict[int, ProcessInfo]:
    """Return the identity of those ``pids`` running now, to check on later."""
    found: dict[int, ProcessInfo] = {}
    for pid in pids:
        if _psutil is not None:
            try:
                proc = _psutil.Process(pid)
                if proc.status() != _psutil.STATUS_ZOMBIE:
                    found[pid] = (proc.create_time(), " ".join(proc.cmdline()))
            except _psutil.Error:
                continue
        else:
            stat = _proc_stat(pid)
            if stat is not None and stat[1] != "Z":
                found[pid] = (stat[2], _proc_cmdline(pid))
    return found


def alive(processes: Mapping[int, ProcessInfo]) -> dict[int, ProcessInfo]:
    """Return those of ``processes`` still running (same pid and start time)."""
    return {pid: info for pid, info in processes.items() if _is_alive(pid, info[0])}


async def wait_gone(
    processes: Mapping[int, ProcessInfo], grace: float
) -> dict[int, ProcessInfo]:
    """Wait up to ``grace`` seconds for ``processes`` to exit; return the survivors."""
    end = time.monotonic() + grace
    left = alive(processes)
    while left and time.monotonic() < end:
        # Exits of processes we did not start give no event to wait on: poll,
        # with a bounded budget.
        await asyncio.sleep(0.02)
        left = alive(left)
    return left


def describe(processes: Mapping[int, ProcessInfo], width: int = 80) -> str:
    """Name ``processes`` for a failure message: pid and (cut) command line."""
    return "; ".join(f"pid {pid}: {info[1][:width]}" for pid, info in processes.items())


def kill(processes: Mapping[int, ProcessInfo], wait: float = 2.0) -> None:
    """SIGKILL those of ``processes`` still running, so the suite leaves none.

    Waits up to ``wait`` seconds for them to be gone (a signal is delivered
    asynchronously), so a caller checking right after sees them dead.
    """
    left = alive(processes)
    for pid in left:
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)
    end = time.monotonic() + wait
    while left and time.monotonic() < end:
        time.sleep(0.01)
        left = alive(left)
