"""Mutants of the strict dry-run backend: each breaks one clause, on purpose.

The noop backend finishes every task on the next loop turn, so its mutants
are the cheapest to run; they are used wherever the clause does not need a
backend that really runs functions or executables.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from reference import NoopExecutionBackend
from reference._base import Job
from spec import BackendShutdownError, BackendState, TaskState, validate_batch


class NotReadyUntilStarted(NoopExecutionBackend):
    """LC-1: holds every task until ``await backend`` starts it."""

    def __init__(self) -> None:
        super().__init__()
        self._held: list[dict[str, Any]] = []
        self._started = False

    def _complete(self, batch: list[dict[str, Any]]) -> None:
        if not self._started:
            self._held.extend(batch)  # kept in flight; shutdown cancels it
            return
        super()._complete(batch)

    async def _start(self) -> NotReadyUntilStarted:
        self._started = True
        await super()._start()
        held, self._held = self._held, []
        super()._complete(held)
        return self


class RefusesUntilAwaited(NoopExecutionBackend):
    """LC-1: ``submit_tasks`` raises until ``await backend`` has started it."""

    async def submit_tasks(self, tasks: list[dict[str, Any]]) -> None:
        if self._state is BackendState.INITIALIZED:
            raise RuntimeError("backend not started: await it first")
        await super().submit_tasks(tasks)


class AsyncState(NoopExecutionBackend):
    """LC-2: ``state()`` is ``async def`` (as in rhapsody-py 0.6)."""

    async def state(self) -> BackendState:  # type: ignore[override]
        return self._state


class StateGoesBackToInitialized(NoopExecutionBackend):
    """LC-3: ``state()`` says INITIALIZED again whenever nothing is in flight."""

    def state(self) -> BackendState:
        if self._state is BackendState.RUNNING and not self._jobs:
            return BackendState.INITIALIZED
        return self._state


class KeepsFirstCallback(NoopExecutionBackend):
    """LC-4: a second ``register_callback`` is ignored; the first one stays."""

    _registered = False

    def register_callback(self, func: Callable[[Any, str], None]) -> None:
        if not self._registered:
            self._registered = True
            super().register_callback(func)


class AwaitReturnsNone(NoopExecutionBackend):
    """LC-5: ``await backend`` returns None instead of the backend."""

    async def _start(self) -> Any:
        await super()._start()
        return None


class AsyncWithDoesNotShutDown(NoopExecutionBackend):
    """LC-6: leaving ``async with`` does not shut the backend down."""

    async def __aexit__(self, *exc_info: Any) -> None:
        return None


class AsyncWithBindsOther(NoopExecutionBackend):
    """LC-6: ``async with backend as b`` binds something other than the backend."""

    async def __aenter__(self) -> Any:
        await super().__aenter__()
        return object()


class _BritishStates:
    DONE = "DONE"
    RUNNING = "RUNNING"
    CANCELED = "CANCELLED"
    FAILED = "FAILED"
    terminal_states = frozenset({"DONE", "FAILED", "CANCELLED"})


class BritishStatesMap(NoopExecutionBackend):
    """LC-7: ``get_task_states_map().CANCELED`` is spelled "CANCELLED"."""

    def get_task_states_map(self) -> Any:
        return _BritishStates()


class NameNotStr(NoopExecutionBackend):
    """LC-8: ``name`` is an int."""

    def __init__(self) -> None:
        super().__init__()
        self.name = 7  # type: ignore[assignment]


class SubmitReturnsList(NoopExecutionBackend):
    """SB-1: ``submit_tasks`` returns a list (as radical.asyncflow 0.6 does)."""

    async def submit_tasks(self, tasks: list[dict[str, Any]]) -> Any:
        await super().submit_tasks(tasks)
        return list(tasks)


class DropsNonDicts(NoopExecutionBackend):
    """SB-2: entries that are not dicts are skipped instead of failing the batch."""

    def _accept(self, tasks: list[Any], new_job: Any) -> list[Job]:
        return super()._accept([t for t in tasks if isinstance(t, dict)], new_job)


class DropsTasksWithoutUid(NoopExecutionBackend):
    """SB-3: tasks without a string uid are skipped instead of failing the batch."""

    def _accept(self, tasks: list[Any], new_job: Any) -> list[Job]:
        kept = [
            t for t in tasks if not isinstance(t, dict) or isinstance(t.get("uid"), str)
        ]
        return super()._accept(kept, new_job)


class IgnoresUidsInFlight(NoopExecutionBackend):
    """SB-4: a uid already in flight is accepted (the duplicate is then ignored)."""

    def _accept(self, tasks: list[Any], new_job: Any) -> list[Job]:
        if self._state is BackendState.SHUTDOWN:
            return super()._accept(tasks, new_job)
        validate_batch(tasks, ())
        jobs = [new_job(task) for task in tasks]
        for job in jobs:
            self._jobs.setdefault(job.uid, job)
        self._state = BackendState.RUNNING
        return jobs


class NothingToRunIsDone(NoopExecutionBackend):
    """SB-5: a task with nothing to run is reported DONE, not FAILED."""

    def _finish(self, job: Any, state: TaskState) -> bool:
        task = job.task
        if state is TaskState.FAILED and task.get("function") is None:
            task.pop("exception", None)
            state = TaskState.DONE
        return super()._finish(job, state)


class IgnoresSubmitAfterShutdown(NoopExecutionBackend):
    """SB-7: a batch submitted after shutdown is silently dropped, not refused."""

    async def submit_tasks(self, tasks: list[dict[str, Any]]) -> None:
        if self._state is BackendState.SHUTDOWN:
            return
        await super().submit_tasks(tasks)


class RejectsEmptyBatch(NoopExecutionBackend):
    """SB-8: an empty batch raises instead of being accepted."""

    async def submit_tasks(self, tasks: list[dict[str, Any]]) -> None:
        if not tasks:
            raise ValueError("empty batch")
        await super().submit_tasks(tasks)


class OneFailureFailsBatch(NoopExecutionBackend):
    """SB-9: one task with nothing to run fails its whole batch."""

    def _complete(self, batch: deque[Job]) -> None:
        tasks = [job.task for job in batch]
        if any(t.get("function") is None and t.get("prompt") is None for t in tasks):
            for job in batch:
                job.task["exception"] = ValueError(
                    "a task of this batch has nothing to run"
                )
                self._finish(job, TaskState.FAILED)
            return
        super()._complete(batch)


class StatesAsStrings(NoopExecutionBackend):
    """ST-1: states are delivered as plain strings, not ``TaskState`` members."""

    def _report(self, task: dict[str, Any], state: TaskState) -> None:
        self._callback(task, state.value)


class LosesFailedTasks(NoopExecutionBackend):
    """ST-2: a task with nothing to run is never reported (until shutdown)."""

    def _finish(self, job: Any, state: TaskState) -> bool:
        if state is TaskState.FAILED:
            return False
        return super()._finish(job, state)


class RunningTwice(NoopExecutionBackend):
    """ST-3: RUNNING is reported twice before the terminal state."""

    def _finish(self, job: Any, state: TaskState) -> bool:
        task = job.task
        if state is not TaskState.CANCELED and self._jobs.get(job.uid) is job:
            self._report(task, TaskState.RUNNING)
            self._report(task, TaskState.RUNNING)
        return super()._finish(job, state)


class DeliversFromThread(NoopExecutionBackend):
    """ST-4: completions are delivered from a worker thread."""

    def _complete(self, batch: deque[Job]) -> None:
        worker = threading.Thread(target=super()._complete, args=(batch,))
        worker.start()
        worker.join()


class DeliversInsideSubmit(NoopExecutionBackend):
    """ST-5: states are delivered from inside ``submit_tasks``."""

    async def submit_tasks(self, tasks: list[dict[str, Any]]) -> None:
        self._complete(deque(self._accept(tasks, Job)))


class DeliversCopy(NoopExecutionBackend):
    """ST-6: the callback gets a copy of the task dict."""

    def _report(self, task: dict[str, Any], state: TaskState) -> None:
        super()._report(dict(task), state)


class CallbackErrorStopsBatch(NoopExecutionBackend):
    """ST-7: a callback's exception escapes; the rest of the batch is lost."""

    def _report(self, task: dict[str, Any], state: TaskState) -> None:
        self._callback(task, state)


class CallbackCancelStopsBatch(NoopExecutionBackend):
    """ST-8: a callback's CancelledError escapes (only Exception is contained)."""

    def _report(self, task: dict[str, Any], state: TaskState) -> None:
        with contextlib.suppress(Exception):
            self._callback(task, state)


class ReadsCallerList(NoopExecutionBackend):
    """SB-10: tasks are completed from the caller's list on a later loop turn."""

    async def submit_tasks(self, tasks: list[dict[str, Any]]) -> None:
        self._accept(tasks, Job)
        asyncio.get_running_loop().call_soon(self._complete_listed, tasks)

    def _complete_listed(self, tasks: list[dict[str, Any]]) -> None:
        jobs = [self._jobs[t["uid"]] for t in tasks if t.get("uid") in self._jobs]
        self._complete(deque(jobs))


class RunsWhatItShouldNot(NoopExecutionBackend):
    """RS-10: declares ``dry_run`` but calls function tasks."""

    def _complete(self, batch: deque[Job]) -> None:
        for job in batch:
            task = job.task
            func = task.get("function")
            if func is not None and self._owes_result(job):
                func(*task.get("args", ()), **task.get("kwargs", {}))
        super()._complete(batch)


class CancelReturnsNone(NoopExecutionBackend):
    """CN-1: ``cancel_task`` returns None for an unknown uid."""

    async def cancel_task(self, uid: str) -> Any:
        if self._job(uid) is None:
            return None
        return await super().cancel_task(uid)


class CancelUnknownRaises(NoopExecutionBackend):
    """CN-2: ``cancel_task`` raises KeyError for an unknown uid."""

    async def cancel_task(self, uid: str) -> bool:
        if self._job(uid) is None:
            raise KeyError(uid)
        return await super().cancel_task(uid)


class CancelFinishedSaysTrue(NoopExecutionBackend):
    """CN-3: ``cancel_task`` returns True for a task that already finished."""

    def __init__(self) -> None:
        super().__init__()
        self._seen: set[str] = set()

    def _accept(self, tasks: list[Any], new_job: Any) -> list[Job]:
        accepted = super()._accept(tasks, new_job)
        self._seen.update(job.uid for job in accepted)
        return accepted

    async def cancel_task(self, uid: str) -> bool:
        if uid in self._seen and uid not in self._jobs:
            return True
        return await super().cancel_task(uid)


class CancelPromisesButCompletes(NoopExecutionBackend):
    """CN-4: ``cancel_task`` returns True but the task still ends DONE."""

    async def cancel_task(self, uid: str) -> bool:
        return self._job(uid) is not None


class SecondShutdownRaises(NoopExecutionBackend):
    """SD-1: a second ``shutdown()`` raises."""

    async def shutdown(self) -> None:
        if self._state is BackendState.SHUTDOWN:
            raise BackendShutdownError("already shut down")
        await super().shutdown()


class ShutdownForgetsTasks(NoopExecutionBackend):
    """SD-2: ``shutdown()`` drops unfinished tasks without reporting them."""

    async def shutdown(self) -> None:
        self._state = BackendState.SHUTDOWN
        self._jobs.clear()


class CancelsAfterShutdownReturns(NoopExecutionBackend):
    """SD-3: unfinished tasks are reported CANCELED on a loop turn after shutdown."""

    async def shutdown(self) -> None:
        self._state = BackendState.SHUTDOWN
        for job in list(self._jobs.values()):
            asyncio.get_running_loop().call_soon(self._finish, job, TaskState.CANCELED)


class KeepsFinishedTasks(NoopExecutionBackend):
    """SC-1: every finished task dict is kept in a history list."""

    def __init__(self) -> None:
        super().__init__()
        self._history: list[dict[str, Any]] = []

    def _finish(self, job: Any, state: TaskState) -> bool:
        task = job.task
        self._history.append(task)
        return super()._finish(job, state)


class BatchTooLarge(NoopExecutionBackend):
    """SC-2: tasks past the first 1,000 of a batch are FAILED."""

    def _complete(self, batch: deque[Job]) -> None:
        jobs = list(batch)
        for job in jobs[1000:]:
            job.task["exception"] = RuntimeError("batch too large: 1,000 tasks at most")
            self._finish(job, TaskState.FAILED)
        super()._complete(deque(jobs[:1000]))


class BlocksLoopOnSubmit(NoopExecutionBackend):
    """SC-3: a large submit does 0.2 s of blocking work on the event loop."""

    async def submit_tasks(self, tasks: list[dict[str, Any]]) -> None:
        if len(tasks) >= 1000:
            time.sleep(0.2)  # the break under test: blocking the loop
        await super().submit_tasks(tasks)


class AttachedToTuple(NoopExecutionBackend):
    """CP-1: ``attached_to`` is a tuple, which the engine cannot append to."""

    def __init__(self) -> None:
        super().__init__()
        self.attached_to = ()  # type: ignore[assignment]


class NarrowLinkHook(NoopExecutionBackend):
    """CP-2: ``link_explicit_data_deps`` lacks the engine's ``file_path`` argument."""

    def link_explicit_data_deps(  # type: ignore[override]
        self,
        src_task: dict[str, Any] | None = None,
        dst_task: dict[str, Any] | None = None,
        file_name: str | None = None,
    ) -> None:
        return None


class RhapsodyBuildTask(NoopExecutionBackend):
    """CP-3: ``build_task(task)`` takes one argument (as in rhapsody-py 0.6)."""

    def build_task(self, task: dict[str, Any]) -> None:  # type: ignore[override]
        return None
