"""Faults and cancellation that reach into workers (contract 1.1).

Two capabilities, each with a MUST clause checked here when declared:

- ``crash_isolation`` (RS-12): a worker that dies fails only the task it
  was running. Checked with a task that calls ``os._exit``, one whose worker
  is killed by SIGKILL, and two whose return values cannot be unpickled where
  the result arrives (one raises an `Exception`, one `SystemExit`), each among
  healthy tasks that must all complete.
- ``preemptive_cancel`` (CN-8): cancelling a running function stops it.
  Checked with sync and ``async def`` functions that would write a marker
  `STOP_WITHIN` seconds after they start; they are cancelled as soon as they
  run, and the marker must never appear.

And one MUST clause for every backend that runs functions:

- CN-9: a task reported CANCELED has no effects after the report. The same
  functions, cancelled as soon as they run; a backend may refuse (False, and
  the function finishes), but if it reports CANCELED, the marker must not
  appear afterwards.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import spec
from conformance import _payloads
from conformance.harness import Blocker, Harness
from conformance.registry import cites

_C = spec.Capability

STOP_WITHIN = 2.5
"""Seconds after a cancel by which the function must have stopped: the kill
grace the suite allows. A cancelled function would write its marker then."""

_SETTLE = 0.5
"""Seconds past `STOP_WITHIN` the suite waits before looking for the marker."""

_HEALTHY = 8
"""Healthy tasks around the failing ones."""


@cites("RS-12", requires=[_C.FUNCTIONS], deadline=30.0)
async def worker_death_fails_only_its_task(h: Harness) -> None:
    """A worker that dies, and a result that cannot be loaded, fail only their task.

    One result raises `SystemExit` as it is loaded: a `BaseException` in the
    code receiving results must fail that task alone, not what receives them.
    """
    healthy = [h.function_task(_payloads.nap, i, 0.02) for i in range(_HEALTHY)]
    exits = h.function_task(_payloads.exit_worker, 13, uid=h.uid("exits"))
    killed = h.function_task(_payloads.kill_worker, uid=h.uid("killed"))
    unloadable = h.function_task(_payloads.unloadable, uid=h.uid("unloadable"))
    exiting = h.function_task(_payloads.exiting, uid=h.uid("exiting"))
    # The failing tasks early, so healthy ones are running and queued around them.
    batch = [healthy[0], exits, healthy[1], killed, *healthy[2:5], unloadable]
    batch += [healthy[5], exiting, *healthy[6:]]
    await h.submit(batch)
    await h.wait_terminal([t["uid"] for t in batch], clause_id="RS-12")
    for task, what in ((exits, "called os._exit"), (killed, "was killed")):
        uid = task["uid"]
        h.check(
            h.final(uid) is spec.TaskState.FAILED,
            "RS-12",
            f"the task whose worker {what} ended {h.final(uid)}",
            uid,
        )
        h.check(
            isinstance(task.get("exception"), spec.WorkerLostError),
            "RS-12",
            f"the task whose worker {what} failed with {task.get('exception')!r}, "
            "not WorkerLostError",
            uid,
        )
    for task, kind in ((unloadable, "UnloadableResult"), (exiting, "ExitingResult")):
        uid = task["uid"]
        error = task.get("exception")
        h.check(
            h.final(uid) is spec.TaskState.FAILED,
            "RS-12",
            f"a task whose return value ({kind}) cannot be unpickled ended "
            f"{h.final(uid)}",
            uid,
        )
        h.check(
            kind in str(error),
            "RS-12",
            f"a return value that cannot be unpickled failed with {error!r}, which "
            f"does not name its type ({kind})",
            uid,
        )
    _check_healthy(h, healthy, "among workers that died")
    # The pool heals: tasks submitted after the deaths run.
    later = [h.function_task(_payloads.echo, i) for i in range(4)]
    await h.submit(later)
    await h.wait_terminal([t["uid"] for t in later], clause_id="RS-12")
    _check_healthy(h, later, "after workers died")


def _check_healthy(h: Harness, tasks: list[dict[str, Any]], when: str) -> None:
    for task in tasks:
        uid = task["uid"]
        state = h.final(uid)
        h.check(
            state is spec.TaskState.DONE,
            "RS-12",
            f"a healthy task {when} ended {state} "
            f"({task.get('exception')!r}); only the dead worker's task may fail",
            uid,
        )
        h.check(
            task.get("return_value") == task["args"][0],
            "RS-12",
            f"a healthy task {when} returned {task.get('return_value')!r}",
            uid,
        )


@cites("CN-8", requires=[_C.FUNCTIONS], deadline=30.0)
async def cancel_stops_a_running_sync_function(h: Harness) -> None:
    """Cancelling a running sync function stops it: its later write never happens."""
    await _cancel_and_watch(h, _payloads.write_later, "sync")


@cites("CN-8", requires=[_C.FUNCTIONS], deadline=30.0)
async def cancel_stops_a_running_async_function(h: Harness) -> None:
    """Cancelling a running ``async def`` function stops it the same way."""
    await _cancel_and_watch(h, _payloads.async_write_later, "async")


async def _cancel_and_watch(h: Harness, func: Any, kind: str) -> None:
    uid = h.uid(kind)
    started = h.work_dir / f"{uid}.started"
    marker = h.work_dir / f"{uid}.late"
    task = h.function_task(func, str(started), str(marker), STOP_WITHIN, uid=uid)
    await h.submit([task])
    await h.wait_started(Blocker(task, started, h.work_dir / f"{uid}.release"), "CN-8")
    began = time.monotonic()
    promised = await h.backend.cancel_task(uid)
    h.check(
        promised is True,
        "CN-8",
        f"cancel_task of a running {kind} function returned {promised!r}",
        uid,
    )
    await h.wait_terminal([uid], clause_id="CN-8")
    h.check(
        h.final(uid) is spec.TaskState.CANCELED,
        "CN-8",
        f"a cancelled running {kind} function ended {h.final(uid)}",
        uid,
    )
    h.check(
        not marker.exists(),
        "CN-8",
        f"the cancelled {kind} function was still running after CANCELED was "
        "reported: it wrote what it writes only if not stopped",
        uid,
    )
    # Give it the whole allowance: a function merely abandoned writes then.
    await asyncio.sleep(max(0.0, began + STOP_WITHIN + _SETTLE - time.monotonic()))
    h.check(
        not marker.exists(),
        "CN-8",
        f"the cancelled {kind} function kept running: {STOP_WITHIN:g} s after "
        "the cancel it wrote what it writes only if not stopped",
        uid,
    )


@cites("CN-9", requires=[_C.FUNCTIONS], deadline=30.0)
async def canceled_function_has_no_later_effects(h: Harness) -> None:
    """A sync or ``async def`` function reported CANCELED writes nothing after it.

    Both run at once, each cancelled as soon as it starts, so the one wait
    for a late write covers both.
    """
    kinds = {"sync": _payloads.write_later, "async": _payloads.async_write_later}
    files = {k: (h.work_dir / f"{k}.started", h.work_dir / f"{k}.late") for k in kinds}
    tasks = {
        kind: h.function_task(
            func, *(str(p) for p in files[kind]), STOP_WITHIN, uid=h.uid(kind)
        )
        for kind, func in kinds.items()
    }
    await h.submit(list(tasks.values()))
    judged = await asyncio.gather(
        *(_cancel_when_started(h, k, task, *files[k]) for k, task in tasks.items())
    )
    watched = [(kind, marker, began) for kind, marker, began in judged if marker]
    if not watched:
        return  # every cancel refused (they ran to their end): nothing to judge
    # A function merely abandoned (its await cancelled, its thread running
    # on) writes its marker STOP_WITHIN seconds after it started.
    last = max(began for _, _, began in watched)
    await asyncio.sleep(max(0.0, last + STOP_WITHIN + _SETTLE - time.monotonic()))
    for kind, marker, _ in watched:
        h.expect(
            not marker.exists(),
            "CN-9",
            f"the {kind} function was reported CANCELED and went on running: "
            f"{STOP_WITHIN:g} s after the cancel it wrote what it writes only if "
            "not stopped. A backend that cannot stop a running function must "
            "return False from cancel_task for it",
            tasks[kind]["uid"],
        )


async def _cancel_when_started(
    h: Harness, kind: str, task: dict[str, Any], started: Path, marker: Path
) -> tuple[str, Path | None, float]:
    """Cancel ``task`` once it runs; its marker if CANCELED before it wrote it."""
    uid = task["uid"]
    while not started.exists():
        if any(spec.is_terminal(s) for s in h.delivered(uid)):
            return kind, None, 0.0  # it ended without running: nothing to judge
        if h.remaining() <= 0:
            h.fail("CN-9", f"the {kind} function never started", uid)
        await asyncio.sleep(0.01)
    began = time.monotonic()
    promised = await h.backend.cancel_task(uid)
    await h.wait_terminal([uid], clause_id="CN-9")
    if promised is not True or h.final(uid) is not spec.TaskState.CANCELED:
        return kind, None, began  # refused (it runs to its end), or CN-4's business
    if marker.exists():
        return kind, None, began  # it ran to its end before the report
    return kind, marker, began
