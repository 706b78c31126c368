"""How the local backend starts executables: both spawn paths, and what they leave.

Without a ``cwd`` a child is started by ``os.posix_spawn``; with one (which
``posix_spawn`` cannot do) by ``subprocess.Popen``. Both must give the
same results: each child in its own session, stdin from /dev/null, the
signals Python ignores back to their defaults, no descriptor of ours in
the child, ``env`` and its ``PATH``, capture files, exit codes, and a
clear error for a child that cannot start. And nothing may be left
behind: no descriptor, no zombie.
"""

from __future__ import annotations

import contextlib
import os
import signal
import stat
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import psutil
import pytest
from _ref_helpers import Recorder, read_pid

from reference import LocalExecutionBackend, _children
from spec import TaskState, TaskTimeoutError

pytestmark = pytest.mark.asyncio

NO_SHELL = {"shell": False}
PATHS = ["posix_spawn", "popen-cwd"]


def _kwargs(path: str, tmp_path: Path, **more: Any) -> dict[str, Any]:
    """Backend options that pick the spawn path (a cwd forces Popen)."""
    if path == "popen-cwd":
        more["cwd"] = str(tmp_path)
    return more


async def run(
    tasks: list[dict[str, Any]], work_dir: Path | None = None, **options: Any
) -> Recorder:
    recorder = Recorder()
    async with LocalExecutionBackend(**options) as backend:
        if work_dir is not None:
            backend._work_dir = str(work_dir)
        backend.register_callback(recorder)
        await backend.submit_tasks(tasks)
        await recorder.wait((t["uid"] for t in tasks), timeout=60)
    assert recorder.violations == []
    return recorder


def _python(
    code: str, path: str, tmp_path: Path, uid: str, **extra: Any
) -> dict[str, Any]:
    return {
        "uid": uid,
        "executable": sys.executable,
        "arguments": ["-c", textwrap.dedent(code)],
        "task_backend_specific_kwargs": _kwargs(path, tmp_path, shell=False),
        **extra,
    }


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("shell", [False, True], ids=["argv", "shell"])
async def test_each_child_leads_its_own_session(
    path: str, shell: bool, tmp_path: Path
) -> None:
    code = "import os; print(os.getpid(), os.getsid(0), os.getpgid(0))"
    if shell:
        # The shell execs the last command: the leader is python itself.
        task = {
            "uid": "t",
            "executable": f"exec {sys.executable} -c '{code}'",
            "task_backend_specific_kwargs": _kwargs(path, tmp_path),
        }
    else:
        task = _python(code, path, tmp_path, "t")
    tasks = [dict(task, uid=f"t{i}") for i in range(4)]
    recorder = await run(tasks)
    seen = set()
    for t in tasks:
        assert recorder.final(t["uid"]) is TaskState.DONE, t.get("stderr")
        pid, sid, pgid = map(int, t["stdout"].split())
        assert pid == sid == pgid, t["stdout"]  # a session (and group) of its own
        assert pid != os.getpid()
        seen.add(sid)
    assert len(seen) == len(tasks)


@pytest.mark.parametrize("path", PATHS)
async def test_stdin_signals_and_descriptors_as_subprocess_gives_them(
    path: str, tmp_path: Path
) -> None:
    # Another child running meanwhile holds pipes of ours: none may leak in.
    sleeper = {
        "uid": "sleeper",
        "executable": "sleep",
        "arguments": ["30"],
        "task_backend_specific_kwargs": {"shell": False, "timeout": 20},
    }
    code = """
        import os, sys
        print(repr(sys.stdin.read()))
        print(os.path.realpath("/proc/self/fd/0"))
        for line in open("/proc/self/status"):
            if line.startswith("SigIgn:"):
                print(int(line.split()[1], 16))
        print(sorted(int(fd) for fd in os.listdir("/proc/self/fd")))
    """
    # Python itself ignores SIGPIPE at start-up: read the mask of a process
    # that does not touch it, the child's own child (cat), through the shell.
    probe = {
        "uid": "probe",
        "executable": "exec grep SigIgn /proc/self/status",
        "task_backend_specific_kwargs": _kwargs(path, tmp_path),
    }
    task = _python(code, path, tmp_path, "t")
    recorder = Recorder()
    async with LocalExecutionBackend() as backend:
        backend.register_callback(recorder)
        await backend.submit_tasks([sleeper])
        await recorder.wait(["sleeper"], TaskState.RUNNING, timeout=30)
        await backend.submit_tasks([task, probe])
        await recorder.wait(["t", "probe"], timeout=30)
        assert await backend.cancel_task("sleeper")
        await recorder.wait(["sleeper"], timeout=30)
    assert recorder.final("t") is TaskState.DONE, task.get("stderr")
    text, stdin, _, fds = task["stdout"].splitlines()
    assert (text, stdin) == ("''", os.devnull)
    # 0-2, and the one listdir opened; on Python < 3.13 an inheritable
    # descriptor of the parent would pass (PEP 446: Python makes none).
    assert len(eval(fds)) <= 4, fds
    ignored = int(probe["stdout"].split()[1], 16)
    for sig in (signal.SIGPIPE, signal.SIGXFSZ):
        assert not ignored & (1 << (sig - 1)), f"{sig!r} is ignored in the child"


@pytest.mark.parametrize("path", PATHS)
async def test_env_path_capture_and_exit_codes(path: str, tmp_path: Path) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    tool = bin_dir / "only-on-this-path"
    tool.write_text('#!/bin/sh\necho "tool $FLAVOUR"\necho warn >&2\nexit 7\n')
    tool.chmod(0o755)
    env = {"PATH": str(bin_dir), "FLAVOUR": "mint"}
    found = {
        "uid": "found",
        "executable": "only-on-this-path",
        "task_backend_specific_kwargs": _kwargs(path, tmp_path, shell=False, env=env),
    }
    captured = dict(found, uid="captured", capture_stdio=True)
    inherited = {
        "uid": "inherited",
        "executable": "only-on-this-path",  # not on the parent's PATH
        "task_backend_specific_kwargs": _kwargs(path, tmp_path, shell=False),
    }
    work = tmp_path / "work"
    recorder = await run([found, captured, inherited], work_dir=work)
    assert recorder.final("found") is TaskState.FAILED
    assert (found["stdout"], found["stderr"], found["exit_code"]) == (
        "tool mint\n",
        "warn\n",
        7,
    )
    assert recorder.final("captured") is TaskState.FAILED
    assert captured["stdout"] == str(work / "captured.stdout")
    assert Path(captured["stdout"]).read_text() == "tool mint\n"
    assert Path(captured["stderr"]).read_text() == "warn\n"
    assert recorder.final("inherited") is TaskState.FAILED
    assert isinstance(inherited["exception"], FileNotFoundError)
    assert "only-on-this-path" in str(inherited["exception"])
    assert inherited.get("exit_code") is None


@pytest.mark.parametrize("path", PATHS)
async def test_a_child_that_cannot_start_fails_only_its_task(
    path: str, tmp_path: Path
) -> None:
    plain = tmp_path / "not-executable"
    plain.write_text("#!/bin/sh\necho never\n")
    plain.chmod(0o644)
    if os.geteuid() == 0:  # root may execute any file with an x bit only
        assert not plain.stat().st_mode & (stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    cases = {
        "missing-name": "no-such-program-xyz",
        "missing-path": str(tmp_path / "no-such-file"),
        "not-executable": str(plain),
        "directory": str(tmp_path),
    }
    tasks = [
        {
            "uid": uid,
            "executable": executable,
            "task_backend_specific_kwargs": _kwargs(path, tmp_path, shell=False),
        }
        for uid, executable in cases.items()
    ]
    ok = {
        "uid": "ok",
        "executable": "echo",
        "arguments": ["fine"],
        "task_backend_specific_kwargs": _kwargs(path, tmp_path, shell=False),
    }
    recorder = await run([*tasks, ok])
    assert recorder.final("ok") is TaskState.DONE
    assert ok["stdout"] == "fine\n"
    expected = {
        "missing-name": (FileNotFoundError, "not found"),
        "missing-path": (FileNotFoundError, "not found"),
        "not-executable": (PermissionError, "not executable"),
        "directory": (PermissionError, "not executable"),
    }
    for task in tasks:
        uid = task["uid"]
        kind, words = expected[uid]
        assert recorder.final(uid) is TaskState.FAILED
        error = task["exception"]
        assert isinstance(error, kind), (uid, error)
        assert words in str(error) and repr(cases[uid]) in str(error), str(error)
        assert task.get("exit_code") is None


def _open_fds() -> set[int]:
    return {int(fd) for fd in os.listdir("/proc/self/fd")}


def _zombie_children() -> list[int]:
    found = []
    for child in psutil.Process().children():
        with contextlib.suppress(psutil.NoSuchProcess):  # reaped meanwhile
            if child.status() == psutil.STATUS_ZOMBIE:
                found.append(child.pid)
    return found


async def test_a_thousand_executables_leave_no_descriptor_and_no_zombie(
    tmp_path: Path,
) -> None:
    # Warm up first: the loop's own descriptors and lazy imports are not ours.
    await run([{"uid": "warm", "executable": "true"}])
    before = _open_fds()
    zombies_before = set(_zombie_children())
    tasks: list[dict[str, Any]] = []
    for i in range(1_000):
        task: dict[str, Any] = {
            "uid": f"t{i}",
            "executable": "/bin/true" if i % 3 else "/bin/false",
            "task_backend_specific_kwargs": {"shell": False},
        }
        if i % 10 == 0:
            task["capture_stdio"] = True
        if i % 50 == 0:
            task["task_backend_specific_kwargs"] = {"shell": False, "cwd": "/"}
        if i % 97 == 0:
            task["executable"] = "/no/such/program"
        tasks.append(task)
    recorder = Recorder()
    async with LocalExecutionBackend() as backend:
        backend._work_dir = str(tmp_path)
        backend.register_callback(recorder)
        await backend.submit_tasks(tasks)
        await recorder.wait((t["uid"] for t in tasks), timeout=240)
        assert not _children._hubs, "the epoll set outlived the children"
    assert recorder.violations == []
    for i, task in enumerate(tasks):
        if i % 97 == 0:
            assert recorder.final(task["uid"]) is TaskState.FAILED
            assert task.get("exit_code") is None
        else:
            assert task["exit_code"] == (0 if i % 3 else 1), task
    # None new (an earlier test's leftovers may be collected meanwhile).
    assert _open_fds() - before == set()
    assert set(_zombie_children()) <= zombies_before


async def test_stdin_is_not_the_parents_and_low_descriptors_work(
    tmp_path: Path,
) -> None:
    # First, the parent's stdin is a pipe the test keeps open: a child that
    # inherited it would wait for its end forever. Then the parent closes
    # its stdin, stdout and stderr: the next pipes get descriptors 0 and 1,
    # which the child's stdout must still work with.
    script = tmp_path / "low_fds.py"
    result = tmp_path / "result.txt"
    script.write_text(
        textwrap.dedent(
            f"""
            import asyncio, os
            from reference import LocalExecutionBackend

            async def run(backend, task):
                done = asyncio.Event()
                backend.register_callback(
                    lambda t, s: t is task and s.value != "RUNNING" and done.set()
                )
                await backend.submit_tasks([task])
                await asyncio.wait_for(done.wait(), 30)
                return task["stdout"], task["stderr"], task["exit_code"]

            async def main():
                got = []
                async with LocalExecutionBackend() as backend:
                    cat = {{"uid": "cat", "executable": "cat"}}
                    got.append(await run(backend, cat))
                    for fd in (0, 1, 2):
                        os.close(fd)
                    echo = {{"uid": "echo", "executable": "echo out; echo err >&2"}}
                    got.append(await run(backend, echo))
                with open({str(result)!r}, "w") as file:
                    file.write(repr(got))

            asyncio.run(main())
            """
        )
    )
    stdin_read, stdin_write = os.pipe()
    try:
        proc = subprocess.run(
            [sys.executable, str(script)],
            stdin=stdin_read,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            timeout=60,
        )
    finally:
        os.close(stdin_read)
        os.close(stdin_write)
    assert proc.returncode == 0, proc.stderr
    assert result.read_text() == repr([("", "", 0), ("out\n", "err\n", 0)])


async def test_shell_pipelines_see_sigpipe_as_usual() -> None:
    # SIGPIPE ignored in the child would make `yes` fail with EPIPE and
    # complain on stderr instead of dying quietly when head exits.
    task = {"uid": "t", "executable": "yes | head -n 2"}
    recorder = await run([task])
    assert recorder.final("t") is TaskState.DONE
    assert (task["stdout"], task["stderr"]) == ("y\ny\n", "")


async def test_a_timed_out_task_whose_leader_exited_skips_the_grace(
    tmp_path: Path,
) -> None:
    # The leader exits at once; a descendant in its own session, with a
    # cleared environment (no mark: nothing can find it), holds stdout.
    # At the timeout the leader is reaped first, so nothing is left to
    # signal and the drain starts at once: no 30 s grace is waited for.
    pid_file = tmp_path / "escaped.pid"
    task = {
        "uid": "t",
        "executable": (
            f"env -i setsid sh -c 'echo $$. > {pid_file}; exec sleep 60' & echo started"
        ),
        "task_backend_specific_kwargs": {"timeout": 1},
    }
    recorder = Recorder()
    try:
        async with LocalExecutionBackend(kill_grace=30.0) as backend:
            backend.register_callback(recorder)
            await backend.submit_tasks([task])
            await read_pid(pid_file)
            await recorder.wait(["t"], timeout=15)
    finally:
        with contextlib.suppress(FileNotFoundError, ValueError, ProcessLookupError):
            os.kill(int(pid_file.read_text().strip().rstrip(".")), signal.SIGKILL)
    assert recorder.final("t") is TaskState.FAILED
    assert task["stdout"] == "started\n"
    assert isinstance(task["exception"], TaskTimeoutError)
