"""`DaskExecutionBackend`: runs tasks on a ``dask.distributed`` cluster.

Needs the ``dask`` extra (from a clone: ``pip install -e ".[dask]"``);
importing this module without ``distributed`` raises an `ImportError` that
says so. ``reference`` itself never imports it.

How it works, in one paragraph: ``submit_tasks`` only validates and queues
(it never awaits, so no callback can run inside it). A dispatcher task on
the caller's event loop connects the asynchronous ``distributed.Client``
(starting a `LocalCluster` first when it owns one), pickles function tasks
into chunks and submits each chunk as one Dask task with ``client.map``;
executables go one per Dask task. A consumer task takes finished Dask
futures from ``distributed.as_completed`` in batches, gathers their results
in one round trip, reports every task on the loop thread and drops the
futures, so Dask releases them. Cancels are collected and sent to every
worker in one ``client.run`` call, which marks the tasks there so they never
start and kills the process groups of canceled executables (see
`reference._dask_worker`); each worker answers which tasks it had already
started in a thread, which cannot be stopped. CANCELED is reported after the
answer, only for the others. When a worker dies,
the function tasks it held run again, one by one, each in a child process of
a worker, so that the one that killed it fails alone.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import functools
import itertools
import logging
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import IO, Any, cast

from typing_extensions import Self

from reference import _dask_worker as _worker
from reference._base import (
    _RUNS_FUNCTIONS_AND_EXECUTABLES,
    BackendBase,
    Job,
    duration,
    function_call,
)
from reference._executables import build_command, parse_options
from reference._resources import capacity_from, function_refusal, unavailable
from spec import (
    BackendError,
    BackendState,
    Capability,
    CapabilityNotSupportedError,
    ResourceCapacity,
    ResourceDemand,
    StandInError,
    TaskKind,
    TaskState,
    WorkerLostError,
    resource_demand,
    task_kind,
)

try:
    import cloudpickle
    import distributed as _distributed
    from distributed.scheduler import KilledWorker
except ImportError as _missing:  # pragma: no cover - exercised with a fake import
    raise ImportError(
        "reference.dask needs dask.distributed, which is not installed; install "
        'the dask extra (from a clone of the project: pip install -e ".[dask]") '
        f"({_missing})"
    ) from _missing

__all__ = ["DaskExecutionBackend", "shared_local_backend", "shared_resources_backend"]

# distributed is only partly annotated; its entry points are used untyped.
_dd: Any = _distributed

logger = logging.getLogger("reference.dask")

_SLICE = 2_000  # tasks dispatched per event-loop turn: keeps the loop responsive
_MAX_CHUNK = 64  # function tasks per Dask task, at most
_REPORTS_PER_TURN = 512  # states delivered before yielding to the loop
_CONNECT_TIMEOUT = 60.0  # starting a LocalCluster on a loaded machine is slow
_CLOSE_TIMEOUT = 20.0
_EXIT_GRACE = 5.0  # seconds an owned cluster's workers get to exit after close
_REMOTE_SLACK = 5.0  # seconds a cancel round trip may take on top of kill_grace
_CANCELED = _worker.CANCELED
_EXEC_FIELDS = ("uid", "executable", "arguments", "capture_stdio")
_EXEC_OPTIONS = ("shell", "cwd", "env", "timeout")
_MAX_LOSSES = 3  # worker deaths a task survives (re-run isolated) before it fails
_ONE_CORE = ResourceDemand()  # a task without a request
# LocalCluster options the backend sets itself when it accounts resources.
_ACCOUNTING_OPTIONS = ("n_workers", "threads_per_worker", "nthreads", "resources")


class _Entry(Job):
    """One accepted task and where it is on the cluster."""

    __slots__ = (
        "asking",
        "chunk",
        "demand",
        "held",
        "key",
        "kind",
        "losses",
        "skipped",
    )

    def __init__(self, task: dict[str, Any]) -> None:
        super().__init__(task)
        # None: nothing to run here (no function or executable, or a prompt).
        self.kind: TaskKind | None = task_kind(task)
        self.key = ""  # unique per submission: names the task to the workers
        self.chunk: _Chunk | None = None  # set once dispatched
        self.losses = 0  # how many workers died while its chunk was on them
        # A cancel on its way to the workers: resolved with cancel_task's answer.
        self.asking: asyncio.Future[bool] | None = None
        # What arrived for it while the cancel was on its way, to apply once
        # the answer says it was not stopped (its outcome then stands).
        self.held: Callable[[], None] | None = None
        self.skipped = False  # the held outcome says a worker skipped it
        self.demand = _ONE_CORE  # its resource request, once checked


@dataclass(eq=False)
class _Chunk:
    """One Dask task: a chunk of function tasks, or one executable."""

    key: str
    entries: list[_Entry]
    future: Any = None
    live: int = 0  # members not canceled; at 0 the Dask future is canceled
    isolated: bool = False  # each member runs in a child process of the worker
    resources: dict[str, int] | None = None  # Dask resources it holds, if accounted


class DaskExecutionBackend(BackendBase[_Entry]):
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
    where the one at fault fails with `spec.WorkerLostError`; an executable
    on a dead worker fails with it. An owned cluster runs with
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
    # (_settle_lost). Not preemptive_cancel: a running function in a worker
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
        if client is not None and address is not None:
            raise ValueError("give a Dask client or a scheduler address, not both")
        if cluster_kwargs and (client is not None or address is not None):
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
        self._capacity: ResourceCapacity | None = None
        if resources or any(option is not None for option in (cores, gpus, memory)):
            if client is not None or address is not None:
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
            self._capacity = capacity_from(cores, gpus, memory)
            self.capabilities = self.capabilities | {Capability.RESOURCES}
        self._client: Any = client
        self._address = address
        self._cluster_kwargs = cluster_kwargs
        self._owns_client = client is None
        self._cluster: Any = None
        self._chunk_size = chunk_size
        self._kill_grace = grace
        self._token = uuid.uuid4().hex[:8]
        self._counter = itertools.count()
        self._pending: deque[_Entry] = deque()
        self._chunks: dict[str, _Chunk] = {}
        self._nthreads = 1
        self._nthreads_at = 0.0
        self._connect_error: BaseException | None = None
        self._ac: Any = None
        self._starter: asyncio.Task[None] | None = None
        self._dispatcher: asyncio.Task[None] | None = None
        self._consumer: asyncio.Task[None] | None = None
        self._flusher: asyncio.Task[None] | None = None
        self._stopper: asyncio.Task[None] | None = None
        self._dispatch_wake: asyncio.Event | None = None
        self._consume_wake: asyncio.Event | None = None
        self._kill_waiters: list[_Entry] = []
        self._futures_to_cancel: list[Any] = []
        self._direct_gather = True

    # -- lifecycle -------------------------------------------------------------

    async def _start(self) -> Self:
        await super()._start()
        if self._state is not BackendState.SHUTDOWN:
            await self._connected()
            if self._connect_error is not None:
                raise self._connect_error
        return self

    async def _connected(self) -> None:
        """Connect once; later callers wait for the same attempt."""
        if self._starter is None:
            self._starter = asyncio.get_running_loop().create_task(self._connect())
        await asyncio.shield(self._starter)

    async def _connect(self) -> None:
        """Open the client (and an owned cluster); start the consumer."""
        try:
            await asyncio.wait_for(self._open_client(), _CONNECT_TIMEOUT)
            self._ac = _dd.as_completed(loop=self._client.loop)
            await self._refresh_nthreads()
        except Exception as exc:
            self._connect_error = BackendError(
                f"backend {self.name!r} could not connect to Dask: {exc!r}"
            )
            self._connect_error.__cause__ = exc
            logger.error("%s", self._connect_error)
            return
        loop = asyncio.get_running_loop()
        self._consume_wake = asyncio.Event()
        self._consumer = loop.create_task(self._consume(self._ac, self._consume_wake))

    async def _open_client(self) -> None:
        if self._client is not None:
            return
        if self._address is None:
            options: dict[str, Any] = {
                "processes": True,
                "dashboard_address": ":0",  # any free port: never clash over 8787
                # One worker death fails the task instead of re-running it.
                "scheduler_kwargs": {"allowed_failures": 0},
            }
            options.update(self._cluster_kwargs)
            capacity = self._capacity
            if capacity is not None:
                # One worker holds the whole capacity, so any request that
                # fits it fits one Dask worker (a task runs on one worker).
                declared = {"CPU": capacity.cores, "GPU": len(capacity.gpus)}
                if capacity.memory is not None:
                    declared["MEMORY"] = capacity.memory
                options.update(
                    n_workers=1,
                    threads_per_worker=capacity.cores,
                    resources={k: v for k, v in declared.items() if v},
                )
            self._cluster = await _dd.LocalCluster(asynchronous=True, **options)
            target: Any = self._cluster
        else:
            target = self._address
        self._client = await _dd.Client(target, asynchronous=True, set_as_default=False)

    @property
    def capacity(self) -> ResourceCapacity:
        """The cores, GPU ids and memory handed out to running tasks.

        Raises:
            AttributeError: Resource accounting is off (no ``resources``).
        """
        if self._capacity is None:
            raise AttributeError(
                f"backend {self.name!r} does not account resources; "
                "construct it with resources=True (or cores, gpus, memory)"
            )
        return self._capacity

    async def _refresh_nthreads(self) -> None:
        threads = await self._client.nthreads()
        self._nthreads = max(1, sum(threads.values()))
        self._nthreads_at = time.monotonic()

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
        for entry in self._jobs.values():
            entry.canceled = True  # from now on, results that arrive are dropped
        await _cancel_and_wait(self._dispatcher)
        if self._starter is not None and not self._starter.done():
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(asyncio.shield(self._starter), _CONNECT_TIMEOUT)
        if self._client is not None and self._ac is not None:
            # Every task sent to Dask: running executables are killed, and
            # functions not started yet are marked so they never start.
            sent = [e for e in self._jobs.values() if e.chunk is not None]
            keys = [e.key for e in sent]
            chunks = [cast(_Chunk, e.chunk).key for e in sent]
            futures = [c.future for c in self._chunks.values() if c.future is not None]
            try:
                await asyncio.wait_for(
                    self._cancel_remote(keys, chunks, futures),
                    self._kill_grace + _REMOTE_SLACK,
                )
            except Exception:
                logger.exception("backend %r: canceling on Dask failed", self.name)
        self._pending.clear()
        self._cancel_all()
        self._kill_waiters.clear()
        for answer in asking:  # each is reported CANCELED now
            if not answer.done():
                answer.set_result(True)
        for task_ in (self._consumer, self._flusher, self._starter):
            await _cancel_and_wait(task_)
        self._chunks.clear()
        self._ac = None
        await self._close_client()

    async def _close_client(self) -> None:
        client, cluster = self._client, self._cluster
        self._cluster = None
        workers = _worker_pids(cluster) if cluster is not None else []
        try:
            if client is not None and self._owns_client:
                await asyncio.wait_for(client.close(), _CLOSE_TIMEOUT)
            if cluster is not None:
                await asyncio.wait_for(cluster.close(), _CLOSE_TIMEOUT)
        except Exception:
            logger.exception("backend %r: closing Dask failed", self.name)
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
        accepted = self._accept(tasks, _Entry)
        if not accepted:
            return
        loop = asyncio.get_running_loop()
        unrunnable: list[_Entry] = []
        pending = self._pending
        token, counter = self._token, self._counter
        for entry in accepted:
            kind = entry.kind
            if kind is None or kind is TaskKind.PROMPT:
                unrunnable.append(entry)
                continue
            entry.key = f"{entry.uid}-{token}-{next(counter)}"
            pending.append(entry)
        if unrunnable:
            loop.call_soon(self._fail_unrunnable, unrunnable)
        if self._dispatch_wake is None:
            self._dispatch_wake = asyncio.Event()
            self._dispatcher = loop.create_task(self._dispatch(self._dispatch_wake))
        self._dispatch_wake.set()

    def _fail_unrunnable(self, entries: list[_Entry]) -> None:
        for entry in entries:
            self._fail(entry, self._unrunnable(entry.task))

    async def _dispatch(self, wake: asyncio.Event) -> None:
        """Send queued tasks to Dask, a slice per loop turn."""
        await self._connected()
        while True:
            if not self._pending:
                wake.clear()
                await wake.wait()
                continue
            if self._connect_error is not None:
                while self._pending:
                    self._fail(self._pending.popleft(), self._connect_error)
                continue
            if time.monotonic() - self._nthreads_at > 10.0:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(self._refresh_nthreads(), 5.0)
            self._dispatch_slice()
            await asyncio.sleep(0)

    def _dispatch_slice(self) -> None:
        backlog = len(self._pending)
        functions: list[_Entry] = []
        executables: list[_Entry] = []
        accounted: list[_Entry] = []  # with resource accounting: in order
        while self._pending and (
            len(functions) + len(executables) + len(accounted) < _SLICE
        ):
            entry = self._pending.popleft()
            if not self._owes_result(entry):
                continue
            if self._capacity is not None:
                accounted.append(entry)
            elif entry.kind is TaskKind.FUNCTION:
                functions.append(entry)
            else:
                executables.append(entry)
        size = self._chunk_size or max(
            1, min(_MAX_CHUNK, backlog // (4 * self._nthreads))
        )
        try:
            if accounted:
                self._submit_in_order(self._requested(accounted), size)
            if functions:
                self._submit_functions(functions, size)
            if executables:
                self._submit_executables(executables)
        except Exception as exc:  # a bug here must fail tasks, never strand them
            logger.exception("backend %r: dispatching to Dask failed", self.name)
            for entry in (*functions, *executables, *accounted):
                chunk = entry.chunk
                if chunk is None or chunk.future is None:
                    if chunk is not None:
                        self._chunks.pop(chunk.key, None)
                    self._fail(entry, BackendError(f"dispatch failed: {exc!r}"))

    def _submit_in_order(self, entries: list[_Entry], size: int) -> None:
        """Send accounted tasks to Dask in submission order (RQ-5).

        Dask starts the tasks waiting for resources on a worker by priority,
        and never lets one overtake another that does not fit yet; the
        priority follows the order of submission. So each run of tasks of one
        sort goes in its own call, in order: one-core functions chunked,
        larger function requests and executables one per Dask task.
        """

        def sort(entry: _Entry) -> int:
            if entry.kind is not TaskKind.FUNCTION:
                return 2
            return 0 if entry.demand == _ONE_CORE else 1

        for group, run in itertools.groupby(entries, key=sort):
            members = list(run)
            if group == 2:
                self._submit_executables(members)
            else:
                self._submit_functions(members, size if group == 0 else 1)

    def _requested(self, entries: list[_Entry]) -> list[_Entry]:
        """Check each task's resource request; those that may run, in order.

        A malformed request fails naming key and value (RQ-3), one that can
        never fit fails at once (RQ-2).
        """
        capacity = cast(ResourceCapacity, self._capacity)
        runnable: list[_Entry] = []
        for entry in entries:
            options = entry.task.get("task_backend_specific_kwargs")
            try:
                demand = resource_demand(options if isinstance(options, dict) else None)
            except ValueError as exc:
                self._fail(entry, exc)
                continue
            refusal = _refusal(entry, demand, capacity)
            if refusal is not None:
                self._fail(entry, refusal)
                continue
            entry.demand = demand
            runnable.append(entry)
        return runnable

    def _dask_resources(self, members: list[_Entry]) -> dict[str, int] | None:
        """The Dask resources a Dask task running ``members`` holds, if accounted.

        A chunk runs its members one after another in one thread, so it
        holds the largest request among them (chunks hold one-core tasks, or
        one task).
        """
        if self._capacity is None:
            return None
        cores = max(e.demand.cores for e in members)
        gpus = max(e.demand.whole_gpus for e in members)
        held = {"CPU": cores}
        if gpus:
            held["GPU"] = gpus
        if self._capacity.memory is not None:
            memory = max(e.demand.memory for e in members)
            if memory:
                held["MEMORY"] = memory
        return held

    def _submit_functions(
        self, entries: list[_Entry], size: int, *, isolated: bool = False
    ) -> None:
        """Pickle function tasks one by one and send them in chunks of ``size``.

        A task that cannot be pickled fails alone, naming what could not be
        (RS-3); it never reaches a chunk, so it cannot spoil one. ``isolated``
        sends one task per Dask task, run in a child process of the worker
        (see `_settle_lost`).
        """
        chunks: list[_Chunk] = []
        batches: list[_worker.FunctionBatch] = []
        accounted = self._capacity is not None  # a chunk holds one core
        items: list[tuple[str, bytes]] = []
        members: list[_Entry] = []
        if isolated:
            size = 1
        for entry in entries:
            try:
                function, args, kwargs = function_call(entry.task)
            except ValueError as exc:
                self._fail(entry, exc)
                continue
            try:
                blob = _worker.dumps_function_item(function, args, kwargs)
            except Exception as exc:
                parts = (("function", function), ("args", args), ("kwargs", kwargs))
                self._fail(entry, _unsendable_error(entry.uid, parts, exc))
                continue
            items.append((entry.key, blob))
            members.append(entry)
            if len(items) >= size:
                chunk = self._new_chunk(members, isolated=isolated)
                chunks.append(chunk)
                batches.append(
                    _worker.FunctionBatch(items, isolated, chunk.key, accounted)
                )
                items, members = [], []
        if items:
            chunk = self._new_chunk(members, isolated=isolated)
            chunks.append(chunk)
            batches.append(_worker.FunctionBatch(items, isolated, chunk.key, accounted))
        if chunks:
            self._submit(_worker.run_functions, chunks, batches)

    def _submit_executables(self, entries: list[_Entry]) -> None:
        """Check and pickle executable tasks one by one; one Dask task each.

        Each job travels as bytes pickled here, so an argument that cannot be
        pickled fails only its task, naming it, instead of the ``client.map``
        carrying the slice.
        """
        chunks: list[_Chunk] = []
        jobs: list[_worker.ExecutableJob] = []
        for entry in entries:
            task = entry.task
            options = task.get("task_backend_specific_kwargs") or {}
            try:
                # The one duration validator, before any worker sees the value:
                # inf or 1e20 would overflow the worker's timer, NaN kill at once.
                if isinstance(options, dict) and options.get("timeout") is not None:
                    duration("timeout", options["timeout"])
                build_command(task, parse_options(task))
            except (TypeError, ValueError) as exc:
                self._fail(entry, exc)
                continue
            part = {k: task[k] for k in _EXEC_FIELDS if k in task}
            part["task_backend_specific_kwargs"] = {
                k: options[k] for k in _EXEC_OPTIONS if k in options
            }
            try:
                blob = cloudpickle.dumps(part)
            except Exception as exc:
                self._fail(entry, _unsendable_error(entry.uid, part.items(), exc))
                continue
            chunk = self._new_chunk([entry], key=entry.key)
            chunks.append(chunk)
            job = _worker.ExecutableJob(
                entry.key, blob, self._work_dir, self._kill_grace
            )
            if self._capacity is not None and entry.demand.whole_gpus:
                job.gpus = entry.demand.whole_gpus
                job.gpu_pool = self._capacity.gpus
            jobs.append(job)
        if chunks:
            self._submit(_worker.run_executable, chunks, jobs)

    def _new_chunk(
        self, members: list[_Entry], key: str | None = None, *, isolated: bool = False
    ) -> _Chunk:
        if key is None:
            key = f"asyncflow-{self._token}-c{next(self._counter)}"
        chunk = _Chunk(
            key,
            members,
            live=len(members),
            isolated=isolated,
            resources=self._dask_resources(members),
        )
        for entry in members:
            entry.chunk = chunk
        self._chunks[key] = chunk
        return chunk

    def _submit(self, function: Any, chunks: list[_Chunk], payloads: list[Any]) -> None:
        """Hand chunks to Dask in one ``client.map``; one by one if it refuses.

        Payloads are bytes pickled per task, so a refusal is rare (a key Dask
        rejects, a lost connection); retrying each chunk alone keeps it to
        the chunk at fault. Chunks holding different resources go in
        separate calls (``resources`` is per call), in order, so Dask's
        priorities keep the submission order (RQ-5).
        """
        resources = chunks[0].resources
        if resources is not None:
            for at, chunk in enumerate(chunks):
                if chunk.resources != resources:
                    self._submit(function, chunks[:at], payloads[:at])
                    self._submit(function, chunks[at:], payloads[at:])
                    return
        try:
            futures = self._client.map(
                function,
                payloads,
                key=[c.key for c in chunks],
                pure=False,
                resources=resources,
            )
        except Exception as exc:
            if len(chunks) > 1:
                for chunk, payload in zip(chunks, payloads, strict=True):
                    self._submit(function, [chunk], [payload])
                return
            for chunk in chunks:
                self._chunks.pop(chunk.key, None)
                for entry in chunk.entries:
                    if entry.chunk is chunk:
                        self._fail(
                            entry, BackendError(f"Dask refused the task: {exc!r}")
                        )
            return
        for chunk, future in zip(chunks, futures, strict=True):
            chunk.future = future
        self._ac.update(futures)
        if self._consume_wake is not None:
            self._consume_wake.set()

    # -- completion ------------------------------------------------------------

    async def _consume(self, ac: Any, wake: asyncio.Event) -> None:
        """Report finished Dask futures, in batches, on the loop thread."""
        while True:
            if ac.is_empty():
                wake.clear()
                await wake.wait()
                continue
            try:
                first = await ac.__anext__()
            except StopAsyncIteration:
                continue
            batch = [first, *ac.next_batch(block=False)]
            try:
                await self._settle(batch)
            except asyncio.CancelledError:
                if self._state is BackendState.SHUTDOWN:
                    raise  # shutdown stops the consumer
                # A stray CancelledError (raised by a task's code, a callback
                # or a library, not by shutdown) must not end the consumer:
                # every later task would go unreported (ST-8).
                self._settle_failed(batch)
            except Exception:  # never lose the consumer; the tasks fail instead
                self._settle_failed(batch)

    def _settle_failed(self, batch: list[Any]) -> None:
        logger.exception("backend %r: settling Dask results failed", self.name)
        for future in batch:
            self._settle_error(future, BackendError("internal error"))

    async def _settle(self, batch: list[Any]) -> None:
        finished = [f for f in batch if f.status == "finished"]
        if finished:
            results = await self._gather(finished)
            if results is None:  # the batch could not be fetched: go one by one
                for future in finished:
                    try:
                        outcomes = await self._client.gather(future)
                    except Exception as exc:
                        self._settle_error(future, exc)
                    else:
                        self._settle_outcomes(future, outcomes)
            else:
                reported = 0
                for future, outcomes in zip(finished, results, strict=True):
                    self._settle_outcomes(future, outcomes)
                    reported += len(outcomes) if isinstance(outcomes, list) else 1
                    if reported >= _REPORTS_PER_TURN:
                        # Many callbacks in one turn would stall the loop (SC-3).
                        reported = 0
                        await asyncio.sleep(0)
        gathered = {f.key for f in finished}
        for future in batch:
            if future.key in gathered:
                continue
            status = future.status
            if status not in ("error", "cancelled"):
                # "lost" (or "pending", or "finished" again): its result was
                # on a worker that died before it was fetched, and Dask runs
                # it again. Not an error: it is watched again and reported
                # when it comes back (issue 11's flake failed its tasks here).
                if self._ac is not None:
                    self._ac.add(future)
                continue
            error: BaseException
            if status == "cancelled":
                error = WorkerLostError(
                    "Dask canceled the task without being asked to "
                    "(lost connection to the scheduler?)"
                )
            else:
                try:
                    error = await future.exception()
                except Exception as exc:
                    error = exc
            self._settle_error(future, error)

    async def _gather(self, futures: list[Any]) -> list[Any] | None:
        """Fetch a batch of results in one round trip, or return ``None``.

        Straight from the workers when the client can reach them (it spares
        the scheduler relaying every result), else through the scheduler.
        """
        if self._direct_gather:
            try:
                return list(await self._client.gather(futures, direct=True))
            except Exception:
                if not any(f.status == "error" for f in futures):
                    # Workers behind a gateway or firewall: stop trying
                    # directly. (Not for a task's own error, e.g. a chunk
                    # that died with a worker while Dask recomputed it.)
                    self._direct_gather = False
        try:
            return list(await self._client.gather(futures, direct=False))
        except Exception:
            return None

    def _settle_outcomes(self, future: Any, outcomes: Any) -> None:
        chunk = self._chunks.pop(future.key, None)
        if chunk is None:
            return
        if not isinstance(outcomes, list):  # an executable's one outcome
            outcomes = [outcomes]
        for entry, outcome in zip(chunk.entries, outcomes, strict=True):
            if entry.asking is not None and self._owes_result(entry):
                # A cancel is on its way: whether this outcome stands depends
                # on the workers' answer (`_resolve`), so it waits for it.
                entry.held = functools.partial(self._settle_member, entry, outcome)
                entry.skipped = outcome[0] == _CANCELED
                continue
            if not self._owes_result(entry):
                if entry.canceled and entry.kind is TaskKind.FUNCTION:
                    # Canceled, and it either ran already or the worker's
                    # guard skipped it: it will not run (again) now, so its
                    # CANCELED is true. (An executable waits for its group
                    # to be killed: `_flush_cancels` reports it.)
                    self._finish(entry, TaskState.CANCELED)
                continue
            self._settle_member(entry, outcome)

    def _settle_member(self, entry: _Entry, outcome: _worker.Outcome) -> None:
        try:
            if entry.kind is TaskKind.EXECUTABLE:
                self._settle_executable(entry, outcome)
            else:
                self._settle_function(entry, outcome)
        except KeyboardInterrupt:
            raise
        except BaseException as exc:
            # Loading what the worker sent ran the task's own code (a
            # __reduce__ raising, even CancelledError or SystemExit): that
            # fails this task only; the chunk's others are still reported.
            self._fail(entry, StandInError(type(exc).__qualname__, str(exc)))

    def _settle_function(self, entry: _Entry, outcome: _worker.Outcome) -> None:
        status, payload, stderr, type_name, message = outcome
        task = entry.task
        if status == _worker.OK:
            try:
                task["return_value"] = cloudpickle.loads(payload)
            except Exception as exc:
                self._fail(entry, StandInError(type(exc).__qualname__, str(exc)))
                return
            self._finish(entry, TaskState.DONE)
        elif status == _worker.FAILED:
            self._fail(entry, _load_exception(payload, type_name, message), stderr)
        else:
            self._skipped(entry)

    def _skipped(self, entry: _Entry) -> None:
        """A worker skipped the task: a cancel whose answer did not come marked it.

        It did not run and will not: CANCELED is true.
        """
        entry.canceled = True
        self._finish(entry, TaskState.CANCELED)

    def _settle_executable(self, entry: _Entry, outcome: _worker.Outcome) -> None:
        status, payload, stderr, type_name, message = outcome
        task = entry.task
        if status == _worker.EXITED:
            stdout, err, exit_code, exception = cloudpickle.loads(payload)
            task.update(stdout=stdout, stderr=err, exit_code=exit_code)
            task["exception"] = exception
            done = exit_code == 0
            self._finish(entry, TaskState.DONE if done else TaskState.FAILED)
        elif status == _worker.FAILED:
            task.update(stdout=None, exit_code=None)
            self._fail(entry, _load_exception(payload, type_name, message), stderr)
        else:
            self._skipped(entry)

    def _settle_error(self, future: Any, exc: BaseException) -> None:
        chunk = self._chunks.pop(future.key, None)
        if chunk is None:
            return
        if isinstance(exc, KilledWorker):
            self._settle_lost(chunk, exc)
            return
        # Members with a cancel on its way wait for its answer (`_resolve`).
        for entry in chunk.entries:
            if entry.asking is not None and self._owes_result(entry):
                entry.held = functools.partial(self._fail, entry, exc)
            else:
                self._fail(entry, exc)

    def _settle_lost(self, chunk: _Chunk, exc: KilledWorker) -> None:
        """A worker died with ``chunk`` on it: fail only the task at fault (RS-12).

        Dask fails every task the dead worker held, running or queued, and
        cannot say which function of a chunk was running, so the death
        convicts no one. Each function task still owed a result runs again,
        alone, in a child process of a worker (`_worker.run_functions`,
        isolated), where a crash costs only that process: the task at fault
        fails there with `WorkerLostError`, the others complete. A function
        whose chunk ran before the crash may so run twice. An executable's
        child dies with its worker (on Linux), so it fails here; so does a
        task whose worker died `_MAX_LOSSES` times.
        """
        lost = WorkerLostError(
            f"the Dask worker running this task died ({exc}); the task's result is lost"
        )
        lost.__cause__ = exc
        again: list[_Entry] = []
        for entry in chunk.entries:
            if not self._owes_result(entry):
                continue
            if entry.asking is not None:
                # Decided once the cancel's answer is in (`_resolve`).
                entry.held = functools.partial(self._lose, entry, lost)
            elif self._lost_again(entry, lost):
                again.append(entry)
        if again:
            self._submit_functions(again, 1, isolated=True)

    def _lost_again(self, entry: _Entry, lost: WorkerLostError) -> bool:
        """Count a loss; whether ``entry`` runs again (else it failed here)."""
        entry.losses += 1
        if entry.kind is TaskKind.FUNCTION and entry.losses < _MAX_LOSSES:
            return True
        self._fail(entry, lost)
        return False

    def _lose(self, entry: _Entry, lost: WorkerLostError) -> None:
        if self._lost_again(entry, lost):
            self._submit_functions([entry], 1, isolated=True)

    # -- cancellation ------------------------------------------------------------

    async def cancel_task(self, uid: str) -> bool:
        """Cancel a task; ``True`` iff it will be (or has been) reported CANCELED.

        A task not yet sent to Dask is reported CANCELED on the next loop
        turn. For one already sent, the cancel goes to every worker
        (`_flush_cancels`, cancels made meanwhile share the call) and this
        waits for their answer: a task that had not started is marked there
        and never starts (CN-6), and a running executable's (or isolated
        re-run's) process group is killed: ``True``, CANCELED. A function
        that had started in a worker thread cannot be stopped: ``False``, and
        its own outcome (DONE or FAILED) is reported. If a worker does not
        answer within ``2 * (kill_grace + 5)`` seconds or answers with an
        error, the backend cannot know: ``False``, and whatever the task's
        outcome turns out to be is reported (CANCELED only if a worker that
        got the mark skipped it).

        Args:
            uid: The task's uid.

        Returns:
            ``True`` when the task is reported CANCELED exactly once (CN-4);
            ``False`` for unknown or finished uids, and for a task the
            workers could not stop or did not answer for.
        """
        entry = self._job(uid)
        if entry is None:
            return False
        if entry.canceled:
            return True
        loop = asyncio.get_running_loop()
        if entry.chunk is None:  # still queued here: it never reaches Dask
            self._cancel_soon(entry, loop)
            return True
        answer = entry.asking
        if answer is None:
            answer = entry.asking = loop.create_future()
            self._kill_waiters.append(entry)
            if self._flusher is None or self._flusher.done():
                self._flusher = loop.create_task(self._flush_cancels())
        try:
            # Bounded: a flush in progress, then the one carrying this cancel.
            return await asyncio.wait_for(
                asyncio.shield(answer), 2 * (self._kill_grace + _REMOTE_SLACK) + 1
            )
        except asyncio.TimeoutError:
            if answer.done():
                return answer.result()
            answer.set_result(False)  # so `_resolve` lets its outcome stand
            if entry.asking is answer:
                # No answer came: its outcome, if it arrived, stands now
                # (delivered on a later loop turn, not from in here: ST-5).
                entry.asking = None
                held, entry.held = entry.held, None
                if held is not None:
                    loop.call_soon(self._apply_held, entry, held)
            return False

    def _apply_held(self, entry: _Entry, held: Callable[[], None]) -> None:
        if self._owes_result(entry):
            held()

    async def _flush_cancels(self) -> None:
        """Send the cancels collected so far in one call; repeat until none."""
        while self._kill_waiters or self._futures_to_cancel:
            waiters, self._kill_waiters = self._kill_waiters, []
            futures, self._futures_to_cancel = self._futures_to_cancel, []
            keys = [e.key for e in waiters]
            chunks = [cast(_Chunk, e.chunk).key for e in waiters]
            answers: dict[str, Any] | None = None
            try:
                answers = await asyncio.wait_for(
                    self._cancel_remote(keys, chunks, futures),
                    self._kill_grace + _REMOTE_SLACK,
                )
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.exception("backend %r: canceling on Dask failed", self.name)
            killed: set[str] = set()
            unstoppable: set[str] = set()
            complete = answers is not None and bool(answers)
            for reply in (answers or {}).values():
                if isinstance(reply, (tuple, list)) and len(reply) == 2:
                    killed.update(reply[0])
                    unstoppable.update(reply[1])
                else:  # a worker failed to answer: it may hold the task
                    complete = False
            for entry in waiters:
                chunk = cast(_Chunk, entry.chunk)
                if entry.held is not None and not (
                    entry.kind is TaskKind.EXECUTABLE or chunk.isolated
                ):
                    # A thread-run function's outcome says for certain whether
                    # it ran, whatever a worker may have forgotten since.
                    stopped = entry.skipped
                elif entry.key in killed:  # it ran there, so nowhere else
                    stopped = True
                elif complete:
                    stopped = entry.key not in unstoppable
                else:  # cannot know, unless its outcome says it was skipped
                    stopped = entry.held is not None and entry.skipped
                try:
                    self._resolve(entry, stopped)
                except Exception:  # a bug here must not strand the others
                    logger.exception("backend %r: resolving a cancel", self.name)

    def _resolve(self, entry: _Entry, stopped: bool) -> None:
        """Apply the workers' answer to a cancel: CANCELED, or the outcome stands."""
        answer = entry.asking
        entry.asking = None
        held, entry.held = entry.held, None
        if answer is not None and answer.done():
            stopped = answer.result()  # cancel_task gave up waiting: it said False
        if self._jobs.get(entry.uid) is not entry:  # shutdown reported it
            stopped = entry.canceled
        elif stopped:
            entry.canceled = True
            self._finish(entry, TaskState.CANCELED)
            chunk = entry.chunk
            if chunk is not None:
                chunk.live -= 1
                if chunk.live == 0 and chunk.future is not None:
                    # Every member is canceled: Dask may drop the task.
                    self._futures_to_cancel.append(chunk.future)
        elif held is not None:
            self._apply_held(entry, held)  # it arrived meanwhile: it stands
        if answer is not None and not answer.done():
            answer.set_result(stopped)

    async def _cancel_remote(
        self, keys: list[str], chunks: list[str], futures: list[Any]
    ) -> dict[str, Any] | None:
        """Cancel Dask futures, and ``keys`` on every worker: each worker's answer."""
        if futures:
            await self._client.cancel(futures, force=True)
        if not keys:
            return None
        answers: dict[str, Any] = await self._client.run(
            _worker.cancel_keys, keys, self._kill_grace, chunks, on_error="return"
        )
        return answers


def _refusal(
    entry: _Entry, demand: ResourceDemand, capacity: ResourceCapacity
) -> BackendError | None:
    """Why a task with a valid ``demand`` can never run here, if it cannot."""
    if entry.kind is TaskKind.FUNCTION:
        refusal = function_refusal(entry.uid, demand)
        if refusal is not None:
            return refusal
    if demand.ranks > 1:
        return CapabilityNotSupportedError(
            "ranks > 1 on Dask",
            f"task {entry.uid!r} asks for {demand.ranks} ranks; the Dask backend "
            "has no MPI launcher (use cores_per_rank for one multi-core process)",
        )
    if not demand.fits(capacity):
        return unavailable(entry.uid, demand, capacity)  # RQ-2: never pending in Dask
    return None


def _unsendable_error(
    uid: str, parts: Iterable[tuple[str, Any]], exc: Exception
) -> TypeError:
    """The error failing a task that cannot be pickled, naming the part at fault."""
    what = _unsendable(parts) or "its function or arguments"
    error = TypeError(
        f"task {uid!r}: {what} cannot be pickled to send it to the Dask workers: {exc}"
    )
    error.__cause__ = exc
    return error


def _unsendable(parts: Iterable[tuple[str, Any]], depth: int = 0) -> str:
    """Name the first part that does not pickle: ``"arguments[1] (Lock)"``.

    Lists, tuples and dicts are searched one level further down (twice at
    most: ``task_backend_specific_kwargs['env']['X']``), so the name points
    at the value itself rather than at the container holding it.
    """
    for name, value in parts:
        try:
            cloudpickle.dumps(value)
        except Exception:
            inner: list[tuple[str, Any]] = []
            if depth < 2 and isinstance(value, (list, tuple)):
                inner = [(f"{name}[{i}]", v) for i, v in enumerate(value)]
            elif depth < 2 and isinstance(value, dict):
                inner = [(f"{name}[{k!r}]", v) for k, v in value.items()]
            return _unsendable(inner, depth + 1) or (
                f"{name} ({type(value).__qualname__})"
            )
    return ""


def _load_exception(
    payload: bytes | None, type_name: str, message: str
) -> BaseException:
    """Rebuild a task's exception, or a `StandInError` naming its type."""
    if payload is not None:
        try:
            exc = cloudpickle.loads(payload)
        except Exception:
            pass
        else:
            if isinstance(exc, BaseException):
                return exc
    return StandInError(type_name, message)


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


async def _cancel_and_wait(task: asyncio.Task[None] | None) -> None:
    if task is None or task.done():
        return
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError, Exception):
        await asyncio.wait_for(task, _CLOSE_TIMEOUT)


# -- a shared LocalCluster, for the conformance suite and tests --------------------

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
from reference.dask import _host_shared_cluster
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
        capacity = _SHARED_CAPACITY
        options = {
            "n_workers": 1,
            "threads_per_worker": capacity.cores,
            "resources": {
                "CPU": capacity.cores,
                "GPU": len(capacity.gpus),
                "MEMORY": capacity.memory,
            },
        }
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
        cluster.close(timeout=_CLOSE_TIMEOUT)


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
    backend._capacity = _SHARED_CAPACITY
    backend.capabilities = backend.capabilities | {Capability.RESOURCES}
    return backend
