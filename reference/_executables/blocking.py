"""`run_executable`: one executable task run to completion, synchronously.

The Dask worker runs executables with it; the local backend runs them on
its event loop instead (`reference.local.executables`).
"""

from __future__ import annotations

import os
import selectors
import signal
import subprocess
import time
from collections.abc import Callable
from typing import Any, TypeAlias

from reference._executables.capture import capture_paths, open_capture_files
from reference._executables.options import build_command, parse_options
from reference._executables.outcome import decode, record_exit, spawn_error
from reference._executables.signals import (
    DRAIN,
    _pidfds_work,
    kill_group,
    marked_env,
    new_mark,
    signal_group,
    signal_marked,
)

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
