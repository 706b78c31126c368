"""Executables under faults and bad input: the local backend and the sync runner.

Odd option values, uids that name paths, descendants that leave the process
group and hold the pipes, a work dir changed mid-task, and the direct tests
for behaviour nothing else would notice (TERM before KILL, capture files
truncated, the exact process bound, ``env`` replacing the environment).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from _ref_helpers import Recorder, process_gone, read_pid

from reference import LocalExecutionBackend, _children
from reference import _executables as ex
from spec import TaskState, TaskTimeoutError

NO_SHELL = {"shell": False}
# A descendant that starts its own session (so the group kill misses it),
# writes its pid and keeps the task's stdout open for a minute.
ESCAPE = "setsid sh -c 'echo $$. > {pid}; exec sleep 60' & echo started; "


def escaping(pid_file: Path, then: str = "sleep 60", clear_env: bool = False) -> str:
    start = "env -i " if clear_env else ""
    return start + ESCAPE.format(pid=pid_file) + then


def kill_pid_in(path: Path) -> None:
    """Cleanup for processes a test started on purpose (by their pid file)."""
    with contextlib.suppress(FileNotFoundError, ValueError, ProcessLookupError):
        os.kill(int(path.read_text().strip().rstrip(".")), signal.SIGKILL)


async def run(
    tasks: list[dict[str, Any]], timeout: float = 30.0, **options: Any
) -> Recorder:
    recorder = Recorder()
    work_dir = options.pop("work_dir", None)
    async with LocalExecutionBackend(**options) as backend:
        if work_dir is not None:
            backend._work_dir = str(work_dir)
        backend.register_callback(recorder)
        await backend.submit_tasks(tasks)
        await recorder.wait((t["uid"] for t in tasks), timeout=timeout)
    assert recorder.violations == []
    return recorder


# -- item 3: timeout values -----------------------------------------------------

BAD_TIMEOUTS = [float("nan"), float("inf"), 1e20, -1, 0, True, "1", [1]]


@pytest.mark.asyncio
@pytest.mark.parametrize("timeout", BAD_TIMEOUTS, ids=repr)
async def test_local_bad_timeout_fails_the_task_naming_it(timeout: Any) -> None:
    task = {
        "uid": "t",
        "executable": "true",
        "task_backend_specific_kwargs": {"timeout": timeout},
    }
    recorder = await run([task])
    assert recorder.states("t") == [TaskState.FAILED]  # it never started
    assert isinstance(task["exception"], ValueError)
    message = str(task["exception"])
    assert "timeout" in message and repr(timeout) in message


@pytest.mark.parametrize("timeout", BAD_TIMEOUTS, ids=repr)
def test_sync_runner_bad_timeout_fails_the_task_naming_it(
    timeout: Any, tmp_path: Path
) -> None:
    task = {
        "uid": "t",
        "executable": "true",
        "task_backend_specific_kwargs": {"timeout": timeout},
    }
    assert ex.run_executable(task, str(tmp_path)) is False
    assert isinstance(task["exception"], ValueError)
    assert task["exit_code"] is None
    assert "timeout" in str(task["exception"])


def test_sync_runner_longest_timeout_does_not_overflow(tmp_path: Path) -> None:
    # 1e9 s is accepted; a single selector wait that long overflows a C int.
    task = {
        "uid": "t",
        "executable": "echo",
        "arguments": ["ok"],
        "task_backend_specific_kwargs": {"timeout": 1e9},
    }
    assert ex.run_executable(task, str(tmp_path)) is True
    assert task["stdout"] == "ok\n"


@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("kill_grace", float("nan")),
        ("kill_grace", float("inf")),
        ("kill_grace", -1.0),
        ("shutdown_timeout", float("nan")),
        ("shutdown_timeout", 0),
        ("shutdown_timeout", 1e20),
    ],
)
def test_constructor_durations_are_validated(option: str, value: float) -> None:
    with pytest.raises(ValueError, match=option):
        LocalExecutionBackend(**{option: value})


@pytest.mark.asyncio
async def test_kill_grace_zero_kills_at_once(tmp_path: Path) -> None:
    # kill_grace=0 is allowed, and means it: a child ignoring SIGTERM is
    # SIGKILLed with the TERM, so its cancel ends well inside the 2 s default
    # grace (the 1.5 s bound leaves room for a busy machine).
    pid_file = tmp_path / "pid"
    task = {
        "uid": "stubborn",
        "executable": "/bin/sh",
        "arguments": ["-c", f"trap '' TERM; echo $$. > {pid_file}; sleep 60"],
        "task_backend_specific_kwargs": NO_SHELL,
    }
    recorder = Recorder()
    async with LocalExecutionBackend(kill_grace=0, shutdown_timeout=5) as backend:
        backend.register_callback(recorder)
        await backend.submit_tasks([task])
        pid = await read_pid(pid_file)
        started = time.monotonic()
        assert await backend.cancel_task("stubborn") is True
        await recorder.wait(["stubborn"], timeout=10)
        elapsed = time.monotonic() - started
    assert recorder.final("stubborn") is TaskState.CANCELED
    assert process_gone(pid)
    assert elapsed < 1.5, elapsed


# -- item 7: capture files stay inside the work dir ------------------------------

ODD_UIDS = ["../victim", "a/b", "..", ".", "x" * 300, "a\0b", "50%", "%2F", "\ud800"]


def _inside(path: str, work_dir: Path) -> bool:
    return os.path.dirname(os.path.realpath(path)) == os.path.realpath(work_dir)


@pytest.mark.asyncio
async def test_local_capture_files_stay_in_the_work_dir(tmp_path: Path) -> None:
    work_dir = tmp_path / "work"
    work_dir.mkdir()
    absolute = str(tmp_path / "abs" / "x")
    uids = [*ODD_UIDS, absolute]
    tasks = [
        {"uid": uid, "executable": f"echo {i}", "capture_stdio": True}
        for i, uid in enumerate(uids)
    ]
    recorder = await run(tasks, work_dir=work_dir)
    names = set()
    for i, task in enumerate(tasks):
        assert recorder.final(task["uid"]) is TaskState.DONE, task.get("exception")
        for key in ("stdout", "stderr"):
            assert _inside(task[key], work_dir), (task["uid"], task[key])
        assert Path(task["stdout"]).read_text() == f"{i}\n"
        names.add(task["stdout"])
    assert len(names) == len(tasks)  # no two uids share a file
    assert sorted(p.name for p in tmp_path.iterdir()) == ["work"]  # nothing beside


def test_sync_runner_capture_files_stay_in_the_work_dir(tmp_path: Path) -> None:
    work_dir = tmp_path / "work"
    work_dir.mkdir()
    for uid in [*ODD_UIDS, str(tmp_path / "abs")]:
        task = {"uid": uid, "executable": "echo hi", "capture_stdio": True}
        assert ex.run_executable(task, str(work_dir)) is True, task["exception"]
        assert _inside(task["stdout"], work_dir)
        assert Path(task["stdout"]).read_text() == "hi\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["work"]


def test_capture_name_keeps_ordinary_uids_and_encodes_the_rest() -> None:
    for uid in ("task.1", "x-2_b", ".hidden", "..", "é", "a b", "y" * 200):
        assert ex.capture_name(uid) == uid
    assert ex.capture_name("../victim") == "..%2Fvictim"
    assert ex.capture_name("/abs/x") == "%2Fabs%2Fx"
    assert ex.capture_name("a\0b") == "a%00b"
    assert ex.capture_name("50%") == "50%25"
    # one-to-one: an encoded name never equals a uid kept as it is
    assert ex.capture_name("a%2Fb") != ex.capture_name("a/b")
    long = ex.capture_name("z" * 1000)
    assert len(os.fsencode(long)) + len(".stdout") <= 255
    assert long != ex.capture_name("z" * 1001)


# -- item 8: a descendant that leaves the group and holds the pipes ------------

# timeout/cancel + kill_grace + drain, with generous room for a loaded machine;
# the descendant sleeps 60 s, so a backend waiting for its pipes misses it.
BOUND = 15.0


@pytest.mark.asyncio
@pytest.mark.parametrize("pidfds", [True, False], ids=["pidfd", "fallback"])
@pytest.mark.parametrize("clear_env", [False, True], ids=["marked", "env-cleared"])
async def test_local_timeout_is_bounded_when_a_descendant_holds_stdout(
    tmp_path: Path, clear_env: bool, pidfds: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    if not pidfds:  # the loop.subprocess_exec path: stop_reading closes transports
        monkeypatch.setattr(_children, "_pidfd_works", False)
    pid_file = tmp_path / "escaped.pid"
    task = {
        "uid": "t",
        "executable": escaping(pid_file, clear_env=clear_env),
        "task_backend_specific_kwargs": {"timeout": 1},
    }
    try:
        recorder = Recorder()
        async with LocalExecutionBackend(kill_grace=1.0) as backend:
            backend.register_callback(recorder)
            await backend.submit_tasks([task])
            escaped = await read_pid(pid_file)
            await recorder.wait(["t"], timeout=BOUND)
        assert recorder.final("t") is TaskState.FAILED
        assert isinstance(task["exception"], TaskTimeoutError)
        assert task["stdout"] == "started\n"
        if not clear_env:  # found by its mark and killed
            assert process_gone(escaped)
    finally:
        kill_pid_in(pid_file)


@pytest.mark.asyncio
async def test_local_cancel_is_bounded_and_kills_the_escaped_descendant(
    tmp_path: Path,
) -> None:
    pid_file = tmp_path / "escaped.pid"
    task = {"uid": "t", "executable": escaping(pid_file)}
    try:
        recorder = Recorder()
        async with LocalExecutionBackend(kill_grace=1.0) as backend:
            backend.register_callback(recorder)
            await backend.submit_tasks([task])
            escaped = await read_pid(pid_file)
            assert await backend.cancel_task("t") is True
            # CANCELED comes from the cancel, not from the shutdown below
            await recorder.wait(["t"], timeout=BOUND)
            assert recorder.states("t") == [TaskState.RUNNING, TaskState.CANCELED]
            assert process_gone(escaped)
    finally:
        kill_pid_in(pid_file)


@pytest.mark.asyncio
async def test_shutdown_is_bounded_and_leaves_no_escaped_descendant(
    tmp_path: Path,
) -> None:
    running = tmp_path / "running.pid"
    finished = tmp_path / "finished.pid"
    daemon = (
        f"setsid sh -c 'echo $$. > {finished}; exec sleep 60' "
        "> /dev/null 2>&1 < /dev/null &"
    )
    tasks = [
        {"uid": "running", "executable": escaping(running)},
        # Finished long before the shutdown, but left a daemon behind.
        {"uid": "finished", "executable": daemon},
    ]
    try:
        recorder = Recorder()
        backend = LocalExecutionBackend(kill_grace=1.0, shutdown_timeout=3.0)
        backend.register_callback(recorder)
        await backend.submit_tasks(tasks)
        pids = [await read_pid(running), await read_pid(finished)]
        await recorder.wait(["finished"])
        started = time.monotonic()
        await asyncio.wait_for(backend.shutdown(), BOUND)
        assert time.monotonic() - started < 3.0 + 2.0  # shutdown_timeout + slack
        assert recorder.final("running") is TaskState.CANCELED
        assert recorder.final("finished") is TaskState.DONE
        assert all(process_gone(pid) for pid in pids)
    finally:
        kill_pid_in(running)
        kill_pid_in(finished)


def test_sync_runner_timeout_is_bounded_when_a_descendant_holds_stdout(
    tmp_path: Path,
) -> None:
    pid_file = tmp_path / "escaped.pid"
    task = {
        "uid": "t",
        "executable": escaping(pid_file),
        "task_backend_specific_kwargs": {"timeout": 1},
    }
    outcome: list[bool] = []
    runner = threading.Thread(
        target=lambda: outcome.append(ex.run_executable(task, str(tmp_path), 1.0)),
        daemon=True,
    )
    try:
        runner.start()
        runner.join(BOUND)
        assert outcome == [False], "the runner waited for the descendant's pipes"
        assert isinstance(task["exception"], TaskTimeoutError)
        assert task["stdout"] == "started\n"
        assert process_gone(int(pid_file.read_text().strip().rstrip(".")))
    finally:
        kill_pid_in(pid_file)
        runner.join(BOUND)


def test_sync_runner_leader_killed_from_outside_is_bounded(tmp_path: Path) -> None:
    # What a canceller (the Dask worker's cancel_keys) does: kill the group.
    pid_file = tmp_path / "escaped.pid"
    task = {"uid": "t", "executable": escaping(pid_file)}
    procs: list[subprocess.Popen[bytes]] = []

    def spawn(start: Any) -> subprocess.Popen[bytes]:
        procs.append(start())
        return procs[0]

    outcome: list[bool] = []
    runner = threading.Thread(
        target=lambda: outcome.append(
            ex.run_executable(task, str(tmp_path), 1.0, spawn=spawn)
        ),
        daemon=True,
    )
    try:
        runner.start()
        deadline = time.monotonic() + BOUND
        # The descendant may write its pid before start() has returned here.
        while time.monotonic() < deadline and not (
            procs and pid_file.exists() and pid_file.read_text().endswith(".\n")
        ):
            time.sleep(0.01)
        ex.signal_group(procs[0].pid, signal.SIGKILL)
        runner.join(BOUND)
        assert outcome == [False]
        assert task["exit_code"] == -signal.SIGKILL
        assert process_gone(int(pid_file.read_text().strip().rstrip(".")))
    finally:
        kill_pid_in(pid_file)
        runner.join(BOUND)


def test_signal_marked_reaches_only_the_marked_processes() -> None:
    mark, other = ex.new_mark(), ex.new_mark()
    procs = [
        subprocess.Popen(
            ["sleep", "60"], env=ex.marked_env(None, m), start_new_session=True
        )
        for m in (mark, other)
    ]
    try:
        # Popen returns once exec has begun; the kernel publishes the new
        # environment an instant later.
        deadline = time.monotonic() + BOUND
        while ex.signal_marked(0, [mark]) == 0 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert ex.signal_marked(0, [mark]) == 1
        # A group already signalled is skipped: nobody gets a signal twice.
        assert ex.signal_marked(0, [mark], skip_groups={procs[0].pid}) == 0
        assert ex.signal_marked(signal.SIGKILL, [mark]) == 1
        assert procs[0].wait(timeout=10) == -signal.SIGKILL
        assert procs[1].poll() is None
        scope = ex.new_mark()
        assert ex.new_mark(scope).startswith(scope + ".")
        assert ex.signal_marked(0, prefixes=[scope + "."]) == 0
    finally:
        for proc in procs:
            proc.kill()
            proc.wait()


# -- item 9: the work dir changes while a capture task runs ---------------------


@pytest.mark.asyncio
async def test_capture_paths_are_fixed_when_the_task_starts(tmp_path: Path) -> None:
    first, second = tmp_path / "first", tmp_path / "second"
    first.mkdir()
    second.mkdir()
    release = tmp_path / "release"
    task = {
        "uid": "cap",
        "executable": f"echo out; while [ ! -e {release} ]; do sleep 0.01; done",
        "capture_stdio": True,
    }
    recorder = Recorder()
    async with LocalExecutionBackend() as backend:
        backend._work_dir = str(first)
        backend.register_callback(recorder)
        await backend.submit_tasks([task])
        await recorder.wait(["cap"], TaskState.RUNNING)
        backend._work_dir = str(second)
        release.touch()
        await recorder.wait(["cap"])
    assert recorder.final("cap") is TaskState.DONE
    assert task["stdout"] == str(first / "cap.stdout")
    assert Path(task["stdout"]).read_text() == "out\n"
    assert Path(task["stderr"]).exists()


# -- item 11: env and NUL bytes ---------------------------------------------------

BAD_EXEC = {
    "none-value": ({"executable": "true"}, {"env": {"PATH": "/bin", "X": None}}, "X"),
    "none-name": ({"executable": "true"}, {"env": {None: "v"}}, "None"),
    "eq-in-name": ({"executable": "true"}, {"env": {"A=B": "1"}}, "A=B"),
    "nul-in-name": ({"executable": "true"}, {"env": {"A\0": "1"}}, "NUL"),
    "empty-name": ({"executable": "true"}, {"env": {"": "1"}}, "name"),
    "nul-in-value": ({"executable": "true"}, {"env": {"A": "x\0y"}}, "'A'"),
    "nul-in-exe": ({"executable": "tr\0ue"}, {}, "executable"),
    "nul-in-arg": ({"executable": "echo", "arguments": ["a\0"]}, {}, "argument 0"),
    "nul-in-cwd": ({"executable": "true"}, {"cwd": "/tmp\0x"}, "cwd"),
}


@pytest.mark.asyncio
@pytest.mark.parametrize("case", list(BAD_EXEC))
@pytest.mark.parametrize("shell", [True, False])
async def test_local_bad_env_or_nul_fails_plainly(
    case: str, shell: bool, caplog: pytest.LogCaptureFixture
) -> None:
    fields, options, named = BAD_EXEC[case]
    task = {
        "uid": "t",
        **fields,
        "task_backend_specific_kwargs": {**options, "shell": shell},
    }
    with caplog.at_level(logging.ERROR, logger="reference"):
        recorder = await run([task])
    assert recorder.states("t") == [TaskState.FAILED]
    assert isinstance(task["exception"], ValueError)
    assert named in str(task["exception"])
    # a plain FAILED, not the "a bug must not hang the task" path
    assert [r for r in caplog.records if r.name == "reference"] == []


@pytest.mark.parametrize("case", list(BAD_EXEC))
def test_sync_runner_bad_env_or_nul_fails_plainly(case: str, tmp_path: Path) -> None:
    fields, options, named = BAD_EXEC[case]
    task = {"uid": "t", **fields, "task_backend_specific_kwargs": options}
    assert ex.run_executable(task, str(tmp_path)) is False
    assert isinstance(task["exception"], ValueError)
    assert named in str(task["exception"])


# -- tests that would not notice -----------------------------------------------

# Short foreground sleeps only: a child forked at the instant TERM arrives
# may lose it (the shell's trap is still installed in it), and a long one
# would then hold the pipes until the KILL.
TRAP = (
    "trap 'echo term > {marker}; exit 0' TERM; echo $$. > {pid}; "
    "while :; do sleep 0.1; done"
)


@pytest.mark.asyncio
@pytest.mark.parametrize("how", ["cancel", "timeout"])
async def test_term_comes_first_and_kill_only_after_the_grace(
    tmp_path: Path, how: str
) -> None:
    marker, pid_file = tmp_path / "marker", tmp_path / "pid"
    task = {
        "uid": "t",
        "executable": TRAP.format(marker=marker, pid=pid_file),
        "task_backend_specific_kwargs": {"timeout": 1} if how == "timeout" else {},
    }
    recorder = Recorder()
    # A grace far beyond the wait below: a KILL sent first (or a state that
    # waits for the grace) fails the test.
    async with LocalExecutionBackend(kill_grace=60.0) as backend:
        backend.register_callback(recorder)
        await backend.submit_tasks([task])
        await read_pid(pid_file)
        if how == "cancel":
            assert await backend.cancel_task("t") is True
        await recorder.wait(["t"], timeout=20)
    assert marker.read_text() == "term\n"
    expected = TaskState.CANCELED if how == "cancel" else TaskState.FAILED
    assert recorder.final("t") is expected


def test_sync_runner_terms_first_and_reports_before_the_grace(tmp_path: Path) -> None:
    marker, pid_file = tmp_path / "marker", tmp_path / "pid"
    task = {
        "uid": "t",
        "executable": TRAP.format(marker=marker, pid=pid_file),
        "task_backend_specific_kwargs": {"timeout": 1},
    }
    started = time.monotonic()
    assert ex.run_executable(task, str(tmp_path), kill_grace=60.0) is False
    assert time.monotonic() - started < 20
    assert marker.read_text() == "term\n"
    assert isinstance(task["exception"], TaskTimeoutError)


@pytest.mark.asyncio
async def test_capture_files_start_empty(tmp_path: Path) -> None:
    (tmp_path / "cap.stdout").write_text("stale output\n" * 100)
    (tmp_path / "cap.stderr").write_text("stale errors\n" * 100)
    task = {"uid": "cap", "executable": "echo new", "capture_stdio": True}
    await run([task], work_dir=tmp_path)
    assert (tmp_path / "cap.stdout").read_text() == "new\n"
    assert (tmp_path / "cap.stderr").read_text() == ""
    again = {"uid": "cap", "executable": "echo again", "capture_stdio": True}
    assert ex.run_executable(again, str(tmp_path)) is True
    assert (tmp_path / "cap.stdout").read_text() == "again\n"


@pytest.mark.asyncio
async def test_max_processes_is_the_bound_exactly(tmp_path: Path) -> None:
    bound = 3
    log = tmp_path / "log"
    log.mkdir()
    script = (
        'python3 -c "import time; print(time.time())" > {d}/$TASK.start; '
        "sleep 1; "
        'python3 -c "import time; print(time.time())" > {d}/$TASK.end'
    )
    tasks = [
        {
            "uid": f"p{i}",
            "executable": script.format(d=log),
            "task_backend_specific_kwargs": {
                "env": {"TASK": f"p{i}", "PATH": os.environ["PATH"]}
            },
        }
        for i in range(2 * bound)
    ]
    await run(tasks, timeout=60, max_processes=bound)
    spans = [
        (
            float((log / f"{t['uid']}.start").read_text()),
            float((log / f"{t['uid']}.end").read_text()),
        )
        for t in tasks
    ]
    peak = max(sum(1 for s, e in spans if s <= t < e) for t, _ in spans)
    assert peak == bound


@pytest.mark.asyncio
async def test_env_replaces_the_whole_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("ASYNCFLOW_PARENT_ONLY", "leaked")
    task = {
        "uid": "env",
        "executable": "/usr/bin/env",
        "task_backend_specific_kwargs": {"shell": False, "env": {"ONLY": "this"}},
    }
    await run([task])
    names = {line.split("=", 1)[0] for line in task["stdout"].splitlines()}
    # the task's mark is the one variable the backend adds (documented)
    assert names == {"ONLY", ex.MARK_VARIABLE}
    assert "ONLY=this" in task["stdout"].splitlines()
