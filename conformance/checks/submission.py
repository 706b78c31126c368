"""Submission: validation, all-or-nothing batches, unrunnable tasks, after shutdown."""

from __future__ import annotations

import asyncio
from typing import Any

import spec
from conformance import _payloads
from conformance.checks._scenarios import NO_STRING_UID, NOT_A_DICT
from conformance.harness import Harness
from conformance.registry import cites

_C = spec.Capability


async def _quiet(h: Harness, turns: int = 20) -> None:
    """Give the loop some turns, for checks that something does *not* happen."""
    for _ in range(turns):
        await asyncio.sleep(0)
    await asyncio.sleep(0.05)


async def _rejected(
    h: Harness,
    batch: list[Any],
    error: type[Exception],
    clause_id: str,
    what: str,
) -> BaseException:
    """Submit ``batch``, which must raise ``error``; return the exception."""
    try:
        await h.submit(batch)
    except error as exc:
        return exc
    except Exception as exc:
        h.fail(
            clause_id,
            f"{what}: submit_tasks raised {type(exc).__name__}: {exc}, "
            f"not {error.__name__}",
        )
    h.fail(clause_id, f"{what}: submit_tasks accepted the batch")


async def _nothing_accepted(
    h: Harness, tasks: list[dict[str, Any]], clause_id: str
) -> None:
    """The valid tasks of a rejected batch were not accepted: resubmitting works."""
    await _quiet(h)
    for task in tasks:
        h.expect(
            not h.delivered(task["uid"]),
            clause_id,
            f"task {task['uid']!r} of a rejected batch was reported "
            f"{h.delivered(task['uid'])}",
            task["uid"],
        )
    # If any had been accepted, its uid would now be a duplicate in flight.
    states = await h.run(tasks)
    for uid, state in states.items():
        h.expect(
            state is spec.TaskState.DONE,
            clause_id,
            f"task {uid!r}, resubmitted after its batch was rejected, ended {state}",
            uid,
        )


@cites("SB-1")
async def returns_before_tasks_finish(h: Harness) -> None:
    """``submit_tasks`` returns None while a submitted task is still running."""
    if not h.can_block():
        task = h.runnable_task()
        await h.run([task])
        return
    blocker = h.blocker()
    await h.submit([blocker.task])
    h.expect(
        not h.delivered(blocker.uid)
        or not spec.is_terminal(h.delivered(blocker.uid)[-1]),
        "SB-1",
        "submit_tasks returned only after its task had finished",
        blocker.uid,
    )
    blocker.let_go()
    await h.wait_terminal([blocker.uid])


@cites("SB-2")
async def rejects_entry_not_a_dict(h: Harness) -> None:
    """A batch with a non-dict entry raises InvalidTaskError naming its index."""
    for row, entry in enumerate(NOT_A_DICT):
        good = [h.runnable_task(), h.runnable_task()]
        batch = [good[0], entry, good[1]]
        exc = await _rejected(
            h, batch, spec.InvalidTaskError, "SB-2", f"scenario {row} ({entry!r})"
        )
        h.expect(
            getattr(exc, "index", None) == 1,
            "SB-2",
            f"scenario {row}: InvalidTaskError names index "
            f"{getattr(exc, 'index', None)!r}, the bad entry is at 1",
        )
        await _nothing_accepted(h, good, "SB-2")


@cites("SB-3")
async def rejects_task_without_string_uid(h: Harness) -> None:
    """A batch with a task lacking a string uid raises InvalidTaskError."""
    for row, entry in enumerate(NO_STRING_UID):
        good = [h.runnable_task(), h.runnable_task()]
        await _rejected(
            h,
            [good[0], dict(entry), good[1]],
            spec.InvalidTaskError,
            "SB-3",
            f"scenario {row} ({entry!r})",
        )
        await _nothing_accepted(h, good, "SB-3")


@cites("SB-4")
async def rejects_duplicate_in_batch(h: Harness) -> None:
    """A uid twice in one batch raises DuplicateTaskError; nothing is accepted."""
    first = h.runnable_task()
    other = h.runnable_task()
    twin = dict(h.runnable_task(), uid=first["uid"])
    await _rejected(
        h,
        [first, other, twin],
        spec.DuplicateTaskError,
        "SB-4",
        "uid repeated in batch",
    )
    await _nothing_accepted(h, [first, other], "SB-4")


@cites("SB-4")
async def rejects_uid_in_flight(h: Harness) -> None:
    """A uid still in flight raises DuplicateTaskError; a finished one may return."""
    if h.can_block():
        blocker = h.blocker()
        await h.submit([blocker.task])
        uid = blocker.uid
    else:
        task = h.runnable_task()
        await h.submit([task])
        uid = task["uid"]
    if not h.delivered(uid) or not spec.is_terminal(h.delivered(uid)[-1]):
        other = h.runnable_task()
        await _rejected(
            h,
            [other, dict(h.runnable_task(), uid=uid)],
            spec.DuplicateTaskError,
            "SB-4",
            f"uid {uid!r} resubmitted while in flight",
        )
        # Released first: a backend with one worker, held by the blocker,
        # could not run the resubmitted task.
        h.release_all()
        await _nothing_accepted(h, [other], "SB-4")
    h.release_all()
    await h.wait_terminal([uid])
    again = h.runnable_task(uid=uid)
    states = await h.run([again])
    h.expect(
        states[uid] is spec.TaskState.DONE,
        "SB-4",
        f"a finished uid, submitted again, ended {states[uid]}",
        uid,
    )


@cites("SB-5")
async def nothing_to_run_fails(h: Harness) -> None:
    """A task with no function, executable or prompt is accepted and FAILED."""
    empty: dict[str, Any] = {
        "uid": h.uid("empty"),
        "function": None,
        "executable": None,
    }
    bare: dict[str, Any] = {"uid": h.uid("bare")}
    states = await h.run([empty, bare])
    for task in (empty, bare):
        uid = task["uid"]
        h.expect(
            states[uid] is spec.TaskState.FAILED,
            "SB-5",
            f"a task with nothing to run ended {states[uid]}, not FAILED",
            uid,
        )
        h.expect(
            isinstance(task.get("exception"), BaseException),
            "SB-5",
            f"FAILED task has exception={task.get('exception')!r}, not an exception",
            uid,
        )


_KINDS = (
    (_C.FUNCTIONS, "function"),
    (_C.EXECUTABLES, "executable"),
    (_C.PROMPTS, "prompt"),
)


@cites("SB-6")
async def undeclared_capability_fails(h: Harness) -> None:
    """A task needing what the backend does not declare (a kind, services) is FAILED."""
    if h.has(_C.DRY_RUN):
        h.not_applicable("a dry-run backend completes every kind of task")
    tasks: list[dict[str, Any]] = []
    for capability, kind in _KINDS:
        if h.has(capability):
            continue
        if kind == "function":
            tasks.append(h.function_task(_payloads.echo, "unsupported"))
        elif kind == "executable":
            tasks.append(h.executable_task("true"))
        else:
            tasks.append(h.prompt_task())
    if not h.has(_C.SERVICES):
        # Run as a batch task, a service would never "finish" for the engine.
        service = h.runnable_task()
        service["is_service"] = True
        tasks.append(service)
    if not tasks:
        h.not_applicable("the backend declares every kind of task")
    states = await h.run(tasks)
    for task in tasks:
        uid = task["uid"]
        h.expect(
            states[uid] is spec.TaskState.FAILED,
            "SB-6",
            f"a task needing an undeclared capability ended {states[uid]}",
            uid,
        )
        error = task.get("exception")
        h.expect(
            isinstance(error, spec.CapabilityNotSupportedError),
            "SB-6",
            f"its exception is {error!r}, not a CapabilityNotSupportedError",
            uid,
        )


@cites("SB-7")
async def submit_after_shutdown_raises(h: Harness) -> None:
    """After shutdown, submit_tasks raises BackendShutdownError; nothing is reported."""
    await h.shutdown()
    task = h.runnable_task()
    await _rejected(
        h, [task], spec.BackendShutdownError, "SB-7", "submit after shutdown()"
    )
    await _quiet(h)
    h.expect(
        not h.delivered(task["uid"]),
        "SB-7",
        f"a task refused after shutdown was reported {h.delivered(task['uid'])}",
        task["uid"],
    )


@cites("SB-8")
async def empty_batch(h: Harness) -> None:
    """An empty batch is accepted and reports nothing; the backend stays usable."""
    await h.submit([])
    await _quiet(h)
    h.expect(not h.states, "SB-8", f"an empty batch reported {h.states}")
    task = h.runnable_task()
    states = await h.run([task])
    h.expect(
        states[task["uid"]] is spec.TaskState.DONE,
        "SB-8",
        f"a task submitted after an empty batch ended {states[task['uid']]}",
    )


@cites("SB-9")
async def failure_isolated(h: Harness) -> None:
    """Failing tasks in a batch do not affect the other tasks of that batch."""
    good = [h.runnable_task() for _ in range(3)]
    bad: list[dict[str, Any]] = [{"uid": h.uid("empty"), "function": None}]
    if h.has(_C.FUNCTIONS) and not h.has(_C.DRY_RUN):
        bad.append(h.function_task(_payloads.fail, "expected failure"))
    if h.has(_C.EXECUTABLES) and not h.has(_C.DRY_RUN):
        bad.append(h.executable_task("false"))
    batch = [good[0], bad[0], good[1], *bad[1:], good[2]]
    states = await h.run(batch)
    for task in good:
        h.expect(
            states[task["uid"]] is spec.TaskState.DONE,
            "SB-9",
            f"a good task next to failing ones ended {states[task['uid']]}",
            task["uid"],
        )
    for task in bad:
        h.expect(
            states[task["uid"]] is spec.TaskState.FAILED,
            "SB-9",
            f"a failing task ended {states[task['uid']]}",
            task["uid"],
        )


@cites("SB-10")
async def caller_may_reuse_the_batch_list(h: Harness) -> None:
    """The caller clears, then refills, its list right after ``submit_tasks``.

    Every task of the batch is still reported, and none of the list's new
    entries is run or reported: the backend took what it needed during the
    call.
    """
    batch = [h.runnable_task() for _ in range(5)]
    uids = [t["uid"] for t in batch]
    await h.submit(batch)
    batch.clear()
    strays = [h.runnable_task() for _ in range(3)]
    batch.extend(strays)
    states = await h.wait_terminal(uids, clause_id="SB-10")
    for uid, state in states.items():
        h.check(
            state is spec.TaskState.DONE,
            "SB-10",
            f"after the caller cleared its batch list, a task ended {state}",
            uid,
        )
    for stray in strays:
        h.check(
            not h.delivered(stray["uid"]),
            "SB-10",
            "a task added to the list after submit_tasks returned was reported",
            stray["uid"],
        )
