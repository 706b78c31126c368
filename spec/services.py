"""Service tasks: long-running servers other tasks use while they run (contract 1.2).

radical.asyncflow 0.6 marks a task declared with ``service=True`` by
``task["is_service"] = True``. A backend with the ``services`` capability
runs it until it exits, is canceled, or the backend shuts down, and tells
the engine when it is *ready*: it invokes the state callback once more with
state ``RUNNING`` and the keyword ``service_callback``, a `ServiceCallback`
that the engine calls as ``service_callback(future, task, state)`` to
resolve the service's future early, so the tasks depending on it start
(clauses SV-1 to SV-8).

When a service is ready is said by ``task_backend_specific_kwargs["ready"]``:

===========================  ==============================================
``ready``                    ready when
===========================  ==============================================
missing                      the service has started
``{"tcp": "host:port"}``     a TCP connection to ``host:port`` succeeds
``{"file": "path"}``         the file exists
``{"stdout": "regex"}``      a line of its standard output matches
===========================  ==============================================

and ``task_backend_specific_kwargs["ready_timeout"]`` (seconds) bounds the
wait. A function service may instead be an async generator function: it is
ready at its first ``yield``. `parse_ready` reads and checks a ``ready``
value, so every backend refuses a malformed one with the same message.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol, TypeAlias

from typing_extensions import TypedDict

__all__ = [
    "ProbeKind",
    "ReadyProbe",
    "ServiceCallback",
    "ServiceInfo",
    "ServiceStateCallback",
    "is_service",
    "parse_ready",
]

ServiceCallback: TypeAlias = Callable[[Any, Any, str], None]
"""What a backend passes as ``service_callback=``: ``(future, task, state) -> None``.

Called by the engine on the event-loop thread with the service's asyncio
future; it resolves the future with the service's info unless the future is
already done (SV-3).
"""


class ServiceStateCallback(Protocol):
    """An engine callback that accepts the readiness keyword (capability ``services``).

    radical.asyncflow 0.6's ``WorkflowEngine.task_callbacks`` has this shape.
    A callback without the keyword (`spec.TaskStateCallback`) still suits a
    backend used without service tasks: ``service_callback`` is passed only
    for tasks with ``is_service`` true (SV-2).
    """

    def __call__(
        self,
        task: Any,
        state: str,
        /,
        *,
        service_callback: ServiceCallback | None = None,
    ) -> None:
        """Receive a state; ``service_callback`` only when a service is ready."""
        ...


class ServiceInfo(TypedDict, total=False):
    """What a backend knows about a ready service: ``task["service_info"]``.

    Also the value the service's future is resolved with (SV-3). ``probe``
    is always there, and one of ``pid``, ``worker`` or ``dry_run``.
    """

    probe: str
    """What made it ready: ``"started"``, ``"tcp"``, ``"file"``, ``"stdout"``,
    ``"yield"`` (an async generator's first value) or ``"dry_run"``."""
    pid: int
    """Process id of the service (an executable, or the process running a function)."""
    worker: str
    """The worker running it, on a backend whose tasks run on named workers."""
    dry_run: bool
    """``True`` when nothing ran (a dry-run backend)."""
    endpoint: str
    """The ``host:port`` a ``tcp`` probe connected to."""
    path: str
    """The file a ``file`` probe found."""
    line: str
    """The output line a ``stdout`` probe matched (without its newline)."""
    value: Any
    """The value an async generator service yielded first."""


class ProbeKind(str, enum.Enum):
    """How a backend decides that a service is ready."""

    STARTED = "started"
    """It has started: no ``ready`` key."""
    TCP = "tcp"
    """A TCP connection to ``host:port`` succeeds."""
    FILE = "file"
    """A file exists."""
    STDOUT = "stdout"
    """A line of the service's standard output matches a regular expression."""

    def __str__(self) -> str:
        return self.value


@dataclass(frozen=True)
class ReadyProbe:
    """A checked ``ready`` value.

    Attributes:
        kind: Which probe.
        target: What it looks at: ``"host:port"``, the path, or the regex's
            source; ``""`` for `ProbeKind.STARTED`.
        host: The host of a ``tcp`` probe.
        port: The port of a ``tcp`` probe (1 to 65535).
        pattern: The compiled regex of a ``stdout`` probe.
    """

    kind: ProbeKind
    target: str = ""
    host: str = ""
    port: int = 0
    pattern: re.Pattern[str] | None = None

    def matches(self, line: str) -> bool:
        """Whether an output line holds a ``stdout`` probe (searched, not anchored)."""
        return self.pattern is not None and self.pattern.search(line) is not None


STARTED = ReadyProbe(ProbeKind.STARTED)
"""The probe of a service without a ``ready`` key."""


def is_service(task: Any) -> bool:
    """Whether a task dict asks to be run as a service (``is_service`` is true)."""
    return isinstance(task, dict) and task.get("is_service") is True


def _tcp(value: str) -> ReadyProbe:
    host, sep, port_text = value.rpartition(":")
    host = host.strip("[]")  # "[::1]:80" names an IPv6 host
    if not sep or not host or not port_text.isdigit():
        raise ValueError(f"ready probe 'tcp' must be 'host:port', got {value!r}")
    port = int(port_text)
    if not 0 < port < 65536:
        raise ValueError(f"ready probe 'tcp' port must be 1..65535, got {port}")
    return ReadyProbe(ProbeKind.TCP, value, host=host, port=port)


def parse_ready(value: object) -> ReadyProbe:
    """Read and check a service's ``ready`` option.

    Args:
        value: ``task_backend_specific_kwargs.get("ready")``.

    Returns:
        The probe: `ProbeKind.STARTED` for ``None``.

    Raises:
        ValueError: ``value`` is not a dict with exactly one of ``tcp``,
            ``file``, ``stdout`` holding a non-empty str, or the str is not
            a ``host:port`` / a valid regex. The message names the probe and
            the value; a backend fails the task with it (SV-4).
    """
    if value is None:
        return STARTED
    kinds = ", ".join(repr(k.value) for k in ProbeKind if k is not ProbeKind.STARTED)
    if not isinstance(value, dict) or len(value) != 1:
        raise ValueError(
            f"'ready' must be a dict with one key of {kinds}, got {value!r}"
        )
    ((key, target),) = value.items()
    if key not in {"tcp", "file", "stdout"}:
        raise ValueError(f"'ready' probe {key!r} is unknown; use one of {kinds}")
    if not isinstance(target, str) or not target:
        raise ValueError(
            f"ready probe {key!r} needs a non-empty str, got "
            f"{type(target).__name__} {target!r}"
        )
    if key == "tcp":
        return _tcp(target)
    if key == "file":
        return ReadyProbe(ProbeKind.FILE, target)
    try:
        pattern = re.compile(target)
    except re.error as error:
        raise ValueError(
            f"ready probe 'stdout' is not a valid regex ({error}): {target!r}"
        ) from None
    return ReadyProbe(ProbeKind.STDOUT, target, pattern=pattern)
