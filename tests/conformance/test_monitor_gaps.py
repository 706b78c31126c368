"""Monitor behaviour no other test would notice (issue 20, planted-bug gaps).

- In raise mode, a delivery that breaks a rule still reaches the registered
  callback before the violation propagates: an engine behind the monitor
  must not lose the state.
- A recording monitor keeps exactly `KEPT_PER_CLAUSE` violations of one
  clause and counts them all.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from test_conformance_monitor import Silent, _task

import spec
from conformance import ContractMonitor, ContractViolation
from conformance.monitor import KEPT_PER_CLAUSE

S = spec.TaskState


def test_raise_mode_still_delivers_the_state_behind_the_violation() -> None:
    seen: list[tuple[str, Any]] = []

    async def scenario() -> None:
        raw = Silent()
        monitor = ContractMonitor(raw, on_violation="raise")
        monitor.register_callback(lambda task, state: seen.append((task["uid"], state)))
        task = _task("twice")
        await monitor.submit_tasks([task])
        raw.deliver(task, S.DONE)
        with pytest.raises(ContractViolation) as caught:
            raw.deliver(task, S.FAILED)  # a second terminal state: ST-3
        assert caught.value.clause_id == "ST-3"
        with pytest.raises(ContractViolation) as caught:
            raw.deliver(task, "DONE")  # not a TaskState member: ST-1
        assert caught.value.clause_id == "ST-1"

    asyncio.run(asyncio.wait_for(scenario(), 10))
    assert seen == [("twice", S.DONE), ("twice", S.FAILED), ("twice", "DONE")]


def test_a_recording_monitor_keeps_twenty_violations_per_clause_and_counts_all() -> (
    None
):
    assert KEPT_PER_CLAUSE == 20
    extra = 5

    async def scenario() -> ContractMonitor:
        raw = Silent()
        monitor = ContractMonitor(raw, on_violation="record")
        monitor.register_callback(lambda task, state: None)
        task = _task("many")
        await monitor.submit_tasks([task])
        raw.deliver(task, S.DONE)
        for _ in range(KEPT_PER_CLAUSE + extra):
            raw.deliver(task, S.DONE)  # each one a terminal state too many
        return monitor

    monitor = asyncio.run(asyncio.wait_for(scenario(), 10))
    kept = [v for v in monitor.violations if v.clause_id == "ST-3"]
    assert len(kept) == KEPT_PER_CLAUSE
    assert monitor.violation_counts["ST-3"] == KEPT_PER_CLAUSE + extra
