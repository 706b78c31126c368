"""Shared test clusters: one per kind per process, for the suite and tests.

`shared_local_backend` and `shared_resources_backend` return backends
connected to a `distributed.LocalCluster` started once, in a process of its
own (`_host_shared_cluster`) outside the caller's tree of children, and
closed when the caller's interpreter exits, however it exits.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import dataclasses
import os
import subprocess
import sys
import threading
from typing import IO, Any, cast

import distributed

from reference.dask._backend import DaskExecutionBackend
from reference.dask._link import CLOSE_TIMEOUT
from reference.dask._options import accounting_cluster
from spec import BackendError, ResourceCapacity

__all__ = ["shared_local_backend", "shared_resources_backend"]

_dd: Any = distributed

_shared_lock = threading.Lock()
# Per kind of shared cluster: its host process and its scheduler's address.
_shared_hosts: dict[str, tuple[subprocess.Popen[bytes], str]] = {}
# The capacity of the "resources" kind: one worker declaring it as resources.
_SHARED_CAPACITY = ResourceCapacity(cores=2, gpus=("0", "1"), memory=1024)

# The host forks before it imports anything: the intermediate process exits at
# once, so the process running the cluster is no descendant of the caller.
_HOST_CODE = """
import os, sys
if os.fork():
    os._exit(0)
from reference.dask._cluster import _host_shared_cluster
_host_shared_cluster(sys.argv[1])
"""


def _host_shared_cluster(kind: str) -> None:
    """Run the shared cluster in the host process until its lifeline closes.

    Not for direct use: `_shared_address` starts it. Prints the scheduler's
    address on stdout, then waits for end-of-file on stdin, which comes when
    the process that started it closes it or exits, however it exits.

    Args:
        kind: ``"plain"``: two workers of one thread; ``"resources"``: one
            worker with `_SHARED_CAPACITY`'s threads, declared as resources.
    """
    options: dict[str, Any] = {"n_workers": 2, "threads_per_worker": 1}
    if kind == "resources":
        options = accounting_cluster(_SHARED_CAPACITY)
    cluster = _dd.LocalCluster(
        processes=True,
        dashboard_address=":0",
        scheduler_kwargs={"allowed_failures": 0},
        **options,
    )
    try:
        sys.stdout.write(f"{cluster.scheduler_address}\n")
        sys.stdout.flush()
        sys.stdin.buffer.read()
    finally:
        cluster.close(timeout=CLOSE_TIMEOUT)


def _shared_address(kind: str = "plain") -> str:
    """Start the shared cluster once (in a process of its own); its address.

    The cluster runs outside this process's tree of children: its worker
    processes, including those Dask's nannies start to replace workers that
    died, are no children of a backend, so they never look like processes a
    backend left behind (SD-5). It closes when this interpreter exits.
    """
    with _shared_lock:
        if kind not in _shared_hosts:
            env = dict(os.environ)
            env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p)
            host = subprocess.Popen(
                [sys.executable, "-c", _HOST_CODE, kind],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                env=env,
                start_new_session=True,  # a Ctrl-C here does not reach it
            )
            stdout = cast(IO[bytes], host.stdout)  # stdout=PIPE
            line = stdout.readline().decode().strip()
            stdout.close()
            host.wait()  # the intermediate process, exited right after its fork
            if not line:
                raise BackendError("the shared Dask cluster did not start")
            if not _shared_hosts:
                atexit.register(_close_shared)
            _shared_hosts[kind] = (host, line)
        return _shared_hosts[kind][1]


def _close_shared() -> None:
    """Close the shared clusters' lifelines: each host closes its cluster and exits."""
    with _shared_lock:
        for host, _ in _shared_hosts.values():
            if host.stdin is not None:
                with contextlib.suppress(OSError):
                    host.stdin.close()
        _shared_hosts.clear()


async def shared_local_backend() -> DaskExecutionBackend:
    """Return a backend connected to a process-wide two-worker `LocalCluster`.

    The cluster (two worker processes, one thread each) starts on the first
    call, in a process of its own outside this one's tree of children, and
    is closed when the interpreter exits (however it exits); every backend
    returned connects to it, so many short-lived backends (as the
    conformance suite creates) do not pay for a cluster each::

        python -m conformance reference.dask:shared_local_backend

    Returns:
        A new backend, connected to the shared cluster.
    """
    address = await asyncio.to_thread(_shared_address, "plain")
    return DaskExecutionBackend(address=address, name="dask")


async def shared_resources_backend() -> DaskExecutionBackend:
    """Return a backend with resource accounting on a process-wide cluster.

    As `shared_local_backend`, but the cluster is one worker with 2 threads
    declaring ``CPU=2, GPU=2, MEMORY=1024`` (two made-up GPU ids, "0" and
    "1"), and the backend declares ``resources`` with that capacity::

        python -m conformance reference.dask:shared_resources_backend

    Returns:
        A new backend, connected to the shared cluster.
    """
    address = await asyncio.to_thread(_shared_address, "resources")
    backend = DaskExecutionBackend(address=address, name="dask-resources")
    # The host declared these resources for its one worker (above), so the
    # backend may account them as if it had started the cluster itself.
    backend._use(dataclasses.replace(backend._options, capacity=_SHARED_CAPACITY))
    return backend
