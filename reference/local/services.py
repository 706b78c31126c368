"""Service tasks of the local backend: watching for readiness, on the loop.

`ServiceWatch` carries out `reference._services.Readiness`'s decisions for
one service: from its RUNNING on, it polls its probe (a TCP connection, a
file, the lines of its output), bounds the wait by ``ready_timeout``, and
announces readiness through the backend's ``_report_ready``. The runners run a
service like any task, but ``async def`` and async generator services run on
the loop (`on_loop`); `drive_generator` runs an async generator service,
ready at its first ``yield``.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import os
from collections.abc import AsyncGenerator, Callable, Sequence
from typing import TYPE_CHECKING, Any

from reference._services import LineSplitter, Readiness, announce, service_options
from spec import ProbeKind, ServiceInfo, TaskKind, TaskState, task_kind

if TYPE_CHECKING:
    from reference.local.jobs import LocalJob

__all__ = [
    "ServiceWatch",
    "drive_generator",
    "on_loop",
    "prepare",
    "service_call",
    "settle",
    "start_watching",
]

POLL = 0.05
"""Seconds between two looks at a probe that is not ready yet."""

_CONNECT_TIMEOUT = 1.0
"""Seconds one TCP probe may take to connect."""


class ServiceWatch:
    """Watches one service until it is ready (or ends), on the backend's loop.

    Args:
        readiness: The service's decisions.
        task: Its task dict.
        report_ready: The backend's ``_report_ready(task, ready)``.
        stop: Stops the service for its ready timeout (it ends FAILED).
        cwd: Where a relative ``file`` probe is looked for.
    """

    def __init__(
        self,
        readiness: Readiness,
        task: dict[str, Any],
        report_ready: Callable[[dict[str, Any], Any], None],
        stop: Callable[[], None],
        cwd: str | None = None,
    ) -> None:
        self.readiness = readiness
        self._task = task
        self._report_ready = report_ready
        self._stop = stop
        self._cwd = cwd
        self._timer: asyncio.TimerHandle | None = None
        self._poller: asyncio.Task[None] | None = None
        self._closed = False

    def _announce(self, info: ServiceInfo | None) -> None:
        if info is not None and not self._closed:
            announce(self._report_ready, self._task, info)

    def on_running(
        self,
        loop: asyncio.AbstractEventLoop,
        identity: ServiceInfo | None = None,
        output: Callable[[], Sequence[bytes]] | None = None,
        output_path: str | None = None,
    ) -> None:
        """Its RUNNING was just reported: announce it, or start watching.

        Args:
            loop: The backend's loop.
            identity: Where it runs, if known only now (a child's pid).
            output: Its output chunks so far (a child's piped stdout).
            output_path: The file its output goes to (``capture_stdio``).
        """
        if self._closed or self.readiness.running:
            return
        self._announce(self.readiness.on_running(identity))
        timeout = self.readiness.options.ready_timeout
        if timeout is not None and not self.readiness.ready:
            self._timer = loop.call_later(timeout, self._deadline)
        if self.readiness.waits:
            self._poller = loop.create_task(self._poll(output, output_path))

    def on_yield(self, value: Any) -> None:
        """An async generator service yielded ``value``."""
        self._announce(self.readiness.on_yield(value))

    def _deadline(self) -> None:
        self._timer = None
        if not self._closed and self.readiness.on_deadline():
            self.close()
            self._stop()

    async def _poll(
        self,
        output: Callable[[], Sequence[bytes]] | None,
        output_path: str | None,
    ) -> None:
        probe = self.readiness.options.probe
        lines = _Lines(output, output_path)
        path = probe.target
        if probe.kind is ProbeKind.FILE and self._cwd and not os.path.isabs(path):
            path = os.path.join(self._cwd, path)
        while not self._closed and not self.readiness.ready:
            if probe.kind is ProbeKind.STDOUT:
                for line in lines.new():
                    self._announce(self.readiness.on_line(line))
            elif probe.kind is ProbeKind.FILE:
                if os.path.exists(path):
                    self._announce(self.readiness.on_probe_held())
            elif await _connects(probe.host, probe.port):
                self._announce(self.readiness.on_probe_held())
            if not self.readiness.ready:
                await asyncio.sleep(POLL)

    def close(self) -> None:
        """Stop watching (the service ended, was stopped, or is ready)."""
        self._closed = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._poller is not None and self._poller is not _current_task():
            self._poller.cancel()
        self._poller = None


def _current_task() -> asyncio.Task[Any] | None:
    try:
        return asyncio.current_task()
    except RuntimeError:  # no running loop
        return None


class _Lines:
    """The new whole lines of a service's output since the last look."""

    def __init__(
        self,
        chunks: Callable[[], Sequence[bytes]] | None,
        path: str | None,
    ) -> None:
        self._chunks = chunks
        self._path = path
        self._seen = 0
        self._offset = 0
        self._splitter = LineSplitter()

    def new(self) -> list[str]:
        found: list[str] = []
        if self._chunks is not None:
            chunks = self._chunks()
            for chunk in chunks[self._seen :]:
                found += self._splitter.feed(chunk)
            self._seen = len(chunks)
        elif self._path is not None:
            with contextlib.suppress(OSError), open(self._path, "rb") as out:
                out.seek(self._offset)
                data = out.read()
                self._offset += len(data)
                found += self._splitter.feed(data)
        return found


async def _connects(host: str, port: int) -> bool:
    """Whether a TCP connection to ``host:port`` succeeds now."""
    try:
        _, writer = await asyncio.wait_for(
            asyncio.open_connection(host, port), _CONNECT_TIMEOUT
        )
    except (OSError, asyncio.TimeoutError):
        return False
    writer.close()
    with contextlib.suppress(OSError):
        await writer.wait_closed()
    return True


async def drive_generator(
    watch: ServiceWatch,
    func: Callable[..., AsyncGenerator[Any, None]],
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
) -> Any:
    """Run an async generator service: ready at its first ``yield`` (SV-8).

    It runs on until the generator ends (the first value is returned),
    raises, or is canceled (the generator is closed: its ``finally`` runs).
    Values yielded after the first are dropped.
    """
    generator = func(*args, **kwargs)
    try:
        try:
            first = await generator.__anext__()
        except StopAsyncIteration:
            return None  # ended before it was ready: FAILED (SV-5)
        watch.on_yield(first)
        async for _ in generator:
            pass
        return first
    finally:
        await generator.aclose()


def prepare(
    task: dict[str, Any],
    report_ready: Callable[[dict[str, Any], Any], None],
    stop: Callable[[], None],
) -> ServiceWatch:
    """The watch of a service about to be run, from its checked options.

    Raises:
        ValueError: A malformed ``ready`` or ``ready_timeout``, or a probe
            that does not fit what it runs (SV-4); the task fails with it.
        TypeError: ``ready_timeout`` is not a number.
    """
    kind = task_kind(task)
    options = service_options(task, kind if kind is not None else TaskKind.FUNCTION)
    backend_options = task.get("task_backend_specific_kwargs") or {}
    cwd = backend_options.get("cwd") if isinstance(backend_options, dict) else None
    readiness = Readiness(options, {"pid": os.getpid()})
    return ServiceWatch(
        readiness, task, report_ready, stop, cwd if isinstance(cwd, str) else None
    )


def on_loop(watch: ServiceWatch, func: Callable[..., Any]) -> bool:
    """Whether a function service runs as an asyncio task on the backend's loop.

    ``async def`` and async generator services do: a service holds what runs
    it for as long as it runs, and a pool thread or worker held for ever is
    one fewer for the batch tasks.
    """
    return watch.readiness.options.generator or inspect.iscoroutinefunction(func)


def service_call(
    watch: ServiceWatch,
    call: tuple[Callable[..., Any], tuple[Any, ...], dict[str, Any]],
) -> tuple[Callable[..., Any], tuple[Any, ...], dict[str, Any]]:
    """The call an on-loop runner makes for a function service."""
    if not watch.readiness.options.generator:
        return call
    func, args, kwargs = call
    return drive_generator, (watch, func, args, kwargs), {}


def start_watching(
    job: LocalJob, loop: asyncio.AbstractEventLoop, output_path: str | None
) -> None:
    """A service's RUNNING was reported: where it runs, and watch from now on."""
    watch = job.service
    if watch is None:
        return
    child = job.child
    identity: ServiceInfo | None = None
    output: Callable[[], Sequence[bytes]] | None = None
    if child is not None:
        identity = {"pid": child.pid}
        if output_path is None:
            chunks = child.stdout
            output = lambda: chunks  # noqa: E731 - the list grows as output comes
    else:
        # A process-pool worker (its slot's process), else this process.
        pid = getattr(getattr(job.worker, "worker", None), "pid", None)
        if isinstance(pid, int):
            identity = {"pid": pid}
    watch.on_running(loop, identity, output, output_path)


def settle(job: LocalJob, state: TaskState, *, closing: bool) -> TaskState:
    """The state a service ending in ``state`` is reported in (SV-5, SV-6).

    Stops its watch; writes the error it fails with, if it is failed for
    ending before it was ready or for its ready timeout.
    """
    watch = job.service
    if watch is None:
        return state
    watch.close()
    final, error = watch.readiness.outcome(job.uid, state, job.task, closing=closing)
    if error is not None:
        job.task["exception"] = error
        job.task["stderr"] = str(error)
    return final
