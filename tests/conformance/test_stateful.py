"""The hypothesis state machine: clean on the reference backends, able to fail."""

from __future__ import annotations

import unittest

import pytest
from mutants import noop_mutants as noop

import spec
from conformance import ContractViolation
from conformance.state_machine import kinds_for, machine_for, run_stateful
from reference import LocalExecutionBackend, NoopExecutionBackend

_C = spec.Capability


def test_kinds_follow_the_capabilities() -> None:
    assert kinds_for([]) == ("nothing-to-run",)
    assert set(kinds_for([_C.DRY_RUN, _C.PROMPTS])) == {
        "nothing-to-run",
        "dry-function",
        "dry-executable",
        "dry-prompt",
    }
    both = set(kinds_for([_C.FUNCTIONS, _C.EXECUTABLES]))
    assert {"slow-function", "failing-executable", "quick-function"} <= both
    assert not {k for k in both if k.startswith("dry-")}
    assert "quick-executable" not in kinds_for([_C.FUNCTIONS])


@pytest.mark.parametrize(
    "factory", [NoopExecutionBackend, LocalExecutionBackend], ids=["noop", "local"]
)
def test_the_reference_backends_keep_every_invariant(factory: type) -> None:
    ran = run_stateful(factory, max_examples=10, steps=12)
    assert ran.examples >= 10
    assert ran.tasks > 0
    assert ran.steps > ran.examples


# Mutants whose break a random interleaving must find, with the clause the
# machine names for it.
_FOUND_BY_THE_MACHINE = [
    (noop.CancelPromisesButCompletes, "CN-4"),
    (noop.CancelFinishedSaysTrue, "CN-3"),
    (noop.ShutdownForgetsTasks, "SD-2"),
    (noop.SecondShutdownRaises, "SD-1"),
    (noop.IgnoresSubmitAfterShutdown, "SB-7"),
    (noop.RunningTwice, "ST-3"),
    (noop.DeliversInsideSubmit, "ST-5"),
    (noop.NothingToRunIsDone, "SB-5"),
    (noop.LosesFailedTasks, "ST-2"),
]


@pytest.mark.parametrize(
    ("factory", "clause_id"),
    _FOUND_BY_THE_MACHINE,
    ids=[f.__name__ for f, _ in _FOUND_BY_THE_MACHINE],
)
def test_the_machine_finds_a_broken_clause(factory: type, clause_id: str) -> None:
    with pytest.raises(ContractViolation) as caught:
        run_stateful(factory, max_examples=10, steps=12, step_timeout=0.5)
    assert caught.value.clause_id == clause_id, caught.value.message
    # The evidence names the steps of the failing run.
    assert "steps of this random run: submit" in caught.value.message


def test_machine_for_gives_a_pytest_collectable_class() -> None:
    machine = machine_for(NoopExecutionBackend)
    assert issubclass(machine.TestCase, unittest.TestCase)
    assert machine.factory is NoopExecutionBackend


def test_an_unbound_machine_refuses_to_run() -> None:
    from conformance.state_machine import BackendMachine

    with pytest.raises(TypeError, match="machine_for"):
        BackendMachine()
