"""LocalExecutionBackend: executables (results, options, capture, timeout, scale)."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any

import pytest
from _ref_helpers import Recorder, process_gone, read_pid

from reference import LocalExecutionBackend
from spec import TaskState, TaskTimeoutError

pytestmark = pytest.mark.asyncio

NO_SHELL = {"shell": False}


async def run(tasks: list[dict[str, Any]], **options: Any) -> Recorder:
    recorder = Recorder()
    work_dir = options.pop("work_dir", None)
    async with LocalExecutionBackend(**options) as backend:
        if work_dir is not None:
            backend._work_dir = str(work_dir)
        backend.register_callback(recorder)
        await backend.submit_tasks(tasks)
        await recorder.wait((t["uid"] for t in tasks), timeout=60)
    assert recorder.violations == []
    return recorder


async def test_output_exit_code_and_state() -> None:
    ok = {"uid": "ok", "executable": "echo", "arguments": ["hello", "world"]}
    err = {
        "uid": "err",
        "executable": "/bin/sh",
        "arguments": ["-c", "echo oops >&2; exit 3"],
        "task_backend_specific_kwargs": NO_SHELL,
    }
    recorder = await run([ok, err])
    assert recorder.states("ok") == [TaskState.RUNNING, TaskState.DONE]
    assert (ok["stdout"], ok["stderr"], ok["exit_code"]) == ("hello world\n", "", 0)
    assert recorder.final("err") is TaskState.FAILED
    assert (err["stderr"], err["exit_code"]) == ("oops\n", 3)


async def test_shell_is_the_default_and_can_be_turned_off() -> None:
    shell = {"uid": "shell", "executable": "echo", "arguments": ["$((6 * 7))"]}
    literal = {
        "uid": "literal",
        "executable": "echo",
        "arguments": ["$((6 * 7))"],
        "task_backend_specific_kwargs": NO_SHELL,
    }
    await run([shell, literal])
    assert shell["stdout"] == "42\n"
    assert literal["stdout"] == "$((6 * 7))\n"


async def test_cwd_and_env_are_honoured(tmp_path: Path) -> None:
    where = {
        "uid": "cwd",
        "executable": "pwd",
        "task_backend_specific_kwargs": {"cwd": str(tmp_path), "shell": False},
    }
    env = {
        "uid": "env",
        "executable": "echo",
        "arguments": ["$ASYNCFLOW_TEST_VAR"],
        "task_backend_specific_kwargs": {"env": {"ASYNCFLOW_TEST_VAR": "from-env"}},
    }
    await run([where, env])
    assert where["stdout"].strip() == os.path.realpath(tmp_path)
    assert env["stdout"] == "from-env\n"


async def test_missing_executable_fails_with_an_exception_naming_it() -> None:
    direct = {
        "uid": "direct",
        "executable": "no-such-program-xyz",
        "task_backend_specific_kwargs": NO_SHELL,
    }
    shell = {"uid": "shell", "executable": "no-such-program-xyz"}
    recorder = await run([direct, shell])
    for task in (direct, shell):
        assert recorder.final(task["uid"]) is TaskState.FAILED
        assert isinstance(task["exception"], FileNotFoundError)
        assert "no-such-program-xyz" in str(task["exception"])
    assert shell["exit_code"] == 127


async def test_bad_options_fail_the_task_only() -> None:
    bad = {
        "uid": "bad",
        "executable": "true",
        "task_backend_specific_kwargs": {"timeout": "soon"},
    }
    good = {"uid": "good", "executable": "true"}
    recorder = await run([bad, good])
    assert recorder.final("bad") is TaskState.FAILED
    assert isinstance(bad["exception"], ValueError)
    assert recorder.final("good") is TaskState.DONE


async def test_capture_stdio_files_exist_when_the_state_is_delivered(
    tmp_path: Path,
) -> None:
    seen: dict[str, tuple[str, str]] = {}
    finished = asyncio.Event()

    def callback(task: dict[str, Any], state: str) -> None:
        if state == TaskState.DONE:
            seen[task["uid"]] = (
                Path(task["stdout"]).read_text(),
                Path(task["stderr"]).read_text(),
            )
            finished.set()

    task = {
        "uid": "cap",
        "executable": "echo out; echo err >&2",
        "capture_stdio": True,
    }
    async with LocalExecutionBackend() as backend:
        backend._work_dir = str(tmp_path)
        backend.register_callback(callback)
        await backend.submit_tasks([task])
        await asyncio.wait_for(finished.wait(), 30)
    assert task["stdout"] == str(tmp_path / "cap.stdout")
    assert task["stderr"] == str(tmp_path / "cap.stderr")
    assert seen["cap"] == ("out\n", "err\n")


async def test_timeout_kills_the_process_group_and_fails(tmp_path: Path) -> None:
    pid_file = tmp_path / "pid"
    task = {
        "uid": "slow",
        "executable": "/bin/sh",
        "arguments": ["-c", f"sleep 60 & echo $!. > {pid_file}; wait"],
        "task_backend_specific_kwargs": {"shell": False, "timeout": 0.5},
    }
    recorder = Recorder()
    async with LocalExecutionBackend(kill_grace=0.5) as backend:
        backend.register_callback(recorder)
        await backend.submit_tasks([task])
        grandchild = await read_pid(pid_file)
        await recorder.wait(["slow"])
    assert recorder.final("slow") is TaskState.FAILED
    assert isinstance(task["exception"], TaskTimeoutError)
    assert process_gone(grandchild)


@pytest.mark.timeout(300)
async def test_ten_thousand_executables_in_one_batch() -> None:
    tasks = [
        {
            "uid": f"x{i}",
            "executable": "/bin/true",
            "task_backend_specific_kwargs": NO_SHELL,
        }
        for i in range(10_000)
    ]
    recorder = Recorder()
    # 10,000 unbounded children would need ~30,000 descriptors: the default
    # bound on concurrent children is what keeps this from hitting EMFILE.
    async with LocalExecutionBackend() as backend:
        backend.register_callback(recorder)
        await backend.submit_tasks(tasks)
        await recorder.wait((t["uid"] for t in tasks), timeout=280)
    failures = [t for t in tasks if t.get("exit_code") != 0]
    assert failures == [], failures[:3]
    assert all(recorder.final(t["uid"]) is TaskState.DONE for t in tasks)


async def test_the_fallback_without_pidfds_gives_the_same_results(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from reference import _children

    monkeypatch.setattr(_children, "_pidfd_works", False)
    ok = {"uid": "ok", "executable": "echo", "arguments": ["hi"]}
    err = {"uid": "err", "executable": "echo oops >&2; exit 4"}
    missing = {
        "uid": "missing",
        "executable": "no-such-program-xyz",
        "task_backend_specific_kwargs": NO_SHELL,
    }
    slow = {
        "uid": "slow",
        "executable": "sleep",
        "arguments": ["60"],
        "task_backend_specific_kwargs": {"timeout": 0.3},
    }
    captured = {"uid": "cap", "executable": "echo file", "capture_stdio": True}
    recorder = await run([ok, err, missing, slow, captured], work_dir=tmp_path)
    assert (ok["stdout"], ok["exit_code"], recorder.final("ok")) == (
        "hi\n",
        0,
        TaskState.DONE,
    )
    assert (err["stderr"], err["exit_code"]) == ("oops\n", 4)
    assert isinstance(missing["exception"], FileNotFoundError)
    assert isinstance(slow["exception"], TaskTimeoutError)
    assert Path(captured["stdout"]).read_text() == "file\n"


async def test_an_abandoned_runner_kills_its_child(tmp_path: Path) -> None:
    recorder = Recorder()
    backend = LocalExecutionBackend()
    backend.register_callback(recorder)
    pid_file = tmp_path / "pid"
    await backend.submit_tasks(
        [
            {
                "uid": "s",
                "executable": "/bin/sh",
                "arguments": ["-c", f"echo $$. > {pid_file}; exec sleep 60"],
                "task_backend_specific_kwargs": NO_SHELL,
            }
        ]
    )
    pid = await read_pid(pid_file)
    # What asyncio.run() does to leftover tasks when a program forgets shutdown.
    runners = list(backend._executables.runners)
    for runner in runners:
        runner.cancel()
    await asyncio.wait(runners, timeout=10)
    assert process_gone(pid)
    await backend.shutdown()
