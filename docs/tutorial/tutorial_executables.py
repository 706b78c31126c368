"""The tutorial's second part: the backend of part one, now running executables.

`ExecutableBackend` extends `TutorialBackend` (``tutorial_backend.py``) with
executable tasks: each child in a process group of its own, killed as a group
(TERM, then KILL after a grace period) when canceled; ``shell=True`` (the
default) with a missing program reported as such; ``capture_stdio`` files
under the backend's ``_work_dir``; and a spawn that is never canceled half
way (CPython 3.11's asyncio can hang there).

The project's tests type-check this file with ``mypy --strict`` and run the
conformance suite against it, like the first part.
"""

# --8<-- [start:imports]
from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import signal
import tempfile
import time
from typing import IO, TYPE_CHECKING, Any

from tutorial_backend import TutorialBackend

from spec import (
    Capability,
    ExecutionBackend,
    TaskKind,
    TaskState,
    is_service,
    task_kind,
)

KILL_GRACE = 2.0
"""Seconds a canceled child's group has between SIGTERM and SIGKILL."""

SHELL_NOT_FOUND = 127
"""What a POSIX shell exits with when the program it was told to run is missing."""
# --8<-- [end:imports]


# --8<-- [start:paths]
def capture_paths(work_dir: str, uid: str) -> tuple[str, str]:
    """Return ``<work_dir>/<uid>.stdout`` and ``.stderr`` (RS-6).

    A uid is the engine's, not a file name: ``../x`` or ``/etc/x`` must not
    write outside ``work_dir`` (RS-11), so ``%`` and path separators are
    percent-escaped. Ordinary uids keep their exact name.
    """
    name = uid.replace("%", "%25").replace("/", "%2F")
    if os.altsep:
        name = name.replace(os.altsep, "%" + format(ord(os.altsep), "02X"))
    base = os.path.join(work_dir, name)
    return base + ".stdout", base + ".stderr"


# --8<-- [end:paths]


# --8<-- [start:class]
class ExecutableBackend(TutorialBackend):
    """`TutorialBackend` plus executables, each in its own process group."""

    capabilities = frozenset(
        {Capability.FUNCTIONS, Capability.EXECUTABLES, Capability.CAPTURE_STDIO}
    )

    def __init__(
        self,
        name: str = "tutorial-exec",
        max_workers: int = 4,
        kill_grace: float = KILL_GRACE,
        max_children: int = 8,
    ) -> None:
        super().__init__(name, max_workers)
        self.kill_grace = kill_grace
        # At most this many children at once (SC-4): a batch of 10,000
        # executables must not fork 10,000 processes.
        self._slots = asyncio.Semaphore(max_children)
        # The asyncio tasks running an executable, until their child is dead.
        # A canceled task leaves _in_flight at once, but its child may still
        # be in its kill grace: shutdown waits for these (SD-5).
        self._active: set[asyncio.Task[Any]] = set()
        # Where capture_stdio files go. radical.asyncflow's engine overwrites
        # it when it attaches the backend; RS-6's paths are under it.
        self._work_dir = os.getcwd()

    async def _run(self, task: dict[str, Any]) -> None:
        runs_here = task_kind(task) is TaskKind.EXECUTABLE and not is_service(task)
        if self._pending(task) and runs_here:
            await self._run_executable(task)
        else:
            await super()._run(task)  # functions, and everything part one fails

    # --8<-- [end:class]

    # --8<-- [start:run]
    async def _run_executable(self, task: dict[str, Any]) -> None:
        runner = asyncio.current_task()
        if runner is None:  # cannot happen: _run runs in the runner task
            raise RuntimeError("an executable must run in an asyncio task")
        self._active.add(runner)
        try:
            # Waiting for a slot is not running: canceled there, it never starts.
            async with self._slots:
                await self._run_child(task)
        finally:
            self._active.discard(runner)

    async def _run_child(self, task: dict[str, Any]) -> None:
        self._report(task, TaskState.RUNNING)
        options = task.get("task_backend_specific_kwargs") or {}
        capture = bool(task.get("capture_stdio"))
        try:
            out, err = self._outputs(task, capture)
        except (OSError, ValueError) as exc:  # e.g. no such _work_dir
            self._fail(task, exc)
            return
        with out, err:
            try:
                proc = await self._spawn(task, options, out, err)
            except OSError as exc:
                self._fail(task, self._not_started(task, options, exc))
                return
            try:
                exit_code = await proc.wait()
            except asyncio.CancelledError:
                # cancel_task or shutdown: they report CANCELED, we kill.
                await self._terminate(proc.pid)
                raise
            # The leader is gone; anything it left in its group goes too.
            _signal_group(proc.pid, signal.SIGKILL)
            if capture:
                task["stdout"], task["stderr"] = out.name, err.name
            else:
                task["stdout"], task["stderr"] = _read(out), _read(err)
        task["exit_code"] = exit_code
        if exit_code == 0:
            self._finish(task, TaskState.DONE)
            return
        if options.get("shell", True) and exit_code == SHELL_NOT_FOUND:
            # The shell started fine; the program it was told to run did not.
            task["exception"] = FileNotFoundError(
                errno.ENOENT,
                f"executable {task['executable']!r} not found (the shell "
                f"exited {SHELL_NOT_FOUND})",
            )
        self._finish(task, TaskState.FAILED)

    def _fail(self, task: dict[str, Any], exc: BaseException) -> None:
        task["exception"] = exc
        task["stderr"] = str(exc)
        self._finish(task, TaskState.FAILED)

    # --8<-- [end:run]

    # --8<-- [start:outputs]
    def _outputs(
        self, task: dict[str, Any], capture: bool
    ) -> tuple[IO[bytes], IO[bytes]]:
        """Files for the child's stdout and stderr: never pipes.

        With ``capture_stdio`` they are the task's capture files; otherwise
        anonymous temporary files, read back once the child has exited. A
        pipe would tie the end of the task to the end of every process that
        holds its write end, including a descendant that left the group and
        cannot be killed with it (CN-7); a file ties it to nothing.
        """
        if capture:
            out_path, err_path = capture_paths(self._work_dir, task["uid"])
            out: IO[bytes] = open(out_path, "wb")  # noqa: SIM115 - closed by caller
            try:
                return out, open(err_path, "wb")
            except BaseException:
                out.close()
                raise
        out = tempfile.TemporaryFile()  # noqa: SIM115
        return out, tempfile.TemporaryFile()

    # --8<-- [end:outputs]

    # --8<-- [start:spawn]
    async def _spawn(
        self,
        task: dict[str, Any],
        options: dict[str, Any],
        out: IO[bytes],
        err: IO[bytes],
    ) -> asyncio.subprocess.Process:
        argv = [task["executable"], *(str(a) for a in task.get("arguments") or [])]
        kwargs: dict[str, Any] = {
            "stdin": asyncio.subprocess.DEVNULL,
            "stdout": out,
            "stderr": err,
            "cwd": options.get("cwd"),
            "env": options.get("env"),
            # A new session: the child leads a process group of its own,
            # whose id is its pid, so one killpg reaches its children too.
            "start_new_session": True,
        }
        if options.get("shell", True):
            start = asyncio.create_subprocess_shell(" ".join(argv), **kwargs)
        else:
            start = asyncio.create_subprocess_exec(*argv, **kwargs)
        # Never cancel the spawn itself. Canceled half way, asyncio kills
        # only the leader (its children live on), and CPython 3.11 can wait
        # for ever for pipes that were never connected. Shield it; if we are
        # canceled meanwhile, let it finish, then kill the whole group.
        spawning = asyncio.ensure_future(start)
        try:
            return await asyncio.shield(spawning)
        except asyncio.CancelledError:
            with contextlib.suppress(Exception):
                proc = await spawning
                await self._terminate(proc.pid)
            raise

    def _not_started(
        self, task: dict[str, Any], options: dict[str, Any], exc: OSError
    ) -> OSError:
        """Name what was missing: the program (RS-5) or the working directory."""
        cwd = options.get("cwd")
        if cwd is not None and not os.path.isdir(cwd):
            what = f"working directory {cwd!r}"
        else:
            what = f"executable {task['executable']!r}"
        return type(exc)(exc.errno, f"{what}: {exc.strerror}")

    # --8<-- [end:spawn]

    # --8<-- [start:terminate]
    async def _terminate(self, pgid: int) -> None:
        """TERM the whole group, then KILL whatever is left after the grace."""
        if not _signal_group(pgid, signal.SIGTERM):
            return  # already gone
        deadline = time.monotonic() + self.kill_grace
        while time.monotonic() < deadline:
            if not _signal_group(pgid, 0):  # signal 0: is anyone left?
                return
            await asyncio.sleep(0.02)
        _signal_group(pgid, signal.SIGKILL)  # it ignored TERM, or was too slow

    async def shutdown(self) -> None:
        await super().shutdown()  # reports CANCELED, cancels the runners
        # ...and the runners of tasks canceled earlier may still be killing
        # their child: no child outlives shutdown (SD-5).
        await asyncio.gather(*self._active, return_exceptions=True)

    # --8<-- [end:terminate]


# --8<-- [start:helpers]
def _signal_group(pgid: int, sig: int) -> bool:
    """Send ``sig`` to a process group; tell whether the group still existed."""
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        return False
    return True


def _read(file: IO[bytes]) -> str:
    file.seek(0)
    return file.read().decode("utf-8", errors="replace")


# --8<-- [end:helpers]


# --8<-- [start:check]
if TYPE_CHECKING:
    backend: ExecutionBackend = ExecutableBackend()
# --8<-- [end:check]
