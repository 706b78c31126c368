"""The contract monitor and service readiness (SV-2): passed through, judged."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

import spec
from conformance import ContractMonitor
from conformance.monitor._findings import readiness_findings
from reference._base import BackendBase, Job

S = spec.TaskState


class Silent(BackendBase[Job]):
    """Accepts tasks and reports nothing until told to (tests deliver by hand)."""

    capabilities = frozenset({spec.Capability.FUNCTIONS, spec.Capability.SERVICES})

    async def submit_tasks(self, tasks: list[Any]) -> None:
        self._accept(tasks, Job)

    async def cancel_task(self, uid: str) -> bool:
        return False

    async def shutdown(self) -> None:
        self._state = spec.BackendState.SHUTDOWN  # the tests deliver every state

    def deliver(self, task: Any, state: Any, **extra: Any) -> None:
        self._callback(task, state, **extra)


def _ready(future: Any, task: Any, state: str) -> None:
    if not future.done():
        future.set_result(task.get("service_info"))


SERVICE = {"uid": "s", "function": print, "is_service": True}


@pytest.mark.parametrize(
    ("task", "state", "last", "ready", "found"),
    [
        (SERVICE, S.RUNNING, S.RUNNING, False, None),
        ({"uid": "t"}, S.RUNNING, S.RUNNING, False, "without is_service"),
        ({"uid": "t", "is_service": "yes"}, S.RUNNING, S.RUNNING, False, "without"),
        (SERVICE, S.DONE, S.RUNNING, False, "with state DONE"),
        (SERVICE, S.RUNNING, None, False, "before the service's first RUNNING"),
        (SERVICE, S.RUNNING, S.RUNNING, True, "a second time"),
    ],
)
def test_readiness_findings(
    task: dict[str, Any],
    state: spec.TaskState,
    last: spec.TaskState | None,
    ready: bool,
    found: str | None,
) -> None:
    findings = readiness_findings(task, state, last, ready)
    if found is None:
        assert findings == []
    else:
        [(clause_id, message, _)] = findings
        assert clause_id == "SV-2" and found in message


async def _run(*steps: tuple[Any, dict[str, Any]]) -> tuple[ContractMonitor, list[Any]]:
    raw = Silent()
    monitor = ContractMonitor(raw, on_violation="record")
    seen: list[Any] = []

    def engine(task: Any, state: Any, service_callback: Any = None) -> None:
        seen.append((state, service_callback))

    monitor.register_callback(engine)
    task = dict(SERVICE)
    await monitor.submit_tasks([task])
    for state, extra in steps:
        raw.deliver(task, state, **extra)
    await asyncio.wait_for(monitor.shutdown(), 10)
    return monitor, seen


@pytest.mark.asyncio
async def test_a_readiness_is_passed_through_and_not_a_second_running() -> None:
    monitor, seen = await _run(
        (S.RUNNING, {}),
        (S.RUNNING, {"service_callback": _ready}),
        (S.DONE, {}),
    )
    assert monitor.violations == []
    assert seen == [(S.RUNNING, None), (S.RUNNING, _ready), (S.DONE, None)]


@pytest.mark.asyncio
@pytest.mark.parametrize(
    "steps",
    [
        # before RUNNING
        ((S.RUNNING, {"service_callback": _ready}), (S.DONE, {})),
        # twice
        (
            (S.RUNNING, {}),
            (S.RUNNING, {"service_callback": _ready}),
            (S.RUNNING, {"service_callback": _ready}),
            (S.DONE, {}),
        ),
        # with a terminal state
        ((S.RUNNING, {}), (S.DONE, {"service_callback": _ready})),
    ],
)
async def test_misplaced_readiness_is_an_sv2_violation(
    steps: tuple[tuple[Any, dict[str, Any]], ...],
) -> None:
    monitor, _ = await _run(*steps)
    assert [v.clause_id for v in monitor.violations] == ["SV-2"]


@pytest.mark.asyncio
async def test_a_second_plain_running_is_still_st3() -> None:
    monitor, _ = await _run((S.RUNNING, {}), (S.RUNNING, {}), (S.DONE, {}))
    assert [v.clause_id for v in monitor.violations] == ["ST-3"]
