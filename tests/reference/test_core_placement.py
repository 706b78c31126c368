"""Pure admission decisions: resource requests, the pool, and placement.

`reference.local.placement` and `reference._resources.ResourcePool`, fed
values directly: no threads, no processes, no event loop.
"""

from __future__ import annotations

import math
from typing import Any

import pytest

from reference._executables import ExecOptions, parse_options
from reference._resources import Grant, ResourcePool
from reference.local.placement import ONE_CORE, place, read_request
from spec import (
    CapabilityNotSupportedError,
    ResourceCapacity,
    ResourceDemand,
    ResourceUnavailableError,
)

_POOL: ResourcePool[Any] = ResourcePool(ResourceCapacity(4, ("0", "1"), 1000))


def _read(kwargs: Any, *, function: bool = False, launcher: Any = None) -> Any:
    task = {"uid": "t", "task_backend_specific_kwargs": kwargs}
    return read_request(task, is_function=function, launcher=launcher, pool=_POOL)


@pytest.mark.parametrize("kwargs", [None, {}, {"shell": False, "timeout": 3}])
def test_no_request_is_one_core(kwargs: Any) -> None:
    assert _read(kwargs) is ONE_CORE


def test_a_request_becomes_its_demand() -> None:
    demand = _read({"ranks": 2, "cores_per_rank": 2}, launcher=["mpiexec"])
    assert isinstance(demand, ResourceDemand)
    assert (demand.ranks, demand.cores) == (2, 4)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"ranks": 0},
        {"ranks": "2"},
        {"cores_per_rank": -1},
        {"mem_per_rank": math.nan},
        {"gpus_per_rank": math.inf},
    ],
)
def test_a_malformed_request_is_a_value_error(kwargs: dict[str, Any]) -> None:
    assert isinstance(_read(kwargs), ValueError)  # RQ-3


def test_ranks_without_a_launcher_are_not_supported() -> None:
    error = _read({"ranks": 2})
    assert isinstance(error, CapabilityNotSupportedError)
    assert "mpi_launcher" in str(error)


def test_a_request_that_can_never_fit_is_unavailable() -> None:
    assert isinstance(_read({"cores_per_rank": 5}), ResourceUnavailableError)
    assert isinstance(_read({"gpus_per_rank": 3}), ResourceUnavailableError)
    assert isinstance(_read({"mem_per_rank": 1001}), ResourceUnavailableError)


def test_a_function_cannot_ask_for_gpus_or_ranks() -> None:
    assert isinstance(_read({"gpus_per_rank": 1}, function=True), Exception)
    assert isinstance(_read({"ranks": 2}, function=True, launcher=["x"]), Exception)
    assert isinstance(_read({"cores_per_rank": 2}, function=True), ResourceDemand)


def _options(**kwargs: Any) -> ExecOptions:
    return parse_options({"uid": "e", "task_backend_specific_kwargs": kwargs})


def test_placement_sets_only_the_granted_gpus() -> None:
    options, command = place(
        Grant(1, ("3", "5"), 0), 1, None, _options(env={"A": "1"}), "run"
    )
    assert options.env == {"A": "1", "CUDA_VISIBLE_DEVICES": "3,5"}
    assert command == "run"
    # Granted none, it sees none (RQ-6), whatever its env listed.
    bare = _options(env={"A": "1", "CUDA_VISIBLE_DEVICES": "0,1"})
    options, _ = place(Grant(1, (), 0), 1, None, bare, "run")
    assert options.env == {"A": "1", "CUDA_VISIBLE_DEVICES": ""}


def test_placement_puts_ranks_behind_the_launcher() -> None:
    launcher = ["mpiexec", "-n", "{ranks}"]
    _, shell = place(Grant(2, (), 0), 2, launcher, _options(), "echo hi")
    assert shell == ["mpiexec", "-n", "2", "/bin/sh", "-c", "echo hi"]
    _, argv = place(Grant(3, (), 0), 3, launcher, _options(), ["prog", "x"])
    assert argv == ["mpiexec", "-n", "3", "prog", "x"]
    assert launcher == ["mpiexec", "-n", "{ranks}"]  # the backend's copy kept


# -- the pool: FIFO, grants, release ------------------------------------------


def _never(job: object) -> bool:
    return False


def test_gpus_are_held_exclusively_and_come_back() -> None:
    pool: ResourcePool[str] = ResourcePool(ResourceCapacity(4, ("a", "b")))
    pool.enqueue_all([("x", ResourceDemand(gpus=1.0)), ("y", ResourceDemand(gpus=1.0))])
    pool.enqueue("z", ResourceDemand(gpus=1.0))
    admitted = pool.admit(_never)
    assert [grant.gpus for _, grant in admitted] == [("a",), ("b",)]
    assert not pool.head_fits()  # z waits for a GPU, though cores are free
    pool.release(admitted[1][1])
    assert pool.admit(_never) == [("z", Grant(1, ("b",), 0))]


def test_memory_is_accounted_when_the_capacity_has_it() -> None:
    pool: ResourcePool[str] = ResourcePool(ResourceCapacity(8, (), 100))
    pool.enqueue("big", ResourceDemand(memory=80))
    pool.enqueue("more", ResourceDemand(memory=30))
    (big,) = pool.admit(_never)
    assert big == ("big", Grant(1, (), 80))
    assert pool.take(_never) is None
    pool.release(big[1])
    assert pool.take(_never) == ("more", Grant(1, (), 30))


def test_a_canceled_head_does_not_block_the_queue() -> None:
    pool: ResourcePool[str] = ResourcePool(ResourceCapacity(1))
    pool.enqueue("held", ResourceDemand())
    (held,) = pool.admit(_never)
    pool.enqueue("canceled", ResourceDemand())
    pool.enqueue("next", ResourceDemand())
    assert not pool.admit(lambda job: job == "canceled")  # nothing free yet
    pool.release(held[1])
    assert pool.admit(lambda job: job == "canceled") == [("next", Grant(1, (), 0))]
    assert len(pool) == 0


def test_plain_grants_are_shared_and_clear_forgets_the_queue() -> None:
    pool: ResourcePool[int] = ResourcePool(ResourceCapacity(3))
    pool.enqueue_all((i, ResourceDemand()) for i in range(5))
    admitted = pool.admit(_never)
    assert [job for job, _ in admitted] == [0, 1, 2]
    assert len({id(grant) for _, grant in admitted}) == 1
    pool.clear()
    for _, grant in admitted:
        pool.release(grant)
    assert pool.admit(_never) == []
    assert pool.free_cores == 3


def test_a_grant_of_cores_alone_passes_to_a_need_of_as_many_cores_alone() -> None:
    # The pullers' default path: a finished job's grant goes straight to the
    # head when the head asks for exactly what it held, nothing else.
    pool: ResourcePool[str] = ResourcePool(
        ResourceCapacity(4, ("g",), 100, core_ids=(0, 1, 2, 3))
    )
    one, two = ResourceDemand(), ResourceDemand(cores=2)
    pool.enqueue_all([("a", one), ("b", two), ("c", ResourceDemand(gpus=1.0))])
    (_, a), (_, b), (_, c) = pool.admit(_never)
    assert a == Grant(1, (), 0, (0,))  # what it holds; its lane is not compared
    assert a.passes_to(pool._need(one))
    assert a.passes_to(pool._need(ResourceDemand(cores=1)))  # equal, not the same
    assert not a.passes_to(pool._need(two))
    assert b.passes_to(pool._need(two))
    assert not a.passes_to(pool._need(ResourceDemand(memory=10)))
    assert not c.passes_to(pool._need(ResourceDemand(gpus=1.0)))  # GPUs come back
    counted: ResourcePool[str] = ResourcePool(ResourceCapacity(2))
    shared = counted._need(one).plain
    assert shared is not None and shared.passes_to(counted._need(one))


def test_a_batch_asking_for_one_demand_queues_as_one_by_one() -> None:
    each: ResourcePool[int] = ResourcePool(ResourceCapacity(2, core_ids=(0, 1)))
    pairs: ResourcePool[int] = ResourcePool(ResourceCapacity(2, core_ids=(0, 1)))
    demand = ResourceDemand()
    each.enqueue_each(range(5), demand)
    pairs.enqueue_all((i, demand) for i in range(5))
    assert list(each.waiting) == list(pairs.waiting)
    assert [job for job, _ in each.admit(_never)] == [0, 1]
