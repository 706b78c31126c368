"""Cancel latency: ``cancel_task`` of a running function to its CANCELED.

Each run builds a backend (untimed), warms its pool, starts one function
that blocks for a minute, waits until it runs (it writes a file), then
times ``await cancel_task(uid)`` up to the CANCELED callback. The row also
says whether the function had really stopped when CANCELED arrived: its
worker process gone (process pool), or ``CancelledError`` seen inside the
coroutine (thread pool).
"""

from __future__ import annotations

import asyncio
import os
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from pathlib import Path
from typing import Any

from _measure import median
from _subjects import Unavailable, pool_sizes
from _workloads import block_async, block_sync, sync_noop

__all__ = ["cancel_latency"]

# (workload, key, label, pool kind)
_SUBJECTS = [
    ("sync-fn", "ours-local-process", "ours Local (processes)", "process"),
    ("async-fn", "ours-local-process", "ours Local (processes)", "process"),
    ("async-fn", "ours-local-thread", "ours Local (threads)", "thread"),
]


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    try:  # a zombie awaiting its reaper has stopped too
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


async def _once(workload: str, pool: str, folder: Path, timeout: float) -> float:
    try:
        from reference import LocalExecutionBackend
    except ImportError as exc:  # pragma: no cover - run from a bare checkout
        raise Unavailable(f"reference is not importable: {exc}") from exc
    threads, processes = pool_sizes()
    executor: Any = (
        ProcessPoolExecutor(processes)
        if pool == "process"
        else ThreadPoolExecutor(threads)
    )
    backend = LocalExecutionBackend(executor)
    done: dict[str, asyncio.Event] = {}
    states: dict[str, str] = {}

    def callback(task: dict[str, Any], state: Any) -> None:
        states[task["uid"]] = str(state)
        if str(state) in ("DONE", "FAILED", "CANCELED"):
            done.setdefault(task["uid"], asyncio.Event()).set()

    backend.register_callback(callback)
    try:
        warm = {"uid": "warm", "function": sync_noop, "args": (1,)}
        done["warm"] = asyncio.Event()
        await backend.submit_tasks([warm])
        await asyncio.wait_for(done["warm"].wait(), timeout)
        started, saw = folder / "started", folder / "saw-cancel"
        for path in (started, saw):
            path.unlink(missing_ok=True)
        if workload == "sync-fn":
            task = {"uid": "t", "function": block_sync, "args": (str(started),)}
        else:
            task = {
                "uid": "t",
                "function": block_async,
                "args": (str(started), str(saw)),
            }
        done["t"] = asyncio.Event()
        await backend.submit_tasks([task])
        end = time.monotonic() + timeout
        while not started.exists() or not started.read_text():
            if time.monotonic() > end:
                raise TimeoutError("the function never started")
            await asyncio.sleep(0.001)
        pid = int(started.read_text())
        t0 = time.perf_counter()
        if not await backend.cancel_task("t"):
            raise RuntimeError("cancel_task returned False")
        await asyncio.wait_for(done["t"].wait(), timeout)
        elapsed = time.perf_counter() - t0
        if states["t"] != "CANCELED":
            raise RuntimeError(f"the task ended {states['t']}")
        stopped = _gone(pid) if pool == "process" else saw.exists()
        if not stopped:
            raise RuntimeError("CANCELED arrived while the function still ran")
        return elapsed
    finally:
        await backend.shutdown()


async def cancel_latency(
    repeat: int, timeout: float, skipped: list[str]
) -> list[dict[str, Any]]:
    """One row per subject: median milliseconds from cancel to CANCELED."""
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-cancel-") as tmp:
        for workload, key, label, pool in _SUBJECTS:
            row: dict[str, Any] = {
                "workload": workload,
                "key": key,
                "label": label,
                "runs_ms": [],
                "median_ms": None,
                "stopped": None,
                "note": "",
            }
            rows.append(row)
            try:
                for _ in range(repeat):
                    seconds = await _once(workload, pool, Path(tmp), timeout)
                    row["runs_ms"].append(round(seconds * 1000, 2))
            except Unavailable as exc:
                row["note"] = f"skipped: {exc}"
                skipped.append(f"cancel / {label}: {exc}")
                continue
            except (Exception, TimeoutError) as exc:
                row["note"] = f"error: {type(exc).__name__}: {exc}"
                row["stopped"] = False
                continue
            row["stopped"] = True
            row["median_ms"] = round(median(row["runs_ms"]), 2)
            row["note"] = (
                "worker process dead when CANCELED arrived"
                if pool == "process"
                else "CancelledError raised inside the coroutine"
            )
            print(
                f"  cancel   {workload:8} {label:33} {row['median_ms']} ms",
                file=sys.stderr,
            )
    return rows
