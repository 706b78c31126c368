"""`ChaosBackend`: within the contract, reproducible, and every liberty it takes.

Each async test wraps the chaos backend in a `ContractMonitor`, so a liberty
that steps outside the contract fails the test that provoked it.
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import logging
import math
import multiprocessing
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor, ThreadPoolExecutor
from typing import Any

import pytest
from _ref_helpers import QUICK_DONE, Recorder

import spec
from conformance import ContractMonitor, Outcome, run
from reference import LocalExecutionBackend, NoopExecutionBackend
from reference.chaos import ChaosBackend, RunningPolicy
from spec import TaskState

pytestmark = pytest.mark.timeout(60)

SEEDS = range(10)


def noop_task(uid: str) -> dict[str, Any]:
    return {"uid": uid, "function": len, "args": ["x"]}


def fn_task(uid: str, func: Callable[..., Any], *args: Any) -> dict[str, Any]:
    return {"uid": uid, "function": func, "args": list(args), "kwargs": {}}


def watched(backend: ChaosBackend) -> tuple[ContractMonitor, Recorder]:
    monitor = ContractMonitor(backend, on_violation="record")
    recorder = Recorder()
    monitor.register_callback(recorder)
    return monitor, recorder


def assert_clean(monitor: ContractMonitor, recorder: Recorder) -> None:
    assert not monitor.violations, monitor.violations
    assert not recorder.violations, recorder.violations


class SpiedNoop(NoopExecutionBackend):
    """A noop backend that tells the test when it reported a state itself."""

    def __init__(self) -> None:
        super().__init__()
        self.reported: dict[str, asyncio.Event] = {}

    def register_callback(self, func: Callable[[Any, str], None]) -> None:
        def spy(task: Any, state: str) -> None:
            self.reported.setdefault(task["uid"], asyncio.Event()).set()
            func(task, state)

        super().register_callback(spy)

    async def reported_by_inner(self, uid: str) -> None:
        event = self.reported.setdefault(uid, asyncio.Event())
        await asyncio.wait_for(event.wait(), 10)


class InnerSpy:
    """Tells the test which states the inner backend reported to the chaos one.

    Install it before building the `ChaosBackend`: it wraps the callback the
    chaos backend registers.
    """

    def __init__(self, inner: Any) -> None:
        self.seen: dict[str, list[str]] = {}
        self._changed = asyncio.Event()
        register = inner.register_callback

        def register_spied(func: Callable[[Any, str], None]) -> None:
            def spy(task: Any, state: str) -> None:
                self.seen.setdefault(task["uid"], []).append(state)
                self._changed.set()
                func(task, state)

            register(spy)

        inner.register_callback = register_spied

    async def wait(self, uid: str, state: str, timeout: float = 20.0) -> None:
        async def poll() -> None:
            while state not in self.seen.get(uid, []):
                self._changed.clear()
                await self._changed.wait()

        await asyncio.wait_for(poll(), timeout)


# -- options -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("option", "value", "error", "match"),
    [
        ("max_delay", -0.001, ValueError, "max_delay"),
        ("max_delay", math.nan, ValueError, "max_delay"),
        ("max_delay", math.inf, ValueError, "max_delay"),
        ("max_delay", "1", TypeError, "max_delay"),
        ("cancel_wait", -1, ValueError, "cancel_wait"),
        ("shutdown_delay", math.nan, ValueError, "shutdown_delay"),
        ("shutdown_delay", True, TypeError, "shutdown_delay"),
        ("submit_delay", -0.5, ValueError, "submit_delay"),
        ("submit_delay", math.nan, ValueError, "submit_delay"),
        ("omit_running", math.nan, ValueError, "omit_running"),
        ("omit_running", -0.1, ValueError, "omit_running"),
        ("late_running", 1.5, ValueError, "late_running"),
        ("lose_cancel", None, TypeError, "lose_cancel"),
        ("worker_loss", math.nan, ValueError, "worker_loss"),
        ("worker_loss", -1e-9, ValueError, "worker_loss"),
        ("worker_loss", math.inf, ValueError, "worker_loss"),
        ("seed", 1.5, TypeError, "seed"),
        ("seed", True, TypeError, "seed"),
        ("name", 3, TypeError, "name"),
    ],
)
def test_bad_options_are_named(
    option: str, value: Any, error: type[Exception], match: str
) -> None:
    with pytest.raises(error, match=match):
        ChaosBackend(NoopExecutionBackend(), **{option: value})


def test_running_shares_cannot_exceed_one() -> None:
    with pytest.raises(ValueError, match="omit_running \\+ late_running"):
        ChaosBackend(NoopExecutionBackend(), omit_running=0.6, late_running=0.5)


def test_inner_must_be_a_backend() -> None:
    with pytest.raises(TypeError, match="has no submit_tasks"):
        ChaosBackend(object())  # type: ignore[arg-type]


def test_seed_in_repr_and_log_line(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="reference.chaos"):
        backend = ChaosBackend(NoopExecutionBackend(), seed=12345)
    assert "seed=12345" in repr(backend)
    assert any("seed=12345" in r.getMessage() for r in caplog.records)


def test_defaults_wrap_a_local_backend_and_forward_the_engine_attributes() -> None:
    backend = ChaosBackend(name="routed")
    inner = backend.inner
    assert isinstance(inner, LocalExecutionBackend)
    assert backend.name == "routed" == inner.name
    assert backend.capabilities == spec.capabilities_of(inner)
    assert isinstance(backend, spec.AsyncflowBackend)
    backend._work_dir = "/tmp/somewhere"
    assert inner._work_dir == "/tmp/somewhere"
    backend.is_attached = True
    backend.attached_to.append("engine.1")
    assert inner.is_attached is True
    assert inner.attached_to == ["engine.1"]
    assert backend.get_task_states_map().DONE == "DONE"


def test_resource_capacity_is_the_inner_backends() -> None:
    inner = LocalExecutionBackend(ThreadPoolExecutor(2), cores=2, memory=512)
    backend = ChaosBackend(inner)
    assert backend.capacity == inner.capacity
    assert isinstance(backend, spec.SupportsResources)
    assert spec.Capability.RESOURCES in backend.capabilities
    plain = ChaosBackend(NoopExecutionBackend())
    assert not isinstance(plain, spec.SupportsResources)
    with pytest.raises(AttributeError, match="no resource capacity"):
        plain.capacity  # noqa: B018


def test_registered_as_chaos() -> None:
    assert spec.load_registered_backend("chaos") is ChaosBackend


# -- decisions ----------------------------------------------------------------


def test_decisions_are_a_function_of_seed_and_uid() -> None:
    uids = [f"task.{i:06d}" for i in range(300)]
    first = ChaosBackend(NoopExecutionBackend(), seed=7)
    again = ChaosBackend(NoopExecutionBackend(), seed=7)
    other = ChaosBackend(NoopExecutionBackend(), seed=8)
    assert [first.decisions(u) for u in uids] == [again.decisions(u) for u in uids]
    assert [first.decisions(u) for u in uids] != [other.decisions(u) for u in uids]
    assert first.shutdown_pause() == again.shutdown_pause()
    # Every kind of decision is taken for some task and not for others.
    made = [first.decisions(u) for u in uids]
    assert {d.running for d in made} == set(RunningPolicy)
    assert {d.loses_cancel_race for d in made} == {True, False}
    assert len({d.terminal_delay for d in made}) == len(uids)
    assert all(0 <= d.terminal_delay <= 0.005 for d in made)
    assert not any(d.worker_lost for d in made)  # off by default
    # Odd uids draw too, without error.
    for uid in ("", "\udcff", "../x", "x" * 10_000):
        first.decisions(uid)


def test_shutdown_pause_uses_most_of_the_allowance() -> None:
    backends = [
        ChaosBackend(NoopExecutionBackend(), seed=s, shutdown_delay=1.0)
        for s in range(50)
    ]
    pauses = [b.shutdown_pause() for b in backends]
    assert all(0.5 <= p <= 1.0 for p in pauses)
    assert len(set(pauses)) == 50


# -- replay over a noop inner backend ------------------------------------------


MAX_DELAY = 0.5
"""Delays long enough that a busy machine's scheduling cannot reorder them."""


async def one_noop_run(seed: int, n: int = 120) -> tuple[Any, ...]:
    """Submit n tasks, cancel every third at once, return what was observed."""
    backend = ChaosBackend(
        NoopExecutionBackend(), seed=seed, max_delay=MAX_DELAY, cancel_wait=0.05
    )
    monitor, recorder = watched(backend)
    uids = [f"task.{i:06d}" for i in range(n)]
    await monitor.submit_tasks([noop_task(u) for u in uids])
    canceled = {u: await monitor.cancel_task(u) for u in uids[::3]}
    await recorder.wait(uids)
    await monitor.shutdown()
    assert_clean(monitor, recorder)
    order = [u for u, s, _ in recorder.events if spec.is_terminal(s)]
    per_task = {u: recorder.states(u) for u in uids}
    return per_task, canceled, order, [backend.decisions(u) for u in uids]


@pytest.mark.asyncio
async def test_same_seed_same_decisions_over_noop() -> None:
    per_task, canceled, order, decisions = await one_noop_run(seed=3)
    again = await one_noop_run(seed=3)
    assert (per_task, canceled) == again[:2]
    assert decisions == again[3]
    # The cancels run one after the other, right after submit. Until one
    # waits (a task drawn to lose its race), the noop backend has run
    # nothing and each cancel wins; the first that waits lets the noop
    # backend finish every task, so it and every later cancel lose.
    decided = {d.uid: d for d in decisions}
    expected: dict[str, bool] = {}
    finished = False
    for uid in canceled:
        loses = decided[uid].loses_cancel_race
        expected[uid] = not (finished or loses)
        finished = finished or loses
    assert canceled == expected
    for d in decisions:
        states = per_task[d.uid]
        if canceled.get(d.uid):
            assert states == [TaskState.CANCELED], d
            continue
        # The noop backend sends no RUNNING: only a late one shows.
        if d.running is RunningPolicy.LATE:
            assert states == [TaskState.RUNNING, TaskState.DONE], d
        else:
            assert states == [TaskState.DONE], d
    # Every kind of decision was exercised in this run.
    assert {d.running for d in decisions} == set(RunningPolicy)
    assert set(canceled.values()) == {True, False}
    # Completions come in delay order, not submission order: compare the
    # tasks completed together (never cancelled) whose delays differ by
    # 40% of the range, far more than a loaded machine's scheduling jitter.
    delay = {d.uid: d.terminal_delay for d in decisions}
    done = [u for u in order if u not in canceled]
    assert done != sorted(done)
    position = {uid: i for i, uid in enumerate(done)}
    for first, second in itertools.combinations(done, 2):
        if delay[second] - delay[first] > 0.4 * MAX_DELAY:
            assert position[first] < position[second], (first, second)
    # The run's other decisions differ for another seed.
    other = await one_noop_run(seed=4)
    assert other[1] != canceled


# -- liberties over a real (local) inner backend --------------------------------


@pytest.mark.asyncio
@pytest.mark.parametrize("seed", [0, 1, 2])
async def test_running_omitted_on_time_or_late_over_local(seed: int) -> None:
    backend = ChaosBackend(LocalExecutionBackend(ThreadPoolExecutor(4)), seed=seed)
    monitor, recorder = watched(backend)
    uids = [f"t{i}" for i in range(60)]
    await monitor.submit_tasks([fn_task(u, pow, 2, i) for i, u in enumerate(uids)])
    await recorder.wait(uids)
    await monitor.shutdown()
    assert_clean(monitor, recorder)
    for uid in uids:
        policy = backend.decisions(uid).running
        states = recorder.states(uid)
        if policy is RunningPolicy.OMITTED:
            assert states == [TaskState.DONE], (uid, policy)
        elif policy is RunningPolicy.LATE:
            # Sent (synthesised if the inner backend sent none) before DONE.
            assert states == [TaskState.RUNNING, TaskState.DONE], (uid, policy)
        else:
            # On time: whatever the inner backend sent; the local backend
            # drops RUNNING for a function that had already returned.
            assert states in QUICK_DONE, (uid, policy)
        if policy is RunningPolicy.LATE:
            # Held back until just before the terminal state.
            position = [u for u, _, _ in recorder.events].index(uid)
            assert recorder.events[position + 1][0] == uid


@pytest.mark.asyncio
async def test_cancel_of_a_held_back_completion_loses_and_done_stays() -> None:
    inner = SpiedNoop()
    # lose_cancel=0: the loss here comes only from the held-back DONE.
    backend = ChaosBackend(inner, seed=1, max_delay=5.0, lose_cancel=0.0)
    monitor, recorder = watched(backend)
    await monitor.submit_tasks([noop_task("a")])
    await inner.reported_by_inner("a")
    assert recorder.states("a") == []  # finished, but not reported yet
    assert await monitor.cancel_task("a") is False
    await monitor.shutdown()  # delivers what is held back
    assert recorder.states("a")[-1] is TaskState.DONE
    assert_clean(monitor, recorder)


@pytest.mark.asyncio
async def test_a_held_back_uid_is_still_in_flight() -> None:
    inner = SpiedNoop()
    backend = ChaosBackend(inner, seed=1, max_delay=5.0)
    monitor, recorder = watched(backend)
    await monitor.submit_tasks([noop_task("a")])
    await inner.reported_by_inner("a")
    with pytest.raises(spec.DuplicateTaskError):
        await backend.submit_tasks([noop_task("a")])
    await monitor.shutdown()
    assert_clean(monitor, recorder)


async def gated(started: threading.Event, release: threading.Event) -> str:
    """Runs until released or cancelled (the local backend stops a coroutine)."""
    started.set()
    while not release.is_set():
        await asyncio.sleep(0.005)
    return "released"


async def wait_set(event: threading.Event) -> None:
    await asyncio.wait_for(asyncio.to_thread(event.wait, 20), 25)


@pytest.mark.asyncio
async def test_a_running_task_cancelled_is_canceled_exactly_once() -> None:
    # lose_cancel=1: every cancel first waits for the task to finish.
    backend = ChaosBackend(
        LocalExecutionBackend(ThreadPoolExecutor(2)),
        seed=5,
        lose_cancel=1.0,
        omit_running=0.0,
        late_running=0.0,
    )
    monitor, recorder = watched(backend)
    started, release = threading.Event(), threading.Event()
    await monitor.submit_tasks([fn_task("blocked", gated, started, release)])
    await recorder.wait(["blocked"], TaskState.RUNNING)
    # Its coroutine runs (not merely taken by a thread: the local backend
    # cannot stop it in that instant), and it is not released: the cancel
    # does not lose its race.
    await wait_set(started)
    assert await monitor.cancel_task("blocked") is True
    assert await monitor.cancel_task("blocked") is True  # still promised
    await recorder.wait(["blocked"])
    assert recorder.states("blocked") == [TaskState.RUNNING, TaskState.CANCELED]
    assert await monitor.cancel_task("blocked") is False
    await monitor.shutdown()
    assert_clean(monitor, recorder)


@pytest.mark.asyncio
async def test_a_cancel_that_waits_loses_to_a_task_finishing_meanwhile() -> None:
    gate = threading.Event()
    backend = ChaosBackend(
        LocalExecutionBackend(ThreadPoolExecutor(2)),
        seed=5,
        lose_cancel=1.0,
        cancel_wait=30.0,
        omit_running=0.0,
        late_running=0.0,
    )
    monitor, recorder = watched(backend)
    await monitor.submit_tasks([fn_task("blocked", gate.wait, 30)])
    await recorder.wait(["blocked"], TaskState.RUNNING)
    cancel = asyncio.ensure_future(monitor.cancel_task("blocked"))
    await asyncio.sleep(0)  # the cancel is now waiting for the task
    assert not cancel.done()
    gate.set()  # the task finishes first
    assert await asyncio.wait_for(cancel, 10) is False
    await recorder.wait(["blocked"])
    assert recorder.states("blocked") == [TaskState.RUNNING, TaskState.DONE]
    assert backend.inner.state() is not spec.BackendState.SHUTDOWN
    await monitor.shutdown()
    assert_clean(monitor, recorder)


@pytest.mark.asyncio
async def test_unknown_and_odd_uids_cancel_false() -> None:
    backend = ChaosBackend(NoopExecutionBackend())
    for uid in ("nope", "", "../x"):
        assert await backend.cancel_task(uid) is False
    assert await backend.cancel_task(["unhashable"]) is False  # type: ignore[arg-type]
    await backend.shutdown()


# -- shutdown -------------------------------------------------------------------


@pytest.mark.asyncio
async def test_shutdown_keeps_delivering_then_reports_everything() -> None:
    gate = threading.Event()
    inner = LocalExecutionBackend(ThreadPoolExecutor(2), shutdown_timeout=2.0)
    spy = InnerSpy(inner)
    # Held back for up to 30 s: still held when shutdown starts.
    backend = ChaosBackend(inner, seed=2, max_delay=30.0, shutdown_delay=0.2)
    monitor, recorder = watched(backend)
    quick = [f"quick{i}" for i in range(10)]
    await monitor.submit_tasks(
        [fn_task(u, abs, -1) for u in quick] + [fn_task("stuck", gate.wait, 30)]
    )
    for uid in quick:
        await spy.wait(uid, "DONE")
    loop = asyncio.get_running_loop()
    began = loop.time()
    try:
        await asyncio.wait_for(monitor.shutdown(), 10)
    finally:
        gate.set()
    # It used most of its allowance (a lower bound: never flaky on a slow box).
    assert loop.time() - began >= backend.shutdown_pause() - 0.002
    assert backend.state() is spec.BackendState.SHUTDOWN
    assert inner.state() is spec.BackendState.SHUTDOWN
    # Tasks that finished are reported DONE (what was held back is delivered
    # before shutdown returns), the stuck one CANCELED.
    assert all(recorder.final(u) is TaskState.DONE for u in quick)
    assert recorder.final("stuck") is TaskState.CANCELED
    with pytest.raises(spec.BackendShutdownError):
        await backend.submit_tasks([noop_task("late")])
    await monitor.shutdown()  # idempotent
    assert_clean(monitor, recorder)


@pytest.mark.asyncio
async def test_concurrent_shutdowns_wait_for_the_first() -> None:
    backend = ChaosBackend(NoopExecutionBackend(), shutdown_delay=0.05)
    monitor, recorder = watched(backend)
    await monitor.submit_tasks([noop_task(f"t{i}") for i in range(5)])
    await asyncio.wait_for(asyncio.gather(backend.shutdown(), backend.shutdown()), 10)
    assert all(recorder.final(f"t{i}") is not None for i in range(5))
    assert backend.state() is spec.BackendState.SHUTDOWN


@pytest.mark.asyncio
async def test_shutdown_cancelled_in_its_pause_still_stops_the_inner_backend() -> None:
    inner = NoopExecutionBackend()
    backend = ChaosBackend(inner, shutdown_delay=30.0)
    recorder = Recorder()
    backend.register_callback(recorder)
    await backend.submit_tasks([noop_task("a")])
    with pytest.raises(asyncio.TimeoutError):
        await asyncio.wait_for(backend.shutdown(), 0.05)
    assert inner.state() is spec.BackendState.SHUTDOWN
    assert backend.state() is spec.BackendState.SHUTDOWN
    assert recorder.final("a") is not None


# -- a batch held back in submit_tasks ----------------------------------------


class CountingNoop(NoopExecutionBackend):
    """A noop backend that records which uids were handed to it."""

    def __init__(self) -> None:
        super().__init__()
        self.received: list[str] = []

    async def submit_tasks(self, tasks: list[dict[str, Any]]) -> None:
        self.received += [t["uid"] for t in tasks]
        await super().submit_tasks(tasks)


@pytest.mark.asyncio
async def test_a_task_cancelled_while_its_batch_is_held_never_reaches_inner() -> None:
    inner = CountingNoop()
    backend = ChaosBackend(inner, seed=1, submit_delay=30.0, lose_cancel=0.0)
    monitor, recorder = watched(backend)
    assert backend.submit_pause("a") > 0.1
    submit = asyncio.ensure_future(
        monitor.submit_tasks([noop_task("a"), noop_task("b")])
    )
    await asyncio.sleep(0)  # the submit is now holding its batch
    assert not submit.done()
    assert await monitor.cancel_task("a") is True
    await recorder.wait(["a"])  # delivered while the submit still holds "b"
    assert recorder.states("a") == [TaskState.CANCELED]
    assert inner.received == []
    submit.cancel()  # a cancelled submit accepts nothing more
    with pytest.raises(asyncio.CancelledError):
        await submit
    assert await monitor.cancel_task("b") is False
    await backend.shutdown()
    assert inner.received == []
    assert recorder.states("b") == []


@pytest.mark.asyncio
async def test_a_held_batch_is_handed_over_once_the_pause_ends() -> None:
    inner = CountingNoop()
    backend = ChaosBackend(inner, seed=2, submit_delay=0.05, lose_cancel=0.0)
    monitor, recorder = watched(backend)
    uids = [f"t{i}" for i in range(5)]
    submit = asyncio.ensure_future(monitor.submit_tasks([noop_task(u) for u in uids]))
    await asyncio.sleep(0)
    assert await monitor.cancel_task("t3") is True
    await asyncio.wait_for(submit, 10)
    assert inner.received == ["t0", "t1", "t2", "t4"]
    await recorder.wait(uids)
    assert recorder.final("t3") is TaskState.CANCELED
    assert all(recorder.final(u) is TaskState.DONE for u in uids if u != "t3")
    await monitor.shutdown()
    assert_clean(monitor, recorder)


@pytest.mark.asyncio
async def test_shutdown_while_a_batch_is_held_cancels_it() -> None:
    inner = CountingNoop()
    backend = ChaosBackend(inner, seed=1, submit_delay=0.2, shutdown_delay=0.0)
    recorder = Recorder()
    backend.register_callback(recorder)
    submit = asyncio.ensure_future(backend.submit_tasks([noop_task("a")]))
    await asyncio.sleep(0)
    await asyncio.wait_for(backend.shutdown(), 10)
    assert recorder.states("a") == [TaskState.CANCELED]
    await asyncio.wait_for(submit, 10)  # returns: the batch was accepted
    assert inner.received == []
    assert recorder.states("a") == [TaskState.CANCELED]


# -- worker loss ---------------------------------------------------------------


@pytest.mark.asyncio
async def test_worker_loss_fails_tasks_with_worker_lost_error() -> None:
    inner = LocalExecutionBackend(ThreadPoolExecutor(4))
    spy = InnerSpy(inner)
    backend = ChaosBackend(inner, seed=9, worker_loss=0.5)
    monitor, recorder = watched(backend)
    uids = [f"w{i}" for i in range(40)]
    tasks = [fn_task(u, abs, -i) for i, u in enumerate(uids)]
    # Two blocked tasks: seed 9 loses the worker of "blocked0", not of "blocked2".
    assert backend.decisions("blocked0").worker_lost
    assert not backend.decisions("blocked2").worker_lost
    started = {u: threading.Event() for u in ("blocked0", "blocked2")}
    release = threading.Event()
    blocked = [fn_task(u, gated, e, release) for u, e in started.items()]
    await monitor.submit_tasks([*tasks, *blocked])
    await recorder.wait(uids)
    for task in tasks:
        lost = backend.decisions(task["uid"]).worker_lost
        if lost:
            assert recorder.final(task["uid"]) is TaskState.FAILED
            assert isinstance(task["exception"], spec.WorkerLostError)
            assert "seed=9" in str(task["exception"])
        else:
            assert recorder.final(task["uid"]) is TaskState.DONE
    assert {backend.decisions(u).worker_lost for u in uids} == {True, False}
    # A cancel never beats a lost worker; one that wins ends CANCELED.
    # The lost worker's task is cancelled in the inner backend as it starts;
    # if it was caught just as a thread took it (the local backend cannot
    # stop it then), it runs on until released: FAILED either way.
    await spy.wait("blocked0", "RUNNING")
    await wait_set(started["blocked2"])
    assert await monitor.cancel_task("blocked0") is False
    assert await monitor.cancel_task("blocked2") is True
    release.set()
    await recorder.wait(["blocked0", "blocked2"])
    assert recorder.final("blocked0") is TaskState.FAILED
    assert isinstance(blocked[0]["exception"], spec.WorkerLostError)
    assert recorder.final("blocked2") is TaskState.CANCELED
    await monitor.shutdown()
    assert_clean(monitor, recorder)


# -- callbacks ----------------------------------------------------------------


@pytest.mark.asyncio
@pytest.mark.parametrize("error", [RuntimeError, asyncio.CancelledError])
async def test_a_raising_callback_loses_no_task(error: type[BaseException]) -> None:
    backend = ChaosBackend(NoopExecutionBackend(), seed=6)
    seen: list[str] = []

    def explode(task: dict[str, Any], state: str) -> None:
        seen.append(task["uid"])
        raise error("from the callback")

    backend.register_callback(explode)
    uids = [f"t{i}" for i in range(20)]
    await backend.submit_tasks([noop_task(u) for u in uids])
    await backend.shutdown()
    assert sorted(set(seen)) == sorted(uids)


# -- the conformance suite ------------------------------------------------------


def resource_accounting() -> ChaosBackend:
    inner = LocalExecutionBackend(
        ThreadPoolExecutor(4), cores=2, gpus=["0", "1"], memory=1024
    )
    return ChaosBackend(inner, seed=11)


def process_pool() -> ChaosBackend:
    return ChaosBackend(LocalExecutionBackend(ProcessPoolExecutor(2)), seed=12)


_Outcome = tuple[bool, set[str], dict[str, Outcome], str]
"""What a suite run found: conforms, failed clauses, every outcome, the text."""


def suite_outcome(factory: Callable[[], ChaosBackend]) -> _Outcome:
    """Run the suite on ``factory`` (in a worker process)."""
    report = run(factory)
    outcomes = {clause_id: report.outcome(clause_id) for clause_id in spec.CLAUSES}
    return report.ok, set(report.failed), outcomes, report.to_text()


def chaos_with_seed(seed: int) -> ChaosBackend:
    return ChaosBackend(seed=seed)


@pytest.fixture(scope="module")
def suite_runs() -> Iterator[dict[object, Future[_Outcome]]]:
    """The suite on every seed and inner configuration, four at a time.

    A run spends most of its time waiting (the chaos delays, worker start-up
    in a process pool), so runs in worker processes side by side take a
    fraction of the time of one after another; each is still its own test,
    with its own report.
    """
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(4, mp_context=context) as pool:
        runs: dict[object, Future[_Outcome]] = {
            # The longest first, so it overlaps the rest.
            "process-pool": pool.submit(suite_outcome, process_pool),
            "resources": pool.submit(suite_outcome, resource_accounting),
        }
        for seed in SEEDS:
            runs[seed] = pool.submit(
                suite_outcome, functools.partial(chaos_with_seed, seed)
            )
        yield runs


@pytest.mark.timeout(300)
@pytest.mark.parametrize(
    ("name", "kept"),
    [("resources", ["RQ-1", "RQ-5"]), ("process-pool", ["RS-12", "CN-8"])],
)
def test_conforms_keeping_the_inner_capabilities(
    name: str, kept: list[str], suite_runs: dict[object, Future[_Outcome]]
) -> None:
    ok, failed, outcomes, text = suite_runs[name].result(timeout=280)
    assert ok, text
    # The clauses of the inner backend's extra capabilities still pass.
    for clause_id in kept:
        assert outcomes[clause_id] is Outcome.PASS, text
    assert failed <= {"SC-3"}, text


@pytest.mark.timeout(300)
@pytest.mark.parametrize("seed", SEEDS)
def test_conforms_for_seed(
    seed: int, suite_runs: dict[object, Future[_Outcome]]
) -> None:
    ok, failed, _, text = suite_runs[seed].result(timeout=280)
    assert ok, text
    # SHOULD clauses too, but for SC-3: a loop-stall bound in milliseconds,
    # which the local backend misses as well on a machine loaded enough.
    assert failed <= {"SC-3"}, text


# -- the policy alone: pure, no loop or backend ------------------------------------


def policy(**given: Any) -> Any:
    from reference.chaos._policy import ChaosPolicy

    options: dict[str, Any] = {
        "max_delay": 0.01,
        "omit_running": 0.3,
        "late_running": 0.3,
        "lose_cancel": 0.5,
        "cancel_wait": 0.005,
        "shutdown_delay": 0.01,
        "submit_delay": 0.002,
        "worker_loss": 0.0,
    }
    options.update(given)
    return ChaosPolicy.check(given.pop("seed", 7), **options)


def test_policy_draws_per_uid_whatever_came_before() -> None:
    one, other = policy(), policy()
    first = [one.decisions(f"t{i}") for i in range(50)]
    second = [other.decisions(f"t{i}") for i in reversed(range(50))]
    assert first == list(reversed(second))
    assert {d.running for d in first} == set(RunningPolicy)
    assert all(0 <= d.terminal_delay < 0.01 for d in first)


def test_policy_shares_at_the_edges() -> None:
    never = policy(omit_running=0.0, late_running=0.0, lose_cancel=0.0)
    always = policy(omit_running=1.0, late_running=0.0, worker_loss=1.0)
    for uid in map(str, range(30)):
        assert never.decisions(uid).running is RunningPolicy.ON_TIME
        assert not never.decisions(uid).loses_cancel_race
        assert always.decisions(uid).running is RunningPolicy.OMITTED
        assert always.decisions(uid).worker_lost


def test_policy_pauses_within_their_bounds() -> None:
    found = policy(shutdown_delay=2.0, submit_delay=1.0)
    assert 1.0 <= found.shutdown_pause() <= 2.0
    assert 0.0 <= found.submit_pause("a") < 1.0
    assert found.submit_pause("a") == policy(submit_delay=1.0).submit_pause("a")


def test_late_running_goes_out_only_for_a_task_that_ran() -> None:
    from reference.chaos._policy import sends_late_running

    late = policy(omit_running=0.0, late_running=1.0).decisions("x")
    assert sends_late_running(late, False, TaskState.DONE)
    assert sends_late_running(late, True, TaskState.CANCELED)
    assert not sends_late_running(late, False, TaskState.CANCELED)
    assert not sends_late_running(late, False, TaskState.FAILED)
    on_time = policy(omit_running=0.0, late_running=0.0).decisions("x")
    assert not sends_late_running(on_time, True, TaskState.DONE)
