"""States and callbacks: members, one terminal state, thread, identity, raising.

The contract monitor checks ST-1..ST-6 on every delivery of every test; the
tests here drive mixed batches so that each rule is exercised on its own.
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import spec
from conformance import _payloads
from conformance.harness import Harness
from conformance.registry import cites

_C = spec.Capability
_RESULT_KEYS = ("return_value", "stdout", "stderr", "exception", "exit_code")


def _mixed_batch(h: Harness) -> list[dict[str, Any]]:
    """Tasks of every kind the backend runs, ending DONE and FAILED."""
    batch = [h.runnable_task() for _ in range(3)]
    batch.append({"uid": h.uid("empty"), "function": None})
    if h.has(_C.DRY_RUN):
        return batch
    if h.has(_C.FUNCTIONS):
        batch.append(h.function_task(_payloads.async_echo, "async"))
        batch.append(h.function_task(_payloads.fail, "expected failure"))
    if h.has(_C.EXECUTABLES):
        batch.append(h.executable_task("echo", ["hello"]))
        batch.append(h.executable_task("false"))
    return batch


@cites("ST-1")
async def states_are_members(h: Harness) -> None:
    """Every delivered state is a ``spec.TaskState`` member."""
    batch = _mixed_batch(h)
    await h.run(batch)
    for uid, states in h.states.items():
        for state in states:
            h.expect(
                isinstance(state, spec.TaskState),
                "ST-1",
                f"delivered {state!r} ({type(state).__name__}), not a TaskState",
                uid,
            )


@cites("ST-2", "ST-3")
async def one_terminal_state(h: Harness) -> None:
    """Each task gets one terminal state; RUNNING at most once, before it."""
    batch = _mixed_batch(h)
    await h.run(batch)
    # Let any straggling duplicate arrive before judging.
    for _ in range(20):
        await asyncio.sleep(0)
    await asyncio.sleep(0.05)
    for task in batch:
        uid = task["uid"]
        states = [spec.TaskState(s) for s in h.delivered(uid)]
        terminal = [s for s in states if s in spec.TERMINAL_STATES]
        h.expect(
            len(terminal) == 1,
            "ST-2",
            f"task reported {len(terminal)} terminal states: {states}",
            uid,
        )
        h.expect(
            states.count(spec.TaskState.RUNNING) <= 1,
            "ST-3",
            f"RUNNING reported more than once: {states}",
            uid,
        )
        h.expect(
            states[-1] in spec.TERMINAL_STATES,
            "ST-3",
            f"something was reported after the terminal state: {states}",
            uid,
        )


@cites("ST-4")
async def callback_on_loop_thread(h: Harness) -> None:
    """Every state is delivered on the thread of the submitting event loop."""
    batch = _mixed_batch(h)
    await h.run(batch)
    loop_thread = threading.get_ident()
    for task in batch:
        uid = task["uid"]
        h.expect(
            h.threads.get(uid) == loop_thread,
            "ST-4",
            "a state was delivered off the event-loop thread",
            uid,
        )


@cites("ST-5")
async def no_delivery_inside_calls(h: Harness) -> None:
    """No state is delivered from inside ``submit_tasks`` or ``cancel_task``."""
    # The monitor times every synchronous step of submit_tasks and
    # cancel_task and flags a delivery inside one (a backend may still await
    # inside them and let earlier tasks' states through meanwhile).
    batch = _mixed_batch(h)
    await h.submit(batch[:2])
    await h.submit(batch[2:])
    for task in batch[::2]:
        await h.backend.cancel_task(task["uid"])
    if h.can_block():
        blocker = h.blocker()
        await h.submit([blocker.task])
        await h.wait_started(blocker, "ST-5")
        await h.backend.cancel_task(blocker.uid)
        batch.append(blocker.task)
    h.release_all()
    await h.wait_terminal(t["uid"] for t in batch)


@cites("ST-6")
async def same_dict_with_results(h: Harness) -> None:
    """The callback gets the submitted dict object, with the results in it."""
    batch = _mixed_batch(h)
    delivered: dict[str, Any] = {}

    def keep(task: Any, state: Any) -> None:
        if spec.is_terminal(state):
            delivered[task.get("uid")] = task

    h.also_call(keep)
    await h.run(batch)
    h.also_call(None)
    for task in batch:
        uid = task["uid"]
        h.expect(
            delivered.get(uid) is task,
            "ST-6",
            "the callback received a different object than the submitted dict",
            uid,
        )
        h.expect(
            any(key in task for key in _RESULT_KEYS),
            "ST-6",
            f"no result key ({', '.join(_RESULT_KEYS)}) was written into the task",
            uid,
        )


@cites("ST-7")
async def raising_callback_tolerated(h: Harness) -> None:
    """A callback that raises does not stop the backend or lose other tasks."""
    raised: list[str] = []

    def explode(task: Any, state: Any) -> None:
        raised.append(str(task.get("uid")))
        raise RuntimeError("callback failure injected by the conformance suite")

    h.also_call(explode)
    batch = [h.runnable_task() for _ in range(5)]
    try:
        await h.submit(batch)
        states = await h.wait_terminal([t["uid"] for t in batch], clause_id="ST-7")
    finally:
        # Else the teardown's shutdown() would hit it too, and blame SD-1.
        h.also_call(None)
    h.expect(raised, "ST-7", "the raising callback was never called")
    more = [h.runnable_task() for _ in range(3)]
    await h.submit(more)
    states.update(await h.wait_terminal([t["uid"] for t in more], clause_id="ST-7"))
    for uid, state in states.items():
        h.expect(
            state is spec.TaskState.DONE,
            "ST-7",
            f"after callbacks raised, a task ended {state}",
            uid,
        )


@cites("ST-8")
async def callback_raising_cancelled_error_tolerated(h: Harness) -> None:
    """A callback raising ``asyncio.CancelledError`` loses no other task's report.

    ``CancelledError`` is a `BaseException`: a backend that contains only
    `Exception` lets it abort whatever loop callback or task was delivering
    states, and the rest of the batch is never reported.
    """
    raised: list[str] = []

    def cancel_out(task: Any, state: Any) -> None:
        raised.append(str(task.get("uid")))
        raise asyncio.CancelledError("raised by a callback of the conformance suite")

    batch = [h.runnable_task() for _ in range(6)]
    if h.has(_C.EXECUTABLES) and not h.has(_C.DRY_RUN):
        batch.append(h.executable_task("true"))
    h.also_call(cancel_out)
    try:
        await h.submit(batch)
        states = await h.wait_terminal([t["uid"] for t in batch], clause_id="ST-8")
    finally:
        h.also_call(None)
    h.check(raised, "ST-8", "the raising callback was never called")
    more = [h.runnable_task() for _ in range(3)]
    await h.submit(more)
    states.update(await h.wait_terminal([t["uid"] for t in more], clause_id="ST-8"))
    for uid, state in states.items():
        h.check(
            state is spec.TaskState.DONE,
            "ST-8",
            f"after callbacks raised CancelledError, a task ended {state}",
            uid,
        )
