"""Service tasks: when one is ready, and how the engine is told (SV-1..SV-8).

The decisions are pure and live here: `service_options` reads and checks a
service's options, `Readiness` turns what a running service did (started,
printed a line, a probe held, yielded, ended, ran out of time) into at most
one "ready" and says how a service that ended early failed. The backends
do the I/O (spawn, read output, connect, wait) around them and announce a
ready service with `announce`.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from reference._base import duration
from spec import (
    ProbeKind,
    ReadyProbe,
    ServiceInfo,
    TaskKind,
    TaskState,
    TaskTimeoutError,
    parse_ready,
)

__all__ = [
    "LineSplitter",
    "Readiness",
    "ServiceOptions",
    "ServiceReady",
    "announce",
    "service_options",
]


@dataclass(frozen=True)
class ServiceOptions:
    """A service's checked options.

    Attributes:
        probe: When it is ready (`spec.parse_ready`).
        ready_timeout: Seconds it may take to be ready; ``None``: no limit.
        generator: The function is an async generator function: ready at
            its first ``yield``.
    """

    probe: ReadyProbe
    ready_timeout: float | None = None
    generator: bool = False


def service_options(task: dict[str, Any], kind: TaskKind) -> ServiceOptions:
    """Read a service's ``ready`` and ``ready_timeout`` options (SV-4).

    Args:
        task: The service's task dict.
        kind: What it runs.

    Returns:
        The checked options.

    Raises:
        ValueError: A malformed ``ready`` or ``ready_timeout``, a ``stdout``
            probe on a function (its output is not its own), or a probe on
            an async generator function (its first ``yield`` is its
            readiness). The message names the option.
        TypeError: ``ready_timeout`` is not a number.
    """
    options = task.get("task_backend_specific_kwargs") or {}
    if not isinstance(options, dict):
        options = {}
    probe = parse_ready(options.get("ready"))
    raw = options.get("ready_timeout")
    timeout = None if raw is None else duration("ready_timeout", raw)
    generator = kind is TaskKind.FUNCTION and inspect.isasyncgenfunction(
        task.get("function")
    )
    if kind is TaskKind.FUNCTION and probe.kind is ProbeKind.STDOUT:
        raise ValueError(
            "ready probe 'stdout' needs an executable service: a function's "
            "output is not its own"
        )
    if generator and probe.kind is not ProbeKind.STARTED:
        raise ValueError(
            f"ready probe {probe.kind.value!r} given for an async generator "
            "service, which is ready at its first yield; drop 'ready'"
        )
    return ServiceOptions(probe, timeout, generator)


class Readiness:
    """Decides when one service is ready and how it ends, from what it did.

    Events come in as calls: `on_running` (its RUNNING was reported),
    `on_line`, `on_probe_held`, `on_yield`. Each returns the
    `spec.ServiceInfo` to announce *now*, else ``None``: a service is
    announced at most once, and never before its RUNNING (SV-2), so a
    readiness found earlier (an async generator yielding in its first step)
    waits for `on_running`. `outcome` decides how a service that ends is
    reported (SV-5, SV-6). Pure: no I/O, no clock.

    Args:
        options: The service's options.
        identity: Where it runs: ``{"pid": ...}`` or ``{"worker": ...}``.

    Attributes:
        info: The service's info, once found ready.
        announced: Whether the readiness was announced.
        timed_out: Its ``ready_timeout`` passed before it was ready: the
            backend stops it, and it ends FAILED with `TaskTimeoutError`.
    """

    __slots__ = ("announced", "identity", "info", "options", "running", "timed_out")

    def __init__(self, options: ServiceOptions, identity: ServiceInfo) -> None:
        self.options = options
        self.identity = identity
        self.info: ServiceInfo | None = None
        self.running = False
        self.announced = False
        self.timed_out = False

    @property
    def ready(self) -> bool:
        """Whether the service has been found ready."""
        return self.info is not None

    @property
    def waits(self) -> bool:
        """Whether readiness must be watched for: not ready, a probe to check."""
        kind = self.options.probe.kind
        return not self.ready and kind is not ProbeKind.STARTED

    def _due(self) -> ServiceInfo | None:
        if self.info is None or self.announced or not self.running:
            return None
        self.announced = True
        return self.info

    def _ready(self, info: ServiceInfo) -> ServiceInfo | None:
        if self.info is None and not self.timed_out:
            self.info = {**self.identity, **info}
        return self._due()

    def on_running(self, identity: ServiceInfo | None = None) -> ServiceInfo | None:
        """Its RUNNING was reported: ready now without a probe, or if found earlier.

        Args:
            identity: Where it turned out to run (a pid known only now), if
                more precise than the one given at construction.
        """
        self.running = True
        if identity:
            self.identity = identity
        if self.options.probe.kind is ProbeKind.STARTED and not self.options.generator:
            return self._ready({"probe": ProbeKind.STARTED.value})
        return self._due()

    def on_line(self, line: str) -> ServiceInfo | None:
        """It printed ``line`` (no newline): ready if a ``stdout`` probe matches."""
        probe = self.options.probe
        if probe.kind is ProbeKind.STDOUT and probe.matches(line):
            return self._ready({"probe": probe.kind.value, "line": line})
        return None

    def on_probe_held(self) -> ServiceInfo | None:
        """A ``tcp`` connection succeeded, or the ``file`` exists."""
        probe = self.options.probe
        if probe.kind is ProbeKind.TCP:
            return self._ready({"probe": probe.kind.value, "endpoint": probe.target})
        if probe.kind is ProbeKind.FILE:
            return self._ready({"probe": probe.kind.value, "path": probe.target})
        return None

    def on_yield(self, value: Any) -> ServiceInfo | None:
        """An async generator service yielded ``value``: ready at the first."""
        if self.options.generator:
            return self._ready({"probe": "yield", "value": value})
        return None

    def on_deadline(self) -> bool:
        """Its ``ready_timeout`` passed; True if it must be stopped for it."""
        if self.ready:
            return False
        self.timed_out = True
        return True

    def outcome(
        self, uid: str, state: TaskState, task: dict[str, Any], *, closing: bool
    ) -> tuple[TaskState, BaseException | None]:
        """How a service ending in ``state`` is reported, and the error to fail it with.

        Args:
            uid: The service's uid, for messages.
            state: What its runner would report.
            task: Its task dict (``exit_code`` says how an executable ended).
            closing: The backend is shutting down: CANCELED stays CANCELED.

        Returns:
            ``(state, None)`` to report as the runner said: a service found
            ready ends like any task (SV-6), one that failed keeps its own
            error; ``(FAILED, error)`` for one stopped by its ready timeout
            (`TaskTimeoutError`) or one that ended well before it was ready
            (SV-5).
        """
        if self.timed_out and not (state is TaskState.CANCELED and closing):
            return TaskState.FAILED, TaskTimeoutError(
                f"service {uid!r} was not ready within its ready_timeout of "
                f"{self.options.ready_timeout:g} s ({self._waited_for()})"
            )
        started_is_ready = (
            self.options.probe.kind is ProbeKind.STARTED and not self.options.generator
        )
        if state is not TaskState.DONE or self.ready or started_is_ready:
            # Ending DONE, it had started: without a probe that is ready
            # (its RUNNING may have been dropped as stale, and it with it).
            return state, None
        code = task.get("exit_code")
        how = "returned" if code is None else f"exited with code {code}"
        return TaskState.FAILED, RuntimeError(
            f"service {uid!r} {how} before it was ready ({self._waited_for()})"
        )

    def _waited_for(self) -> str:
        probe = self.options.probe
        if self.options.generator:
            return "waiting for its first yield"
        if probe.kind is ProbeKind.STARTED:
            return "waiting for it to start"
        return f"waiting for ready probe {probe.kind.value} {probe.target!r}"


class LineSplitter:
    """Turns output chunks into whole lines, for a ``stdout`` probe.

    A line longer than `LIMIT` characters is cut there (a probe is for a
    readiness message, not a megabyte of output without a newline).
    """

    LIMIT = 64 * 1024

    __slots__ = ("_partial",)

    def __init__(self) -> None:
        self._partial = ""

    def feed(self, chunk: bytes | str) -> list[str]:
        """Add output; return the lines it completed (without newlines)."""
        text = chunk.decode(errors="replace") if isinstance(chunk, bytes) else chunk
        lines = (self._partial + text).split("\n")
        self._partial = lines.pop()[-self.LIMIT :]
        return [line.rstrip("\r") for line in lines]


class ServiceReady:
    """The ``service_callback`` a backend passes when a service is ready (SV-3).

    The engine calls it as ``(future, task, state)``; it resolves ``future``
    with the service's info unless the future is already done (resolved,
    failed or canceled: left alone). Called from a thread other than the
    future's loop, it hands the resolution to that loop.

    Args:
        info: The service's info (also in ``task["service_info"]``).
    """

    __slots__ = ("info",)

    def __init__(self, info: ServiceInfo) -> None:
        self.info = info

    def __call__(self, future: Any, task: Any, state: str) -> None:
        get_loop = getattr(future, "get_loop", None)
        if get_loop is not None:
            loop = get_loop()
            try:
                running = asyncio.get_running_loop()
            except RuntimeError:
                running = None
            if running is not loop:
                loop.call_soon_threadsafe(self._resolve, future)
                return
        self._resolve(future)

    def _resolve(self, future: Any) -> None:
        if not future.done():
            future.set_result(self.info)


def announce(
    report_ready: Callable[[dict[str, Any], Any], None],
    task: dict[str, Any],
    info: ServiceInfo,
) -> None:
    """Tell the engine a service is ready (SV-2, SV-3).

    Writes ``task["service_info"]`` and reports RUNNING once more with the
    ``service_callback`` keyword, through the backend's own contained
    ``_report_ready(task, ready)``.
    """
    task["service_info"] = info
    report_ready(task, ServiceReady(info))
