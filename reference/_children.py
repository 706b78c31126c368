"""Child processes on the event loop, cheaply.

`spawn` starts an executable task's child in its own session (so its pid is
its process-group id) and returns a `Child` whose ``finished`` future resolves
once the child has exited *and* its output pipes are closed.

On Linux (``os.pidfd_open``) the child is watched through a pidfd and its pipes
are read with plain ``loop.add_reader`` callbacks: no watcher thread per child
(asyncio's default child watcher on Python < 3.12 starts one for every child)
and no reader task per pipe. Elsewhere, or on a loop without ``add_reader``,
it falls back to ``loop.subprocess_exec`` with a small protocol.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
from subprocess import DEVNULL, PIPE
from typing import IO, Any, cast

from reference._executables import ExecOptions, marked_env

__all__ = ["Child", "spawn"]

_READ_SIZE = 1 << 16
_pidfd_works: bool | None = None


def _pidfd_supported() -> bool:
    """Probe once whether pidfds work here (kernel >= 5.3, not filtered out)."""
    global _pidfd_works
    if _pidfd_works is None:
        _pidfd_works = False
        if sys.platform == "linux" and hasattr(os, "pidfd_open"):
            try:
                os.close(os.pidfd_open(os.getpid()))
                _pidfd_works = True
            except OSError:
                pass
    return _pidfd_works


class Child:
    """A started child: its pid, output and completion.

    Attributes:
        pid: The child's pid, which is also its process-group id.
        finished: Resolves (to ``None``) when the child has exited and its
            pipes are closed.
        stdout: Chunks read from the child's stdout (when piped).
        stderr: Chunks read from the child's stderr (when piped).
    """

    pid: int
    finished: asyncio.Future[None]
    stdout: list[bytes]
    stderr: list[bytes]

    @property
    def returncode(self) -> int | None:
        """The exit status (negative: killed by that signal); ``None`` while running."""
        raise NotImplementedError

    def close(self) -> None:
        """Release the child's pipes and handles; reap it if it has exited."""
        raise NotImplementedError

    def stop_reading(self) -> None:
        """Stop waiting for the pipes' end: close them, keep what was read.

        For a child whose process group was killed while something that
        could not be reached (a descendant that left the group) still holds
        its output open: ``finished`` then resolves as soon as the child
        itself has exited.
        """
        raise NotImplementedError


class _PidfdChild(Child):
    """A child watched with a pidfd; its pipes read by ``add_reader`` callbacks."""

    def __init__(self, loop: asyncio.AbstractEventLoop, proc: subprocess.Popen[bytes]):
        self.pid = proc.pid
        self.finished = loop.create_future()
        self.stdout = []
        self.stderr = []
        self._loop = loop
        self._proc = proc
        self._open: dict[int, Any] = {}  # fd -> the file object that owns it
        for pipe, sink in ((proc.stdout, self.stdout), (proc.stderr, self.stderr)):
            if pipe is not None:
                fd = pipe.fileno()
                os.set_blocking(fd, False)
                self._open[fd] = pipe
                loop.add_reader(fd, self._read, fd, sink)
        pidfd = os.pidfd_open(proc.pid)
        self._open[pidfd] = None
        loop.add_reader(pidfd, self._exited, pidfd)

    @property
    def returncode(self) -> int | None:
        return self._proc.returncode

    def _read(self, fd: int, sink: list[bytes]) -> None:
        try:
            data = os.read(fd, _READ_SIZE)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if data:
            sink.append(data)
        else:
            self._release(fd)

    def _exited(self, pidfd: int) -> None:
        # A readable pidfd means the child has exited: this wait is immediate.
        self._proc.wait()
        self._release(pidfd)

    def _release(self, fd: int) -> None:
        owner = self._open.pop(fd, None)
        self._loop.remove_reader(fd)
        if owner is not None:
            owner.close()
        else:
            os.close(fd)
        if not self._open and not self.finished.done():
            self.finished.set_result(None)

    def stop_reading(self) -> None:
        for fd, owner in list(self._open.items()):
            if owner is not None:
                self._release(fd)

    def close(self) -> None:
        for fd in list(self._open):
            self._release(fd)
        if self._proc.returncode is None:
            # Only after an abandoned wait (shutdown): the group was killed.
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._proc.wait(timeout=1.0)


class _ProtocolChild(Child, asyncio.SubprocessProtocol):
    """A child run by ``loop.subprocess_exec``; output gathered by the protocol."""

    def __init__(self, finished: asyncio.Future[None]) -> None:
        self.finished = finished
        self.stdout = []
        self.stderr = []
        self.transport: asyncio.SubprocessTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """Keep the transport (the protocol API's hook)."""
        self.transport = cast(asyncio.SubprocessTransport, transport)
        self.pid = self.transport.get_pid()

    def pipe_data_received(self, fd: int, data: bytes | bytearray) -> None:
        """Collect output (the protocol API's hook)."""
        (self.stdout if fd == 1 else self.stderr).append(bytes(data))

    def connection_lost(self, exc: Exception | None) -> None:
        """Called once the child has exited and every pipe is closed."""
        if not self.finished.done():
            self.finished.set_result(None)

    @property
    def returncode(self) -> int | None:
        return self.transport.get_returncode() if self.transport is not None else None

    def stop_reading(self) -> None:
        if self.transport is not None:
            for fd in (1, 2):
                pipe = self.transport.get_pipe_transport(fd)
                if pipe is not None:
                    pipe.close()

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


async def spawn(
    command: str | list[str],
    options: ExecOptions,
    stdout: int | IO[bytes] = PIPE,
    stderr: int | IO[bytes] = PIPE,
    *,
    mark: str | None = None,
) -> Child:
    """Start a child in a new session on the running loop.

    Args:
        command: A shell string (run by ``/bin/sh``) or an argv list.
        options: ``cwd`` and ``env`` are used.
        stdout: ``PIPE`` to collect the output, or an open file.
        stderr: ``PIPE`` to collect the output, or an open file.
        mark: The task's mark (`reference._executables.new_mark`), put in
            the child's environment so that its descendants can be found
            even after they leave its process group.

    Returns:
        The started child.

    Raises:
        OSError: The child could not be started.
    """
    loop = asyncio.get_running_loop()
    kwargs: dict[str, Any] = {
        "stdin": DEVNULL,
        "stdout": stdout,
        "stderr": stderr,
        "cwd": options.cwd,
        "env": options.env if mark is None else marked_env(options.env, mark),
        "start_new_session": True,
    }
    if isinstance(loop, asyncio.SelectorEventLoop) and _pidfd_supported():
        proc = subprocess.Popen(command, shell=isinstance(command, str), **kwargs)
        try:
            return _PidfdChild(loop, proc)
        except BaseException:
            proc.kill()
            proc.wait()
            for pipe in (proc.stdout, proc.stderr):
                if pipe is not None:
                    pipe.close()
            raise
    child = _ProtocolChild(loop.create_future())
    if isinstance(command, str):
        await loop.subprocess_shell(lambda: child, command, **kwargs)
    else:
        await loop.subprocess_exec(lambda: child, *command, **kwargs)
    return child
