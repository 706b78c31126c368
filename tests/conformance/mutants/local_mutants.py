"""Mutants of the local backend (thread pool), for clauses that need real work.

Most break a result by tampering with the task in `_finish` (the one way the
reference backends report a terminal state) or with the task before it is
submitted, so they depend on little of the backend's internals. The process
mutants (CN-5, SD-5) have to reach into how children are stopped.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import os
import pickle
import signal
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from reference import LocalExecutionBackend
from reference._procpool import ProcessPool
from reference._procworker import parse
from spec import (
    CapabilityNotSupportedError,
    TaskState,
    TaskTimeoutError,
    WorkerLostError,
)


class _Local(LocalExecutionBackend):
    """The local backend on a small thread pool (2 workers: cheap, and queues)."""

    def __init__(self) -> None:
        super().__init__(ThreadPoolExecutor(2), kill_grace=0.5, shutdown_timeout=3.0)


def _is_executable(task: dict[str, Any]) -> bool:
    return task.get("function") is None and task.get("executable") is not None


class WrongCapabilityError(_Local):
    """SB-6: a prompt task fails with ValueError, not CapabilityNotSupportedError."""

    def _finish(self, job: Any, state: TaskState) -> bool:
        task = job.task
        error = task.get("exception")
        if isinstance(error, CapabilityNotSupportedError):
            task["exception"] = ValueError(str(error))
        return super()._finish(job, state)


class DropsKwargs(_Local):
    """RS-1: function tasks are called without their ``kwargs``."""

    async def submit_tasks(self, tasks: list[dict[str, Any]]) -> None:
        for task in tasks:
            if isinstance(task, dict) and task.get("kwargs"):
                task["kwargs"] = {}
        await super().submit_tasks(tasks)


class ForgetsAwaitedResult(_Local):
    """RS-2: an ``async def`` function's result is not stored (return_value None)."""

    def _finish(self, job: Any, state: TaskState) -> bool:
        task = job.task
        if state is TaskState.DONE and inspect.iscoroutinefunction(
            task.get("function")
        ):
            task["return_value"] = None
        return super()._finish(job, state)


class LosesExceptionType(_Local):
    """RS-3: a function's exception is replaced by a RuntimeError with its message."""

    def _finish(self, job: Any, state: TaskState) -> bool:
        task = job.task
        error = task.get("exception")
        if state is TaskState.FAILED and task.get("function") is not None:
            task["exception"] = RuntimeError(str(error))
        return super()._finish(job, state)


class NonZeroExitIsDone(_Local):
    """RS-4: an executable exiting non-zero is reported DONE."""

    def _finish(self, job: Any, state: TaskState) -> bool:
        task = job.task
        if state is TaskState.FAILED and task.get("exit_code"):
            state = TaskState.DONE
        return super()._finish(job, state)


class VagueExecutableError(_Local):
    """RS-5: a failed executable gets an exception that does not name it."""

    def _finish(self, job: Any, state: TaskState) -> bool:
        task = job.task
        if state is TaskState.FAILED and _is_executable(task):
            task["exception"] = RuntimeError("executable task failed")
        return super()._finish(job, state)


class IgnoresCaptureStdio(_Local):
    """RS-6: ``capture_stdio`` is ignored; stdout/stderr stay text."""

    async def submit_tasks(self, tasks: list[dict[str, Any]]) -> None:
        for task in tasks:
            if isinstance(task, dict):
                task.pop("capture_stdio", None)
        await super().submit_tasks(tasks)


class IgnoresEnv(_Local):
    """RS-7: the ``env`` option is ignored; the child inherits the environment."""

    async def submit_tasks(self, tasks: list[dict[str, Any]]) -> None:
        for task in tasks:
            if isinstance(task, dict):
                (task.get("task_backend_specific_kwargs") or {}).pop("env", None)
        await super().submit_tasks(tasks)


class PlainTimeoutError(_Local):
    """RS-8: a timed-out task gets the builtin TimeoutError, not TaskTimeoutError."""

    def _finish(self, job: Any, state: TaskState) -> bool:
        task = job.task
        error = task.get("exception")
        if isinstance(error, TaskTimeoutError):
            task["exception"] = TimeoutError(str(error))
        return super()._finish(job, state)


class DropsUnpicklableException(_Local):
    """RS-9: an exception that cannot be pickled becomes an anonymous RuntimeError."""

    def _finish(self, job: Any, state: TaskState) -> bool:
        task = job.task
        error = task.get("exception")
        if error is not None:
            try:
                pickle.dumps(error)
            except Exception:
                task["exception"] = RuntimeError("the task's exception was lost")
        return super()._finish(job, state)


class KillsOnlyTheLeader(_Local):
    """CN-5: cancelling an executable signals its leader process, not its group."""

    def _terminate(self, job: Any) -> None:
        child = job.child
        if child is not None:
            os.kill(child.pid, signal.SIGKILL)


class NeverKills(_Local):
    """CN-5: cancel_task of a running executable returns True and kills nothing."""

    def _terminate(self, job: Any) -> None:
        pass  # the child runs on; its end (if ever) is the only report


class CaptureOutsideWorkDir(_Local):
    """RS-11: capture files are named by joining the uid to the work dir as is."""

    @staticmethod
    def _capture_paths(work_dir: str, uid: str) -> tuple[str, str]:
        base = os.path.join(work_dir, uid)  # "../x" and "/abs/x" leave work_dir
        return base + ".stdout", base + ".stderr"


class WaitsForHeldPipes(_Local):
    """CN-7: a stopped child's group is killed, then its pipes are waited for."""

    def _terminate(self, job: Any) -> None:
        child = job.child
        if child is None or job.kill_timer is not None:
            return
        # No escaped descendants, no drain: whatever holds the pipes decides.
        os.killpg(child.pid, signal.SIGTERM)
        job.kill_timer = self._bound_loop().call_later(
            self._kill_grace, _killpg_quietly, child.pid
        )


def _killpg_quietly(pgid: int) -> None:
    with contextlib.suppress(OSError):
        os.killpg(pgid, signal.SIGKILL)


class QueuedTasksNotCancellable(_Local):
    """CN-6: ``cancel_task`` returns False for a task that has not started."""

    def __init__(self) -> None:
        super().__init__()
        self._started_uids: set[str] = set()

    def _report(self, task: dict[str, Any], state: TaskState) -> None:
        if state is TaskState.RUNNING:
            self._started_uids.add(task["uid"])
        super()._report(task, state)

    async def cancel_task(self, uid: str) -> bool:
        if uid in self._jobs and uid not in self._started_uids:
            return False
        return await super().cancel_task(uid)


class ShutdownWaitsForFunctions(_Local):
    """SD-4: the first ``shutdown()`` waits for running functions to finish."""

    _waited = False

    async def shutdown(self) -> None:
        if not self._waited:
            self._waited = True
            await asyncio.to_thread(self.executor.shutdown, True)
        await super().shutdown()


class LeavesChildrenRunning(_Local):
    """SD-5: ``shutdown()`` does not stop running executables."""

    async def _stop_children(self, jobs: list[Any], deadline: float) -> None:
        return None


class UnboundedChildren(LocalExecutionBackend):
    """SC-4: starts every executable of a batch at once (no process bound)."""

    def __init__(self) -> None:
        super().__init__(ThreadPoolExecutor(2), max_processes=1_000_000)


class _LocalProcesses(LocalExecutionBackend):
    """The local backend on its own process pool of 2 workers."""

    def __init__(self) -> None:
        super().__init__(processes=2, kill_grace=0.5, shutdown_timeout=3.0)


class CrashFailsEveryTask(_LocalProcesses):
    """RS-12: a worker that dies fails every function task in flight (the old pool)."""

    def _worker_lost(self, job: Any, code: object) -> None:
        super()._worker_lost(job, code)
        for other in list(self._jobs.values()):
            if other.call is not None:
                self._fail(other, WorkerLostError("the process pool broke"))


class _PoolDiesOnBaseException(ProcessPool):
    """Lets a `BaseException` from loading a result out into its dispatcher."""

    def _outcome(self, job: Any, message: bytes) -> Any:
        with contextlib.suppress(Exception):  # only what is not an Exception
            pickle.loads(parse(message)[2])
        return super()._outcome(job, message)


class ResultExitBreaksPool(_LocalProcesses):
    """RS-12: a result whose loading raises SystemExit breaks the whole pool."""

    def __init__(self) -> None:
        super().__init__()
        assert self._procs is not None
        self._procs.__class__ = _PoolDiesOnBaseException


class CancelLeavesFunctionRunning(_LocalProcesses):
    """CN-8: a running function is reported CANCELED at once and left running."""

    async def cancel_task(self, uid: str) -> bool:
        job = self._job(uid)
        if job is not None and job.call is not None and not job.canceled:
            job.canceled = True  # its result will be dropped; nothing stops it
            self._cancel_soon(job, asyncio.get_running_loop())
            return True
        return await super().cancel_task(uid)
