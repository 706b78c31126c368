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
    """Decides when one service is ready, from what it did so far.

    Each ``on_*`` method takes one event and returns the `spec.ServiceInfo`
    to announce when that event made the service ready, else ``None``; a
    service is announced at most once (SV-2). Pure: no I/O, no clock.

    Args:
        options: The service's options.
        identity: Where it runs: ``{"pid": ...}`` or ``{"worker": ...}``.
    """

    __slots__ = ("identity", "info", "options")

    def __init__(self, options: ServiceOptions, identity: ServiceInfo) -> None:
        self.options = options
        self.identity = identity
        self.info: ServiceInfo | None = None

    @property
    def ready(self) -> bool:
        """Whether the service has been found ready."""
        return self.info is not None

    @property
    def polls(self) -> bool:
        """Whether readiness needs polling (a ``tcp`` or ``file`` probe)."""
        return self.options.probe.kind in (ProbeKind.TCP, ProbeKind.FILE)

    def _ready(self, info: ServiceInfo) -> ServiceInfo | None:
        if self.info is not None:
            return None
        self.info = {**self.identity, **info}
        return self.info

    def on_started(self) -> ServiceInfo | None:
        """The service started: ready now if it has no probe."""
        if self.options.probe.kind is ProbeKind.STARTED and not self.options.generator:
            return self._ready({"probe": ProbeKind.STARTED.value})
        return None

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

    def early_end(self, uid: str, how: str) -> Exception | None:
        """The error to fail a service that ended ``how`` before it was ready.

        Returns:
            ``None`` once it was ready: then it ends like any task (SV-6).
        """
        if self.ready:
            return None
        return RuntimeError(
            f"service {uid!r} {how} before it was ready ({self._waited_for()})"
        )

    def timed_out(self, uid: str) -> TaskTimeoutError | None:
        """The error for a service whose ``ready_timeout`` passed, unless ready."""
        if self.ready or self.options.ready_timeout is None:
            return None
        return TaskTimeoutError(
            f"service {uid!r} was not ready within its ready_timeout of "
            f"{self.options.ready_timeout:g} s ({self._waited_for()})"
        )

    def _waited_for(self) -> str:
        probe = self.options.probe
        if self.options.generator:
            return "waiting for its first yield"
        if probe.kind is ProbeKind.STARTED:
            return "waiting for it to start"
        return f"waiting for ready probe {probe.kind.value} {probe.target!r}"


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
    report: Callable[..., None], task: dict[str, Any], info: ServiceInfo
) -> None:
    """Tell the engine a service is ready (SV-2, SV-3).

    Writes ``task["service_info"]`` and reports RUNNING once more with the
    ``service_callback`` keyword, through the backend's own contained
    ``report(task, state, **extra)``.
    """
    task["service_info"] = info
    report(task, TaskState.RUNNING, service_callback=ServiceReady(info))
