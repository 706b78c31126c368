"""`ChaosBackend`: the wrapper that applies the chaos policy to an inner backend.

What to delay, reorder, omit or lose is decided by `ChaosPolicy`
(`reference.chaos._policy`); this module carries it out: it keeps the
tasks in flight, holds their states in `Deliveries` until due, and answers
cancels and shutdown within the contract.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any, cast

from typing_extensions import Self

from reference._base import BackendBase, BackendFacade, _ignore_state
from reference.chaos._deliveries import Deliveries
from reference.chaos._entries import Entry as _Entry
from reference.chaos._entries import HeldBatch as _HeldBatch
from reference.chaos._entries import uid_of as _uid_of
from reference.chaos._forwarding import InnerForwarding
from reference.chaos._policy import (
    ChaosDecisions,
    ChaosPolicy,
    RunningPolicy,
)
from spec import (
    BackendShutdownError,
    BackendState,
    Capability,
    ExecutionBackend,
    TaskState,
    capabilities_of,
    validate_batch,
)

__all__ = ["ChaosBackend"]

logger = logging.getLogger("reference.chaos")


class ChaosBackend(InnerForwarding, BackendFacade):
    """Wraps a backend and takes, reproducibly, every liberty the contract allows.

    For engine authors: run your engine over it with several seeds, and a
    hidden reliance on polite backend behaviour shows up as a failure you can
    replay. Within the contract (with ``worker_loss=0`` it passes the
    conformance suite for any seed), it:

    - delivers every state after a random delay of up to ``max_delay``
      seconds, so completions arrive in another order than the tasks
      finished;
    - leaves RUNNING out for a share ``omit_running`` of the tasks, and for a
      share ``late_running`` holds it back until just before the terminal
      state (sending one for a task that ended DONE even when the inner
      backend sent none: it did run);
    - for a share ``lose_cancel`` of the tasks, lets ``cancel_task`` wait up
      to ``cancel_wait`` seconds for the task to finish first, and then
      return False while DONE (or FAILED) stands. A task whose terminal state
      is held back has finished, so cancelling it always returns False; a
      True comes from the inner backend (or is for a task never handed to
      it) and the task ends CANCELED;
    - holds each batch back in ``submit_tasks`` for a seeded share of
      ``submit_delay`` seconds before handing it over (a task cancelled
      meanwhile is never handed over, and ends CANCELED), so an engine's other
      coroutines run while its submit is suspended;
    - in ``shutdown()``, keeps delivering for a seeded 50-100% of
      ``shutdown_delay`` seconds before it shuts the inner backend down, then
      delivers everything still held back;
    - with ``worker_loss`` above 0 (off by default, and then the backend no
      longer conforms: tasks fail that would not), fails that share of the
      tasks with `spec.WorkerLostError`: their work is cancelled in the inner
      backend when it starts, and any result is discarded.

    Every decision comes from ``seed`` and the task's uid alone (see
    `decisions`), so the same seed makes the same decisions for the same
    tasks, whatever else runs. The seed is in ``repr()`` and in the INFO line
    logged (logger ``reference.chaos``) when the backend is built.

    It uses only the inner backend's public contract: ``submit_tasks``,
    ``cancel_task``, ``shutdown``, ``register_callback``, ``state`` and the
    engine-facing attributes (``_work_dir``, ``is_attached``,
    ``attached_to``, the data-linking flags and hooks, ``build_task``) and
    the resource ``capacity``, which it forwards. Its capabilities are the
    inner backend's.

    Args:
        inner: The backend to wrap; a new `reference.LocalExecutionBackend`
            when ``None``. The chaos backend shuts it down in ``shutdown()``.
        seed: The seed every decision is drawn from.
        name: Name in an engine's registry; the inner backend's by default.
        max_delay: Most seconds a state is held back.
        omit_running: Share of the tasks whose RUNNING is never delivered.
        late_running: Share of the tasks whose RUNNING comes just before the
            terminal state.
        lose_cancel: Share of the tasks whose cancel waits for the task to
            finish first.
        cancel_wait: Most seconds such a cancel waits before it forwards the
            cancel to the inner backend.
        shutdown_delay: Most seconds ``shutdown()`` keeps delivering before it
            shuts the inner backend down.
        submit_delay: Most seconds ``submit_tasks`` holds a batch back before
            it hands it to the inner backend.
        worker_loss: Share of the tasks failed with `spec.WorkerLostError`.

    Raises:
        TypeError: ``seed`` is not an int, ``name`` not a str, or an option
            not a number.
        ValueError: A delay is negative, NaN or infinite, a share is outside
            [0, 1] or NaN, or ``omit_running + late_running`` exceeds 1.
    """

    def __init__(
        self,
        inner: ExecutionBackend | None = None,
        *,
        seed: int = 0,
        name: str | None = None,
        max_delay: float = 0.005,
        omit_running: float = 0.3,
        late_running: float = 0.3,
        lose_cancel: float = 0.5,
        cancel_wait: float = 0.005,
        shutdown_delay: float = 0.01,
        submit_delay: float = 0.002,
        worker_loss: float = 0.0,
    ) -> None:
        self._policy = ChaosPolicy.check(
            seed,
            max_delay=max_delay,
            omit_running=omit_running,
            late_running=late_running,
            lose_cancel=lose_cancel,
            cancel_wait=cancel_wait,
            shutdown_delay=shutdown_delay,
            submit_delay=submit_delay,
            worker_loss=worker_loss,
        )
        if name is not None and not isinstance(name, str):
            raise TypeError(f"name must be a str, got {type(name).__name__}")
        if inner is None:
            from reference.local import LocalExecutionBackend

            inner = LocalExecutionBackend(name="default" if name is None else name)
        for method in ("submit_tasks", "cancel_task", "shutdown", "register_callback"):
            if not callable(getattr(inner, method, None)):
                raise TypeError(
                    f"inner must be an execution backend; {type(inner).__name__} "
                    f"has no {method}()"
                )
        super().__init__(inner)
        self.seed = seed
        self._name = name if name is not None else str(getattr(inner, "name", "chaos"))
        self._callback: Callable[..., None] = _ignore_state
        self._deliveries = Deliveries(self._policy, self._report, self._report_ready)
        # Batches accepted, not yet handed to the inner backend (submit_delay).
        self._held: list[_HeldBatch] = []
        self._closing: asyncio.Event | None = None
        self._shut_down = False
        self._chores: set[asyncio.Task[Any]] = set()
        inner.register_callback(self._on_inner_state)
        logger.info("%r: replay this run with seed=%d", self, seed)

    # -- identity ------------------------------------------------------------

    def __repr__(self) -> str:
        options = self._policy.describe()
        return f"ChaosBackend({type(self._inner).__name__}, {options})"

    @property
    def name(self) -> str:
        """Name of the backend in an engine's registry (LC-8)."""
        return self._name

    @property
    def inner(self) -> Any:
        """The wrapped backend."""
        return self._inner

    @property
    def capabilities(self) -> frozenset[Capability]:
        """The inner backend's capabilities: chaos takes none away."""
        return capabilities_of(self._inner)

    @property
    def capacity(self) -> Any:
        """The inner backend's resource capacity (capability ``resources``).

        Raises:
            AttributeError: The inner backend has none (so the chaos backend
                does not satisfy `spec.SupportsResources` either).
        """
        try:
            return self._inner.capacity
        except AttributeError:
            raise AttributeError(
                f"{type(self._inner).__name__} has no resource capacity"
            ) from None

    def decisions(self, uid: str) -> ChaosDecisions:
        """Return what this backend decides for the task ``uid``.

        A pure function of the seed, the options and ``uid``: call it before,
        during or after a run to see (or predict) what happened to a task.

        Args:
            uid: A task uid.

        Returns:
            The task's decisions.
        """
        return self._policy.decisions(uid)

    def submit_pause(self, first_uid: str) -> float:
        """Seconds ``submit_tasks`` holds a batch back before handing it over.

        Drawn from the seed and the uid of the batch's first task: a seeded
        0-100% of ``submit_delay``.

        Args:
            first_uid: The uid of the batch's first task.

        Returns:
            The pause.
        """
        return self._policy.submit_pause(first_uid)

    def shutdown_pause(self) -> float:
        """Seconds ``shutdown()`` keeps delivering before it stops the inner backend.

        A seeded 50-100% of ``shutdown_delay``.
        """
        return self._policy.shutdown_pause()

    # -- lifecycle -----------------------------------------------------------

    def _closed(self) -> bool:
        """Whether ``shutdown()`` has been called."""
        return self._closing is not None or self._shut_down

    def state(self) -> BackendState:
        """Return the lifecycle state: the inner one, SHUTDOWN from shutdown() on."""
        if self._closed():
            return BackendState.SHUTDOWN
        return BackendState(self._inner.state())

    async def _start(self) -> Self:
        # ``await chaos`` awaits the inner backend where it can be (LC-5).
        if callable(getattr(self._inner, "__await__", None)):
            await self._inner
        return self

    # -- submission ----------------------------------------------------------

    async def submit_tasks(self, tasks: list[dict[str, Any]]) -> None:
        """Accept a batch and hand it to the inner backend.

        Args:
            tasks: Task dicts, each with a unique string ``uid``.

        Raises:
            InvalidTaskError: An entry is not a dict or lacks a string uid.
            DuplicateTaskError: A uid repeats, or is in flight here (a task
                whose state is still held back is in flight).
            BackendShutdownError: The backend is shut down or shutting down.
        """
        if self._closed():
            raise BackendShutdownError(
                f"chaos backend {self._name!r} is shut down; submit_tasks refused "
                f"{len(tasks) if isinstance(tasks, list) else 'the'} task(s)"
            )
        validate_batch(tasks, self._deliveries.in_flight)
        self._deliveries.due.loop = asyncio.get_running_loop()
        # Recorded before the inner call: the inner backend may deliver
        # while its submit_tasks is suspended.
        batch = list(tasks)
        self._deliveries.in_flight.update(zip(map(_uid_of, batch), batch, strict=True))
        try:
            pause = self.submit_pause(batch[0]["uid"]) if batch else 0.0
            if pause > 0:
                batch = await self._pause_submit(batch, pause)
                if self._closed():
                    return  # shutdown reports the whole batch CANCELED
            if batch:
                await self._inner.submit_tasks(batch)
        except BaseException:
            # Nothing of the batch is accepted, except what a cancel already
            # promised to report CANCELED (CN-4).
            for task in batch:
                entry = self._deliveries.entry(task["uid"])
                if (
                    entry is not None
                    and entry.task is task
                    and not entry.cancel_promised
                ):
                    self._deliveries.drop(entry)
            raise

    async def _pause_submit(
        self, batch: list[dict[str, Any]], pause: float
    ) -> list[dict[str, Any]]:
        """Hold the batch back; return the tasks not cancelled meanwhile."""
        held = _HeldBatch(batch)
        self._held.append(held)
        try:
            await asyncio.sleep(pause)
        finally:
            self._held.remove(held)
        if not held.cancelled:
            return batch
        return [task for task in batch if task["uid"] not in held.cancelled]

    # -- what the inner backend reports --------------------------------------

    def _on_inner_state(self, task: Any, state: Any, **extra: Any) -> None:
        uid = task.get("uid") if isinstance(task, dict) else None
        entry = self._deliveries.entry(uid) if isinstance(uid, str) else None
        if entry is None or entry.terminal is not None:
            logger.debug("chaos: ignoring %s for %r, not in flight here", state, uid)
            return
        if "service_callback" in extra:
            # A service is ready: held back like its RUNNING (SV-2).
            self._deliveries.hold_ready(entry, extra["service_callback"])
            return
        try:
            state = TaskState(state)
        except ValueError:
            logger.warning("chaos: inner backend reported %r for %r", state, uid)
            return
        decisions = self._deliveries.decide(entry)
        if state is TaskState.RUNNING:
            if entry.saw_running:
                return
            entry.saw_running = True
            if decisions.worker_lost and not entry.cancel_promised:
                self._lose_worker(entry)
            if decisions.running is RunningPolicy.ON_TIME:
                self._deliveries.hold_running(entry)
            return
        if (
            decisions.worker_lost
            and not entry.cancel_promised
            and state is TaskState.DONE
        ):
            # It ran, but its result is lost with the worker on the way back.
            self._mark_lost(entry)
        if entry.lost:
            state = TaskState.FAILED
        self._deliveries.hold_terminal(entry, state)

    def _lose_worker(self, entry: _Entry) -> None:
        """Stop the task's work in the inner backend, as a dead worker would."""
        self._mark_lost(entry)
        loop = self._deliveries.due.loop or asyncio.get_running_loop()
        chore = loop.create_task(self._inner.cancel_task(entry.uid))
        self._chores.add(chore)
        chore.add_done_callback(self._chores.discard)

    def _mark_lost(self, entry: _Entry) -> None:
        if entry.lost:
            return
        entry.lost = True
        logger.debug("chaos (seed %d): worker of %r lost", self.seed, entry.uid)

    # -- delivery ------------------------------------------------------------

    def task_state_cb(self, task: dict[str, Any], state: str) -> None:
        """Observe every state this backend delivers, before the callback."""

    def _report(self, task: dict[str, Any], state: TaskState) -> None:
        """Deliver one state as every reference backend does (ST-7, ST-8).

        The same code as theirs: it needs only ``task_state_cb`` and
        ``_callback``, which this backend has too.
        """
        BackendBase._report(cast(Any, self), task, state)

    def _report_ready(self, task: dict[str, Any], ready: Any) -> None:
        """Tell the engine a service is ready, as every reference backend does."""
        BackendBase._report_ready(cast(Any, self), task, ready)

    # -- cancellation --------------------------------------------------------

    async def cancel_task(self, uid: str) -> bool:
        """Cancel a task, perhaps losing the race to its completion.

        Args:
            uid: The task's uid.

        Returns:
            ``True`` if the task will be reported CANCELED (the inner backend
            promised it, or the task was never handed to it); ``False`` for
            unknown or finished uids, for a task whose terminal state is only
            held back, for a task whose worker was lost, and for a task that
            finished while the cancel waited.
        """
        try:
            entry = self._deliveries.entry(uid)
        except TypeError:  # an unhashable uid is unknown, not an error (CN-2)
            return False
        if entry is None:
            return False
        settled = self._settled(entry)
        if settled is not None:
            return settled
        if self._deliveries.decide(entry).loses_cancel_race and self._closing is None:
            loop = asyncio.get_running_loop()
            entry.waiter = waiter = loop.create_future()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(asyncio.shield(waiter), self._policy.cancel_wait)
            # The wait let the task run on: look again (mypy keeps the
            # narrowing from before the await, hence the helper).
            settled = self._settled(entry)
            if settled is not None:
                if not settled:
                    logger.debug(
                        "chaos (seed %d): %r finished before its cancel", self.seed, uid
                    )
                return settled
        held = next((h for h in self._held if h.holds(uid)), None)
        if held is not None:
            # Not handed to the inner backend yet: it never will be.
            held.cancelled.add(uid)
            entry.cancel_promised = True
            self._deliveries.hold_terminal(entry, TaskState.CANCELED)
            return True
        try:
            promised = await self._inner.cancel_task(uid)
        except Exception:
            logger.exception("inner cancel_task(%r) raised; reporting False", uid)
            return False
        if promised is not True:
            return False
        if self._deliveries.owns(entry):
            entry.cancel_promised = True
        return True

    def _settled(self, entry: _Entry) -> bool | None:
        """What a cancel of ``entry`` returns without asking the inner backend."""
        if not self._deliveries.owns(entry):
            return False
        if entry.terminal is not None or entry.lost:
            return False
        if entry.cancel_promised:
            return True
        return None

    # -- shutdown ------------------------------------------------------------

    async def shutdown(self) -> None:
        """Keep delivering for a while, shut the inner backend down, deliver the rest.

        Idempotent. Every task still in flight is reported before it returns
        (CANCELED where the inner backend cancelled it, or where it reported
        nothing); no callback follows it.
        """
        if self._shut_down:
            return
        if self._closing is not None:
            await self._closing.wait()
            return
        closing = self._closing = asyncio.Event()
        logger.info("%r: shutting down", self)
        try:
            # States keep arriving meanwhile: the engine must cope with that.
            await asyncio.sleep(self.shutdown_pause())
        finally:
            # Even when cancelled in the pause: the inner backend's children
            # must not outlive us (SD-5), and every task gets its state (SD-2).
            try:
                await self._inner.shutdown()
            finally:
                for chore in list(self._chores):
                    chore.cancel()
                self._deliveries.flush()
                self._shut_down = True
                closing.set()
