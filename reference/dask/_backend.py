"""`DaskExecutionBackend`: the composition of the Dask backend's parts.

The parts: `DaskOptions` (the checked constructor arguments), `ClusterLink`
(the client and an owned cluster), `Dispatcher` (tasks to Dask, chunked),
`Settler` (finished Dask tasks to states, re-runs after a lost worker) and
`CancelProtocol` (cancels on the workers); the decisions they apply are in
`reference.dask._decisions`, the worker side in `reference.dask._worker`.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Sequence
from typing import Any

from typing_extensions import Self

from reference._base import _RUNS_FUNCTIONS_AND_EXECUTABLES, BackendBase
from reference.dask._cancel import CancelProtocol
from reference.dask._dispatch import Dispatcher
from reference.dask._jobs import Chunk, DaskJob
from reference.dask._link import ClusterLink, cancel_and_wait
from reference.dask._options import DaskOptions
from reference.dask._settle import Settler
from spec import BackendState, Capability, ResourceCapacity, TaskKind, is_service

__all__ = ["DaskExecutionBackend"]

logger = logging.getLogger("reference.dask")


class DaskExecutionBackend(BackendBase[DaskJob]):
    """Runs function and executable tasks on a Dask cluster.

    It honours the same contract as the local backend. With neither
    ``client`` nor ``address`` it starts its own `distributed.LocalCluster`
    (lazily, on ``await backend`` or the first submitted task) and closes it
    on shutdown; given an ``address`` it connects a client of its own to that
    scheduler, and given a ``client`` it uses it; in both cases the cluster
    is left running on shutdown.

    Function tasks are pickled with cloudpickle and run in worker threads;
    ``async def`` functions run on a persistent event loop per worker thread.
    Small function tasks are sent many to a Dask task (``chunk_size``), which
    is what makes thousands of trivial tasks cheap. Executable tasks run one
    per Dask task, as a child process in its own process group on the worker
    (``shell``, ``cwd``, ``env``, ``timeout``, ``capture_stdio`` as in the
    local backend; ``capture_stdio`` files are written on the worker, under
    the backend's ``_work_dir``, so a remote cluster needs a shared file
    system for them).

    ``cancel_task`` returns True only for a task reported CANCELED, which
    it did not run or was stopped: a task that has not started is marked on
    every worker first and never starts; a running executable's process
    group is killed first (TERM, then KILL after ``kill_grace``). A function
    that has started in a worker thread cannot be interrupted: its cancel
    returns False and its own outcome is reported. So does a cancel whose
    answer a worker does not give within ``2 * (kill_grace + 5)`` seconds:
    the backend cannot know, so it says False.

    A worker that dies costs only the task that killed it: the function
    tasks it held run again, each alone in a child process of a worker,
    where the one at fault fails with `spec.WorkerLostError`; the
    executables it held run again (from the start), and a task whose worker
    died three times fails with it. An owned cluster runs with
    ``allowed_failures=0``, so Dask reports a death at once instead of
    re-running the whole chunk elsewhere. RUNNING is not reported: Dask does
    not tell a client when a task starts without a round trip per task.

    Args:
        client: An asynchronous ``distributed.Client`` (``asynchronous=True``)
            on the event loop that will submit tasks. Never closed.
        address: A scheduler address (``"tcp://host:8786"``) to connect to.
        name: Name of the backend in an engine's registry.
        chunk_size: Function tasks per Dask task; ``None`` picks one from
            the backlog and the cluster's thread count; ``1`` disables
            chunking.
        kill_grace: Seconds between SIGTERM and SIGKILL when an executable
            is canceled or times out.
        resources: Honour resource requests (``ranks``, ``cores_per_rank``,
            ``gpus_per_rank``, ``mem_per_rank``); implied by ``cores``,
            ``gpus`` or ``memory``. Needs the backend's own cluster, which
            is then one worker with ``cores`` threads declaring the Dask
            resources ``CPU``, ``GPU`` and ``MEMORY`` (MB); the backend
            declares the ``resources`` capability (docs/dask.md#resources).
        cores: Cores to hand out; ``os.cpu_count()`` when ``None``.
        gpus: GPU ids to hand out; those in ``CUDA_VISIBLE_DEVICES`` when
            ``None``.
        memory: MB to hand out; ``None`` leaves memory unaccounted.
        **cluster_kwargs: Passed to `distributed.LocalCluster` when the
            backend owns its cluster (e.g. ``n_workers=2,
            threads_per_worker=1``).

    Raises:
        ValueError: Both ``client`` and ``address`` given, ``cluster_kwargs``
            with either, a ``client`` that is not asynchronous, a
            ``chunk_size`` below 1, a ``kill_grace`` that is negative,
            NaN, infinite or above 1e9 seconds, resource accounting with a
            ``client``, an ``address`` or ``n_workers``,
            ``threads_per_worker`` or ``resources`` cluster options, or an
            out-of-range ``cores``, ``gpus`` or ``memory``.
        TypeError: A ``chunk_size`` that is not an int, a ``kill_grace``
            that is not a number, or a ``cores``, ``gpus`` or ``memory`` of
            the wrong type.
    """

    # crash_isolation: a worker death fails only the task that caused it
    # (Settler). Not preemptive_cancel: a running function in a worker
    # thread cannot be stopped. resources is added per instance, with
    # accounting on.
    capabilities: frozenset[Capability] = _RUNS_FUNCTIONS_AND_EXECUTABLES | {
        Capability.CRASH_ISOLATION
    }

    def __init__(
        self,
        client: Any = None,
        address: str | None = None,
        name: str = "default",
        *,
        chunk_size: int | None = None,
        kill_grace: float = 2.0,
        resources: bool = False,
        cores: int | None = None,
        gpus: Sequence[str] | None = None,
        memory: int | None = None,
        **cluster_kwargs: Any,
    ) -> None:
        super().__init__(name)
        options = DaskOptions.check(
            client,
            address,
            chunk_size=chunk_size,
            kill_grace=kill_grace,
            resources=resources,
            cores=cores,
            gpus=gpus,
            memory=memory,
            cluster_kwargs=cluster_kwargs,
        )
        self._use(options)

    def _use(self, options: DaskOptions) -> None:
        """Build the parts for ``options`` (again, for a shared test cluster)."""
        self._options = options
        if options.capacity is not None:
            self.capabilities = type(self).capabilities | {
                Capability.RESOURCES,
                Capability.PLACEMENT,
            }
        chunks: dict[str, Chunk] = {}
        self._chunks = chunks
        self._link = ClusterLink(options, self.name, self._on_connected)
        token = uuid.uuid4().hex[:8]
        self._dispatcher = Dispatcher(
            self, self._link, options, chunks, self._watch, token
        )
        self._settler = Settler(
            self, self._link, chunks, self._dispatcher, options.capacity
        )
        self._cancels = CancelProtocol(self, self._link, options.kill_grace)
        self._stopper: asyncio.Task[None] | None = None

    def _watch(self, futures: list[Any]) -> None:
        self._settler.watch(futures)

    def _on_connected(self) -> None:
        self._settler.start()

    # -- lifecycle -------------------------------------------------------------

    async def _start(self) -> Self:
        await super()._start()
        if self._state is not BackendState.SHUTDOWN:
            await self._link.connect()
            if self._link.error is not None:
                raise self._link.error
        return self

    @property
    def capacity(self) -> ResourceCapacity:
        """The cores, GPU ids and memory handed out to running tasks.

        Raises:
            AttributeError: Resource accounting is off (no ``resources``).
        """
        if self._options.capacity is None:
            raise AttributeError(
                f"backend {self.name!r} does not account resources; "
                "construct it with resources=True (or cores, gpus, memory)"
            )
        return self._options.capacity

    async def shutdown(self) -> None:
        """Stop: every unfinished task is reported CANCELED before this returns.

        Running executables are killed on the workers; the Dask futures are
        canceled; an owned cluster is closed, a connected one left running.
        Idempotent; concurrent calls wait for the same shutdown.
        """
        self._state = BackendState.SHUTDOWN
        if self._stopper is None:
            self._stopper = asyncio.get_running_loop().create_task(self._stop())
        await asyncio.shield(self._stopper)

    async def _stop(self) -> None:
        asking = [e.asking for e in self._jobs.values() if e.asking is not None]
        for job in self._jobs.values():
            job.canceled = True  # from now on, results that arrive are dropped
        await cancel_and_wait(self._dispatcher.task)
        await self._link.settle_connecting()
        if self._link.connected:
            # Every task sent to Dask: running executables are killed, and
            # functions not started yet are marked so they never start.
            sent = [e for e in self._jobs.values() if e.chunk is not None]
            keys = [e.key for e in sent]
            chunks = [e.chunk.key for e in sent if e.chunk is not None]
            futures = [c.future for c in self._chunks.values() if c.future is not None]
            try:
                await asyncio.wait_for(
                    self._link.cancel_remote(keys, chunks, futures),
                    self._cancels.round_trip,
                )
            except Exception:
                logger.exception("backend %r: canceling on Dask failed", self.name)
        self._dispatcher.pending.clear()
        self._cancel_all()  # SD-2
        self._cancels.stop()
        for answer in asking:  # each is reported CANCELED now
            if not answer.done():
                answer.set_result(True)
        for task_ in (self._settler.task, self._cancels.task):
            await cancel_and_wait(task_)
        self._chunks.clear()
        await self._link.close()

    # -- submission ------------------------------------------------------------

    async def submit_tasks(self, tasks: list[dict[str, Any]]) -> None:
        """Queue a batch for the cluster and return at once.

        Nothing here awaits, so no state is delivered while it runs (ST-5);
        the dispatcher sends the batch to Dask on the next loop turns.

        Args:
            tasks: Task dicts, each with a unique string ``uid``.

        Raises:
            InvalidTaskError: An entry is not a dict or lacks a string uid.
            DuplicateTaskError: A uid repeats or is already in flight.
            BackendShutdownError: The backend has been shut down.
        """
        accepted = self._accept(tasks, DaskJob)
        if not accepted:
            return
        unrunnable: list[DaskJob] = []
        runnable: list[DaskJob] = []
        for job in accepted:
            if job.kind is None or job.kind is TaskKind.PROMPT or is_service(job.task):
                # A service could not be stopped on a shared cluster (SB-6).
                unrunnable.append(job)
            else:
                runnable.append(job)
        if unrunnable:
            asyncio.get_running_loop().call_soon(self._fail_unrunnable, unrunnable)
        self._dispatcher.queue(runnable)

    def _fail_unrunnable(self, jobs: list[DaskJob]) -> None:
        for job in jobs:
            self._fail(job, self._unrunnable(job.task))  # SB-5, SB-6

    def _in_flight(self, job: DaskJob) -> bool:
        return self._jobs.get(job.uid) is job

    # -- cancellation ------------------------------------------------------------

    async def cancel_task(self, uid: str) -> bool:
        """Cancel a task; ``True`` iff it will be (or has been) reported CANCELED.

        A task not yet sent to Dask is reported CANCELED on the next loop
        turn. For one already sent, the cancel goes to every worker
        (cancels made meanwhile share the call) and this waits for their
        answer: a task that had not started is marked there and never starts
        (CN-6), and a running executable's (or isolated re-run's) process
        group is killed: ``True``, CANCELED. A function that had started in
        a worker thread cannot be stopped: ``False``, and its own outcome
        (DONE or FAILED) is reported. If a worker does not answer within
        ``2 * (kill_grace + 5)`` seconds or answers with an error, the
        backend cannot know: ``False``, and whatever the task's outcome
        turns out to be is reported (CANCELED only if a worker that got the
        mark skipped it).

        Args:
            uid: The task's uid.

        Returns:
            ``True`` when the task is reported CANCELED exactly once (CN-4);
            ``False`` for unknown or finished uids (CN-2, CN-3), and for a
            task the workers could not stop or did not answer for.
        """
        job = self._job(uid)
        if job is None:
            return False
        if job.canceled:
            return True
        if job.chunk is None:  # still queued here: it never reaches Dask (CN-6)
            self._cancel_soon(job, asyncio.get_running_loop())
            return True
        return await self._cancels.cancel(job)
