"""reference._executables: the sync helpers other backends reuse."""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

import pytest
from _ref_helpers import group_has_live_members, process_gone

from reference import _executables as ex
from spec import TaskTimeoutError


def test_parse_options_defaults_and_errors() -> None:
    assert ex.parse_options({"uid": "t"}) == ex.ExecOptions()
    opts = ex.parse_options(
        {
            "uid": "t",
            "capture_stdio": True,
            "task_backend_specific_kwargs": {
                "shell": False,
                "cwd": Path("/tmp"),
                "env": {"A": 1},
                "timeout": 2,
                "unknown": "ignored",
            },
        }
    )
    assert opts == ex.ExecOptions(
        shell=False, cwd="/tmp", env={"A": "1"}, timeout=2.0, capture_stdio=True
    )
    for bad in ({"timeout": -1}, {"timeout": "1"}, {"env": ["A=1"]}, {"cwd": 3}):
        with pytest.raises(ValueError):
            ex.parse_options({"uid": "t", "task_backend_specific_kwargs": bad})


def test_build_command() -> None:
    task = {"uid": "t", "executable": "echo", "arguments": ["a b", 1]}
    assert ex.build_command(task, ex.ExecOptions()) == "echo a b 1"
    assert ex.build_command(task, ex.ExecOptions(shell=False)) == ["echo", "a b", "1"]
    with pytest.raises(ValueError):
        ex.build_command({"uid": "t", "executable": ""}, ex.ExecOptions())
    with pytest.raises(ValueError):
        ex.build_command(
            {"uid": "t", "executable": "x", "arguments": "a"}, ex.ExecOptions()
        )


def test_capture_paths() -> None:
    assert ex.capture_paths("/w", "task.1") == ("/w/task.1.stdout", "/w/task.1.stderr")


def test_run_executable_results(tmp_path: Path) -> None:
    ok = {"uid": "ok", "executable": "echo", "arguments": ["hi"]}
    assert ex.run_executable(ok, str(tmp_path)) is True
    assert (ok["stdout"], ok["stderr"], ok["exit_code"]) == ("hi\n", "", 0)
    missing = {
        "uid": "m",
        "executable": "no-such-program-xyz",
        "task_backend_specific_kwargs": {"shell": False},
    }
    assert ex.run_executable(missing, str(tmp_path)) is False
    assert isinstance(missing["exception"], FileNotFoundError)
    assert "no-such-program-xyz" in str(missing["exception"])
    captured = {"uid": "c", "executable": "echo out", "capture_stdio": True}
    assert ex.run_executable(captured, str(tmp_path / "new")) is True
    assert Path(captured["stdout"]).read_text() == "out\n"


def test_run_executable_timeout_kills_the_group(tmp_path: Path) -> None:
    pid_file = tmp_path / "pid"
    task = {
        "uid": "slow",
        "executable": f"sleep 60 & echo $! > {pid_file}; wait",
        "task_backend_specific_kwargs": {"timeout": 0.3},
    }
    assert ex.run_executable(task, str(tmp_path), kill_grace=0.5) is False
    assert isinstance(task["exception"], TaskTimeoutError)
    assert process_gone(int(pid_file.read_text()))


def test_kill_group_escalates_to_kill(tmp_path: Path) -> None:
    proc = subprocess.Popen(
        ["/bin/sh", "-c", "trap '' TERM; echo ready; while :; do sleep 1; done"],
        start_new_session=True,
        stdout=subprocess.PIPE,
    )
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline() == b"ready\n"  # TERM is ignored from here on
        ex.kill_group(proc.pid, 0.2, reap=proc.poll)
        assert proc.wait(timeout=10) == -signal.SIGKILL
        assert not group_has_live_members(proc.pid)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()


def test_signal_group_of_a_vanished_group_is_false() -> None:
    proc = subprocess.Popen(["true"], start_new_session=True)
    proc.wait()
    assert ex.signal_group(proc.pid, signal.SIGTERM) is False
    assert ex.group_alive(proc.pid) is False
