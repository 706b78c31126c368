"""Resource requests too large to count (issue 20, item 1; RQ-3, SB-9, ST-2).

``10**400`` or ``1e308`` over two ranks overflowed a float inside
`spec.resource_demand`, and the `OverflowError` escaped the local dispatcher:
the bad task and every bystander of its dispatch chunk got no state until
shutdown. Such a request is malformed: that task alone is FAILED with a
`ValueError` naming the key and the value.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from _ref_helpers import Recorder

from reference import LocalExecutionBackend
from spec import TaskState, resource_demand

pytestmark = pytest.mark.timeout(60)

HUGE = [
    ({"gpus_per_rank": 10**400}, "gpus_per_rank", str(10**400)),
    ({"ranks": 10**400}, "ranks", str(10**400)),
    ({"cores_per_rank": 10**400}, "cores_per_rank", str(10**400)),
    ({"mem_per_rank": 10**400}, "mem_per_rank", str(10**400)),
    ({"ranks": 2, "gpus_per_rank": 1e308}, "gpus_per_rank", "1e+308"),
    ({"ranks": 10**300, "cores_per_rank": 10**10}, "cores_per_rank", str(10**10)),
    ({"gpus_per_rank": 2**1024 - 1}, "gpus_per_rank", str(2**1024 - 1)),
    # Past Python's 4,300-digit int-to-str limit: still named, not a bare error.
    ({"ranks": -(10**5000)}, "ranks", "bits"),
]


@pytest.mark.parametrize(("request_", "key", "shown"), HUGE)
def test_a_request_too_large_to_count_names_key_and_value(
    request_: dict[str, Any], key: str, shown: str
) -> None:
    with pytest.raises(ValueError, match=repr(key)) as caught:
        resource_demand(request_)
    assert shown in str(caught.value)


def test_large_but_countable_requests_still_count() -> None:
    demand = resource_demand({"ranks": 2, "gpus_per_rank": 1e300, "cores_per_rank": 3})
    assert (demand.ranks, demand.cores, demand.gpus) == (2, 6, 2e300)


@pytest.mark.asyncio
async def test_only_the_overflowing_task_fails_and_bystanders_run(
    recorder: Recorder,
) -> None:
    # Before the fix: no state at all for any of them until shutdown, which
    # then reported all CANCELED.
    backend = LocalExecutionBackend(cores=2, gpus=["0"], shutdown_timeout=5)
    backend.register_callback(recorder)
    bad = [
        {"uid": f"bad{i}", "executable": "true", "task_backend_specific_kwargs": req}
        for i, (req, _, _) in enumerate(HUGE)
    ]
    fine = [
        {"uid": "fn", "function": divmod, "args": (7, 2)},
        {"uid": "ex", "executable": "true"},
    ]
    try:
        await backend.submit_tasks([bad[0], *fine, *bad[1:]])
        await recorder.wait([t["uid"] for t in bad + fine], timeout=20)
    finally:
        await asyncio.wait_for(backend.shutdown(), 15)
    for task, (_, key, _) in zip(bad, HUGE, strict=True):
        assert recorder.states(task["uid"]) == [TaskState.FAILED], task["uid"]
        assert isinstance(task["exception"], ValueError), repr(task["exception"])
        assert repr(key) in str(task["exception"])
    assert recorder.final("fn") is TaskState.DONE and fine[0]["return_value"] == (3, 1)
    assert recorder.final("ex") is TaskState.DONE


class _Hostile(dict):  # type: ignore[type-arg]
    """Options whose every read raises: a bug's stand-in in the request path."""

    def get(self, key: Any, default: Any = None) -> Any:
        raise RuntimeError(f"cannot read {key!r}")


@pytest.mark.asyncio
async def test_an_unexpected_error_reading_a_request_fails_only_that_task(
    recorder: Recorder,
) -> None:
    backend = LocalExecutionBackend(cores=2, shutdown_timeout=5)
    backend.register_callback(recorder)
    hostile = {
        "uid": "hostile",
        "executable": "true",
        "task_backend_specific_kwargs": _Hostile(ranks=1),
    }
    fine = [{"uid": "ex", "executable": "true"}, {"uid": "fn", "function": abs}]
    fine[1]["args"] = (-2,)
    try:
        await backend.submit_tasks([hostile, *fine])
        await recorder.wait(["hostile", "ex", "fn"], timeout=20)
    finally:
        await asyncio.wait_for(backend.shutdown(), 15)
    assert recorder.states("hostile") == [TaskState.FAILED]
    assert isinstance(hostile["exception"], RuntimeError)
    assert recorder.final("ex") is TaskState.DONE
    assert recorder.final("fn") is TaskState.DONE and fine[1]["return_value"] == 2
