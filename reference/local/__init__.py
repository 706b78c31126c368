"""`LocalExecutionBackend`: runs tasks on the local machine.

The backend (`reference.local.backend`) is a thin composition of parts, one
role each:

- `options`: the constructor's arguments, checked once;
- `functions`: function tasks in a thread pool (pullers) or on the loop;
- `executables`: executable tasks as watched child processes;
- `reference._procpool`: function tasks in the backend's own worker processes;
- `reference._resources` / `reference._core`: admission and the reporting
  rules, pure and tested without threads or a loop.
"""

from __future__ import annotations

from reference.local.backend import LocalExecutionBackend

__all__ = ["LocalExecutionBackend"]
