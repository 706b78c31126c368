"""`Settler`: reports finished Parsl tasks on the loop, and what Parsl lost.

Parsl calls back from its own thread; the settler hands the finished
futures to the event loop in batches and reports every task of a chunk
there (`reference.parsl._outcomes.apply_outcome`). A chunk Parsl lost, with
a worker that died (``WorkerLost``) or a result that never came though its
worker returned (found by `Settler.sweep`), has its tasks run again or
failed as `reference.parsl._decisions.after_loss` says. A settled chunk's
claims are deleted, and it lets go of its tasks (SC-1).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
from collections import deque
from collections.abc import Callable
from typing import Any

from reference.parsl import _claims
from reference.parsl import _worker as _w
from reference.parsl._decisions import AfterLoss, after_loss
from reference.parsl._jobs import Chunk, ParslHooks, ParslJob, resolve_asker
from reference.parsl._outcomes import apply_outcome
from spec import BackendError, TaskKind, TaskState, WorkerLostError

__all__ = ["Settler"]

logger = logging.getLogger("reference.parsl")

_LOST = ("WorkerLost", "ManagerLost")  # Parsl's exceptions for a dead worker
_SWEEP_PERIOD = 5.0  # seconds between looks for results Parsl lost
_CLAIM_SUFFIXES = ("", ".done", ".kill")  # a task's files in the claims directory


class Settler:
    """Takes Parsl's finished tasks and reports theirs; runs again what was lost.

    Args:
        host: The backend (reporting goes through its job table).
        send: Hands a chunk to Parsl (a run again).
        new_key: A new task key (each run has its own).
    """

    def __init__(
        self,
        host: ParslHooks,
        send: Callable[[Chunk], None],
        new_key: Callable[[], str],
    ) -> None:
        self._host = host
        self._send = send
        self._new_key = new_key
        self.sent: dict[int, Chunk] = {}  # id(chunk) -> chunk, until settled
        self._claims = ""
        self._loop: asyncio.AbstractEventLoop | None = None
        self._arrivals: deque[tuple[Chunk, Any]] = deque()  # from Parsl's thread
        self._drain_due = False
        self._settled: asyncio.Event | None = None
        self._sweeper: asyncio.Task[None] | None = None

    def start(self, claims: str) -> None:
        """Start on the running loop, with the claims directory, and sweep."""
        self._claims = claims
        self._loop = asyncio.get_running_loop()
        self._sweeper = self._loop.create_task(self._sweep())

    def stop(self) -> None:
        """Stop looking for lost results (shutdown)."""
        if self._sweeper is not None:
            self._sweeper.cancel()

    def watch(self, chunk: Chunk, future: Any) -> None:
        """Settle ``chunk`` when its Parsl ``future`` completes."""
        self.sent[id(chunk)] = chunk
        future.add_done_callback(functools.partial(self._arrived, chunk))

    async def wait_settled(self, timeout: float) -> None:
        """Wait, at most ``timeout`` seconds, until no chunk is left in Parsl."""
        if not self.sent:
            return
        self._settled = asyncio.Event()
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._settled.wait(), timeout)

    # -- finished chunks -------------------------------------------------------

    def _arrived(self, chunk: Chunk, future: Any) -> None:
        """Parsl's thread: hand a finished chunk to the loop (batched)."""
        self._arrivals.append((chunk, future))
        if not self._drain_due:
            self._drain_due = True
            loop = self._loop
            if loop is not None:
                with contextlib.suppress(RuntimeError):  # the loop has closed
                    loop.call_soon_threadsafe(self._drain)

    def _drain(self) -> None:
        self._drain_due = False
        while self._arrivals:
            chunk, future = self._arrivals.popleft()
            try:
                self.settle(chunk, future)
            except Exception:  # a bug here must not strand the other chunks
                logger.exception("backend %r: settling a Parsl task", self._host.name)

    def settle(self, chunk: Chunk, future: Any) -> None:
        """Report the tasks of a chunk whose Parsl future completed."""
        if not self._unsend(chunk):
            return  # settled already: `_sweep` found its result lost
        error = future.exception()
        if error is None:
            result = future.result()
            outcomes = result if isinstance(result, list) else [result]
            for entry, outcome in zip(chunk.entries, outcomes, strict=True):
                try:
                    self._apply(entry, outcome)
                except Exception as exc:  # fails this task only, never strands it
                    self._host._fail(
                        entry, BackendError(f"cannot read its outcome: {exc!r}")
                    )
        elif type(error).__name__ in _LOST:
            self._settle_lost(chunk, error)
        else:
            for entry in chunk.entries:
                resolve_asker(entry, False)
                self._host._fail(entry, error)
        self._release(chunk)

    def _apply(self, entry: ParslJob, outcome: _w.Outcome) -> None:
        status = outcome[0]
        resolve_asker(entry, status == _w.KILLED)
        host = self._host
        if not host._owes_result(entry):
            return
        if status == _w.KILLED:  # stopped on a cancel's request: it is true
            entry.canceled = True
            host._finish(entry, TaskState.CANCELED)
            return
        if status == _w.MISSING:
            host._fail(entry, _claims_not_shared(outcome[4]))
            return
        host._finish(entry, apply_outcome(entry.task, outcome))

    def _unsend(self, chunk: Chunk) -> bool:
        """Take ``chunk`` off the chunks in Parsl; whether it was still there."""
        if self.sent.pop(id(chunk), None) is None:
            return False
        if self._settled is not None and not self.sent:
            self._settled.set()
        return True

    def _release(self, chunk: Chunk) -> None:
        """Forget a settled chunk's claims; let go of its tasks."""
        self._forget_claims(chunk.keys)
        chunk.keys = []
        # Parsl keeps its futures (and their callbacks, which hold the chunk)
        # a while after they finish, a lost one for ever: the chunk lets go of
        # the tasks now (SC-1).
        chunk.entries = []
        chunk.payload = b""

    def _forget_claims(self, keys: list[str]) -> None:
        """Delete settled runs' claims and markers, in a thread."""
        paths = [
            os.path.join(self._claims, k + suffix)
            for k in keys
            if k
            for suffix in _CLAIM_SUFFIXES
        ]
        if paths and self._loop is not None:
            self._loop.run_in_executor(None, _unlink, paths)

    # -- lost chunks -----------------------------------------------------------

    def _settle_lost(
        self, chunk: Chunk, error: BaseException, *, returned: bool = False
    ) -> None:
        """Parsl lost ``chunk``: run each task owed a result again alone, or fail it.

        `reference.parsl._decisions.after_loss` decides, task by task.

        Args:
            chunk: The lost Parsl task's chunk.
            error: Why: Parsl's ``WorkerLost``, or a `_LostResult`.
            returned: Its worker returned (the done marker): only the result
                was lost.
        """
        host = self._host
        live = [e for e in chunk.entries if host._owes_result(e)]
        blobs = {} if isinstance(chunk.payload, bytes) else dict(chunk.payload)
        for entry in live:
            decision = after_loss(
                executable=entry.kind is TaskKind.EXECUTABLE,
                live=len(live),
                returned=returned,
                runs=entry.runs,
            )
            if decision is AfterLoss.RUN_AGAIN:
                # Alone, in a child process: if it kills its process, it
                # fails alone, and no Parsl worker dies with it.
                blob = blobs[entry.key]
                entry.key = self._new_key()
                self._send(
                    Chunk([entry], [(entry.key, blob)], chunk.spec, isolated=True)
                )
                continue
            resolve_asker(entry, False)
            lost = WorkerLostError(
                f"the Parsl worker running task {entry.uid!r} died: {error}"
            )
            lost.__cause__ = error
            host._fail(entry, lost)  # RS-12

    async def _sweep(self) -> None:
        """Find chunks whose worker returned but whose result Parsl lost.

        A chunk whose done marker was seen on two sweeps in a row, its result
        still missing, lost it with a worker killed right after: its
        functions run again, each alone (an executable fails, rather than
        run twice).
        """
        while True:
            await asyncio.sleep(_SWEEP_PERIOD)
            chunks = [c for c in self.sent.values() if c.entries]
            paths = [_claims.done_path(self._claims, c.keys[0]) for c in chunks]
            done = await asyncio.to_thread(_existing, paths) if paths else []
            for chunk, finished in zip(chunks, done, strict=True):
                if not finished or self.sent.get(id(chunk)) is not chunk:
                    continue
                if chunk.seen_done:
                    self._unsend(chunk)
                    self._settle_lost(chunk, _LostResult(), returned=True)
                    self._release(chunk)  # a result arriving after all is dropped
                chunk.seen_done = True


class _LostResult(Exception):
    """Stands for the worker death that lost a finished chunk's result."""

    def __str__(self) -> str:
        return "it finished, but its result was lost with a worker that died"


def _existing(paths: list[str]) -> list[bool]:
    return [os.path.lexists(path) for path in paths]


def _claims_not_shared(detail: str) -> BackendError:
    return BackendError(
        f"the Parsl worker cannot see the backend's claims directory: {detail}; "
        "give claim_dir on a file system shared with the workers"
    )


def _unlink(paths: list[str]) -> None:
    for path in paths:
        with contextlib.suppress(OSError):
            os.unlink(path)
