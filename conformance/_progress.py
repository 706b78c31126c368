"""How far a command-line run is: the test running, n of N, the time spent.

On a terminal, one status line rewritten in place (and kept fresh by a
ticker, so a long test still shows the clock moving); elsewhere (a CI log, a
pipe, ``--json -``) one plain line per finished test. Either way it goes to
stderr, so stdout holds the report alone.
"""

from __future__ import annotations

import shutil
import threading
import time
from typing import TextIO

from conformance.report import TestResult

__all__ = ["Progress"]

_TICK = 0.5
"""Seconds between redraws of the live line while a test runs."""


def status_line(done: int, total: int, elapsed: float, running: str | None) -> str:
    """The live line: ``[12/87] 34 s  running states.order``."""
    width = len(str(total))
    doing = f"  running {running}" if running else ""
    return f"[{done:>{width}}/{total}] {elapsed:5.0f} s{doing}"


def result_line(done: int, total: int, elapsed: float, result: TestResult) -> str:
    """The plain line for a finished test, with its outcome and time."""
    width = len(str(total))
    run = f" (run {result.run})" if result.run > 1 else ""
    return (
        f"[{done:>{width}}/{total}] {result.outcome.value:<6} {result.id}{run} "
        f"({result.duration:.2f} s; {elapsed:.0f} s elapsed)"
    )


class Progress:
    """Reports a run's progress to a stream.

    Args:
        total: How many tests the run will report.
        stream: Where to write (the command uses stderr).
        live: Rewrite one status line in place; ``None`` decides by whether
            ``stream`` is a terminal.
        every_test: Also print a plain line for each finished test on a
            terminal (``-v``); off a terminal that is always done.
    """

    def __init__(
        self,
        total: int,
        stream: TextIO,
        *,
        live: bool | None = None,
        every_test: bool = False,
    ) -> None:
        self.total = total
        self.stream = stream
        self.live = stream.isatty() if live is None else live
        self.every_test = every_test or not self.live
        self.done = 0
        self.running: str | None = None
        self._began = time.monotonic()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._ticker: threading.Thread | None = None
        self._shown = 0  # characters of the live line on screen

    def start(self) -> None:
        """Start the clock (and, on a terminal, the ticker)."""
        self._began = time.monotonic()
        if self.live:
            self._ticker = threading.Thread(
                target=self._tick, name="conformance-progress", daemon=True
            )
            self._ticker.start()

    def started(self, test_id: str) -> None:
        """A test began."""
        with self._lock:
            self.running = test_id
            self._draw()

    def finished(self, result: TestResult) -> None:
        """A test ended with ``result``."""
        with self._lock:
            self.done += 1
            self.running = None
            if self.every_test:
                self._clear()
                line = result_line(self.done, self.total, self._elapsed(), result)
                self.stream.write(line + "\n")
            self._draw()

    def close(self) -> None:
        """Stop the ticker and clear the live line."""
        self._stop.set()
        if self._ticker is not None:
            self._ticker.join(timeout=2 * _TICK)
        with self._lock:
            self._clear()
            self.stream.flush()

    def _elapsed(self) -> float:
        return time.monotonic() - self._began

    def _tick(self) -> None:
        while not self._stop.wait(_TICK):
            with self._lock:
                self._draw()

    def _draw(self) -> None:
        if not self.live:
            return
        line = status_line(self.done, self.total, self._elapsed(), self.running)
        line = line[: max(20, shutil.get_terminal_size().columns - 1)]
        pad = " " * max(0, self._shown - len(line))
        self.stream.write("\r" + line + pad)
        self.stream.flush()
        self._shown = len(line)

    def _clear(self) -> None:
        if self.live and self._shown:
            self.stream.write("\r" + " " * self._shown + "\r")
            self._shown = 0
