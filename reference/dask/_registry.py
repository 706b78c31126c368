"""A worker's record of task keys: which started, which were canceled first.

A function running in a worker thread cannot be stopped, so a cancel
(`reference.dask._worker.cancel_keys`) must answer, per key, whether the
task was stopped or had already started. `KeyRegistry` decides it: its
check-and-start (`start_function`, `spawn`) and its check-and-mark
(`mark_canceled`) take the same lock, so each key is either started or
marked, never both. It holds no threads or processes of its own and is
tested by calling it (tests/dask/test_dask_units.py).
"""

from __future__ import annotations

import subprocess
import threading
import time
from collections.abc import Callable, Collection, Sequence
from typing import NamedTuple

__all__ = ["CanceledBeforeStart", "KeyRegistry", "Marked"]

_FORGET_CANCELED_AFTER = 600.0  # seconds a canceled-but-unseen key is remembered
_RETURNED_KEPT = 1024  # chunks whose started keys are remembered, oldest out


class CanceledBeforeStart(Exception):
    """Raised by `KeyRegistry.spawn`: the key was canceled, its child never starts."""


class Marked(NamedTuple):
    """What `KeyRegistry.mark_canceled` found.

    Attributes:
        children: ``(key, child)`` of the keys whose child runs here: to kill.
        unstoppable: Keys whose function started here in a worker thread
            (running, or finished with its result not yet collected).
    """

    children: list[tuple[str, subprocess.Popen[bytes]]]
    unstoppable: list[str]


class KeyRegistry:
    """Per worker process: started keys, canceled keys, children by key."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._lock = threading.Lock()
        self._clock = clock
        self._children: dict[str, subprocess.Popen[bytes]] = {}
        self._canceled: dict[str, float] = {}
        # Function keys started in a worker thread, chunk still running: key -> chunk.
        self._running: dict[str, str] = {}
        # Chunk key -> the keys it started, once it returned: covers the moment
        # between its return and Dask holding its result (then `mark_canceled`
        # sees the result in the worker's data).
        self._returned: dict[str, frozenset[str]] = {}

    # -- starting --------------------------------------------------------------

    def start_function(self, key: str, chunk: str) -> bool:
        """Start ``key`` in a worker thread unless it was canceled first."""
        with self._lock:
            if self._canceled.pop(key, None) is not None:
                return False
            self._running[key] = chunk
            return True

    def functions_returned(self, chunk: str, begun: Sequence[str]) -> None:
        """The chunk's thread is done with ``begun``: remember that they ran."""
        with self._lock:
            for key in begun:
                self._running.pop(key, None)
            self._note_returned(chunk, begun)

    def spawn(
        self, key: str, start: Callable[[], subprocess.Popen[bytes]]
    ) -> subprocess.Popen[bytes]:
        """Start ``key``'s child with ``start`` and register it, unless canceled.

        Raises:
            CanceledBeforeStart: The key was canceled first; ``start`` is
                never called (CN-6: a canceled task never starts).
        """
        with self._lock:  # atomic with mark_canceled
            if self._canceled.pop(key, None) is not None:
                raise CanceledBeforeStart(key)
            child = start()
            self._children[key] = child
            return child

    def child_ended(self, key: str, chunk: str, *, spawned: bool = True) -> bool:
        """Forget ``key``'s child; whether it was canceled while it ran.

        A key canceled while running was killed, and ``mark_canceled`` said
        so. Else it ran: remembered as started under ``chunk``.
        """
        with self._lock:
            self._children.pop(key, None)
            canceled = self._canceled.pop(key, None) is not None
            if not canceled and spawned:
                self._note_returned(chunk, [key])
            return canceled

    # -- canceling ---------------------------------------------------------------

    def mark_canceled(
        self, keys: Sequence[str], chunks: Sequence[str], held: Collection[str]
    ) -> Marked:
        """Cancel ``keys`` here: the children running for them, and the unstoppable.

        A key with a child (an executable, or an isolated function) is marked
        and its child returned, to be killed. A key whose function started in
        a worker thread here, running or finished (its chunk returned, or its
        chunk's result in ``held``, the worker's data), cannot be stopped: it
        is returned as unstoppable and not marked. Any other key is marked,
        so it never starts here.
        """
        now = self._clock()
        found = Marked([], [])
        with self._lock:
            self._forget_stale(now)
            for key, chunk in zip(keys, chunks, strict=True):
                child = self._children.get(key)
                if child is not None:
                    self._canceled[key] = now
                    found.children.append((key, child))
                elif (
                    key in self._running
                    or key in self._returned.get(chunk, ())
                    or (chunk and chunk in held)
                ):
                    found.unstoppable.append(key)
                else:
                    self._canceled[key] = now
        return found

    def _forget_stale(self, now: float) -> None:
        if self._canceled:
            stale = [
                k for k, t in self._canceled.items() if now - t > _FORGET_CANCELED_AFTER
            ]
            for key in stale:
                del self._canceled[key]

    def _note_returned(self, chunk: str, started: Sequence[str]) -> None:
        """Remember what ``chunk`` started; call with the lock held."""
        if chunk and started:
            self._returned[chunk] = frozenset(started)
            while len(self._returned) > _RETURNED_KEPT:
                del self._returned[next(iter(self._returned))]
