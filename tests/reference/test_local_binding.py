"""Binding in the local backend: capacity from the cpuset, tasks bound, placements.

The conformance suite checks PL-1 to PL-4 on ``with_resources``; these tests
cover what it cannot see from outside: the cpuset a constructor reads, the
process pool and the MPI launcher, a worker given back its affinity, and the
GPUs hidden from a task that has none.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from _ref_helpers import Recorder

from reference import LocalExecutionBackend
from reference._placement import CAN_BIND, HOST
from spec import Capability, TaskState, capabilities_of

pytestmark = [
    pytest.mark.timeout(60),
    pytest.mark.skipif(not CAN_BIND, reason="needs Linux CPU affinity"),
]

USABLE = sorted(os.sched_getaffinity(0)) if CAN_BIND else []


def _affinity() -> list[int]:
    return sorted(os.sched_getaffinity(0))


def _in_a_child(code: str, core: int) -> subprocess.CompletedProcess[str]:
    """Run ``code`` in a new interpreter bound to ``core`` alone (a small cpuset)."""
    prelude = f"import os; os.sched_setaffinity(0, {{{core}}}); "
    return subprocess.run(
        [sys.executable, "-c", prelude + code],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_capacity_is_the_cpuset_not_the_cpu_count() -> None:
    core = USABLE[-1]
    out = _in_a_child(
        "from reference import LocalExecutionBackend as B; "
        "c = B(resources=True).capacity; print(c.cores, list(c.core_ids))",
        core,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == f"1 [{core}]"


@pytest.mark.parametrize(
    ("cores", "words"),
    [
        ("2", "cores=2 but this process may use only 1 core(s)"),
        ("[{other}]", "cores [{other}] are not in this process's CPU affinity"),
    ],
)
def test_cores_outside_the_cpuset_are_refused_at_construction(
    cores: str, words: str
) -> None:
    if len(USABLE) < 2:
        pytest.skip("needs two usable cores")
    core, other = USABLE[0], USABLE[1]
    out = _in_a_child(
        "from reference import LocalExecutionBackend as B\n"
        f"try:\n    B(cores={cores.format(other=other)})\n"
        "except ValueError as exc:\n    print(exc)\n",
        core,
    )
    assert out.returncode == 0, out.stderr
    assert words.format(other=other) in out.stdout


def test_counting_only_may_exceed_the_cpuset() -> None:
    backend = LocalExecutionBackend(cores=len(USABLE) + 3, bind=False)
    assert backend.capacity.cores == len(USABLE) + 3
    assert backend.capacity.core_ids == ()
    assert Capability.PLACEMENT in capabilities_of(backend)  # reported, cores None


def test_explicit_core_ids() -> None:
    backend = LocalExecutionBackend(cores={USABLE[-1]})
    assert backend.capacity.core_ids == (USABLE[-1],)
    assert backend.capacity.cores == 1


async def _run(
    backend: LocalExecutionBackend, recorder: Recorder, tasks: list[dict[str, Any]]
) -> None:
    backend.register_callback(recorder)
    try:
        await backend.submit_tasks(tasks)
        await recorder.wait([t["uid"] for t in tasks], timeout=30)
    finally:
        await asyncio.wait_for(backend.shutdown(), 15)


@pytest.mark.asyncio
async def test_a_process_pool_worker_runs_bound_and_is_given_its_affinity_back(
    recorder: Recorder,
) -> None:
    backend = LocalExecutionBackend(processes=1, cores=[USABLE[-1]])
    tasks = [
        {"uid": f"f{i}", "function": _affinity, "args": [], "kwargs": {}}
        for i in range(3)
    ]
    backend.register_callback(recorder)
    await backend.submit_tasks(tasks)
    await recorder.wait([t["uid"] for t in tasks], timeout=30)
    try:
        procs = backend._procs
        assert procs is not None
        for task in tasks:
            assert task["return_value"] == [USABLE[-1]]
            assert task["placement"] == {
                "host": HOST,
                "cores": (USABLE[-1],),
                "gpus": (),
                "memory": 0,
            }
        (pid,) = procs.pids()
        assert sorted(os.sched_getaffinity(pid)) == USABLE  # idle: unbound
    finally:
        await asyncio.wait_for(backend.shutdown(), 15)


@pytest.mark.asyncio
async def test_mpi_ranks_get_the_union_of_their_cores(
    tmp_path: Path, recorder: Recorder
) -> None:
    if len(USABLE) < 2:
        pytest.skip("needs two usable cores")
    launcher = tmp_path / "launch.sh"
    launcher.write_text(
        "#!/bin/sh\nshift 2\n"
        "grep Cpus_allowed_list: /proc/$$/status | cut -f2\n"
        'exec "$@"\n'
    )
    launcher.chmod(0o755)
    backend = LocalExecutionBackend(
        cores=USABLE[:2], mpi_launcher=[str(launcher), "-n", "{ranks}"]
    )
    rank = "grep Cpus_allowed_list: /proc/$$/status | cut -f2"
    task = {
        "uid": "mpi",
        "executable": rank,
        "task_backend_specific_kwargs": {"ranks": 2},
    }
    await _run(backend, recorder, [task])
    assert recorder.final("mpi") is TaskState.DONE, task.get("exception")
    both = f"{USABLE[0]}-{USABLE[1]}" if USABLE[1] == USABLE[0] + 1 else None
    seen = task["stdout"].split()
    assert len(seen) == 2 and seen[0] == seen[1]  # the launcher and its rank
    if both is not None:
        assert seen[0] == both
    assert task["placement"]["cores"] == tuple(USABLE[:2])


@pytest.mark.asyncio
async def test_a_task_without_gpus_sees_none_of_the_backends(
    recorder: Recorder, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,4")
    backend = LocalExecutionBackend(cores=1)
    assert backend.capacity.gpus == ("3", "4")
    show = 'echo "[${CUDA_VISIBLE_DEVICES-unset}]"'
    tasks = [
        {"uid": "none", "executable": show},
        {
            "uid": "one",
            "executable": show,
            "task_backend_specific_kwargs": {"gpus_per_rank": 1},
        },
    ]
    await _run(backend, recorder, tasks)
    assert [t["stdout"] for t in tasks] == ["[]\n", "[3]\n"]
    assert [t["placement"]["gpus"] for t in tasks] == [(), ("3",)]


@pytest.mark.asyncio
async def test_placement_is_written_for_a_failure_not_for_a_task_never_started(
    recorder: Recorder,
) -> None:
    backend = LocalExecutionBackend(ThreadPoolExecutor(2), cores=1, memory=100)
    started = asyncio.Event()
    loop = asyncio.get_running_loop()

    def hold() -> None:
        loop.call_soon_threadsafe(started.set)
        time.sleep(0.3)

    def boom() -> None:
        raise RuntimeError("boom")

    tasks = [
        {"uid": "hold", "function": hold},
        {
            "uid": "boom",
            "function": boom,
            "task_backend_specific_kwargs": {"mem_per_rank": 7},
        },
        {"uid": "never", "function": hold},
    ]
    backend.register_callback(recorder)
    try:
        await backend.submit_tasks(tasks)
        await asyncio.wait_for(started.wait(), 10)
        assert await backend.cancel_task("never")
        await recorder.wait([t["uid"] for t in tasks], timeout=30)
    finally:
        await asyncio.wait_for(backend.shutdown(), 15)
    assert recorder.final("boom") is TaskState.FAILED
    assert tasks[1]["placement"]["memory"] == 7
    assert recorder.final("never") is TaskState.CANCELED
    assert "placement" not in tasks[2]


@pytest.mark.asyncio
async def test_tasks_that_held_one_grant_share_one_read_only_record(
    recorder: Recorder,
) -> None:
    # One core, one pool thread: each task takes over the grant of the one
    # before, so the record is built once, and a caller cannot rewrite it
    # (that would rewrite every task's).
    backend = LocalExecutionBackend(ThreadPoolExecutor(2), cores=USABLE[:1])
    tasks = [
        {"uid": f"t{i}", "function": _affinity, "args": [], "kwargs": {}}
        for i in range(20)
    ]
    await _run(backend, recorder, tasks)
    assert [t["return_value"] for t in tasks] == [USABLE[:1]] * 20
    assert {id(t["placement"]) for t in tasks} == {id(tasks[0]["placement"])}
    assert tasks[0]["placement"] == {
        "host": HOST,
        "cores": (USABLE[0],),
        "gpus": (),
        "memory": 0,
    }
    with pytest.raises(TypeError, match="read-only"):
        tasks[0]["placement"]["cores"] = (99,)
    mine = dict(tasks[0]["placement"])
    mine["cores"] = (99,)
    assert tasks[1]["placement"]["cores"] == (USABLE[0],)
