"""Resource accounting in the local backend (contract 1.1, RQ-1..RQ-5)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from _ref_helpers import Recorder

from reference import LocalExecutionBackend
from reference._resources import Grant, ResourcePool, capacity_from
from spec import (
    Capability,
    CapabilityNotSupportedError,
    ResourceCapacity,
    ResourceDemand,
    ResourceUnavailableError,
    TaskState,
    capabilities_of,
    resource_demand,
)

pytestmark = pytest.mark.timeout(60)


# -- the request --------------------------------------------------------------


def test_a_task_without_a_request_asks_for_one_core() -> None:
    assert resource_demand(None) == ResourceDemand(1, 1, 0.0, 0)
    assert resource_demand({"shell": False}) == ResourceDemand(1, 1, 0.0, 0)


def test_totals_multiply_by_ranks() -> None:
    demand = resource_demand(
        {"ranks": 3, "cores_per_rank": 2, "gpus_per_rank": 0.5, "mem_per_rank": 10}
    )
    assert demand == ResourceDemand(3, 6, 1.5, 30)
    assert demand.whole_gpus == 2


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("ranks", 0),
        ("ranks", True),
        ("ranks", 2.0),
        ("cores_per_rank", -1),
        ("cores_per_rank", "1"),
        ("gpus_per_rank", float("inf")),
        ("gpus_per_rank", -1),
        ("gpus_per_rank", [1]),
        ("mem_per_rank", -5),
        ("mem_per_rank", 1.5),
    ],
)
def test_a_malformed_request_names_key_and_value(key: str, value: object) -> None:
    with pytest.raises(ValueError, match=key) as caught:
        resource_demand({key: value})
    assert str(value) in str(caught.value)


# -- the capacity ----------------------------------------------------------------


def test_capacity_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3, 5")
    capacity = capacity_from(None, None, None)
    assert capacity.gpus == ("3", "5")
    assert capacity.cores >= 1 and capacity.memory is None
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES")
    assert capacity_from(2, None, 100) == ResourceCapacity(2, (), 100)


@pytest.mark.parametrize(
    ("options", "error"),
    [
        ({"cores": 0}, ValueError),
        ({"cores": 1.5}, TypeError),
        ({"gpus": "01"}, TypeError),
        ({"gpus": ["0", "0"]}, ValueError),
        ({"gpus": [0, 1]}, TypeError),
        ({"memory": -1}, ValueError),
        ({"mpi_launcher": "mpiexec"}, TypeError),
        ({"mpi_launcher": []}, TypeError),
    ],
)
def test_bad_constructor_options_are_refused(
    options: dict[str, Any], error: type[Exception]
) -> None:
    with pytest.raises(error):
        LocalExecutionBackend(**options)


def test_the_capability_follows_the_option() -> None:
    off = LocalExecutionBackend()
    on = LocalExecutionBackend(resources=True)
    assert Capability.RESOURCES not in capabilities_of(off)
    assert Capability.RESOURCES in capabilities_of(on)
    assert Capability.RESOURCES not in LocalExecutionBackend.capabilities
    with pytest.raises(AttributeError, match="resources=True"):
        _ = off.capacity
    for backend in (off, on):
        backend.executor.shutdown()


# -- the pool ------------------------------------------------------------------


def test_the_pool_admits_in_arrival_order_only() -> None:
    pool: ResourcePool[str] = ResourcePool(ResourceCapacity(2, ("a", "b")))
    pool.enqueue("one", ResourceDemand(cores=1))
    pool.enqueue("big", ResourceDemand(cores=2, gpus=1.0))
    pool.enqueue("small", ResourceDemand(cores=1))
    first = pool.admit(skip=lambda job: False)
    assert [job for job, _ in first] == ["one"]  # big waits; small may not pass it
    pool.release(first[0][1])
    second = pool.admit(skip=lambda job: False)
    assert second == [("big", Grant(2, ("a",), 0))]
    assert pool.admit(skip=lambda job: False) == []
    pool.release(second[0][1])
    assert pool.admit(skip=lambda job: False) == [("small", Grant(1, (), 0))]


def test_skipped_jobs_leave_the_queue_holding_nothing() -> None:
    pool: ResourcePool[str] = ResourcePool(ResourceCapacity(1))
    pool.enqueue("canceled", ResourceDemand(cores=1))
    pool.enqueue("next", ResourceDemand(cores=1))
    assert pool.admit(skip=lambda job: job == "canceled") == [("next", Grant(1, (), 0))]
    assert len(pool) == 0


# -- the backend ---------------------------------------------------------------


def _span(tmp: Path, uid: str, seconds: float, **request: Any) -> dict[str, Any]:
    body = (
        f"start=$(date +%s.%N); sleep {seconds}; "
        f'echo "$start $(date +%s.%N) ${{CUDA_VISIBLE_DEVICES-unset}}" > {tmp / uid}'
    )
    return {
        "uid": uid,
        "executable": "/bin/sh",
        "arguments": ["-c", body],
        "task_backend_specific_kwargs": {"shell": False, **request},
    }


def _peak(tmp: Path, uids: list[str]) -> int:
    spans = [tuple(map(float, (tmp / u).read_text().split()[:2])) for u in uids]
    return max(sum(1 for b, e in spans if b <= start < e) for start, _ in spans)


@pytest.mark.asyncio
async def test_executables_never_oversubscribe_and_gpus_are_exclusive(
    tmp_path: Path, recorder: Recorder
) -> None:
    backend = LocalExecutionBackend(cores=2, gpus=["7", "9"], shutdown_timeout=5)
    backend.register_callback(recorder)
    try:
        tasks = [_span(tmp_path, f"g{i}", 0.2, gpus_per_rank=1) for i in range(6)]
        await backend.submit_tasks(tasks)
        await recorder.wait([t["uid"] for t in tasks])
    finally:
        await asyncio.wait_for(backend.shutdown(), 15)
    assert [recorder.final(t["uid"]) for t in tasks] == [TaskState.DONE] * 6
    assert _peak(tmp_path, [t["uid"] for t in tasks]) <= 2
    seen = [(tmp_path / t["uid"]).read_text().split()[2] for t in tasks]
    assert set(seen) == {"7", "9"}


@pytest.mark.asyncio
async def test_requests_that_can_never_run_fail_at_once(recorder: Recorder) -> None:
    backend = LocalExecutionBackend(cores=2, gpus=[], memory=100, shutdown_timeout=5)
    backend.register_callback(recorder)
    tasks = [
        {"uid": "cores", "executable": "true",
         "task_backend_specific_kwargs": {"cores_per_rank": 3}},
        {"uid": "gpu", "executable": "true",
         "task_backend_specific_kwargs": {"gpus_per_rank": 0.5}},
        {"uid": "mem", "executable": "true",
         "task_backend_specific_kwargs": {"mem_per_rank": 101}},
        {"uid": "ranks", "executable": "true",
         "task_backend_specific_kwargs": {"ranks": 2}},
        {"uid": "fn-gpu", "function": print,
         "task_backend_specific_kwargs": {"gpus_per_rank": 1}},
        {"uid": "fits", "executable": "true",
         "task_backend_specific_kwargs": {"cores_per_rank": 2, "mem_per_rank": 100}},
    ]  # fmt: skip
    try:
        await backend.submit_tasks(tasks)
        await recorder.wait([t["uid"] for t in tasks], timeout=10)
    finally:
        await asyncio.wait_for(backend.shutdown(), 15)
    errors = {t["uid"]: type(t.get("exception")) for t in tasks}
    assert errors == {
        "cores": ResourceUnavailableError,
        "gpu": ResourceUnavailableError,
        "mem": ResourceUnavailableError,
        "ranks": CapabilityNotSupportedError,  # no mpi_launcher
        "fn-gpu": CapabilityNotSupportedError,
        "fits": type(None),
    }
    assert recorder.final("fits") is TaskState.DONE


@pytest.mark.asyncio
async def test_ranks_run_through_the_launcher(
    tmp_path: Path, recorder: Recorder
) -> None:
    launcher = tmp_path / "launch.sh"
    launcher.write_text('#!/bin/sh\nn=$2; shift 2; echo "ranks=$n"; exec "$@"\n')
    launcher.chmod(0o755)
    backend = LocalExecutionBackend(
        cores=4,
        bind=False,  # 4 counted cores, whatever this machine has
        mpi_launcher=[str(launcher), "-n", "{ranks}"],
        shutdown_timeout=5,
    )
    backend.register_callback(recorder)
    task = {
        "uid": "mpi",
        "executable": "echo",
        "arguments": ["hello"],
        "task_backend_specific_kwargs": {"ranks": 3},
    }
    try:
        await backend.submit_tasks([task])
        await recorder.wait(["mpi"], timeout=10)
    finally:
        await asyncio.wait_for(backend.shutdown(), 15)
    assert recorder.final("mpi") is TaskState.DONE, task.get("exception")
    assert task["stdout"] == "ranks=3\nhello\n"


@pytest.mark.asyncio
async def test_a_canceled_waiting_task_never_runs_nor_holds_resources(
    tmp_path: Path, recorder: Recorder
) -> None:
    backend = LocalExecutionBackend(cores=1, shutdown_timeout=5)
    backend.register_callback(recorder)
    release = tmp_path / "release"
    hold = {
        "uid": "hold",
        "executable": "/bin/sh",
        "arguments": ["-c", f"while [ ! -e {release} ]; do sleep 0.02; done"],
        "task_backend_specific_kwargs": {"shell": False},
    }
    waiting = _span(tmp_path, "waiting", 0.01)
    after = _span(tmp_path, "after", 0.01)
    try:
        await backend.submit_tasks([hold, waiting, after])
        await recorder.wait(["hold"], TaskState.RUNNING)
        assert await backend.cancel_task("waiting") is True
        await recorder.wait(["waiting"])
        release.touch()
        await recorder.wait(["hold", "after"])
    finally:
        await asyncio.wait_for(backend.shutdown(), 15)
    assert recorder.final("waiting") is TaskState.CANCELED
    assert not (tmp_path / "waiting").exists()
    assert recorder.final("after") is TaskState.DONE
