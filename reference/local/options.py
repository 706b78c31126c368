"""The local backend's constructor arguments, checked once into an options object."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence
from concurrent.futures import Executor

from reference._base import duration
from reference._placement import CAN_BIND

__all__ = ["LocalOptions"]


@dataclasses.dataclass(frozen=True)
class LocalOptions:
    """What a `LocalExecutionBackend` was asked for, every value checked.

    Build it with `LocalOptions.check`; the fields mirror the backend's
    arguments (see its docstring), with ``resources`` already implied by
    ``cores``, ``gpus``, ``memory`` or ``mpi_launcher``.
    """

    processes: int | None
    max_processes: int
    kill_grace: float
    shutdown_timeout: float
    resources: bool
    mpi_launcher: list[str] | None
    bind: bool
    """Name core ids and bind tasks to them (``bind=None`` resolved)."""
    async_on_loop: bool

    @classmethod
    def check(
        cls,
        executor: Executor | None,
        *,
        processes: int | None,
        max_processes: int,
        kill_grace: float,
        shutdown_timeout: float,
        resources: bool,
        cores: int | Iterable[int] | None,
        gpus: Sequence[str] | None,
        memory: int | None,
        mpi_launcher: Sequence[str] | None,
        bind: bool | None,
        async_on_loop: bool,
    ) -> LocalOptions:
        """Check the backend's arguments; the options, or a clear error.

        ``cores``, ``gpus`` and ``memory`` are checked by
        `reference._resources.capacity_from` when the pool is built.

        Raises:
            TypeError: A value has the wrong type, or ``executor`` and
                ``processes`` are both given.
            ValueError: A numeric value is out of range.
        """
        if bind is not None and not isinstance(bind, bool):
            raise TypeError(f"bind must be a bool or None, got {type(bind).__name__}")
        if not isinstance(async_on_loop, bool):
            raise TypeError(
                f"async_on_loop must be a bool, got {type(async_on_loop).__name__}"
            )
        if executor is not None and not isinstance(executor, Executor):
            raise TypeError(
                "executor must be a concurrent.futures.Executor (a "
                "ThreadPoolExecutor or ProcessPoolExecutor), got "
                f"{type(executor).__name__}"
            )
        if processes is not None:
            if executor is not None:
                raise TypeError(
                    "give executor or processes, not both: processes=N runs "
                    "function tasks in N worker processes of the backend's own"
                )
            if isinstance(processes, bool) or not isinstance(processes, int):
                raise TypeError(f"processes must be an int, got {processes!r}")
            if processes < 1:
                raise ValueError(f"processes must be at least 1, got {processes}")
        if isinstance(max_processes, bool) or not isinstance(max_processes, int):
            raise TypeError(f"max_processes must be an int, got {max_processes!r}")
        if max_processes < 1:
            raise ValueError(f"max_processes must be at least 1, got {max_processes}")
        grace = duration("kill_grace", kill_grace, zero_ok=True)
        timeout = duration("shutdown_timeout", shutdown_timeout)
        if mpi_launcher is not None and (
            isinstance(mpi_launcher, (str, bytes))
            or not mpi_launcher
            or not all(isinstance(arg, str) for arg in mpi_launcher)
        ):
            raise TypeError(
                f"mpi_launcher must be a non-empty list of str, got {mpi_launcher!r}"
            )
        accounting = bool(resources) or any(
            option is not None for option in (cores, gpus, memory, mpi_launcher)
        )
        return cls(
            processes=processes,
            max_processes=max_processes,
            kill_grace=grace,
            shutdown_timeout=timeout,
            resources=accounting,
            mpi_launcher=None if mpi_launcher is None else list(mpi_launcher),
            bind=accounting and (CAN_BIND if bind is None else bind),
            async_on_loop=async_on_loop,
        )
