"""reference._executables: the sync helpers other backends reuse."""

from __future__ import annotations

import errno
import os
import signal
import subprocess
from collections.abc import Callable
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


def test_run_executable_spawn_hook_wraps_the_start(tmp_path: Path) -> None:
    started: list[subprocess.Popen[bytes]] = []

    def spawn(
        start: Callable[[], subprocess.Popen[bytes]],
    ) -> subprocess.Popen[bytes]:
        child = start()
        started.append(child)
        return child

    task = {"uid": "h", "executable": "exit 4"}
    assert ex.run_executable(task, str(tmp_path), spawn=spawn) is False
    assert len(started) == 1
    assert started[0].returncode == task["exit_code"] == 4


def test_run_executable_hook_that_refuses_leaves_the_task_untouched(
    tmp_path: Path,
) -> None:
    class Refused(Exception):
        pass

    def refuse(start: Callable[[], subprocess.Popen[bytes]]) -> subprocess.Popen[bytes]:
        raise Refused

    marker = tmp_path / "ran"
    task = {"uid": "r", "executable": f"touch {marker}", "capture_stdio": True}
    with pytest.raises(Refused):
        ex.run_executable(task, str(tmp_path), spawn=refuse)
    assert not {"stdout", "stderr", "exit_code", "exception"} & task.keys()
    assert not marker.exists()


def test_run_executable_hook_oserror_is_a_failed_spawn(tmp_path: Path) -> None:
    def broken(start: Callable[[], subprocess.Popen[bytes]]) -> subprocess.Popen[bytes]:
        raise PermissionError(errno.EACCES, "denied")

    task = {"uid": "b", "executable": "true"}
    assert ex.run_executable(task, str(tmp_path), spawn=broken) is False
    assert isinstance(task["exception"], PermissionError)
    assert task["exit_code"] is None
    assert "'true'" in task["stderr"]


def test_run_executable_preexec_fn_runs_in_the_child(tmp_path: Path) -> None:
    task = {"uid": "p", "executable": "umask"}
    assert ex.run_executable(task, str(tmp_path), preexec_fn=lambda: os.umask(0o077))
    assert task["stdout"] == "0077\n"


def test_run_executable_unwritable_capture_dir_fails_the_task(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    task = {"uid": "u", "executable": "true", "capture_stdio": True}
    assert ex.run_executable(task, str(blocker / "sub")) is False
    assert isinstance(task["exception"], OSError)
    assert (task["stdout"], task["exit_code"]) == (None, None)


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
