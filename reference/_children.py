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
import errno
import functools
import os
import select
import signal
import subprocess
import time
import weakref
from collections.abc import Iterable, Mapping
from subprocess import DEVNULL, PIPE
from typing import IO, Any, cast

from reference._executables import ExecOptions, marked_env, pidfds_work
from reference._placement import bind_thread, bound

__all__ = ["Child", "spawn"]

_READ_SIZE = 1 << 16
_pidfd_works: bool | None = None
"""``None``: as probed; a bool overrides the probe."""


def _pidfd_supported() -> bool:
    """Whether children are watched through pidfds (`_executables.pidfds_work`).

    ``_pidfd_works`` set to False turns them off (the tests of the fallback).
    """
    return pidfds_work() if _pidfd_works is None else _pidfd_works


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

    def poll(self) -> None:
        """Reap the child now if it has exited, so its pid no longer counts.

        A child whose pipes are still open may not have been reaped yet; an
        unreaped leader keeps its process group "alive" to signals.
        """

    def stop_reading(self) -> None:
        """Stop waiting for the pipes' end: close them, keep what was read.

        For a child whose process group was killed while something that
        could not be reached (a descendant that left the group) still holds
        its output open: ``finished`` then resolves as soon as the child
        itself has exited.
        """
        raise NotImplementedError


class _Hub:
    """One epoll set for the pipes and pidfds of every child on a loop.

    The loop watches only the set's own descriptor, and one callback then
    serves every child descriptor that is ready: a burst of exits costs one
    loop wake-up, and watching a descriptor costs one C call rather than
    asyncio's per-descriptor handle and selector-key bookkeeping. Closed as
    soon as it watches nothing, so no descriptor outlives the children.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._epoll = select.epoll()
        self._watched: dict[int, _PidfdChild] = {}
        self._polling = False
        loop.add_reader(self._epoll.fileno(), self._ready)

    def watch(self, fd: int, child: _PidfdChild) -> None:
        self._epoll.register(fd, select.EPOLLIN)
        self._watched[fd] = child

    def unwatch(self, fd: int) -> None:
        """Stop watching ``fd`` (the caller closes it afterwards)."""
        del self._watched[fd]
        self._epoll.unregister(fd)
        if not self._watched and not self._polling:
            self._close()

    def _ready(self) -> None:
        self._polling = True
        try:
            for fd, events in self._epoll.poll(0, _MAX_EVENTS):
                child = self._watched.get(fd)
                if child is not None:
                    child._event(fd, events)
        finally:
            self._polling = False
            if not self._watched:
                self._close()

    def _close(self) -> None:
        if _hubs.get(self._loop) is self:
            del _hubs[self._loop]
        self._loop.remove_reader(self._epoll.fileno())
        self._epoll.close()


_MAX_EVENTS = 256  # events taken per wake-up; the rest wait for the next turn
_hubs: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Hub] = (
    weakref.WeakKeyDictionary()
)


def _hub(loop: asyncio.AbstractEventLoop) -> _Hub:
    hub = _hubs.get(loop)
    if hub is None:
        hub = _hubs[loop] = _Hub(loop)
    return hub


class _PidfdChild(Child):
    """A child watched through the loop's `_Hub`: its pipes, then its pidfd.

    Started by ``os.posix_spawn`` (``proc`` is ``None``) or, where that
    cannot do what is asked (a ``cwd``), by ``subprocess.Popen``; either
    way the pipes are raw descriptors owned here. Once they are closed the
    child has almost always exited already and is reaped at once; only
    otherwise (or with no pipes) is a pidfd opened to learn of its exit.
    """

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        pid: int,
        pipes: tuple[int | None, int | None],
        proc: subprocess.Popen[bytes] | None = None,
    ) -> None:
        self.pid = pid
        self.finished = loop.create_future()
        self.stdout = []
        self.stderr = []
        self._proc = proc
        self._code: int | None = None
        self._pipes: dict[int, list[bytes]] = {}
        self._pidfd: int | None = None
        self._loop = loop
        # The hub closes once it watches nothing: watching again may need a
        # new one, and what is watched is always in the current one.
        self._hub = hub = _hub(loop)
        try:
            for fd, sink in zip(pipes, (self.stdout, self.stderr), strict=True):
                if fd is not None:
                    os.set_blocking(fd, False)
                    hub.watch(fd, self)
                    self._pipes[fd] = sink
            if not self._pipes:
                self._watch_exit()
        except BaseException:
            for fd in pipes:
                if fd is not None and fd not in self._pipes:
                    os.close(fd)
            self._close_all()
            raise

    @property
    def returncode(self) -> int | None:
        return self._code

    def _reap(self, block: bool) -> None:
        if self._proc is not None:
            if block:
                self._proc.wait()
            else:
                self._proc.poll()
            self._code = self._proc.returncode
            return
        try:
            pid, status = os.waitpid(self.pid, 0 if block else os.WNOHANG)
        except ChildProcessError:
            # Reaped by someone else (a waitpid(-1) elsewhere): the status is
            # lost; subprocess calls that an exit status of 0, and so do we.
            self._code = 0
            return
        if pid:
            self._code = os.waitstatus_to_exitcode(status)

    def poll(self) -> None:
        if self._code is None:
            self._reap(block=False)

    def _event(self, fd: int, events: int) -> None:
        sink = self._pipes.get(fd)
        if sink is None:  # the pidfd: readable once the child has exited
            self._reap(block=True)
            self._unwatch_exit()
            self._check_done()
            return
        if events & select.EPOLLIN:  # data, maybe with the hang-up
            try:
                data = os.read(fd, _READ_SIZE)
            except BlockingIOError:
                return
            except OSError:
                data = b""
            if data:
                sink.append(data)
                return
        # EPOLLHUP alone: the writers are gone and nothing is left to read.
        self._close_pipe(fd)
        if not self._pipes:
            self._pipes_closed()

    def _close_pipe(self, fd: int) -> None:
        del self._pipes[fd]
        self._hub.unwatch(fd)
        os.close(fd)

    def _pipes_closed(self) -> None:
        if self._code is None:
            self._reap(block=False)
        if self._code is None and self._pidfd is None:
            self._watch_exit()
        self._check_done()

    def _watch_exit(self) -> None:
        pidfd = os.pidfd_open(self.pid)
        self._pidfd = pidfd
        self._hub = _hub(self._loop)
        self._hub.watch(pidfd, self)

    def _unwatch_exit(self) -> None:
        pidfd = self._pidfd
        if pidfd is not None:
            self._pidfd = None
            self._hub.unwatch(pidfd)
            os.close(pidfd)

    def _check_done(self) -> None:
        if (
            self._code is not None
            and not self._pipes
            and self._pidfd is None
            and not self.finished.done()
        ):
            self.finished.set_result(None)

    def stop_reading(self) -> None:
        if self._pipes:
            for fd in list(self._pipes):
                self._close_pipe(fd)
            self._pipes_closed()

    def _close_all(self) -> None:
        for fd in list(self._pipes):
            self._close_pipe(fd)
        self._unwatch_exit()

    def close(self) -> None:
        self._close_all()
        if self._code is None:
            # Only after an abandoned wait (shutdown): the group was killed.
            deadline = time.monotonic() + 1.0
            while self._code is None:
                self._reap(block=False)
                if self._code is not None or time.monotonic() > deadline:
                    break
                time.sleep(0.005)
            if self._code is None and self._proc is None:
                _unreaped.append(self.pid)  # reaped by a later spawn


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
    cores: tuple[int, ...] | None = None,
) -> Child:
    """Start a child in a new session on the running loop.

    On Linux with pidfds the child is started by ``os.posix_spawn`` (no
    fork of this process, no ``preexec`` machinery), unless a ``cwd`` is
    asked for, which ``posix_spawn`` cannot do here: then by
    ``subprocess.Popen``. Either way it runs in its own session, with
    ``stdin`` from ``/dev/null`` and the signals Python ignores (SIGPIPE,
    SIGXFSZ) back to their defaults, as ``subprocess`` does.

    Args:
        command: A shell string (run by ``/bin/sh``) or an argv list.
        options: ``cwd`` and ``env`` are used.
        stdout: ``PIPE`` to collect the output, or an open file (object or
            descriptor; the caller closes it once this returns).
        stderr: ``PIPE`` to collect the output, or an open file.
        mark: The task's mark (`reference._executables.new_mark`), put in
            the child's environment so that its descendants can be found
            even after they leave its process group.
        cores: Core ids the child is bound to from its first instruction
            (and all it starts): this thread binds itself around the spawn,
            and a new process starts with its creator's affinity. ``None``
            leaves it unbound.

    Returns:
        The started child.

    Raises:
        OSError: The child could not be started.
    """
    loop = asyncio.get_running_loop()
    env = options.env if mark is None else marked_env(options.env, mark)
    if isinstance(loop, asyncio.SelectorEventLoop) and _pidfd_supported():
        if _unreaped:
            _reap_leftovers()
        with bound(cores):
            return _start_watched(loop, command, options.cwd, env, stdout, stderr)
    kwargs: dict[str, Any] = {
        "stdin": DEVNULL,
        "stdout": stdout,
        "stderr": stderr,
        "cwd": options.cwd,
        "env": env,
        "start_new_session": True,
    }
    if cores is not None:
        # The loop may start the child after an await, with this thread
        # doing other work meanwhile: bound in the child, before its exec.
        kwargs["preexec_fn"] = functools.partial(bind_thread, cores)
    child = _ProtocolChild(loop.create_future())
    if isinstance(command, str):
        await loop.subprocess_shell(lambda: child, command, **kwargs)
    else:
        await loop.subprocess_exec(lambda: child, *command, **kwargs)
    return child


def _start_watched(
    loop: asyncio.AbstractEventLoop,
    command: str | list[str],
    cwd: str | None,
    env: Mapping[Any, Any] | None,
    stdout: int | IO[bytes],
    stderr: int | IO[bytes],
) -> _PidfdChild:
    """Start a child with its pipes, if any, as raw descriptors; watch it."""
    pipes: list[int] = []  # every descriptor made here: closed on failure
    ends: list[int | None] = [None, None]  # our read ends
    child_fds: list[int] = []  # what the child gets as its stdout, stderr
    try:
        for i, target in enumerate((stdout, stderr)):
            if target == PIPE:
                read_end, write_end = os.pipe()
                pipes += (read_end, write_end)
                ends[i] = read_end
                child_fds.append(write_end)
            elif isinstance(target, int):
                child_fds.append(target)
            else:
                child_fds.append(target.fileno())
        proc = None
        if cwd is None and min(child_fds) > 2:
            closing = () if _CLOSEFROM is not None else _inheritable(loop)
            pid = _posix_spawn(command, env, child_fds[0], child_fds[1], closing)
        else:
            # A cwd (no chdir action in os.posix_spawn), or descriptors in
            # the 0-2 range (a parent that closed its own stdio): subprocess
            # handles both.
            proc = subprocess.Popen(
                command,
                shell=isinstance(command, str),
                stdin=DEVNULL,
                stdout=child_fds[0],
                stderr=child_fds[1],
                cwd=cwd,
                env=env,
                start_new_session=True,
            )
            pid = proc.pid
    except BaseException:
        for fd in pipes:
            os.close(fd)
        raise
    for fd in pipes:
        if fd not in ends:
            os.close(fd)  # the child's ends: only the child holds them now
    try:
        return _PidfdChild(loop, pid, (ends[0], ends[1]), proc)
    except BaseException:
        with contextlib.suppress(OSError):
            os.killpg(pid, signal.SIGKILL)
        if proc is not None:
            proc.wait()
        else:
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, 0)
        raise


# Signals Python sets to SIG_IGN at start-up that a child should not inherit
# ignored (subprocess's restore_signals=True does the same).
_RESTORED = tuple(
    getattr(signal, name)
    for name in ("SIGPIPE", "SIGXFZ", "SIGXFSZ")
    if hasattr(signal, name)
)
_CLOSEFROM: int | None = getattr(os, "POSIX_SPAWN_CLOSEFROM", None)


def _posix_spawn(
    command: str | list[str],
    env: Mapping[Any, Any] | None,
    out: int,
    err: int,
    closing: Iterable[int] = (),
) -> int:
    """``os.posix_spawn`` the child in a new session; return its pid.

    Descriptors other than 0-2 do not reach the child, as with
    ``subprocess``'s ``close_fds``: Python opens its own non-inheritable
    (PEP 446); where ``os.POSIX_SPAWN_CLOSEFROM`` exists (Python >= 3.13)
    every other one is closed in the child, and elsewhere ``closing``, the
    inheritable ones (`_inheritable`).
    """
    argv = ["/bin/sh", "-c", command] if isinstance(command, str) else command
    path = _resolve(argv[0], env)
    actions: list[tuple[Any, ...]] = [
        (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
        (os.POSIX_SPAWN_DUP2, out, 1),
        (os.POSIX_SPAWN_DUP2, err, 2),
    ]
    if _CLOSEFROM is not None:
        actions.append((_CLOSEFROM, 3))
    else:
        actions += [(os.POSIX_SPAWN_CLOSE, fd) for fd in closing]
    return os.posix_spawn(
        path,
        argv,
        os.environ if env is None else env,
        file_actions=actions,
        setsid=True,
        setsigdef=_RESTORED,
    )


_fd_scans: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, list[int]] = (
    weakref.WeakKeyDictionary()
)


def _inheritable(loop: asyncio.AbstractEventLoop) -> list[int]:
    """This process's inheritable descriptors above 2, as of this loop turn.

    Without ``POSIX_SPAWN_CLOSEFROM`` (Python < 3.13) they must be closed in
    each child one by one. Python makes none by itself, but a process can
    inherit some (a pipe its own parent left open) or make them
    (``os.dup2``, ``os.set_inheritable``). Listing them costs about 25 us,
    so the list is kept for the rest of the loop turn: the spawns of one
    turn (a handful) share it.
    """
    found = _fd_scans.get(loop)
    if found is None:
        found = []
        try:
            names = os.listdir("/proc/self/fd")
        except OSError:  # no /proc: only what Python itself opened is safe
            names = []
        for name in names:
            fd = int(name)
            if fd > 2:
                with contextlib.suppress(OSError):  # the listing's own fd
                    if os.get_inheritable(fd):
                        found.append(fd)
        _fd_scans[loop] = found
        loop.call_soon(_fd_scans.pop, loop, None)
    return found


def _resolve(executable: str, env: Mapping[Any, Any] | None) -> str:
    """Find ``executable`` the way ``subprocess`` does: on the child's PATH.

    A name holding a ``/`` is used as it is; otherwise the first executable
    file of that name in the ``PATH`` of ``env`` (or of this process) wins.
    When none is executable, the first that exists is returned (spawning it
    gives the `PermissionError`); when none exists, `FileNotFoundError`.
    """
    if "/" in executable:
        return executable
    denied = None
    for directory in os.get_exec_path(env):
        path = os.path.join(directory, executable)
        if os.access(path, os.X_OK) and os.path.isfile(path):
            return path
        if denied is None and os.path.exists(path):
            denied = path
    if denied is not None:
        return denied
    raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), executable)


_unreaped: list[int] = []  # children killed at shutdown that had not exited yet


def _reap_leftovers() -> None:
    for pid in list(_unreaped):
        try:
            done, _ = os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            done = pid
        if done:
            _unreaped.remove(pid)
