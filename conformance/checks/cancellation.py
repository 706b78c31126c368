"""Cancellation: the bool ``cancel_task`` returns and what it promises."""

from __future__ import annotations

import asyncio
import random
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import spec
from conformance import _payloads, processes
from conformance.errors import ContractViolation
from conformance.harness import Harness
from conformance.registry import cites

_C = spec.Capability

_UNKNOWN_UIDS: tuple[Any, ...] = (
    "no-such-task",
    "",
    "task.999999",
    "x" * 300,
    ["a", "list"],  # unhashable: a dict lookup would raise TypeError
    {"uid": "a dict"},
    None,
    7,
)
"""uids never submitted, and things that are not uids at all (CN-2)."""


@cites("CN-1", "CN-2")
async def unknown_uid(h: Harness) -> None:
    """``cancel_task`` of an unknown uid returns False (a bool) and does not raise."""
    for uid in _UNKNOWN_UIDS:
        try:
            result = await h.backend.cancel_task(uid)
        except Exception as exc:
            h.fail("CN-2", f"cancel_task({uid!r}) raised {exc!r}")
        h.expect(type(result) is bool, "CN-1", f"cancel_task returned {result!r}")
        h.expect(result is False, "CN-2", f"cancel_task({uid!r}) returned {result!r}")


@cites("CN-3")
async def finished_task(h: Harness) -> None:
    """``cancel_task`` of a task already reported terminal returns False."""
    done = h.runnable_task()
    failed: dict[str, Any] = {"uid": h.uid("empty"), "function": None}
    await h.run([done, failed])
    for task in (done, failed):
        uid = task["uid"]
        try:
            result = await h.backend.cancel_task(uid)
        except Exception as exc:
            h.fail("CN-3", f"cancel_task of a finished task raised {exc!r}", uid)
        h.expect(
            result is False,
            "CN-3",
            f"cancel_task of a task reported {h.final(uid)} returned {result!r}",
            uid,
        )
    h.expect(
        [s for s in h.delivered(done["uid"]) if spec.is_terminal(s)]
        == [spec.TaskState.DONE],
        "CN-3",
        f"after a late cancel the task was reported {h.delivered(done['uid'])}",
        done["uid"],
    )


@cites("CN-4")
async def cancel_running_task(h: Harness) -> None:
    """A running task whose cancel returned True ends CANCELED, once, only."""
    if not h.can_block():
        task = h.runnable_task()
        await h.submit([task])
        uid = task["uid"]
    else:
        blocker = h.blocker()
        await h.submit([blocker.task])
        await h.wait_started(blocker, "CN-4")
        uid = blocker.uid
    promised = await h.backend.cancel_task(uid)
    if not promised:
        h.release_all()
        await h.wait_terminal([uid])
        h.not_applicable(
            f"cancel_task returned False for a task in flight (it ended {h.final(uid)})"
        )
    h.release_all()  # a backend that cannot interrupt it must discard the result
    await h.wait_terminal([uid], clause_id="CN-4")
    await h.backend.cancel_task(uid)  # a second request changes nothing
    states = h.delivered(uid)
    h.expect(
        [s for s in states if spec.is_terminal(s)] == [spec.TaskState.CANCELED],
        "CN-4",
        f"cancel_task returned True, then the task was reported {states}",
        uid,
    )


@cites("CN-4")
async def cancel_many(h: Harness) -> None:
    """Cancelling part of a batch cancels exactly the tasks it said it would."""
    blocking = h.can_block()
    tasks = [h.blocker().task if blocking else h.runnable_task() for _ in range(4)]
    tasks += [h.runnable_task() for _ in range(4)]
    await h.submit(tasks)
    promised = {t["uid"]: await h.backend.cancel_task(t["uid"]) for t in tasks[::2]}
    h.release_all()
    states = await h.wait_terminal([t["uid"] for t in tasks], clause_id="CN-4")
    for uid, said in promised.items():
        if said:
            h.expect(
                states[uid] is spec.TaskState.CANCELED,
                "CN-4",
                f"cancel_task returned True but the task ended {states[uid]}",
                uid,
            )


@cites("CN-5", requires=[_C.EXECUTABLES])
async def cancel_kills_process_group(h: Harness) -> None:
    """Cancelling a running executable kills it and its children."""
    if h.has(_C.DRY_RUN):
        h.not_applicable("a dry-run backend starts no process")
    blocker, pid_file = h.process_tree()
    await h.submit([blocker.task])
    await h.wait_started(blocker, "CN-5")
    procs = h.read_pids(pid_file)
    try:
        h.expect(procs, "CN-5", "the script's processes were gone before the cancel")
        promised = await h.backend.cancel_task(blocker.uid)
        # Without the promise the task runs on: nothing more to check.
        h.check(promised, "CN-5", "cancel_task of a running executable returned False")
        await _wait_killed(h, blocker.uid, "CN-5", procs)
        survivors = await h.wait_gone(procs, grace=5.0)
        h.expect(
            not survivors,
            "CN-5",
            f"{len(survivors)} process(es) of the cancelled task survived: "
            + processes.describe(survivors),
            blocker.uid,
        )
    finally:
        processes.kill(procs)


@cites("CN-6")
async def cancel_before_start(h: Harness) -> None:
    """A task queued behind busy workers can be cancelled and never starts."""
    if not h.can_block():
        task = h.runnable_task()
        await h.submit([task])  # no loop turn between these two calls
        promised = await h.backend.cancel_task(task["uid"])
        h.expect(promised, "CN-6", "cancel_task right after submit returned False")
        await h.wait_terminal([task["uid"]])
        return
    blockers = [h.blocker() for _ in range(8)]
    marker = h.work_dir / "queued-task-ran"
    if h.has(_C.FUNCTIONS):
        queued = h.function_task(_payloads.touch, str(marker))
    else:
        queued = h.executable_task("touch", [str(marker)])
    await h.submit([b.task for b in blockers] + [queued])
    promised = await h.backend.cancel_task(queued["uid"])
    await h.wait_started(blockers[0], "CN-6")
    saturated = not all(b.started.exists() for b in blockers)
    h.release_all()
    await h.wait_terminal([b.uid for b in blockers] + [queued["uid"]])
    if marker.exists() and not saturated:
        h.not_applicable("the backend ran all 8 blockers at once; nothing was queued")
    h.expect(promised, "CN-6", "cancel_task of a queued task returned False")
    h.expect(
        not marker.exists(),
        "CN-6",
        "a task cancelled before it started ran anyway",
        queued["uid"],
    )


SPAWN_CANCELS = 48
"""Executables `cancel_during_spawn` cancels, a few loop turns after submit."""

_SPAWN_BATCH = 8


@cites("CN-4", requires=[_C.EXECUTABLES])
async def cancel_during_spawn(h: Harness) -> None:
    """Executables cancelled while they spawn all end; CANCELED when promised.

    Cancelling ``asyncio.create_subprocess_*`` while it spawns can leave the
    task waiting forever (CPython 3.11), so a backend that cancels the
    spawning coroutine may lose the task. This cancels many executables at
    0 to 3 loop turns after ``submit_tasks`` (in a random order under
    ``--seed``), so the race has many chances to show.
    """
    if h.has(_C.DRY_RUN):
        h.not_applicable("a dry-run backend starts no process")
    pick = random.Random(h.seed if h.seed is not None else 0)
    turns_of: dict[str, int] = {}
    promised: dict[str, bool] = {}
    for _ in range(SPAWN_CANCELS // _SPAWN_BATCH):
        batch = [h.executable_task("true") for _ in range(_SPAWN_BATCH)]
        await h.submit(batch)
        order = list(range(_SPAWN_BATCH))
        pick.shuffle(order)
        for index in order:
            uid = batch[index]["uid"]
            turns_of[uid] = index % 4
            for _ in range(index % 4):
                await asyncio.sleep(0)
            promised[uid] = bool(await h.backend.cancel_task(uid))
    limit = min(10.0, h.remaining())
    try:
        states = await h.wait_terminal(turns_of, timeout=limit, clause_id="CN-4")
    except ContractViolation:
        lost = [
            uid for uid in turns_of if not any(map(spec.is_terminal, h.delivered(uid)))
        ]
        shown = ", ".join(
            f"{uid} (cancel {turns_of[uid]} loop turn(s) after submit, "
            f"returned {promised[uid]})"
            for uid in lost[:4]
        )
        h.fail(
            "CN-4",
            f"{len(lost)} of {len(turns_of)} executables cancelled while they "
            f"spawned never reached a terminal state within {limit:.1f} s: "
            f"{shown}. Cancelling asyncio.create_subprocess_* during the spawn "
            "can hang (CPython 3.11): let the spawn finish, then kill the "
            "process",
            lost[0] if lost else None,
        )
    for uid, said in promised.items():
        h.expect(
            not said or states[uid] is spec.TaskState.CANCELED,
            "CN-4",
            f"cancel_task returned True {turns_of[uid]} loop turn(s) after "
            f"submit, but the task ended {states[uid]}",
            uid,
        )
    h.note(f"{sum(promised.values())} of {len(promised)} cancels during spawn promised")


_ESCAPE_BOUND = 8.0
"""Seconds the suite allows past a timeout or a cancel for the kill grace and
the drain (CN-7); the escaped descendant holds the pipes far longer."""

_ESCAPE_HOLD = 60
"""Seconds the escaped descendant would keep the output pipes open."""


def _escaping_task(h: Harness, **options: Any) -> tuple[dict[str, Any], Path]:
    """An executable whose child leaves its session and keeps stdout open.

    The child (a Python process, so no ``setsid`` program is needed) starts
    a new session, writes its pid, and sleeps with the task's output pipes
    inherited; the task's own process writes its pid too, then sleeps.
    """
    uid = h.uid("escape")
    pids = h.work_dir / f"{uid}.pids"
    code = (
        "import os, sys, time; os.setsid(); "
        "f = open(sys.argv[1], 'a'); f.write(str(os.getpid()) + '\\n'); f.close(); "
        f"time.sleep({_ESCAPE_HOLD})"
    )
    body = (
        f'echo $$ >> "{pids}"\n'
        f'"{sys.executable}" -c "{code}" "{pids}" &\n'
        "echo started\n"
        f"sleep {_ESCAPE_HOLD}\n"
    )
    task = h.executable_task(h.script(body, f"{uid}.sh"), uid=uid, **options)
    return task, pids


async def _escaped_pids(h: Harness, uid: str, path: Path) -> list[int]:
    """Wait until both pids are written (the descendant has left its group)."""
    while True:
        lines = path.read_text().splitlines() if path.exists() else []
        if len(lines) >= 2 and path.read_text().endswith("\n"):
            return [int(line) for line in lines[:2]]
        if any(spec.is_terminal(s) for s in h.delivered(uid)):
            h.fail("CN-7", f"the task ended {h.final(uid)} before it started", uid)
        if h.remaining() <= 0:
            h.fail("CN-7", "the escaping task never started", uid)
        await asyncio.sleep(0.01)


async def _bounded_despite_escape(h: Harness, cancel: bool) -> None:
    if h.has(_C.DRY_RUN):
        h.not_applicable("a dry-run backend starts no process")
    if not cancel and not h.has(_C.TIMEOUT):
        h.not_applicable("the backend does not offer the timeout option")
    timeout = 1.0
    options = {} if cancel else {"timeout": timeout}
    task, pid_file = _escaping_task(h, **options)
    uid = task["uid"]
    procs: dict[int, processes.ProcessInfo] = {}
    try:
        submitted = time.monotonic()
        await h.submit([task])
        pids = await _escaped_pids(h, uid, pid_file)
        procs = processes.snapshot(pids)
        group = {pid: info for pid, info in procs.items() if pid == pids[0]}
        what = "a timed-out"
        bound = _ESCAPE_BOUND
        if cancel:
            what = "a cancelled"
            promised = await h.backend.cancel_task(uid)
            h.check(promised, "CN-7", "cancel_task of a running task returned False")
        else:
            bound += timeout
        # From the cancel, or from the earliest the timeout can expire.
        started = time.monotonic() if cancel else submitted + timeout
        await _wait_killed(h, uid, "CN-7", group, timeout=bound)
        h.measure(
            f"CN-7 {'cancel' if cancel else 'timeout'} to its report, "
            "an escaped descendant holding stdout (s)",
            time.monotonic() - started,
        )
        expected = spec.TaskState.CANCELED if cancel else spec.TaskState.FAILED
        h.check(
            h.final(uid) is expected,
            "CN-7",
            f"{what} task held open by an escaped descendant ended "
            f"{h.final(uid)}, not {expected}",
            uid,
        )
        survivors = processes.alive(procs)
        if survivors:  # killing escaped descendants is best effort, not a MUST
            h.note(
                f"{len(survivors)} process(es) outlived the task: "
                + processes.describe(survivors)
            )
    finally:
        if not procs and pid_file.exists():  # failed before the snapshot
            pids = [int(p) for p in pid_file.read_text().split() if p.isdigit()]
            procs = processes.snapshot(pids)
        processes.kill(procs)


async def _wait_killed(
    h: Harness,
    uid: str,
    clause_id: str,
    procs: Mapping[int, processes.ProcessInfo],
    timeout: float | None = None,
) -> None:
    """Wait for the terminal state of a task being killed; name what is missing.

    A task that never gets its state after a cancel or a timeout is either
    never killed, or killed and never reported: ``procs``, the processes in
    its group, tell which, and the failure says so.
    """
    try:
        await h.wait_terminal([uid], timeout=timeout, clause_id=clause_id)
    except ContractViolation as exc:
        left = processes.alive(procs)
        if left:
            why = (
                f"the kill never came: {len(left)} of its {len(procs)} process(es) "
                "are still alive (the contract wants SIGTERM to the whole process "
                "group, then SIGKILL after the grace): " + processes.describe(left)
            )
        else:
            why = "its process group is gone, but its end was never reported"
            if clause_id == "CN-7":
                why += (
                    ": a backend waiting for end-of-file on the output pipes waits "
                    "for the descendant outside the group that still holds them "
                    "(wait for the child's exit, not for EOF)"
                )
        h.fail(clause_id, f"{exc.message}; {why}", uid)


@cites("CN-7", deadline=30.0)
async def timeout_despite_escaped_descendant(h: Harness) -> None:
    """A timeout is reported in bounded time while an escaped child holds stdout."""
    await _bounded_despite_escape(h, cancel=False)


@cites("CN-7", deadline=30.0)
async def cancel_despite_escaped_descendant(h: Harness) -> None:
    """A cancel is reported in bounded time while an escaped child holds stdout."""
    await _bounded_despite_escape(h, cancel=True)
