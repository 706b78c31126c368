"""Stateful property-based testing: random interleavings of submit, cancel, shutdown.

`BackendMachine` is a hypothesis `RuleBasedStateMachine`. Each example builds
a fresh backend from a factory, wraps it in a `ContractMonitor`, and drives it
through a random sequence of steps:

* ``submit`` a batch (possibly empty) mixing quick, slow, failing and
  executable tasks, only of kinds the backend's capabilities allow, plus
  tasks with nothing to run;
* ``cancel`` a submitted uid (in flight, finished, or never submitted);
* ``release`` a slow task, ``settle`` (let the backend work for a moment);
* ``shutdown`` (more than once, too), then ``submit`` again (must be refused).

The monitor checks every call and every delivered state as it happens; after
every step the machine also checks its own model of the run, and at the end
of each example it waits for every task and checks the invariants:

* every accepted task has exactly one terminal state (ST-2), nothing after it
  (ST-3), and none after ``shutdown()`` returned (SD-3);
* a task ends CANCELED if and only if ``cancel_task`` returned True for it
  (CN-4) or ``shutdown()`` found it unfinished (SD-2);
* a task neither cancelled nor caught by shutdown ends as its kind says
  (quick DONE, failing FAILED, nothing-to-run FAILED).

Hypothesis state machines are synchronous: the machine owns an event loop
(created in ``__init__``, closed in ``teardown``) and runs each step's
coroutine on it with a timeout, so the backend delivers its callbacks on the
loop's thread and a hanging backend fails a step rather than the run.

Use `run_stateful` to run it (the conformance test
``stateful.random_interleavings`` does), or `machine_for` to get the class,
whose ``TestCase`` attribute pytest collects.
"""

from __future__ import annotations

import contextlib
import random
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

from hypothesis import HealthCheck, Phase, settings
from hypothesis.errors import Flaky
from hypothesis.reporting import with_reporter
from hypothesis.stateful import run_state_machine_as_test

from conformance._stateful_machine import STEP_TIMEOUT, BackendMachine, StatefulRun
from conformance._stateful_model import kinds_for
from conformance.errors import ContractViolation
from conformance.target import BackendFactory

__all__ = [
    "STEP_TIMEOUT",
    "BackendMachine",
    "StatefulRun",
    "kinds_for",
    "machine_for",
    "run_stateful",
]


def machine_for(
    factory: BackendFactory,
    *,
    step_timeout: float = STEP_TIMEOUT,
    base_dir: str | Path | None = None,
    judged: Iterable[str] | None = None,
) -> type[BackendMachine]:
    """Return a `BackendMachine` subclass bound to ``factory``.

    Args:
        factory: Builds a fresh backend (a class, or a zero-argument sync or
            async factory); called once per example.
        step_timeout: Seconds each step may take.
        base_dir: Where each example's scratch directory goes.
        judged: Only violations of these clauses end a run (``None``: all).

    Returns:
        The machine class; its ``TestCase`` attribute is a unittest case
        pytest collects.
    """
    attrs = {
        "factory": staticmethod(factory),
        "step_timeout": step_timeout,
        "base_dir": None if base_dir is None else str(base_dir),
        "tally": StatefulRun(),
        "judged": None if judged is None else frozenset(judged),
    }
    name = f"{getattr(factory, '__name__', 'Backend')}Machine"
    machine = type(name, (BackendMachine,), attrs)
    return machine


def _violation_in(exc: BaseException) -> ContractViolation | None:
    """Find the first ContractViolation in ``exc`` or the exceptions it groups."""
    if isinstance(exc, ContractViolation):
        return exc
    for inner in getattr(exc, "exceptions", ()):
        found = _violation_in(inner)
        if found is not None:
            return found
    return None


@contextlib.contextmanager
def _seeded(seed: int | None) -> Iterator[None]:
    """Seed hypothesis's draws in this thread.

    Hypothesis has no public knob for that in a state machine run outside a
    test function.
    """
    if seed is None:
        yield
        return
    from hypothesis import core

    local = getattr(core, "threadlocal", None)
    if local is None or not hasattr(local, "_hypothesis_global_random"):
        yield  # an unknown hypothesis: its own random draws, unseeded
        return
    saved = local._hypothesis_global_random
    local._hypothesis_global_random = random.Random(seed)
    try:
        yield
    finally:
        local._hypothesis_global_random = saved


def run_stateful(
    factory: BackendFactory,
    *,
    max_examples: int = 8,
    steps: int = 12,
    step_timeout: float = STEP_TIMEOUT,
    base_dir: str | Path | None = None,
    shrink: bool = False,
    seed: int | None = None,
    judged: Iterable[str] | None = None,
) -> StatefulRun:
    """Run the state machine against fresh backends from ``factory``.

    Without an example database; derandomised (so a run is repeatable)
    unless a ``seed`` picks other random runs, the same for the same seed.

    Args:
        factory: Builds a fresh backend; called once per example.
        max_examples: Random runs.
        steps: Most steps per run.
        step_timeout: Seconds each step may take.
        base_dir: Where each example's scratch directory goes.
        shrink: Let hypothesis shrink a failing run to a minimal one (slower).
        seed: Draw the random runs from this seed (``--seed``); ``None``
            for the fixed, derandomised ones.
        judged: Only violations of these clauses end a run (``None``: all).

    Returns:
        What was run.

    Raises:
        ContractViolation: A run broke a clause; the message lists the steps
            of the failing run (and hypothesis's own replay of it).
    """
    machine = machine_for(
        factory, step_timeout=step_timeout, base_dir=base_dir, judged=judged
    )
    phases = [Phase.explicit, Phase.generate] + ([Phase.shrink] if shrink else [])
    config = settings(
        max_examples=max_examples,
        stateful_step_count=steps,
        deadline=None,
        derandomize=seed is None,
        database=None,
        phases=phases,
        suppress_health_check=list(HealthCheck),
        report_multiple_bugs=False,
        print_blob=False,
    )
    lines: list[str] = []
    began = time.monotonic()
    try:
        with with_reporter(lambda value: lines.append(str(value))), _seeded(seed):
            run_state_machine_as_test(machine, settings=config)
    except (ContractViolation, Flaky) as exc:
        found = _violation_in(exc)
        if found is None:
            raise
        notes = [str(n) for n in getattr(exc, "__notes__", ())]
        notes += [
            str(n) for n in getattr(found, "__notes__", ()) if str(n) not in notes
        ]
        replay = "\n".join(
            line
            for text in lines + notes
            for line in text.splitlines()
            if line.strip() and "model_holds()" not in line  # invariants: noise
        )
        flaky = isinstance(exc, Flaky)
        note = " (it did not fail again on replay: timing-dependent)" if flaky else ""
        raise ContractViolation(
            found.clause_id,
            f"{found.message}{note}\nhypothesis replay:\n{replay}",
            found.trace,
        ) from exc
    tally = machine.tally or StatefulRun()
    tally.seconds = time.monotonic() - began
    return tally
