"""`ParslExecutionBackend`: runs tasks through a Parsl DataFlowKernel.

``submit_tasks`` only validates and queues (it never awaits, so no callback
runs inside it). A dispatcher task on the caller's loop starts the
DataFlowKernel (in a thread: it starts Parsl's interchange and asks the
provider for workers), waits until a worker has connected, then pickles
function tasks into chunks, one Parsl task per chunk, and submits each
executable as a Parsl task of its own. `reference.parsl._settle.Settler`
reports the outcomes, and runs again what Parsl lost.

Parsl cannot cancel a task it holds, so cancels go through claims (symbolic links) the
workers check before starting each task (`reference.parsl._claims`).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import shutil
import uuid
from collections import deque
from typing import Any

from typing_extensions import Self

from reference._base import _RUNS_FUNCTIONS_AND_EXECUTABLES, BackendBase, duration
from reference.parsl import _claims
from reference.parsl import _worker as _w
from reference.parsl._config import local_config
from reference.parsl._jobs import Chunk, ParslJob, resolve_asker
from reference.parsl._plan import chunk_size, pick_executor, prepare
from reference.parsl._settle import Settler
from spec import BackendError, BackendState, Capability, TaskKind, is_service

__all__ = ["ParslExecutionBackend"]

logger = logging.getLogger("reference.parsl")

_SLICE_SECONDS = 0.01  # dispatch work per loop turn: keeps the loop responsive
_REMOTE_SLACK = 5.0  # seconds a kill request may take on top of kill_grace
_CLEANUP_TIMEOUT = 30.0  # seconds Parsl's own cleanup may take


class ParslExecutionBackend(BackendBase[ParslJob]):
    """Runs function and executable tasks on Parsl (docs/parsl.md).

    Built from a ``parsl.Config`` (any provider: local, Slurm, PBS, LSF,
    Flux), whose DataFlowKernel it starts on ``await backend`` or the first
    task and cleans up on shutdown; or given a running ``dfk`` it uses and
    leaves running. By default, `reference.parsl.local_config`: a
    HighThroughputExecutor on this machine, one worker per core.

    ``cancel_task`` returns True only for a task that will never start (not
    yet sent to Parsl, or sent and claimed by the cancel before any worker
    claimed it) or a running executable whose process group it killed. A
    running function cannot be interrupted: False, and its outcome stands.

    Args:
        config: A ``parsl.config.Config``; ``None`` for `local_config()`.
        name: Name of the backend in an engine's registry.
        dfk: A running DataFlowKernel to use instead (not cleaned up).
        executor: The label of the executor to run on; needed when the
            configuration has several.
        chunk_size: Function tasks per Parsl task; ``None`` picks one from
            the backlog; ``1`` disables chunking.
        kill_grace: Seconds between SIGTERM and SIGKILL (cancel, timeout).
        start_timeout: Seconds to wait for the first worker to connect
            before failing with `spec.BackendError`; ``None`` waits forever
            (a batch queue may hold the workers for hours).
        claim_dir: Directory for the claims, on a file system the workers
            share; ``None`` for the DataFlowKernel's run directory.

    Raises:
        ValueError: Both ``config`` and ``dfk``, or an option out of range.
        TypeError: An option of the wrong type.
    """

    # crash_isolation: a lost worker fails only its own task (_settle.Settler).
    # Not preemptive_cancel: a running function cannot be stopped.
    capabilities = _RUNS_FUNCTIONS_AND_EXECUTABLES | {Capability.CRASH_ISOLATION}

    def __init__(
        self,
        config: Any = None,
        name: str = "default",
        *,
        dfk: Any = None,
        executor: str | None = None,
        chunk_size: int | None = None,
        kill_grace: float = 2.0,
        start_timeout: float | None = 120.0,
        claim_dir: str | None = None,
    ) -> None:
        super().__init__(name)
        if config is not None and dfk is not None:
            raise ValueError("give a parsl Config or a running dfk, not both")
        if chunk_size is not None and (
            isinstance(chunk_size, bool) or not isinstance(chunk_size, int)
        ):
            raise TypeError(f"chunk_size must be an int or None, got {chunk_size!r}")
        if chunk_size is not None and chunk_size < 1:
            raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
        if executor is not None and not isinstance(executor, str):
            raise TypeError(f"executor must be a label (str), got {executor!r}")
        self._grace = duration("kill_grace", kill_grace, zero_ok=True)
        self._start_timeout = (
            None if start_timeout is None else duration("start_timeout", start_timeout)
        )
        self._config = config if config is not None or dfk is not None else None
        self._dfk: Any = dfk
        self._owns_dfk = dfk is None
        self._label = executor
        self._chunk_size = chunk_size
        self._claim_base = claim_dir
        self._claims = ""
        self._mpi = False
        self._workers = 1
        self._counter = itertools.count()
        self._token = uuid.uuid4().hex[:10]
        self._pending: deque[ParslJob] = deque()
        self._settler = Settler(self, self._send, self._new_key)
        self._starter: asyncio.Task[None] | None = None
        self._opening: asyncio.Future[Any] | None = None  # the DataFlowKernel's start
        self._start_error: BaseException | None = None
        self._dispatcher: asyncio.Task[None] | None = None
        self._wake: asyncio.Event | None = None
        self._closed: asyncio.Future[None] | None = None

    # -- lifecycle -------------------------------------------------------------

    async def _start(self) -> Self:
        await super()._start()
        if self._state is not BackendState.SHUTDOWN:
            await self._ready()
            if self._start_error is not None:
                raise self._start_error
        return self

    async def _ready(self) -> None:
        """Start once; later callers wait for the same attempt."""
        if self._starter is None:
            self._starter = asyncio.get_running_loop().create_task(self._open())
        await asyncio.shield(self._starter)

    async def _open(self) -> None:
        from reference.parsl._start import open_dfk, wait_for_workers

        try:
            if self._dfk is None:
                config = self._config if self._config is not None else local_config()
                # Shielded: a shutdown during the start cancels this task, not
                # the thread; it waits for the DataFlowKernel to clean it up.
                self._opening = asyncio.ensure_future(
                    asyncio.to_thread(open_dfk, config)
                )
                self._dfk = await asyncio.shield(self._opening)
            self._label, executor = pick_executor(self._dfk.executors, self._label)
            self._mpi = bool(getattr(executor, "enable_mpi_mode", False))
            self._workers = await wait_for_workers(
                executor, self._label, self._start_timeout, self._dfk.run_dir
            )
            base = self._claim_base or os.path.join(self._dfk.run_dir, "claims")
            self._claims = os.path.abspath(os.path.join(base, self._token))
            os.makedirs(self._claims)
            self._settler.start(self._claims)
        except Exception as exc:
            error = exc if isinstance(exc, BackendError) else None
            self._start_error = error or BackendError(
                f"backend {self.name!r} could not start Parsl: {exc!r}"
            )
            self._start_error.__cause__ = exc

    # -- submission --------------------------------------------------------------

    async def submit_tasks(self, tasks: list[dict[str, Any]]) -> None:
        """Validate and queue a batch; it runs in the background (SB-1, SB-3).

        Raises:
            spec.TaskValidationError: The batch is malformed (nothing accepted).
            spec.BackendShutdownError: The backend is shut down.
        """
        self._pending.extend(self._accept(tasks, ParslJob))
        loop = asyncio.get_running_loop()
        if self._wake is None:
            self._wake = asyncio.Event()
        self._wake.set()
        if self._dispatcher is None:
            self._dispatcher = loop.create_task(self._dispatch())

    async def _dispatch(self) -> None:
        await self._ready()
        wake = self._wake
        assert wake is not None  # set with the dispatcher
        while True:
            if not self._pending:
                wake.clear()
                await wake.wait()
                continue
            if self._start_error is not None:  # fail what comes, at once
                while self._pending:
                    self._fail(self._pending.popleft(), self._start_error)
                continue
            self._dispatch_slice()
            await asyncio.sleep(0)

    def _dispatch_slice(self) -> None:
        """Hand one loop turn's worth of queued tasks to Parsl."""
        loop = asyncio.get_running_loop()
        end = loop.time() + _SLICE_SECONDS
        functions: dict[str, list[tuple[ParslJob, bytes]]] = {}
        specs: dict[str, dict[str, Any]] = {}
        while self._pending and loop.time() < end:
            for _ in range(64):
                if not self._pending:
                    break
                entry = self._pending.popleft()
                if not self._owes_result(entry):
                    continue
                prepared = self._prepare(entry)
                if prepared is None:
                    continue
                blob, spec = prepared
                if entry.kind is TaskKind.EXECUTABLE:
                    self._send(Chunk([entry], blob, spec))
                else:
                    group = repr(sorted(spec.items()))
                    functions.setdefault(group, []).append((entry, blob))
                    specs[group] = spec
        backlog = len(self._pending)
        for group, items in functions.items():
            size = self._chunk_size or chunk_size(len(items) + backlog, self._workers)
            for start in range(0, len(items), size):
                part = items[start : start + size]
                entries = [e for e, _ in part]
                self._send(Chunk(entries, [(e.key, b) for e, b in part], specs[group]))

    def _prepare(self, entry: ParslJob) -> tuple[bytes, dict[str, Any]] | None:
        """Pickle one task for Parsl and map its request; fail it if it cannot run."""
        kind = entry.kind
        if kind not in (TaskKind.FUNCTION, TaskKind.EXECUTABLE) or is_service(
            entry.task
        ):  # nothing to run here, a prompt, or a service (contract 1.2)
            self._fail(entry, self._unrunnable(entry.task))  # SB-5, SB-6
            return None
        entry.key = self._new_key()
        prepared = prepare(entry.task, kind, mpi=self._mpi)
        if isinstance(prepared, Exception):
            self._fail(entry, prepared)  # RQ-3, SB-9: this task only
            return None
        return prepared

    def _new_key(self) -> str:
        return f"{self._token}-{next(self._counter)}"

    def _send(self, chunk: Chunk) -> None:
        """Submit one chunk to the DataFlowKernel; fail its tasks if Parsl refuses."""
        kwargs = {"parsl_resource_specification": chunk.spec} if chunk.spec else {}
        if isinstance(chunk.payload, bytes):
            func: Any = _w.run_executable
            args: tuple[Any, ...] = (
                self._claims,
                chunk.entries[0].key,
                chunk.payload,
                self._work_dir,
                self._grace,
            )
        elif chunk.isolated:
            [(key, blob)] = chunk.payload
            func, args = _w.run_isolated, (self._claims, key, blob)
        else:
            func, args = _w.run_functions, (self._claims, chunk.payload)
        try:
            future = self._dfk.submit(
                func,
                app_args=args,
                executors=[self._label],
                cache=False,
                ignore_for_cache=[],
                app_kwargs=kwargs,
            )
        except Exception as exc:
            for entry in chunk.entries:
                self._fail(entry, BackendError(f"Parsl refused the task: {exc!r}"))
            return
        for entry in chunk.entries:
            entry.chunk = chunk
            entry.runs += 1
        self._settler.watch(chunk, future)

    # -- cancellation ------------------------------------------------------------

    async def cancel_task(self, uid: str) -> bool:
        """Cancel a task if that can be done for sure (CN-2..CN-6).

        Returns:
            ``True`` when the task is reported CANCELED exactly once (CN-4):
            it never started, or it was a running executable whose process
            group was killed. ``False`` for unknown or finished uids and for
            a running function, which cannot be interrupted.
        """
        entry = self._job(uid)
        if entry is None:
            return False
        if entry.canceled:
            return True
        loop = asyncio.get_running_loop()
        if entry.asking is None:
            won = False
            if entry.chunk is not None:
                try:
                    won = _claims.claim(self._claims, entry.key, _claims.CANCELED)
                except OSError:
                    return False  # the claims are gone: Parsl has it
            decision = _claims.decide(
                sent=entry.chunk is not None,
                won_claim=won,
                executable=entry.kind is TaskKind.EXECUTABLE,
            )
            if decision is _claims.Decision.CANCEL_NOW:
                self._cancel_soon(entry, loop)
                return True
            if decision is _claims.Decision.REFUSE:
                return False
            _claims.request_kill(self._claims, entry.key)
            entry.asking = loop.create_future()
        try:
            return await asyncio.wait_for(
                asyncio.shield(entry.asking), self._grace + _REMOTE_SLACK
            )
        except asyncio.TimeoutError:
            return False  # no answer in time: its outcome stands when it comes

    # -- shutdown ----------------------------------------------------------------

    async def shutdown(self) -> None:
        """Stop: CANCELED for every task in flight, Parsl cleaned up (SD-1..SD-5).

        Tasks Parsl holds that have not started are claimed so they never
        start; running executables are killed (their outcomes are awaited,
        at most ``kill_grace`` plus a few seconds). An owned DataFlowKernel
        is then cleaned up, which stops its interchange and workers.
        """
        if self._closed is not None:
            await asyncio.shield(self._closed)
            return
        loop = asyncio.get_running_loop()
        self._closed = loop.create_future()
        try:
            await self._close(loop)
        finally:
            self._closed.set_result(None)

    async def _close(self, loop: asyncio.AbstractEventLoop) -> None:
        self._state = BackendState.SHUTDOWN
        self._pending.clear()
        killing = False
        for chunk in list(self._settler.sent.values()):
            for entry in chunk.entries:
                with contextlib.suppress(OSError):
                    if _claims.claim(self._claims, entry.key, _claims.CANCELED):
                        continue
                    if entry.kind is TaskKind.EXECUTABLE and entry.asking is None:
                        _claims.request_kill(self._claims, entry.key)
                    killing = killing or entry.kind is TaskKind.EXECUTABLE
        if killing:
            await self._settler.wait_settled(self._grace + _REMOTE_SLACK)
        for entry in list(self._jobs.values()):
            resolve_asker(entry, True)
        self._cancel_all()
        self._settler.stop()
        if self._dispatcher is not None:
            self._dispatcher.cancel()
        if self._starter is not None and not self._starter.done():
            self._starter.cancel()
        if self._dfk is None and self._opening is not None:
            # Started while shutting down: wait for it, to clean it up (SD-5).
            with contextlib.suppress(Exception):
                self._dfk = await asyncio.wait_for(
                    asyncio.shield(self._opening), _CLEANUP_TIMEOUT
                )
        if self._owns_dfk and self._dfk is not None:
            from reference.parsl._start import close_dfk

            try:
                await asyncio.wait_for(
                    asyncio.to_thread(close_dfk, self._dfk), _CLEANUP_TIMEOUT
                )
            except asyncio.TimeoutError:
                logger.error("backend %r: Parsl's cleanup overran", self.name)
        if self._claims:
            await asyncio.to_thread(shutil.rmtree, self._claims, True)
