"""The contract monitor on its own: clean traffic passes, each broken rule is named."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import threading
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

import spec
from conformance import ContractMonitor, ContractViolation
from reference import NoopExecutionBackend
from reference._base import BackendBase, Job

S = spec.TaskState


class Silent(BackendBase[Job]):
    """Accepts tasks and reports nothing until told to (tests deliver by hand)."""

    capabilities = frozenset({spec.Capability.FUNCTIONS})

    async def submit_tasks(self, tasks: list[Any]) -> None:
        self._accept(tasks, Job)

    async def cancel_task(self, uid: str) -> bool:
        return uid in self._jobs

    async def shutdown(self) -> None:
        self._state = spec.BackendState.SHUTDOWN
        self._cancel_all()

    def deliver(self, task: Any, state: Any) -> None:
        """Call the registered callback (the monitor's wrapper) directly."""
        self._callback(task, state)


def _task(uid: str = "t1") -> dict[str, Any]:
    return {"uid": uid, "function": print}


async def _with_monitor(
    body: Callable[[ContractMonitor, Silent], Awaitable[None]],
) -> ContractMonitor:
    raw = Silent()
    monitor = ContractMonitor(raw, on_violation="record")
    monitor.register_callback(lambda task, state: None)
    await asyncio.wait_for(body(monitor, raw), 10)
    return monitor


async def _double_terminal(m: ContractMonitor, raw: Silent) -> None:
    task = _task()
    await m.submit_tasks([task])
    raw.deliver(task, S.DONE)
    raw.deliver(task, S.DONE)


async def _running_twice(m: ContractMonitor, raw: Silent) -> None:
    task = _task()
    await m.submit_tasks([task])
    raw.deliver(task, S.RUNNING)
    raw.deliver(task, S.RUNNING)


async def _string_state(m: ContractMonitor, raw: Silent) -> None:
    task = _task()
    await m.submit_tasks([task])
    raw.deliver(task, "DONE")


async def _never_accepted(m: ContractMonitor, raw: Silent) -> None:
    raw.deliver(_task("ghost"), S.DONE)


async def _other_thread(m: ContractMonitor, raw: Silent) -> None:
    task = _task()
    await m.submit_tasks([task])
    worker = threading.Thread(target=raw.deliver, args=(task, S.DONE))
    worker.start()
    worker.join()


async def _copy_of_dict(m: ContractMonitor, raw: Silent) -> None:
    task = _task()
    await m.submit_tasks([task])
    raw.deliver(dict(task), S.DONE)


async def _after_shutdown(m: ContractMonitor, raw: Silent) -> None:
    task = _task()
    await m.submit_tasks([task])
    await m.shutdown()
    raw.deliver(task, S.CANCELED)


async def _old_callback(m: ContractMonitor, raw: Silent) -> None:
    task = _task()
    await m.submit_tasks([task])
    old = raw._callback
    m.register_callback(lambda task, state: None)
    old(task, S.DONE)


async def _cancel_broken_promise(m: ContractMonitor, raw: Silent) -> None:
    task = _task()
    await m.submit_tasks([task])
    assert await m.cancel_task("t1") is True
    raw.deliver(task, S.DONE)


async def _true_for_unknown(m: ContractMonitor, raw: Silent) -> None:
    raw.cancel_task = _returns(True)  # type: ignore[method-assign]
    await m.cancel_task("nobody")


async def _true_for_finished(m: ContractMonitor, raw: Silent) -> None:
    task = _task()
    await m.submit_tasks([task])
    raw.deliver(task, S.DONE)
    raw.cancel_task = _returns(True)  # type: ignore[method-assign]
    await m.cancel_task("t1")


async def _cancel_returns_none(m: ContractMonitor, raw: Silent) -> None:
    raw.cancel_task = _returns(None)  # type: ignore[method-assign]
    await m.cancel_task("nobody")


def _returns(value: Any) -> Callable[[str], Awaitable[Any]]:
    async def cancel(uid: str) -> Any:
        return value

    return cancel


async def _accepts_non_dict(m: ContractMonitor, raw: Silent) -> None:
    raw._accept = lambda tasks, new_job: []  # type: ignore[method-assign]
    await m.submit_tasks([_task(), 42])


async def _accepts_missing_uid(m: ContractMonitor, raw: Silent) -> None:
    raw._accept = lambda tasks, new_job: []  # type: ignore[method-assign]
    await m.submit_tasks([_task(), {"function": print}])


async def _accepts_duplicate(m: ContractMonitor, raw: Silent) -> None:
    raw._accept = lambda tasks, new_job: []  # type: ignore[method-assign]
    await m.submit_tasks([_task(), _task()])


async def _accepts_after_shutdown(m: ContractMonitor, raw: Silent) -> None:
    await m.shutdown()
    raw._state = spec.BackendState.RUNNING  # pretend it never shut down
    await m.submit_tasks([_task()])


async def _unfinished_at_shutdown(m: ContractMonitor, raw: Silent) -> None:
    await m.submit_tasks([_task()])

    async def lazy_shutdown() -> None:
        raw._state = spec.BackendState.SHUTDOWN

    raw.shutdown = lazy_shutdown  # type: ignore[method-assign]
    await m.shutdown()


async def _backwards_state(m: ContractMonitor, raw: Silent) -> None:
    await m.submit_tasks([_task()])
    m.state()
    raw._state = spec.BackendState.INITIALIZED
    m.state()


async def _state_not_member(m: ContractMonitor, raw: Silent) -> None:
    raw._state = "RUNNING"  # type: ignore[assignment]
    m.state()


async def _reentrant_delivery(m: ContractMonitor, raw: Silent) -> None:
    async def eager_submit(tasks: list[Any]) -> None:
        for job in raw._accept(tasks, Job):
            raw._finish(job, S.DONE)

    raw.submit_tasks = eager_submit  # type: ignore[method-assign]
    await m.submit_tasks([_task()])


async def _submit_returns_value(m: ContractMonitor, raw: Silent) -> None:
    async def submit(tasks: list[Any]) -> list[int]:
        raw._accept(tasks, Job)
        return [1]

    raw.submit_tasks = submit  # type: ignore[method-assign]
    await m.submit_tasks([_task()])


BROKEN = [
    ("ST-1", _string_state),
    ("ST-2", _never_accepted),
    ("ST-3", _double_terminal),
    ("ST-3", _running_twice),
    ("ST-4", _other_thread),
    ("ST-5", _reentrant_delivery),
    ("ST-6", _copy_of_dict),
    ("SD-3", _after_shutdown),
    ("SD-2", _unfinished_at_shutdown),
    ("LC-4", _old_callback),
    ("LC-3", _backwards_state),
    ("LC-2", _state_not_member),
    ("CN-1", _cancel_returns_none),
    ("CN-2", _true_for_unknown),
    ("CN-3", _true_for_finished),
    ("CN-4", _cancel_broken_promise),
    ("SB-1", _submit_returns_value),
    ("SB-2", _accepts_non_dict),
    ("SB-3", _accepts_missing_uid),
    ("SB-4", _accepts_duplicate),
    ("SB-7", _accepts_after_shutdown),
]


@pytest.mark.parametrize(
    ("clause_id", "scenario"), BROKEN, ids=[f"{c}-{f.__name__}" for c, f in BROKEN]
)
def test_monitor_names_the_broken_clause(
    clause_id: str, scenario: Callable[[ContractMonitor, Silent], Awaitable[None]]
) -> None:
    monitor = asyncio.run(_with_monitor(scenario))
    found = [v.clause_id for v in monitor.violations]
    assert found, "the monitor saw nothing wrong"
    assert found[0] == clause_id, [str(v) for v in monitor.violations]
    first = monitor.violations[0]
    assert first.trace, "a violation carries the event trace"
    assert f"[{clause_id}]" in first.evidence()[0]


def test_clean_traffic_through_the_noop_backend() -> None:
    async def scenario() -> ContractMonitor:
        monitor = ContractMonitor(NoopExecutionBackend())
        done = asyncio.Event()
        seen: list[tuple[str, str]] = []

        def callback(task: Any, state: Any) -> None:
            seen.append((task["uid"], state))
            if len(seen) == 3:
                done.set()

        monitor.register_callback(callback)
        await monitor.submit_tasks([_task("a"), _task("b")])
        assert await monitor.cancel_task("b") in (True, False)
        assert await monitor.cancel_task("unknown") is False
        await monitor.submit_tasks([{"uid": "c"}])
        await asyncio.wait_for(done.wait(), 10)
        await monitor.shutdown()
        await monitor.shutdown()
        assert monitor.state() is spec.BackendState.SHUTDOWN
        return monitor

    monitor = asyncio.run(scenario())
    assert monitor.violations == []
    kinds = {(e.kind, e.name) for e in monitor.events}
    assert {("call", "submit_tasks"), ("return", "submit_tasks")} <= kinds
    assert ("callback", "callback") in kinds
    callbacks = [e for e in monitor.events if e.kind == "callback"]
    assert all(e.thread == threading.current_thread().name for e in callbacks)
    assert monitor.unfinished() == []


def test_monitor_is_a_backend_and_proxies_attributes() -> None:
    raw = NoopExecutionBackend(name="proxied")
    monitor = ContractMonitor(raw)
    assert isinstance(monitor, spec.ExecutionBackend)
    assert monitor.name == "proxied"
    assert monitor.wrapped is raw
    monitor._work_dir = "/tmp/elsewhere"
    assert raw._work_dir == "/tmp/elsewhere"
    assert spec.capabilities_of(monitor) == spec.capabilities_of(raw)
    assert hasattr(monitor, "__aenter__") and hasattr(monitor, "__await__")

    class Bare:
        def register_callback(self, func: Any) -> None:
            pass

    plain = ContractMonitor(Bare())
    assert not hasattr(plain, "__aenter__") and not hasattr(plain, "__await__")


def test_raise_mode_raises_and_records() -> None:
    async def scenario() -> ContractMonitor:
        raw = Silent()
        monitor = ContractMonitor(raw)
        raw.cancel_task = _returns("yes")  # type: ignore[method-assign]
        with pytest.raises(ContractViolation) as caught:
            await monitor.cancel_task("t")
        assert caught.value.clause_id == "CN-1"
        return monitor

    monitor = asyncio.run(scenario())
    assert [v.clause_id for v in monitor.violations] == ["CN-1"]


def test_violation_survives_python_O() -> None:
    code = (
        "import asyncio\n"
        "from conformance import ContractMonitor, ContractViolation\n"
        "from reference import NoopExecutionBackend\n"
        "m = ContractMonitor(NoopExecutionBackend())\n"
        "try:\n"
        "    m.wrapped._callback({'uid': 'ghost'}, 'DONE')\n"
        "except ContractViolation as exc:\n"
        "    print(exc.clause_id)\n"
    )
    out = subprocess.run(
        [sys.executable, "-O", "-c", code], capture_output=True, text=True, timeout=60
    )
    assert out.stdout.split() == ["ST-1"], out.stderr


def test_extra_keyword_arguments_reach_the_engine_callback_unchanged() -> None:
    seen: list[tuple[Any, Any, dict[str, Any]]] = []

    def engine(task: Any, state: Any, **kwargs: Any) -> None:
        seen.append((task, state, kwargs))

    async def body() -> ContractMonitor:
        raw = Silent()
        monitor = ContractMonitor(raw, on_violation="record")
        monitor.register_callback(engine)
        task = _task()
        await monitor.submit_tasks([task])
        marker = object()
        raw._callback(task, S.RUNNING, service_callback=marker)
        raw.deliver(task, S.DONE)
        assert seen == [
            (task, S.RUNNING, {"service_callback": marker}),
            (task, S.DONE, {}),
        ]
        return monitor

    monitor = asyncio.run(asyncio.wait_for(body(), 10))
    assert monitor.violations == []
