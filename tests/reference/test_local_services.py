"""Services on the local backend: each runner, ready timeouts, probes, shutdown."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from reference import LocalExecutionBackend
from spec import TaskState, TaskTimeoutError

pytestmark = [pytest.mark.asyncio, pytest.mark.timeout(60)]


class Engine:
    """Records states and readiness like radical.asyncflow 0.6's callback."""

    def __init__(self) -> None:
        self.states: dict[str, list[TaskState]] = {}
        self.ready: dict[str, Any] = {}
        self.changed = asyncio.Event()

    def __call__(
        self, task: dict[str, Any], state: TaskState, service_callback: Any = None
    ) -> None:
        self.states.setdefault(task["uid"], []).append(state)
        if service_callback is not None:
            self.ready[task["uid"]] = service_callback
        self.changed.set()

    async def until(self, done: Any, timeout: float = 30) -> None:
        async def wait() -> None:
            while not done():
                self.changed.clear()
                await self.changed.wait()

        await asyncio.wait_for(wait(), timeout)

    def ended(self, uid: str) -> bool:
        return any(s is not TaskState.RUNNING for s in self.states.get(uid, ()))


def _service(uid: str, **fields: Any) -> dict[str, Any]:
    options = fields.pop("options", {})
    return {
        "uid": uid,
        "is_service": True,
        "task_backend_specific_kwargs": options,
        **fields,
    }


async def _forever() -> None:
    await asyncio.sleep(60)


def _block(release: str) -> str:
    import time

    end = time.monotonic() + 30
    while time.monotonic() < end and not os.path.exists(release):
        time.sleep(0.01)
    return "released"


async def _generator(marker: str) -> AsyncIterator[str]:
    try:
        yield "first"
        await asyncio.sleep(60)
    finally:
        Path(marker).touch()


@pytest.mark.parametrize("runner", ["on-loop", "thread", "process"])
async def test_a_function_service_past_its_ready_timeout_fails(
    runner: str, tmp_path: Path
) -> None:
    if runner == "process":
        backend = LocalExecutionBackend(ProcessPoolExecutor(1), kill_grace=0.5)
    else:
        backend = LocalExecutionBackend(ThreadPoolExecutor(2), kill_grace=0.5)
    engine = Engine()
    backend.register_callback(engine)
    release = str(tmp_path / "release")
    func: Any = _forever if runner == "on-loop" else _block
    args = [] if runner == "on-loop" else [release]
    options = {"ready": {"file": str(tmp_path / "never")}, "ready_timeout": 0.3}
    task = _service("svc", function=func, args=args, options=options)
    await backend.submit_tasks([task])
    await engine.until(lambda: engine.ended("svc"))
    assert engine.states["svc"][-1] is TaskState.FAILED
    assert isinstance(task["exception"], TaskTimeoutError), task["exception"]
    assert "svc" not in engine.ready
    assert await backend.cancel_task("svc") is False
    Path(release).touch()
    await backend.shutdown()


async def test_cancel_racing_a_ready_timeout_is_refused(tmp_path: Path) -> None:
    backend = LocalExecutionBackend(kill_grace=2.0)
    engine = Engine()
    backend.register_callback(engine)
    # TERM ignored: the stop for the timeout takes the whole kill grace.
    options = {"ready": {"file": str(tmp_path / "never")}, "ready_timeout": 0.2}
    task = _service(
        "svc",
        executable="/bin/sh",
        arguments=["-c", "trap '' TERM; sleep 30"],
        options=dict(options, shell=False),
    )
    await backend.submit_tasks([task])
    job = backend._job("svc")
    assert job is not None
    await engine.until(
        lambda: job.service is not None and job.service.readiness.timed_out
    )
    assert await backend.cancel_task("svc") is False  # FAILED is on its way (SV-5)
    await engine.until(lambda: engine.ended("svc"))
    assert engine.states["svc"] == [TaskState.RUNNING, TaskState.FAILED]
    assert isinstance(task["exception"], TaskTimeoutError)
    await backend.shutdown()


async def test_an_async_generator_service_is_ready_at_its_yield_and_closed_on_cancel(
    tmp_path: Path,
) -> None:
    backend = LocalExecutionBackend(ProcessPoolExecutor(1))
    engine = Engine()
    backend.register_callback(engine)
    marker = tmp_path / "closed"
    await backend.submit_tasks(
        [_service("gen", function=_generator, args=[str(marker)])]
    )
    await engine.until(lambda: "gen" in engine.ready)
    future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
    engine.ready["gen"](future, {}, TaskState.RUNNING)
    # On the loop even with a process pool: the info names this process.
    assert future.result() == {"pid": os.getpid(), "probe": "yield", "value": "first"}
    assert await backend.cancel_task("gen") is True
    await engine.until(lambda: engine.ended("gen"))
    assert engine.states["gen"] == [
        TaskState.RUNNING,
        TaskState.RUNNING,
        TaskState.CANCELED,
    ]
    assert marker.exists()  # the generator's finally ran
    await backend.shutdown()


async def test_service_info_names_the_process_that_runs_it(tmp_path: Path) -> None:
    backend = LocalExecutionBackend(ProcessPoolExecutor(1))
    engine = Engine()
    backend.register_callback(engine)
    release = str(tmp_path / "release")
    executable = _service("exe", executable="sleep", arguments=["30"])
    function = _service("fn", function=_block, args=[release])
    await backend.submit_tasks([executable, function])
    await engine.until(lambda: {"exe", "fn"} <= set(engine.ready))
    assert executable["service_info"]["probe"] == "started"
    assert executable["service_info"]["pid"] not in (
        os.getpid(),
        *backend.worker_pids(),
    )
    assert function["service_info"]["pid"] in backend.worker_pids()
    Path(release).touch()
    await engine.until(lambda: engine.ended("fn"))
    assert engine.states["fn"][-1] is TaskState.DONE
    await backend.shutdown()
    assert engine.states["exe"][-1] is TaskState.CANCELED


async def test_a_stdout_probe_reads_captured_output(tmp_path: Path) -> None:
    backend = LocalExecutionBackend()
    backend._work_dir = str(tmp_path)
    engine = Engine()
    backend.register_callback(engine)
    task = _service(
        "svc",
        executable="sh",
        arguments=["-c", "'echo booting; sleep 0.2; echo up on 99; exec sleep 30'"],
        capture_stdio=True,
        options={"ready": {"stdout": r"up on \d+"}},
    )
    await backend.submit_tasks([task])
    await engine.until(lambda: "svc" in engine.ready)
    assert task["service_info"]["line"] == "up on 99"
    await backend.shutdown()
    assert engine.states["svc"] == [
        TaskState.RUNNING,
        TaskState.RUNNING,
        TaskState.CANCELED,
    ]


async def test_shutdown_leaves_no_watch_running(tmp_path: Path) -> None:
    backend = LocalExecutionBackend()
    engine = Engine()
    backend.register_callback(engine)
    options = {"ready": {"tcp": "127.0.0.1:9"}}  # discard: nothing listens
    await backend.submit_tasks(
        [_service("svc", executable="sleep", arguments=["30"], options=options)]
    )
    await engine.until(lambda: "svc" in engine.states)
    await backend.shutdown()
    await asyncio.sleep(0)  # let the cancelled pollers finish
    pollers = [t for t in asyncio.all_tasks() if "_poll" in repr(t.get_coro())]
    assert not pollers
    assert engine.states["svc"] == [TaskState.RUNNING, TaskState.CANCELED]


async def test_a_prompt_service_is_refused_as_a_prompt() -> None:
    backend = LocalExecutionBackend()
    engine = Engine()
    backend.register_callback(engine)
    task = _service("p", prompt="hello")
    await backend.submit_tasks([task])
    await engine.until(lambda: engine.ended("p"))
    assert engine.states["p"] == [TaskState.FAILED]
    assert "prompts" in str(task["exception"])
    await backend.shutdown()
