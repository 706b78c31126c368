"""`ClusterLink`: the backend's connection to Dask, and nothing else.

It opens the asynchronous client (starting an owned `LocalCluster` first),
keeps the ``as_completed`` the finished futures come out of and the
cluster's thread count, sends cancels to every worker, and closes it all so
that no worker process of an owned cluster outlives the backend (SD-5).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import time
from collections.abc import Callable
from typing import Any

import distributed

from reference.dask import _worker
from reference.dask._options import DaskOptions
from spec import BackendError

__all__ = ["ClusterLink", "cancel_and_wait"]

logger = logging.getLogger("reference.dask")

# distributed is only partly annotated; its entry points are used untyped.
_dd: Any = distributed

_CONNECT_TIMEOUT = 60.0  # starting a LocalCluster on a loaded machine is slow
CLOSE_TIMEOUT = 20.0
_EXIT_GRACE = 5.0  # seconds an owned cluster's workers get to exit after close
_NTHREADS_EVERY = 10.0  # seconds between refreshes of the thread count


class ClusterLink:
    """The client, an owned cluster, and what the backend asks of them.

    Args:
        options: The backend's options (what to connect to).
        name: The backend's name, for messages.
        on_connected: Called once the client is open.
    """

    def __init__(
        self, options: DaskOptions, name: str, on_connected: Callable[[], None]
    ) -> None:
        self.client: Any = options.client
        self._owns_client = options.client is None
        self._options = options
        self._name = name
        self._cluster: Any = None
        self.completed: Any = None  # distributed.as_completed, once connected
        self.error: BaseException | None = None  # why connecting failed
        self.nthreads = 1
        self._nthreads_at = 0.0
        self._starter: asyncio.Task[None] | None = None
        self._on_connected = on_connected

    @property
    def connected(self) -> bool:
        """Whether the client is open (and not closed since)."""
        return self.client is not None and self.completed is not None

    async def connect(self) -> None:
        """Connect once; later callers wait for the same attempt."""
        if self._starter is None:
            self._starter = asyncio.get_running_loop().create_task(self._connect())
        await asyncio.shield(self._starter)

    async def settle_connecting(self) -> None:
        """Let a connection attempt in progress end (shutdown waits for it)."""
        if self._starter is not None and not self._starter.done():
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(asyncio.shield(self._starter), _CONNECT_TIMEOUT)

    async def _connect(self) -> None:
        try:
            await asyncio.wait_for(self._open_client(), _CONNECT_TIMEOUT)
            self.completed = _dd.as_completed(loop=self.client.loop)
            await self._refresh_nthreads()
        except Exception as exc:
            self.error = BackendError(
                f"backend {self._name!r} could not connect to Dask: {exc!r}"
            )
            self.error.__cause__ = exc
            logger.error("%s", self.error)
            return
        self._on_connected()

    async def _open_client(self) -> None:
        if self.client is not None:
            return
        if self._options.address is None:
            options = self._options.cluster_options()
            self._cluster = await _dd.LocalCluster(asynchronous=True, **options)
            target: Any = self._cluster
        else:
            target = self._options.address
        self.client = await _dd.Client(target, asynchronous=True, set_as_default=False)

    async def _refresh_nthreads(self) -> None:
        threads = await self.client.nthreads()
        self.nthreads = max(1, sum(threads.values()))
        self._nthreads_at = time.monotonic()

    async def refresh_nthreads(self) -> None:
        """Ask the cluster's thread count again, if it was asked long ago."""
        if time.monotonic() - self._nthreads_at > _NTHREADS_EVERY:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._refresh_nthreads(), 5.0)

    async def cancel_remote(
        self, keys: list[str], chunks: list[str], futures: list[Any]
    ) -> dict[str, Any] | None:
        """Cancel Dask futures, and ``keys`` on every worker: each worker's answer."""
        if futures:
            await self.client.cancel(futures, force=True)
        if not keys:
            return None
        answers: dict[str, Any] = await self.client.run(
            _worker.cancel_keys,
            keys,
            self._options.kill_grace,
            chunks,
            on_error="return",
        )
        return answers

    async def close(self) -> None:
        """Close an owned client and cluster; stop connecting; drop the rest."""
        await cancel_and_wait(self._starter)
        self.completed = None
        client, cluster = self.client, self._cluster
        self._cluster = None
        workers = _worker_pids(cluster) if cluster is not None else []
        try:
            if client is not None and self._owns_client:
                await asyncio.wait_for(client.close(), CLOSE_TIMEOUT)
            if cluster is not None:
                await asyncio.wait_for(cluster.close(), CLOSE_TIMEOUT)
        except Exception:
            logger.exception("backend %r: closing Dask failed", self._name)
        # An owned cluster's worker processes must not outlive shutdown (SD-5),
        # even when a close timed out or a worker is slow to exit.
        deadline = time.monotonic() + _EXIT_GRACE
        while workers and time.monotonic() < deadline:
            workers = [pid for pid in workers if _process_alive(pid)]
            if workers:
                await asyncio.sleep(0.05)
        for pid in workers:
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)


def _worker_pids(cluster: Any) -> list[int]:
    """The pids of a LocalCluster's worker processes (none with threads)."""
    pids = []
    for worker in getattr(cluster, "workers", {}).values():
        pid = getattr(worker, "pid", None)
        if isinstance(pid, int):
            pids.append(pid)
    return pids


def _process_alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie, exited but not yet reaped, does not)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            return stat.read().rsplit(b")", 1)[-1].split()[0] != b"Z"
    except OSError:  # no /proc (not Linux): trust kill()
        return True


async def cancel_and_wait(task: asyncio.Task[None] | None) -> None:
    """Cancel ``task`` and wait (bounded) until it has ended."""
    if task is None or task.done():
        return
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError, Exception):
        await asyncio.wait_for(task, CLOSE_TIMEOUT)
