"""Shared fixtures for the Dask backend tests: one LocalCluster per module.

Worker processes are spawned, so helpers used as tasks live in
`_dask_helpers` (a module pickled by value, needing no import on workers).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

pytest.importorskip("distributed")


@pytest.fixture(scope="module")
def cluster() -> Iterator[Any]:
    """Two worker processes, one thread each; a lost worker fails its task."""
    from distributed import LocalCluster

    with LocalCluster(
        n_workers=2,
        threads_per_worker=1,
        processes=True,
        dashboard_address=":0",
        scheduler_kwargs={"allowed_failures": 0},
    ) as local:
        yield local


@pytest.fixture
def address(cluster: Any) -> str:
    return str(cluster.scheduler_address)
