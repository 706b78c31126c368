"""Random interleavings of submit, cancel and shutdown (hypothesis state machine).

The machine itself lives in `conformance.state_machine`; this module registers it
as one conformance test, run on fresh backends from the factory under test.
"""

from __future__ import annotations

import asyncio

from conformance.harness import Harness
from conformance.registry import cites

MAX_EXAMPLES = 20
"""Random runs per test: few, derandomised, so the test takes seconds."""

STEPS = 15
"""Most steps per random run."""


@cites("ST-2", "ST-3", "CN-3", "CN-4", "SD-1", "SD-2", "SD-3", "SB-7", deadline=40.0)
async def random_interleavings(h: Harness) -> None:
    """Random submit/cancel/release/shutdown runs keep every invariant."""
    from conformance.state_machine import STEP_TIMEOUT, run_stateful

    if h.factory is None:
        h.not_applicable("the runner gave no backend factory to build fresh ones")
    # A step may take an eighth of the time left: a hanging backend fails a
    # step (and its replay) well within the test's deadline.
    step_timeout = min(STEP_TIMEOUT, max(0.5, h.remaining() / 8))
    ran = await asyncio.to_thread(
        run_stateful,
        h.factory,
        max_examples=MAX_EXAMPLES,
        steps=STEPS,
        step_timeout=step_timeout,
        base_dir=h.work_dir,
        seed=h.seed,
        judged=h.clauses,
    )
    h.note(
        f"{ran.examples} random runs, {ran.steps} steps, {ran.tasks} tasks "
        f"in {ran.seconds:.1f} s"
    )
