"""Portable resource requests: cores, GPUs, memory and ranks (contract 1.1).

A task asks for resources with keys in ``task_backend_specific_kwargs`` (the
dict radical.asyncflow 0.6 fills from a decorated task's ``task_description``),
named as RADICAL-Pilot names them, so that backend honours them already:

======================  ===========================  ===========
key                     meaning                      default
======================  ===========================  ===========
``ranks``               processes of one task        1
``cores_per_rank``      cores each rank uses         1
``gpus_per_rank``       GPUs each rank uses          0
``mem_per_rank``        memory per rank, in MB       unaccounted
======================  ===========================  ===========

A backend that declares the ``resources`` capability honours them (clauses
RQ-1 to RQ-5) and reports its `ResourceCapacity` through `SupportsResources`;
a backend without it ignores the keys.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from typing_extensions import TypedDict

__all__ = [
    "RESOURCE_KEYS",
    "ResourceCapacity",
    "ResourceDemand",
    "ResourceRequest",
    "SupportsResources",
    "resource_demand",
]


class ResourceRequest(TypedDict, total=False):
    """The resource keys of ``task_backend_specific_kwargs``; all optional."""

    ranks: int
    """Processes of one task (e.g. MPI ranks); an int >= 1, default 1."""
    cores_per_rank: int
    """Cores each rank uses; an int >= 1, default 1."""
    gpus_per_rank: float
    """GPUs each rank uses; a number >= 0, default 0 (fractions allowed)."""
    mem_per_rank: int
    """Memory each rank uses, in MB; an int >= 0, unaccounted when missing."""


RESOURCE_KEYS: tuple[str, ...] = tuple(ResourceRequest.__annotations__)
"""The keys a resource request is read from, in the order above."""


@dataclass(frozen=True)
class ResourceCapacity:
    """What a backend can run at once.

    Attributes:
        cores: Total cores.
        gpus: The GPU device ids it hands out, one task at a time each.
        memory: Total memory in MB, or ``None`` when memory is not accounted.
        core_ids: The core ids it hands out, one task at a time each, where
            it binds tasks to cores (capability ``placement``, contract
            1.2): ``cores`` of them, distinct. Empty where cores are only
            counted.

    Raises:
        ValueError: ``core_ids`` is not empty and does not hold ``cores``
            distinct ids.
    """

    cores: int
    gpus: tuple[str, ...] = ()
    memory: int | None = None
    core_ids: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        ids = self.core_ids
        if ids and (len(set(ids)) != len(ids) or len(ids) != self.cores):
            raise ValueError(
                f"core_ids must be {self.cores} distinct ids (one per core), "
                f"got {ids!r}"
            )


@dataclass(frozen=True)
class ResourceDemand:
    """A validated request, as totals for the whole task.

    Attributes:
        ranks: Processes of the task.
        cores: ``ranks * cores_per_rank``.
        gpus: ``ranks * gpus_per_rank`` (may be fractional).
        memory: ``ranks * mem_per_rank`` in MB; 0 when not requested.
    """

    ranks: int = 1
    cores: int = 1
    gpus: float = 0.0
    memory: int = 0

    @property
    def whole_gpus(self) -> int:
        """GPUs to hand out exclusively: the request rounded up to whole devices."""
        return math.ceil(self.gpus)

    def fits(self, capacity: ResourceCapacity) -> bool:
        """Whether the demand fits the whole capacity (when nothing else runs)."""
        return (
            self.cores <= capacity.cores
            and self.whole_gpus <= len(capacity.gpus)
            and (capacity.memory is None or self.memory <= capacity.memory)
        )


@runtime_checkable
class SupportsResources(Protocol):
    """A backend that honours resource requests (capability ``resources``)."""

    @property
    def capacity(self) -> ResourceCapacity:
        """The resources the backend hands out to running tasks."""
        ...


def _shown(value: object) -> str:
    """``value`` for an error message, whatever its size.

    ``repr`` of an int past 4,300 digits raises `ValueError` itself (Python's
    integer-string limit), which would hide the key the message names.
    """
    if isinstance(value, int) and value.bit_length() > 4096:
        return f"an int of {value.bit_length()} bits"
    return f"{type(value).__name__} {value!r}"


def _whole(key: str, value: object, least: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(
            f"resource request {key!r} must be an int >= {least}, got {_shown(value)}"
        )
    if value < least:
        raise ValueError(
            f"resource request {key!r} must be >= {least}, got {_shown(value)}"
        )
    return value


def _total(key: str, value: float, ranks: int) -> float:
    """``ranks * value`` as a finite float, or a `ValueError` naming the key.

    A total a float cannot hold (``ranks=10**400``, ``gpus_per_rank=1e308``
    over two ranks) is no request any backend can count, so it is malformed
    (RQ-3) rather than an `OverflowError` escaping to the dispatcher.
    """
    try:
        total = ranks * float(value)
    except OverflowError:
        total = math.inf
    if math.isfinite(total):
        return total
    if ranks == 1 or key == "ranks":
        raise ValueError(
            f"resource request {key!r} is too large to count, got {_shown(value)}"
        )
    raise ValueError(
        f"resource request {key!r} is too large to count: {_shown(value)} "
        f"over 'ranks' {_shown(ranks)}"
    )


def resource_demand(options: Mapping[str, Any] | None) -> ResourceDemand:
    """Read and check a task's resource request.

    Args:
        options: The task's ``task_backend_specific_kwargs`` (or ``None``);
            keys other than the resource keys are ignored.

    Returns:
        The totals the task asks for; a task without any key asks for one
        core.

    Raises:
        ValueError: A key has a value of the wrong type or range, or a total
            too large for a float to hold; the message names the key and the
            value (the task is reported FAILED with it).
    """
    if not options:
        return ResourceDemand()
    ranks = _whole("ranks", options.get("ranks", 1), 1)
    cores = _whole("cores_per_rank", options.get("cores_per_rank", 1), 1)
    memory = _whole("mem_per_rank", options.get("mem_per_rank", 0), 0)
    gpus = options.get("gpus_per_rank", 0)
    if isinstance(gpus, bool) or not isinstance(gpus, (int, float)):
        raise ValueError(
            f"resource request 'gpus_per_rank' must be a finite number >= 0, got "
            f"{_shown(gpus)}"
        )
    try:
        finite = math.isfinite(gpus)
    except OverflowError:  # an int too large for a float is no finite number
        finite = False
    if not finite or gpus < 0:
        raise ValueError(
            f"resource request 'gpus_per_rank' must be a finite number >= 0, got "
            f"{_shown(gpus)}"
        )
    # Every total must be a finite float: backends compare and hand them out
    # as numbers (Dask's resources are floats).
    _total("ranks", ranks, 1)
    _total("cores_per_rank", cores, ranks)
    _total("mem_per_rank", memory, ranks)
    return ResourceDemand(
        ranks, ranks * cores, _total("gpus_per_rank", gpus, ranks), ranks * memory
    )
