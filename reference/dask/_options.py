"""`DaskOptions`: the Dask backend's constructor arguments, checked once.

Pure: no client or cluster is made here. The backend reads what to connect
to and how to account resources from it; `cluster_options` says how an
owned `distributed.LocalCluster` is built.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from reference._base import duration
from reference._resources import capacity_from
from spec import ResourceCapacity

__all__ = ["DaskOptions"]

# LocalCluster options the backend sets itself when it accounts resources.
_ACCOUNTING_OPTIONS = ("n_workers", "threads_per_worker", "nthreads", "resources")


@dataclass(frozen=True)
class DaskOptions:
    """The checked options of a `reference.dask.DaskExecutionBackend`.

    Attributes:
        client: An asynchronous ``distributed.Client`` to use, or ``None``.
        address: A scheduler address to connect to, or ``None``.
        chunk_size: Function tasks per Dask task; ``None`` picks one.
        kill_grace: Seconds between SIGTERM and SIGKILL.
        capacity: What is handed out with resource accounting on, else ``None``.
        cluster_kwargs: Extra `distributed.LocalCluster` options.
    """

    client: Any
    address: str | None
    chunk_size: int | None
    kill_grace: float
    capacity: ResourceCapacity | None
    cluster_kwargs: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def check(
        cls,
        client: Any,
        address: str | None,
        *,
        chunk_size: int | None,
        kill_grace: float,
        resources: bool,
        cores: int | None,
        gpus: Sequence[str] | None,
        memory: int | None,
        cluster_kwargs: dict[str, Any],
    ) -> DaskOptions:
        """Check the constructor's arguments; see the backend for each.

        Raises:
            ValueError: Options that contradict each other, or a value out
                of range (the backend's docstring lists them).
            TypeError: A value of the wrong type.
        """
        if client is not None and address is not None:
            raise ValueError("give a Dask client or a scheduler address, not both")
        connected = client is not None or address is not None
        if cluster_kwargs and connected:
            raise ValueError(
                "LocalCluster options "
                f"({', '.join(sorted(cluster_kwargs))}) apply only when the "
                "backend starts its own cluster (no client, no address)"
            )
        if client is not None and not getattr(client, "asynchronous", False):
            raise ValueError(
                "the Dask client must be asynchronous: Client(..., asynchronous=True)"
            )
        if chunk_size is not None:
            if isinstance(chunk_size, bool) or not isinstance(chunk_size, int):
                raise TypeError(
                    f"chunk_size must be an int or None, got {chunk_size!r}"
                )
            if chunk_size < 1:
                raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
        # The one duration validator: NaN, inf and negatives are refused here.
        grace = duration("kill_grace", kill_grace, zero_ok=True)
        capacity: ResourceCapacity | None = None
        if resources or any(option is not None for option in (cores, gpus, memory)):
            if connected:
                raise ValueError(
                    "resource accounting (resources, cores, gpus, memory) needs "
                    "the backend's own cluster, whose worker it declares the "
                    "resources of: give neither client nor address"
                )
            clash = sorted(set(cluster_kwargs) & set(_ACCOUNTING_OPTIONS))
            if clash:
                raise ValueError(
                    f"LocalCluster options {', '.join(clash)} cannot be given with "
                    "resource accounting: the backend's cluster is then one "
                    "worker with `cores` threads and the resources given"
                )
            # Same defaults and checks as the local backend's.
            capacity = capacity_from(cores, gpus, memory)
        return cls(client, address, chunk_size, grace, capacity, dict(cluster_kwargs))

    def cluster_options(self) -> dict[str, Any]:
        """The options of the `distributed.LocalCluster` the backend owns."""
        options: dict[str, Any] = {
            "processes": True,
            "dashboard_address": ":0",  # any free port: never clash over 8787
            # One worker death fails the task instead of re-running it.
            "scheduler_kwargs": {"allowed_failures": 0},
        }
        options.update(self.cluster_kwargs)
        capacity = self.capacity
        if capacity is not None:
            options.update(accounting_cluster(capacity))
        return options


def accounting_cluster(capacity: ResourceCapacity) -> dict[str, Any]:
    """LocalCluster options for one worker declaring ``capacity`` as resources.

    One worker holds the whole capacity, so any request that fits it fits
    one Dask worker (a task runs on one worker).
    """
    declared = {"CPU": capacity.cores, "GPU": len(capacity.gpus)}
    if capacity.memory is not None:
        declared["MEMORY"] = capacity.memory
    return {
        "n_workers": 1,
        "threads_per_worker": capacity.cores,
        "resources": {k: v for k, v in declared.items() if v},
    }
