"""Executable tasks as child processes watched by the event loop (the local backend).

`ExecutableRunner` starts at most ``max_processes`` runners; each takes queued
jobs one at a time: spawn (paced by `SpawnPacer`), watch, and report the exit.
`terminate` stops a running child: its group and marked descendants get TERM,
KILL after the grace, then a short drain. Spawning, signalling and exit
records are `reference._executables` and `reference._children`.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from collections import deque
from subprocess import PIPE
from typing import Any, Protocol

from reference import _executables as ex
from reference._children import Child, spawn
from reference._core import CancelDecision
from reference._placement import placement
from reference._resources import Grant
from reference.local.jobs import BackendHooks, LocalJob
from spec import TaskState

__all__ = ["ExecutableHost", "ExecutableRunner", "SpawnPacer"]

logger = logging.getLogger("reference")

_SPAWNS_PER_TURN = 8
"""Spawns per event-loop turn: a burst never stalls the loop (SC-3)."""
_DECODE_ON_LOOP = 1 << 20
"""Bytes of output joined and decoded on the event loop; more go to a thread."""


def _joined(chunks: tuple[list[bytes], list[bytes]]) -> tuple[str, str]:
    """An executable's stdout and stderr, each joined and decoded."""
    return ex.decode(b"".join(chunks[0])), ex.decode(b"".join(chunks[1]))


class ExecutableHost(BackendHooks, Protocol):
    """What the runner needs of the backend besides the common hooks."""

    name: str
    _work_dir: str

    def _terminate(self, job: Any) -> None: ...

    def _capture_paths(self, work_dir: str, uid: str) -> tuple[str, str]: ...

    def _placed(
        self,
        job: Any,
        grant: Grant,
        options: ex.ExecOptions,
        command: str | list[str],
    ) -> tuple[ex.ExecOptions, str | list[str]]: ...


def _canceled(job: LocalJob) -> bool:
    return job.canceled


class SpawnPacer:
    """Hands out spawns a loop turn's worth at a time, in arrival order."""

    def __init__(self) -> None:
        self._budget = _SPAWNS_PER_TURN
        self._waiters: deque[asyncio.Future[None]] = deque()

    def reset(self) -> None:
        """Forget the old loop's waiters (the backend moved to a new loop)."""
        self._budget = _SPAWNS_PER_TURN
        self._waiters.clear()

    async def slot(self, loop: asyncio.AbstractEventLoop) -> None:
        """Wait for a turn of the loop with spawns to spare.

        Each spawn blocks the loop thread until the child has executed: a
        burst of them in one loop turn would stall the loop (SC-3), while
        one per turn would starve the children of throughput. Runners past
        this turn's budget queue up and are woken in order, a turn's worth
        at a time (never polling: 64 runners spinning on ``sleep(0)`` cost
        more than the spawns).
        """
        if self._budget <= 0:
            waiter = loop.create_future()
            self._waiters.append(waiter)
            await waiter  # its spawn was counted by the refill that woke it
            return
        if self._budget == _SPAWNS_PER_TURN:
            loop.call_soon(self._refill, loop)
        self._budget -= 1

    def _refill(self, loop: asyncio.AbstractEventLoop) -> None:
        budget = _SPAWNS_PER_TURN
        waiters = self._waiters
        while waiters and budget:
            waiter = waiters.popleft()
            if not waiter.done():  # else its runner was cancelled
                waiter.set_result(None)
                budget -= 1
        self._budget = budget
        if budget < _SPAWNS_PER_TURN:
            # The woken runners spawn on the next turn: refill after it.
            loop.call_soon(self._refill, loop)


class ExecutableRunner:
    """Runs the executable jobs of one backend, at most ``max_children`` at once.

    Args:
        host: The backend: its loop, its reporting hooks, ``_terminate``.
        max_children: Most children running at once (SC-4).
        kill_grace: Seconds between SIGTERM and SIGKILL.
    """

    def __init__(
        self,
        host: ExecutableHost,
        max_children: int,
        kill_grace: float,
    ) -> None:
        self._host = host
        self._max_children = max_children
        self._grace = kill_grace
        self.queue: deque[LocalJob] = deque()
        self.runners: set[asyncio.Task[None]] = set()
        self._pacer = SpawnPacer()
        # Prefix of every task mark of this backend; set by the first spawn,
        # so that shutdown scans for leftovers only if a child ever ran.
        self._scope: str | None = None

    def reset(self) -> None:
        """Forget the old loop's spawn waiters (the backend moved to a new loop)."""
        self._pacer.reset()

    def start(self) -> None:
        """Start runners for the queued jobs, up to ``max_children`` in all."""
        loop = self._host._bound_loop()
        want = min(len(self.queue), self._max_children - len(self.runners))
        for _ in range(want):
            runner = loop.create_task(self._run_executables())
            self.runners.add(runner)
            runner.add_done_callback(self.runners.discard)

    async def _run_executables(self) -> None:
        # One runner per allowed child: the runner count is the bound (SC-4).
        queue = self.queue
        while queue and not self._host._closed:
            job = queue.popleft()
            if job.canceled:
                continue
            try:
                await self._run_one(job)
            except Exception as exc:  # a bug must not hang the task
                logger.exception(
                    "backend %r: executable task %r", self._host.name, job.uid
                )
                self._host._fail(job, exc)

    async def _run_one(self, job: LocalJob) -> None:
        task = job.task
        await self._pacer.slot(self._host._bound_loop())
        if _canceled(job) or self._host._closed:
            return  # cancelled while waiting for its turn: it never starts (CN-6)
        try:
            options = ex.parse_options(task)
            command = ex.build_command(task, options)
        except ValueError as exc:
            self._host._fail(job, exc)
            return
        cores = None
        if (grant := job.grant) is not None:
            options, command = self._host._placed(job, grant, options, command)
            cores = grant.core_ids
            task["placement"] = placement(cores, grant.gpus, grant.memory)  # PL-1
        out = err = PIPE
        paths = ("", "")
        if options.capture_stdio:
            # Fixed now: a _work_dir changed while the task runs must not
            # change where its output goes, nor the paths it reports.
            paths = self._host._capture_paths(self._host._work_dir, job.uid)
            try:
                out, err = ex.open_capture_fds(paths)
            except OSError as exc:
                self._host._fail(job, exc)
                return
        if self._scope is None:
            self._scope = ex.new_mark()
        job.mark = ex.new_mark(self._scope)
        try:
            child = await spawn(command, options, out, err, mark=job.mark, cores=cores)
        except OSError as exc:
            self._host._fail(job, ex.spawn_error(exc, task, options))  # RS-5
            return
        finally:
            if out != PIPE:  # capture files: the child has its own copies
                os.close(out)
                os.close(err)
        if job.canceled or self._host._closed:
            # Cancelled while starting; its CANCELED is already on its way.
            self.kill_now(job, child)
            await child.finished
            child.close()
            return
        job.child = child
        self._host._report(task, TaskState.RUNNING)
        if job.service is not None:
            self._host._service_running(job)
        timer = None
        if options.timeout is not None:
            timer = self._host._bound_loop().call_later(
                options.timeout, self.time_out, job
            )
        try:
            await child.finished
        except BaseException:
            # Abandoned (the runner was cancelled): leave no process behind.
            self.kill_now(job, child)
            raise
        finally:
            if timer is not None:
                timer.cancel()
            if job.kill_timer is not None:
                job.kill_timer.cancel()
                # The leader is gone; make sure nothing of its group lingers.
                self.kill_now(job, child)
            child.close()
        if _canceled(job):  # a helper: mypy would keep the narrowing across awaits
            # cancel_task promised CANCELED once the child was gone (CN-5).
            self._host._finish(job, TaskState.CANCELED)
            return
        code = child.returncode
        exit_code = code if code is not None else -1
        if options.capture_stdio:
            stdout, stderr = paths
        else:
            chunks = (child.stdout, child.stderr)
            if sum(map(len, chunks[0])) + sum(map(len, chunks[1])) < _DECODE_ON_LOOP:
                stdout, stderr = _joined(chunks)
            else:  # 100 MB would stall the loop for a large part of a second
                stdout, stderr = await asyncio.to_thread(_joined, chunks)
                if _canceled(job):  # canceled meanwhile: cancel_task said so
                    self._host._finish(job, TaskState.CANCELED)
                    return
        done = ex.record_exit(
            task, options, exit_code, stdout, stderr, timed_out=job.timed_out
        )
        # DONE if and only if it exited 0 (RS-4); a timeout is FAILED (RS-8).
        self._host._finish(job, TaskState.DONE if done else TaskState.FAILED)

    def cancel(self, job: LocalJob) -> CancelDecision:
        """Stop a job's running child; it reports CANCELED once the child is gone."""
        job.canceled = True
        self._host._terminate(job)  # the backend's hook: TERM, KILL, drain (CN-5)
        return CancelDecision.STOPPING

    def time_out(self, job: LocalJob) -> None:
        """Stop a child that ran past its ``timeout`` (reported FAILED)."""
        if not job.canceled:
            job.timed_out = True
            self._host._terminate(job)

    def terminate(self, job: LocalJob) -> None:
        """Stop a running child: TERM now, KILL after the grace, then drain.

        The signals go to the child's process group and to its descendants
        that left the group (found by the task's mark). Once they are
        killed, output is read for `ex.DRAIN` seconds more; then the pipes
        are closed whatever still holds them (a descendant that could not be
        found), so the task is reported within the grace plus the drain
        (CN-7). With nothing left to signal (the leader is gone and nothing
        carries the mark), the drain starts at once.
        """
        child = job.child
        if child is None or job.kill_timer is not None:
            return
        child.poll()  # an exited leader is no reason to wait the grace
        in_group = ex.signal_group(child.pid, signal.SIGTERM)
        escaped = ex.signal_marked(
            signal.SIGTERM, self._marks(job), skip_groups=(child.pid,)
        )
        grace = self._grace if in_group or escaped else 0.0
        job.kill_timer = self._host._bound_loop().call_later(grace, self._kill, job)

    def _kill(self, job: LocalJob) -> None:
        child = job.child
        if child is None:
            return
        self.kill_now(job, child)
        job.kill_timer = self._host._bound_loop().call_later(
            ex.DRAIN, self._end_drain, job, child
        )

    def _end_drain(self, job: LocalJob, child: Child) -> None:
        # Something still holds the pipes. Look once more (a descendant caught
        # in the middle of an exec shows no environment to the first scan),
        # then stop waiting for it.
        ex.signal_marked(signal.SIGKILL, self._marks(job), skip_groups=(child.pid,))
        child.stop_reading()

    def kill_now(self, job: LocalJob, child: Child) -> None:
        """SIGKILL the child's group and its marked descendants."""
        ex.signal_group(child.pid, signal.SIGKILL)
        ex.signal_marked(signal.SIGKILL, self._marks(job), skip_groups=(child.pid,))

    @staticmethod
    def _marks(job: LocalJob) -> tuple[str, ...]:
        return (job.mark,) if job.mark is not None else ()

    async def stop(self, jobs: list[LocalJob], deadline: float) -> None:
        """Kill every child and its marked descendants at shutdown (SD-5)."""
        loop = asyncio.get_running_loop()
        # Every job whose runner still waits, even if its leader has exited:
        # a descendant may hold the pipes.
        running = [j for j in jobs if j.child is not None]
        # One scan for every mark of this backend: the escaped descendants of
        # running tasks, and leftovers of finished ones (a daemon that left
        # its group) too.
        scope = () if self._scope is None else (self._scope + ".",)
        groups = {j.child.pid for j in running if j.child is not None}
        for job in running:
            if job.child is not None and job.kill_timer is None:
                ex.signal_group(job.child.pid, signal.SIGTERM)
        ex.signal_marked(signal.SIGTERM, prefixes=scope, skip_groups=groups)
        if self.runners:
            grace = min(self._grace, max(0.0, deadline - loop.time()))
            await asyncio.wait(set(self.runners), timeout=grace)
        for job in running:
            if job.kill_timer is not None:
                job.kill_timer.cancel()
            if job.child is not None:
                ex.signal_group(job.child.pid, signal.SIGKILL)
                # Tasks end CANCELED: no output is owed, so no drain either.
                job.child.stop_reading()
        ex.signal_marked(signal.SIGKILL, prefixes=scope)
        if self.runners:
            await asyncio.wait(
                set(self.runners), timeout=max(0.01, deadline - loop.time())
            )
        for runner in list(self.runners):
            runner.cancel()
