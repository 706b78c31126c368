"""Shared fixtures for the Dask backend tests: one LocalCluster per module.

Worker processes are spawned, so helpers used as tasks live in
`_dask_helpers` (a module pickled by value, needing no import on workers).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

pytest.importorskip("distributed")


def _local_cluster(workers: int) -> Any:
    """Worker processes of one thread each; a lost worker fails its task."""
    from distributed import LocalCluster

    return LocalCluster(
        n_workers=workers,
        threads_per_worker=1,
        processes=True,
        dashboard_address=":0",
        scheduler_kwargs={"allowed_failures": 0},
    )


@pytest.fixture(scope="module")
def cluster() -> Iterator[Any]:
    """Two worker processes, one thread each; a lost worker fails its task."""
    with _local_cluster(2) as local:
        yield local


@pytest.fixture
def one_worker() -> Iterator[str]:
    """A cluster of one worker of one thread (its scheduler in a thread of its own)."""
    with _local_cluster(1) as local:
        yield str(local.scheduler_address)


@pytest.fixture
def address(cluster: Any) -> str:
    return str(cluster.scheduler_address)
