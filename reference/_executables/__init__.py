"""Executable tasks, as plain functions usable from sync and async code alike.

A package of one role per module (`options`, `capture`, `outcome`,
`signals`, `blocking`); every name is importable from here as before.

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

from reference._executables.blocking import Spawner, run_executable
from reference._executables.capture import (
    capture_name,
    capture_paths,
    open_capture,
    open_capture_fds,
    open_capture_files,
)
from reference._executables.options import ExecOptions, build_command, parse_options
from reference._executables.outcome import (
    decode,
    exit_exception,
    record_exit,
    spawn_error,
    timeout_error,
)
from reference._executables.signals import (
    DRAIN,
    MARK_VARIABLE,
    group_alive,
    kill_group,
    marked_env,
    new_mark,
    pidfds_work,
    proc_stat,
    signal_group,
    signal_marked,
)

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
