"""`ChaosBackend`: a backend that takes every liberty the contract allows.

An engine is usually tested against polite backends: completions in
submission order, RUNNING always sent, cancels that always win. The contract
promises less. `ChaosBackend` wraps any conforming backend and, staying
inside the contract, delivers each state after a random delay (so
completions arrive out of order), leaves RUNNING out for some tasks and sends
it late for others, lets ``cancel_task`` lose the races it may lose, and
takes most of its shutdown allowance. Optionally it fails tasks with
`spec.WorkerLostError`, as a lost worker would.

Every decision is drawn from the seed and the task's uid alone, so the same
seed makes the same decisions for the same tasks: a failing run can be
replayed. The seed is in ``repr()`` and in the log line the backend writes
when it is built.

The parts: `_policy` decides (`ChaosPolicy`, pure, from the seed);
`_backend` applies it around the inner backend's contract methods;
`_deliveries` holds each task's states until due and delivers them, through
`_schedule`'s one timer; `_forwarding` passes the engine-facing attributes
through; `_entries` are the records.
"""

from __future__ import annotations

from reference.chaos._backend import ChaosBackend
from reference.chaos._policy import ChaosDecisions, RunningPolicy

__all__ = ["ChaosBackend", "ChaosDecisions", "RunningPolicy"]
