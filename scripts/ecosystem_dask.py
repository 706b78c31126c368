"""rhapsody-py 0.6's Dask backend for the ecosystem matrix (``scripts/ecosystem.py``).

Importing this module starts one two-worker `distributed.LocalCluster` (two
worker processes, one thread each), closed when the interpreter exits. The
suite loads the target before it starts its clock, so the cluster's start-up
is not charged to the first test; every backend built connects its own client
to this cluster, as ``reference.dask:shared_local_backend`` does for ours.
"""

from __future__ import annotations

import atexit
from typing import Any

from distributed import LocalCluster

__all__ = ["rhapsody_dask"]

_CLUSTER = LocalCluster(
    n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0"
)
atexit.register(_CLUSTER.close)


async def rhapsody_dask() -> Any:
    """rhapsody-py 0.6 ``await DaskExecutionBackend({"address": ...})``.

    The backend creates and owns a client connected to the shared cluster
    (its ``shutdown()`` closes the client, never the cluster).
    """
    from rhapsody.backends import DaskExecutionBackend

    return await DaskExecutionBackend({"address": _CLUSTER.scheduler_address})
