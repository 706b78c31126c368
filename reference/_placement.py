"""Placement: which core ids a backend may hand out, which a task gets, binding.

The decisions are pure and tested without threads: `usable_cores` reads the
process's cpuset once, `core_ids_from` turns the ``cores=`` option into the
ids the capacity names (refusing ids the process cannot use), `CoreSet`
chooses ids for a grant from the free ones, and `placement` writes the
record a task carries (a `PlacementRecord`: read-only, so the tasks that
held one grant in turn can share one record). `bound` is the one piece of
I/O: it binds the calling thread for a block and restores it after.

Binding an executable without a race rests on one Linux rule: a new process
starts with the CPU affinity of the *thread* that created it (``clone``
copies the calling task's mask). So the spawning thread binds itself to the
task's cores around ``posix_spawn`` (two ``sched_setaffinity`` calls, a few
microseconds) and the child runs its first instruction already bound, with
no ``preexec_fn`` (which would force the slow fork path) and no wrapper
process. Everything the child starts inherits the mask in turn.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any, NoReturn, cast

from spec import Placement

__all__ = [
    "CAN_BIND",
    "CoreSet",
    "PlacementRecord",
    "bind_thread",
    "bound",
    "core_ids_from",
    "placement",
    "thread_cores",
    "usable_cores",
]

CAN_BIND = hasattr(os, "sched_setaffinity") and hasattr(os, "sched_getaffinity")
"""Whether this platform binds threads and processes to cores (Linux does)."""

HOST = socket.gethostname()
"""This machine's name, as a placement reports it."""


def usable_cores() -> tuple[int, ...] | None:
    """The core ids this process may run on (its cpuset), sorted.

    ``None`` where the platform cannot tell (no ``sched_getaffinity``).
    Inside a batch allocation or a container limited to 8 of a node's 128
    cores, these are the 8, where ``os.cpu_count()`` says 128.
    """
    if not CAN_BIND:
        return None
    return tuple(sorted(os.sched_getaffinity(0)))


def core_ids_from(
    cores: int | Iterable[int] | None, usable: tuple[int, ...] | None
) -> tuple[int, ...]:
    """The core ids a binding backend hands out, from its ``cores=`` option.

    Args:
        cores: ``None`` for every usable core; a count for that many of
            them, lowest ids first; or the ids themselves (any iterable of
            ints, e.g. ``{0, 2}`` or ``range(4, 8)``).
        usable: The cores the process may use (`usable_cores`); ``None``
            where unknown, which refuses binding.

    Returns:
        The ids, sorted, at least one.

    Raises:
        TypeError: ``cores`` is neither a count nor an iterable of ints.
        ValueError: A count below 1 or above the usable cores, no ids, a
            repeated id, or ids the process cannot use (named, with the
            usable ones).
    """
    if usable is None:
        raise ValueError(
            "binding tasks to cores needs os.sched_setaffinity, which this "
            "platform lacks; pass bind=False to count cores without binding"
        )
    if cores is None:
        return usable
    if isinstance(cores, (bool, str, bytes, float)):
        raise TypeError(
            f"cores must be a count or core ids, got {type(cores).__name__} {cores!r}"
        )
    if isinstance(cores, int):
        if cores < 1:
            raise ValueError(f"cores must be at least 1, got {cores}")
        if cores > len(usable):
            raise ValueError(
                f"cores={cores} but this process may use only {len(usable)} "
                f"core(s) (ids {list(usable)}, its CPU affinity); pass "
                "bind=False to count more cores than there are"
            )
        return usable[:cores]
    try:
        ids = list(cores)
    except TypeError:
        raise TypeError(
            f"cores must be a count or core ids, got {type(cores).__name__} {cores!r}"
        ) from None
    if not ids:
        raise ValueError("cores names no core ids")
    bad = [c for c in ids if isinstance(c, bool) or not isinstance(c, int)]
    if bad:
        raise TypeError(f"core ids must be ints, got {bad!r}")
    if len(set(ids)) != len(ids):
        raise ValueError(f"core ids repeat: {sorted(ids)}")
    outside = sorted(set(ids) - set(usable))
    if outside:
        raise ValueError(
            f"cores {outside} are not in this process's CPU affinity "
            f"{list(usable)}: tasks cannot be bound to them"
        )
    return tuple(sorted(ids))


class CoreSet:
    """The free core ids of a capacity, handed out lowest first.

    Lowest first keeps a task's cores as contiguous as the free ones allow
    (a task of several cores on one socket, where the ids say so).

    Args:
        ids: Every core id there is to hand out; all are free at first.
    """

    __slots__ = ("_free",)

    def __init__(self, ids: Iterable[int]) -> None:
        self._free = sorted(ids)

    def __len__(self) -> int:
        """How many ids are free."""
        return len(self._free)

    def take(self, count: int) -> tuple[int, ...]:
        """Take ``count`` free ids, lowest first.

        Raises:
            ValueError: Fewer than ``count`` are free (the pool admits a
                job only when its cores are free, so this is a bug).
        """
        if count > len(self._free):
            raise ValueError(f"{count} core(s) asked for, {len(self._free)} free")
        taken = tuple(self._free[:count])
        del self._free[:count]
        return taken

    def give(self, ids: Iterable[int]) -> None:
        """Give ids back (a finished task's)."""
        free = self._free
        free.extend(ids)
        free.sort()


class PlacementRecord(dict[str, Any]):
    """A placement record (`spec.Placement`) that cannot be changed.

    A pool thread's tasks that hold one grant in turn (the default path:
    one core each) carry one shared record, built when the grant changes
    hands, not per task: a dict per task was most of what binding cost
    (issue 22's T16). Shared, it must not change: every method that would
    raises `TypeError`. ``dict(record)`` is a copy that may. It is still a
    dict: ``json.dumps``, ``==``, pickling and ``copy`` work as for one.
    """

    __slots__ = ()

    def _read_only(self, *args: Any, **kwargs: Any) -> NoReturn:
        raise TypeError(
            "a task's placement is read-only (tasks that held the same grant "
            "share it); copy it with dict(task['placement']) to change it"
        )

    __setitem__ = __delitem__ = clear = pop = popitem = _read_only
    setdefault = update = __ior__ = _read_only

    def __reduce__(self) -> tuple[type[PlacementRecord], tuple[dict[str, Any]]]:
        # dict's own pickling would rebuild it item by item, through the
        # __setitem__ that refuses.
        return (type(self), (dict(self),))


def placement(
    cores: tuple[int, ...] | None,
    gpus: tuple[str, ...],
    memory: int,
    host: str = HOST,
    worker: str | None = None,
) -> Placement:
    """The record a task carries in ``task["placement"]`` (PL-1), read-only.

    Args:
        cores: The ids it is bound to; ``None`` where cores are not bound.
        gpus: Its GPU ids.
        memory: MB granted (0 where memory is not accounted).
        host: Where it ran; this machine by default.
        worker: The worker that ran it, where workers are named (Dask).
    """
    record: dict[str, Any] = {
        "host": host,
        "cores": cores,
        "gpus": gpus,
        "memory": memory,
    }
    if worker is not None:
        record["worker"] = worker
    return cast(Placement, PlacementRecord(record))


def thread_cores() -> tuple[int, ...]:
    """The cores the calling thread may run on now, sorted."""
    return tuple(sorted(os.sched_getaffinity(0)))


def bind_thread(cores: Iterable[int]) -> None:
    """Bind the calling thread (and what it starts from now on) to ``cores``."""
    os.sched_setaffinity(0, cores)


@contextmanager
def bound(cores: Iterable[int] | None) -> Iterator[None]:
    """Bind the calling thread to ``cores`` for the block, then restore it.

    What the thread starts meanwhile (threads, processes) inherits the
    binding; that is how a spawned executable is bound before it runs.
    ``None`` binds nothing.
    """
    if cores is None:
        yield
        return
    before = os.sched_getaffinity(0)
    os.sched_setaffinity(0, cores)
    try:
        yield
    finally:
        os.sched_setaffinity(0, before)
