"""Child processes on the event loop, without a task per pipe.

`spawn` starts an executable task's child in its own session (so its pid is
its process-group id) and returns a `Child` whose ``finished`` future resolves
once the child has exited *and* its pipes are closed. The output is gathered
by a `asyncio.SubprocessProtocol`; this costs less per child than
``Process.communicate()``, which runs a reader task per pipe.
"""

from __future__ import annotations

import asyncio
from subprocess import DEVNULL, PIPE
from typing import IO, Any, cast

from reference._executables import ExecOptions

__all__ = ["Child", "spawn"]


class Child(asyncio.SubprocessProtocol):
    """A running child: its transport, pid, output and completion.

    Attributes:
        finished: Resolves (to ``None``) when the child has exited and its
            pipes are closed.
        stdout: Chunks read from the child's stdout (when piped).
        stderr: Chunks read from the child's stderr (when piped).
    """

    __slots__ = ("finished", "stderr", "stdout", "transport")

    def __init__(self, finished: asyncio.Future[None]) -> None:
        self.finished = finished
        self.stdout: list[bytes] = []
        self.stderr: list[bytes] = []
        self.transport: asyncio.SubprocessTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """Keep the transport (the protocol API's hook)."""
        self.transport = cast(asyncio.SubprocessTransport, transport)

    def pipe_data_received(self, fd: int, data: bytes | bytearray) -> None:
        """Collect output (the protocol API's hook)."""
        (self.stdout if fd == 1 else self.stderr).append(bytes(data))

    def connection_lost(self, exc: Exception | None) -> None:
        """Called once the child has exited and every pipe is closed."""
        if not self.finished.done():
            self.finished.set_result(None)

    @property
    def pid(self) -> int:
        """The child's pid, which is also its process-group id."""
        if self.transport is None:  # pragma: no cover - set before spawn returns
            raise RuntimeError("the child has not started")
        return self.transport.get_pid()

    @property
    def returncode(self) -> int | None:
        """The exit status, or ``None`` while the child runs."""
        return self.transport.get_returncode() if self.transport is not None else None

    def close(self) -> None:
        """Release the transport (the child must have exited)."""
        if self.transport is not None:
            self.transport.close()


async def spawn(
    command: str | list[str],
    options: ExecOptions,
    stdout: int | IO[bytes] = PIPE,
    stderr: int | IO[bytes] = PIPE,
) -> Child:
    """Start a child in a new session on the running loop.

    Args:
        command: A shell string (run by ``/bin/sh``) or an argv list.
        options: ``cwd`` and ``env`` are used.
        stdout: ``PIPE`` to collect the output, or an open file.
        stderr: ``PIPE`` to collect the output, or an open file.

    Returns:
        The started child.

    Raises:
        OSError: The child could not be started.
    """
    loop = asyncio.get_running_loop()
    child = Child(loop.create_future())
    kwargs: dict[str, Any] = {
        "stdin": DEVNULL,
        "stdout": stdout,
        "stderr": stderr,
        "cwd": options.cwd,
        "env": options.env,
        "start_new_session": True,
    }
    if isinstance(command, str):
        await loop.subprocess_shell(lambda: child, command, **kwargs)
    else:
        await loop.subprocess_exec(lambda: child, *command, **kwargs)
    return child
