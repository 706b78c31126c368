"""Resource requests on the Dask backend (capability ``resources``, RQ-1..RQ-5).

The backend owns its cluster here: one worker with ``cores`` threads that
declares ``CPU``, ``GPU`` and ``MEMORY`` resources. Overlap is judged from
the timestamps tasks write, never from the order of callbacks.
"""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path
from typing import Any

import pytest
from _dask_helpers import Recorder, add, async_span, block, peak_overlap, span

from spec import (
    Capability,
    CapabilityNotSupportedError,
    ResourceCapacity,
    ResourceUnavailableError,
    TaskState,
)

pytest.importorskip("distributed")
from reference.dask import DaskExecutionBackend

pytestmark = pytest.mark.asyncio


async def _started(path: Path, limit: float = 60.0) -> None:
    async def exists() -> None:
        while not path.exists():
            await asyncio.sleep(0.02)

    await asyncio.wait_for(exists(), limit)


def _shell(uid: str, body: str, **request: Any) -> dict[str, Any]:
    return {
        "uid": uid,
        "executable": body,
        "task_backend_specific_kwargs": {"shell": True, **request},
    }


async def test_running_requests_never_exceed_the_cores(tmp_path: Path) -> None:
    # 8 executables asking for 1 of 2 cores, 4 functions asking for 2, and
    # 20 functions without a request (one core each, chunked): the cores
    # held at once, from the timestamps each task wrote, never exceed 2.
    backend = DaskExecutionBackend(cores=2, gpus=[], memory=None)
    assert Capability.RESOURCES in backend.capabilities
    assert backend.capacity == ResourceCapacity(2, (), None)
    recorder = Recorder()
    backend.register_callback(recorder)
    tasks: list[dict[str, Any]] = []
    cores: dict[str, int] = {}
    for i in range(8):
        uid = f"e{i}"
        out = tmp_path / uid
        body = f's=$(date +%s.%N); sleep 0.5; echo "$s $(date +%s.%N)" > "{out}"'
        tasks.append(_shell(uid, body, cores_per_rank=1))
        cores[uid] = 1
    for i in range(4):
        uid = f"big{i}"
        tasks.append(
            {
                "uid": uid,
                "function": span,
                "args": (str(tmp_path / uid), 0.2),
                "task_backend_specific_kwargs": {"cores_per_rank": 2},
            }
        )
        cores[uid] = 2
    for i in range(20):
        uid = f"f{i}"
        tasks.append(
            {"uid": uid, "function": span, "args": (str(tmp_path / uid), 0.05)}
        )
        cores[uid] = 1
    try:
        await backend.submit_tasks(tasks)
        await recorder.wait(*cores, timeout=120)
    finally:
        await asyncio.wait_for(backend.shutdown(), 60)
    assert all(recorder.states[u] == [TaskState.DONE] for u in cores), recorder.states
    spans = []
    for uid, n in cores.items():
        start, end = (float(x) for x in (tmp_path / uid).read_text().split())
        spans.append((start, end, n))
    assert peak_overlap(spans) <= 2, sorted(spans)
    # The executables did share the two cores (else the check proves little).
    execs = [s for u, s in zip(cores, spans, strict=True) if u.startswith("e")]
    assert peak_overlap(execs) == 2, sorted(execs)


async def test_an_unsatisfiable_request_fails_at_once(tmp_path: Path) -> None:
    # While a task holds every core, requests that can never fit fail at
    # once (never pending in Dask's scheduler), and the ones that fit wait.
    backend = DaskExecutionBackend(cores=2, gpus=["g0"], memory=100)
    recorder = Recorder()
    order: list[tuple[str, TaskState]] = []

    def record(task: dict[str, Any], state: TaskState) -> None:
        order.append((task["uid"], state))
        recorder(task, state)

    backend.register_callback(record)
    started, release = tmp_path / "started", tmp_path / "release"
    blocker = {
        "uid": "blocker",
        "function": block,
        "args": (str(started), str(release), 300),
        "task_backend_specific_kwargs": {"cores_per_rank": 2},
    }
    never: list[dict[str, Any]] = [
        {
            "uid": "cores",
            "function": add,
            "args": (1,),
            "task_backend_specific_kwargs": {"cores_per_rank": 3},
        },
        {
            "uid": "ranks",
            "function": add,
            "args": (1,),
            "task_backend_specific_kwargs": {"ranks": 3},
        },
        {
            "uid": "memory",
            "function": add,
            "args": (1,),
            "task_backend_specific_kwargs": {"mem_per_rank": 101},
        },
        _shell("gpus", "true", gpus_per_rank=1.5),
    ]
    try:
        await backend.submit_tasks([blocker])
        await _started(started)
        await backend.submit_tasks(never)
        # The blocker holds both cores until released: released once the
        # unsatisfiable tasks are reported, or after 60 s, so that a backend
        # leaving them pending until cores free up fails below, not by hanging.
        with contextlib.suppress(asyncio.TimeoutError):
            await recorder.wait(*(t["uid"] for t in never), timeout=60)
        release.touch()
        await recorder.wait("blocker", *(t["uid"] for t in never), timeout=120)
    finally:
        release.touch()
        await asyncio.wait_for(backend.shutdown(), 60)
    assert recorder.states["blocker"] == [TaskState.DONE]
    for task in never:
        assert recorder.states[task["uid"]] == [TaskState.FAILED], task["uid"]
    for task in (never[0], never[2], never[3]):
        error = task["exception"]
        assert isinstance(error, ResourceUnavailableError), repr(error)
        assert task["uid"] in str(error)
    # ranks > 1 of a function: not supported here, said so at once.
    assert isinstance(never[1]["exception"], CapabilityNotSupportedError)
    # At once: each reported while the blocker still held every core (RQ-2).
    blocker_done = order.index(("blocker", TaskState.DONE))
    for task in never:
        assert order.index((task["uid"], TaskState.FAILED)) < blocker_done, order


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("ranks", 0),
        ("ranks", True),
        ("cores_per_rank", "2"),
        ("cores_per_rank", 1.5),
        ("gpus_per_rank", float("nan")),
        ("gpus_per_rank", -1),
        ("mem_per_rank", None),
        ("mem_per_rank", -1),
    ],
)
async def test_a_malformed_request_fails_naming_key_and_value(
    key: str, value: Any
) -> None:
    backend = DaskExecutionBackend(cores=1)
    recorder = Recorder()
    backend.register_callback(recorder)
    tasks: list[dict[str, Any]] = [
        {
            "uid": "fn",
            "function": add,
            "args": (1,),
            "task_backend_specific_kwargs": {key: value},
        },
        _shell("ex", "true", **{key: value}),
        {"uid": "fine", "function": add, "args": (1, 2)},
    ]
    try:
        await backend.submit_tasks(tasks)
        await recorder.wait("fn", "ex", "fine")
    finally:
        await asyncio.wait_for(backend.shutdown(), 60)
    assert recorder.states == {
        "fn": [TaskState.FAILED],
        "ex": [TaskState.FAILED],
        "fine": [TaskState.DONE],
    }
    for task in tasks[:2]:
        message = str(task["exception"])
        assert key in message and repr(value) in message, message


async def test_executables_see_only_their_own_gpus(tmp_path: Path) -> None:
    # 6 executables asking for one GPU (two of them half a GPU, rounded up
    # to a whole one) on 2 made-up ids: each sees exactly one id, and no two
    # running at once see the same one.
    backend = DaskExecutionBackend(cores=4, gpus=["7", "9"])
    recorder = Recorder()
    backend.register_callback(recorder)
    tasks = []
    for i in range(6):
        out = tmp_path / f"g{i}"
        body = (
            f"s=$(date +%s.%N); sleep 0.2; "
            f'echo "$s $(date +%s.%N) ${{CUDA_VISIBLE_DEVICES-unset}}" > "{out}"'
        )
        tasks.append(_shell(f"g{i}", body, gpus_per_rank=0.5 if i < 2 else 1))
    gpu_function = {
        "uid": "fn",
        "function": add,
        "args": (1,),
        "task_backend_specific_kwargs": {"gpus_per_rank": 1},
    }
    try:
        await backend.submit_tasks([*tasks, gpu_function])
        await recorder.wait("fn", *(t["uid"] for t in tasks), timeout=120)
    finally:
        await asyncio.wait_for(backend.shutdown(), 60)
    assert recorder.states["fn"] == [TaskState.FAILED]
    assert isinstance(gpu_function["exception"], CapabilityNotSupportedError)
    spans = {}
    for task in tasks:
        assert recorder.states[task["uid"]] == [TaskState.DONE], task.get("stderr")
        start, end, seen = (tmp_path / task["uid"]).read_text().split()
        assert seen in ("7", "9"), seen
        spans[task["uid"]] = (float(start), float(end), seen)
    for uid, (start, _end, seen) in spans.items():
        for other, (s, e, theirs) in spans.items():
            if other != uid and s <= start < e:
                assert theirs != seen, (uid, other, spans)
    # Each id was held by one task at a time.
    for device in ("7", "9"):
        held = [(s, e, 1) for s, e, d in spans.values() if d == device]
        assert peak_overlap(held) == 1


async def test_a_task_waiting_for_resources_can_be_canceled(tmp_path: Path) -> None:
    backend = DaskExecutionBackend(cores=2)
    recorder = Recorder()
    backend.register_callback(recorder)
    started, release = tmp_path / "started", tmp_path / "release"
    marker = tmp_path / "ran"
    tasks: list[dict[str, Any]] = [
        {
            "uid": "blocker",
            "function": block,
            "args": (str(started), str(release), 60),
            "task_backend_specific_kwargs": {"cores_per_rank": 2},
        },
        {
            "uid": "waiting",
            "function": span,
            "args": (str(marker), 0.0),
            "task_backend_specific_kwargs": {"cores_per_rank": 1},
        },
        _shell("waiting-exe", f'touch "{marker}.exe"'),
        {"uid": "after", "function": add, "args": (1, 2)},
    ]
    try:
        await backend.submit_tasks(tasks)
        await _started(started)
        assert await backend.cancel_task("waiting") is True
        assert await backend.cancel_task("waiting-exe") is True
        assert recorder.states["waiting"] == [TaskState.CANCELED]
        assert recorder.states["waiting-exe"] == [TaskState.CANCELED]
        release.touch()
        await recorder.wait("blocker", "after")
        # A later task asking for both cores runs after the canceled ones
        # were skipped: nothing they held is leaked.
        await backend.submit_tasks(
            [
                {
                    "uid": "later",
                    "function": add,
                    "args": (2, 2),
                    "task_backend_specific_kwargs": {"cores_per_rank": 2},
                }
            ]
        )
        await recorder.wait("later")
    finally:
        await asyncio.wait_for(backend.shutdown(), 60)
    assert recorder.states["blocker"] == [TaskState.DONE]
    assert recorder.states["after"] == [TaskState.DONE]
    assert recorder.states["later"] == [TaskState.DONE]
    assert recorder.states["waiting"] == [TaskState.CANCELED]
    assert not marker.exists() and not Path(f"{marker}.exe").exists()


async def test_shutdown_with_tasks_waiting_for_resources(tmp_path: Path) -> None:
    psutil = pytest.importorskip("psutil")
    backend = DaskExecutionBackend(cores=2)
    recorder = Recorder()
    backend.register_callback(recorder)
    started = tmp_path / "started"
    tasks: list[dict[str, Any]] = [
        _shell("holder", f'touch "{started}"; sleep 60', cores_per_rank=2),
        *(
            {
                "uid": f"w{i}",
                "function": span,
                "args": (str(tmp_path / f"w{i}"), 0.0),
                "task_backend_specific_kwargs": {"cores_per_rank": 1 + i % 2},
            }
            for i in range(10)
        ),
        *(_shell(f"x{i}", f'touch "{tmp_path}/x{i}"') for i in range(3)),
    ]
    before = {p.pid for p in psutil.Process().children(recursive=True)}
    try:
        await backend.submit_tasks(tasks)
        await _started(started)
    finally:
        await asyncio.wait_for(backend.shutdown(), 60)
    recorder.closed = True
    uids = [t["uid"] for t in tasks]
    assert {u: recorder.states.get(u) for u in uids} == {
        u: [TaskState.CANCELED] for u in uids
    }
    assert not any((tmp_path / u).exists() for u in uids if u != "holder")
    left = {p.pid for p in psutil.Process().children(recursive=True)} - before
    assert not [
        p
        for p in left
        if psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE
    ]


async def test_resource_options_are_checked() -> None:
    for kwargs, error in [
        ({"cores": 0}, ValueError),
        ({"cores": "2"}, TypeError),
        ({"cores": True}, TypeError),
        ({"gpus": "0,1"}, TypeError),
        ({"gpus": ["0", "0"]}, ValueError),
        ({"gpus": [0]}, TypeError),
        ({"memory": -1}, ValueError),
        ({"memory": 1.5}, TypeError),
        ({"cores": 2, "address": "tcp://127.0.0.1:1"}, ValueError),
        ({"resources": True, "n_workers": 2}, ValueError),
        ({"cores": 2, "threads_per_worker": 4}, ValueError),
    ]:
        with pytest.raises(error) as caught:
            DaskExecutionBackend(**kwargs)
        named = next(iter(k for k in kwargs if k != "address"))
        assert named in str(caught.value) or "resource" in str(caught.value), (
            kwargs,
            caught.value,
        )


async def test_without_accounting_requests_are_ignored(address: str) -> None:
    backend = DaskExecutionBackend(address=address)
    assert Capability.RESOURCES not in backend.capabilities
    with pytest.raises(AttributeError, match="resources=True"):
        backend.capacity  # noqa: B018
    recorder = Recorder()
    backend.register_callback(recorder)
    task = {
        "uid": "big",
        "function": add,
        "args": (1, 2),
        "task_backend_specific_kwargs": {"cores_per_rank": 64, "gpus_per_rank": 8},
    }
    try:
        await backend.submit_tasks([task])
        await recorder.wait("big")
    finally:
        await asyncio.wait_for(backend.shutdown(), 60)
    assert recorder.states["big"] == [TaskState.DONE]
    assert task["return_value"] == 3


async def test_async_functions_in_one_chunk_hold_one_core_each(tmp_path: Path) -> None:
    # A chunk holds one core; its async def tasks, one core each, must not
    # run concurrently on the worker thread's loop (they would without
    # accounting, where a chunk's coroutines are gathered).
    backend = DaskExecutionBackend(cores=1, chunk_size=6)
    recorder = Recorder()
    backend.register_callback(recorder)
    uids = [f"a{i}" for i in range(6)]
    tasks = [
        {"uid": u, "function": async_span, "args": (str(tmp_path / u), 0.1)}
        for u in uids
    ]
    try:
        await backend.submit_tasks(tasks)
        await recorder.wait(*uids)
    finally:
        await asyncio.wait_for(backend.shutdown(), 60)
    assert all(recorder.states[u] == [TaskState.DONE] for u in uids)
    spans = []
    for u in uids:
        start, end = (float(x) for x in (tmp_path / u).read_text().split())
        spans.append((start, end, 1))
    assert peak_overlap(spans) == 1, sorted(spans)
