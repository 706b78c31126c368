"""Cancellation: the bool ``cancel_task`` returns and what it promises."""

from __future__ import annotations

from typing import Any

import spec
from conformance import _payloads, processes
from conformance.harness import Harness
from conformance.registry import clause

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


@clause("CN-1", "CN-2")
async def unknown_uid(h: Harness) -> None:
    """``cancel_task`` of an unknown uid returns False (a bool) and does not raise."""
    for uid in _UNKNOWN_UIDS:
        try:
            result = await h.backend.cancel_task(uid)
        except Exception as exc:
            h.fail("CN-2", f"cancel_task({uid!r}) raised {exc!r}")
        h.check(type(result) is bool, "CN-1", f"cancel_task returned {result!r}")
        h.check(result is False, "CN-2", f"cancel_task({uid!r}) returned {result!r}")


@clause("CN-3")
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
        h.check(
            result is False,
            "CN-3",
            f"cancel_task of a task reported {h.final(uid)} returned {result!r}",
            uid,
        )
    h.check(
        [s for s in h.delivered(done["uid"]) if spec.is_terminal(s)]
        == [spec.TaskState.DONE],
        "CN-3",
        f"after a late cancel the task was reported {h.delivered(done['uid'])}",
        done["uid"],
    )


@clause("CN-4")
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
    h.check(
        [s for s in states if spec.is_terminal(s)] == [spec.TaskState.CANCELED],
        "CN-4",
        f"cancel_task returned True, then the task was reported {states}",
        uid,
    )


@clause("CN-4")
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
            h.check(
                states[uid] is spec.TaskState.CANCELED,
                "CN-4",
                f"cancel_task returned True but the task ended {states[uid]}",
                uid,
            )


@clause("CN-5", requires=[_C.EXECUTABLES])
async def cancel_kills_process_group(h: Harness) -> None:
    """Cancelling a running executable kills it and its children."""
    if h.has(_C.DRY_RUN):
        h.not_applicable("a dry-run backend starts no process")
    blocker, pid_file = h.process_tree()
    await h.submit([blocker.task])
    await h.wait_started(blocker, "CN-5")
    procs = h.read_pids(pid_file)
    try:
        h.check(procs, "CN-5", "the script's processes were gone before the cancel")
        promised = await h.backend.cancel_task(blocker.uid)
        h.check(promised, "CN-5", "cancel_task of a running executable returned False")
        await h.wait_terminal([blocker.uid], clause_id="CN-5")
        survivors = await h.wait_gone(procs, grace=5.0)
        h.check(
            not survivors,
            "CN-5",
            f"{len(survivors)} process(es) of the cancelled task survived: "
            + processes.describe(survivors),
            blocker.uid,
        )
    finally:
        processes.kill(procs)


@clause("CN-6")
async def cancel_before_start(h: Harness) -> None:
    """A task queued behind busy workers can be cancelled and never starts."""
    if not h.can_block():
        task = h.runnable_task()
        await h.submit([task])  # no loop turn between these two calls
        promised = await h.backend.cancel_task(task["uid"])
        h.check(promised, "CN-6", "cancel_task right after submit returned False")
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
    h.check(promised, "CN-6", "cancel_task of a queued task returned False")
    h.check(
        not marker.exists(),
        "CN-6",
        "a task cancelled before it started ran anyway",
        queued["uid"],
    )
