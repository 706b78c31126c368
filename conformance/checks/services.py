"""Services: long-running tasks announced ready, then stopped (SV-1..SV-8).

A service is a task with ``is_service: True``. The harness records each
``service_callback`` the backend passes with a state (`Harness.readiness`);
these tests judge when it came, what it does to a future, and how services
end. Services here end by themselves after `BLOCK_LIMIT` seconds at most,
or as soon as the test's work directory is gone. A running service holds what
runs it (a worker, a core), so a test runs one service at a time and its
other tasks first: a backend with one worker conforms too.
"""

from __future__ import annotations

import asyncio
import socket
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import spec
from conformance import _payloads
from conformance.harness import BLOCK_LIMIT, Harness
from conformance.registry import cites

_C = spec.Capability
_S = spec.TaskState
_QUIET = 1.0
"""Seconds a ready service must keep running untouched (SV-1)."""
_GRACE = 5.0
"""Seconds a stopped service's processes get to be gone (SV-7)."""


def _as_service(task: dict[str, Any], **options: Any) -> dict[str, Any]:
    task["is_service"] = True
    task.setdefault("task_backend_specific_kwargs", {}).update(options)
    return task


def _wait_loop(h: Harness, release: Path) -> str:
    """Shell lines that wait for ``release`` (bounded, ended with the work dir)."""
    return (
        f'i=0; while [ ! -e "{release}" ] && [ -d "{h.work_dir}" ] '
        f"&& [ $i -lt {int(BLOCK_LIMIT * 20)} ]; do sleep 0.05; i=$((i+1)); done"
    )


def _exec_service(
    h: Harness, body: str, prefix: str = "svc", **options: Any
) -> tuple[dict[str, Any], Path]:
    """An executable service running ``body`` (``{release}`` filled in)."""
    uid = h.uid(prefix)
    release = h.work_dir / f"{uid}.release"
    script = h.script(body.format(release=release, wait=_wait_loop(h, release)), uid)
    task = h.executable_task(script, uid=uid, shell=False)
    return _as_service(task, **options), release


def _ready_count(h: Harness, uid: str) -> int:
    return len(h.readiness.get(uid, ()))


async def _wait_ready(h: Harness, task: dict[str, Any], clause_id: str) -> None:
    uid = task["uid"]
    await h.wait_for(
        lambda: _ready_count(h, uid) > 0 or _ended(h, uid),
        clause_id,
        f"service {uid!r} was never announced ready (no service_callback)",
    )
    if _ready_count(h, uid) == 0:
        h.fail(
            clause_id,
            f"service ended {h.final(uid)} ({task.get('exception')!r}) before it "
            "was announced ready",
            uid,
        )


def _ended(h: Harness, uid: str) -> bool:
    return any(spec.is_terminal(s) for s in h.delivered(uid))


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _blocking_service(h: Harness) -> tuple[dict[str, Any], Callable[[], None]]:
    """A service that runs until let go (or a quick one on a dry-run backend)."""
    if not h.can_block():
        return _as_service(h.runnable_task(h.uid("svc"))), lambda: None
    blocker = h.blocker(h.uid("svc"))
    return _as_service(blocker.task), blocker.let_go


@cites("SV-2", "SV-3")
async def ready_once_with_service_callback(h: Harness) -> None:
    """A service gets one extra RUNNING with service_callback; it resolves a future."""
    plain = h.runnable_task()
    service, let_go = _blocking_service(h)
    uid = service["uid"]
    await h.submit([plain, service])
    await _wait_ready(h, service, "SV-2")
    loop = asyncio.get_running_loop()
    callback = h.readiness[uid][0][1]
    h.check(callable(callback), "SV-3", f"service_callback is {callback!r}", uid)
    future: asyncio.Future[Any] = loop.create_future()
    try:
        callback(future, service, _S.RUNNING)
        callback(future, service, _S.RUNNING)  # a done future is left alone
        failed: asyncio.Future[Any] = loop.create_future()
        failed.set_exception(RuntimeError("resolved elsewhere"))
        callback(failed, service, _S.RUNNING)
    except Exception as error:
        h.fail("SV-3", f"service_callback raised {error!r}", uid)
    info = service.get("service_info")
    h.expect(
        future.done() and not future.cancelled() and future.exception() is None,
        "SV-3",
        "service_callback(future, task, state) left the future unresolved "
        "(or failed it) on the loop's thread",
        uid,
    )
    if future.done() and not future.cancelled() and future.exception() is None:
        h.expect(
            future.result() == info and future.result() is not None,
            "SV-3",
            f"the future holds {future.result()!r}, not the service's info "
            f"task['service_info'] = {info!r}",
            uid,
        )
    h.expect(
        isinstance(info, dict)
        and isinstance(info.get("probe"), str)
        and any(key in info for key in ("pid", "worker", "dry_run")),
        "SV-3",
        f"task['service_info'] is {info!r}: not a dict with 'probe' and one of "
        "'pid', 'worker', 'dry_run'",
        uid,
    )
    h.expect(
        isinstance(failed.exception(), RuntimeError),
        "SV-3",
        "service_callback changed a future that was already done",
        uid,
    )
    let_go()
    await h.wait_terminal([uid, plain["uid"]])
    states = h.delivered(uid)
    ready = h.readiness[uid]
    h.expect(
        len(ready) == 1,
        "SV-2",
        f"service_callback was passed {len(ready)} times for one service",
        uid,
    )
    index, _ = ready[0]
    h.expect(
        states[index] is _S.RUNNING and _S.RUNNING in states[:index],
        "SV-2",
        f"service_callback came with state {states[index]} as delivery "
        f"{index + 1} of {[str(s) for s in states]}, not with a second RUNNING",
        uid,
    )
    h.expect(
        not h.readiness.get(plain["uid"]),
        "SV-2",
        "a task without is_service was passed a service_callback",
        plain["uid"],
    )


@cites("SV-1")
async def a_service_runs_until_stopped(h: Harness) -> None:
    """A ready service keeps running; only a timeout it gives ends it early."""
    service, let_go = _blocking_service(h)
    uid = service["uid"]
    await h.submit([service])
    await _wait_ready(h, service, "SV-1")
    ready_at = time.monotonic()
    await asyncio.sleep(_QUIET)  # nothing may happen: there is no event to wait on
    h.expect(
        not _ended(h, uid),
        "SV-1",
        f"the service ended {h.final(uid) if _ended(h, uid) else ''} within "
        f"{time.monotonic() - ready_at:.1f} s of being ready, without being "
        "stopped or ending by itself",
        uid,
    )
    let_go()
    await h.wait_terminal([uid])
    if h.has(_C.EXECUTABLES) and h.has(_C.TIMEOUT):
        timed, _ = _exec_service(h, "{wait}\n", timeout=0.5)
        states = await h.run([timed])
        h.expect(
            states[timed["uid"]] is _S.FAILED
            and isinstance(timed.get("exception"), spec.TaskTimeoutError),
            "SV-1",
            f"a service with timeout=0.5 that never ends ended "
            f"{states[timed['uid']]} ({timed.get('exception')!r}), not FAILED "
            "with TaskTimeoutError",
            timed["uid"],
        )


_PYTHON_TCP = """\
import os, socket, sys, time
time.sleep(0.3)
server = socket.socket()
server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
server.bind(("127.0.0.1", int(sys.argv[1])))
server.listen(8)
server.settimeout(0.05)
end = time.monotonic() + float(sys.argv[3])
while time.monotonic() < end and not os.path.exists(sys.argv[2]):
    try:
        server.accept()[0].close()
    except OSError:
        pass
"""


@cites("SV-4", requires=[_C.EXECUTABLES])
async def probes_hold_before_ready(h: Harness) -> None:
    """tcp, file and stdout probes: ready only once they hold, and info says what."""
    if h.has(_C.DRY_RUN):
        h.not_applicable("a dry-run backend runs no probe")
    flag = h.work_dir / "svc.flag"
    marker = h.work_dir / "svc.marker"
    file_svc, file_go = _exec_service(
        h, f'sleep 0.3; touch "{flag}"\n{{wait}}\n', ready={"file": str(flag)}
    )
    line_svc, line_go = _exec_service(
        h,
        f'echo starting; sleep 0.3; touch "{marker}"; echo "listening on 8123"\n'
        "{wait}\n",
        ready={"stdout": r"listening on (\d+)"},
    )
    port = _free_port()
    server = h.work_dir / "tcp_service.py"
    server.write_text(_PYTHON_TCP)
    tcp_uid = h.uid("tcp")
    tcp_go = h.work_dir / f"{tcp_uid}.release"
    tcp_svc = _as_service(
        h.executable_task(
            sys.executable,
            [str(server), str(port), str(tcp_go), str(BLOCK_LIMIT)],
            uid=tcp_uid,
            shell=False,
        ),
        ready={"tcp": f"127.0.0.1:{port}"},
    )

    def tcp_open() -> bool:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1.0).close()
        except OSError:
            return False
        return True

    held: dict[str, Callable[[], bool]] = {
        file_svc["uid"]: flag.exists,
        line_svc["uid"]: marker.exists,
        tcp_uid: tcp_open,
    }
    found: dict[str, bool] = {}

    def on_state(task: Any, state: Any) -> None:
        uid = task.get("uid")
        if uid in held and uid not in found and _ready_count(h, uid):
            found[uid] = held[uid]()  # at the moment readiness is announced

    h.also_call(on_state)
    expected = {
        file_svc["uid"]: ("file", "path", str(flag)),
        line_svc["uid"]: ("stdout", "line", "listening on 8123"),
        tcp_uid: ("tcp", "endpoint", f"127.0.0.1:{port}"),
    }
    releases = (file_go, line_go, tcp_go)
    for task, release in zip((file_svc, line_svc, tcp_svc), releases, strict=True):
        uid = task["uid"]
        probe, key, value = expected[uid]
        await h.submit([task])
        await _wait_ready(h, task, "SV-4")
        h.expect(
            found.get(uid),
            "SV-4",
            f"announced ready before its {probe} probe held",
            uid,
        )
        info = task.get("service_info") or {}
        h.expect(
            info.get("probe") == probe and info.get(key) == value,
            "SV-4",
            f"service_info is {info!r}; expected probe={probe!r} and {key}={value!r}",
            uid,
        )
        release.touch()
        await h.wait_terminal([uid])


MALFORMED: tuple[dict[str, Any], ...] = (
    {"ready": "tcp"},
    {"ready": {"tcp": "no-port"}},
    {"ready": {"http": "127.0.0.1:80"}},
    {"ready": {"file": 3}},
    {"ready": {"stdout": "("}},
    {"ready_timeout": -1},
    {"ready_timeout": float("nan")},
    {"ready_timeout": "5"},
)
"""Service options a backend must refuse, naming the option (SV-4)."""


@cites("SV-4")
async def malformed_ready_options_fail(h: Harness) -> None:
    """A malformed ready or ready_timeout fails the service, naming the option."""
    tasks = [_as_service(h.runnable_task(), **options) for options in MALFORMED]
    states = await h.run(tasks)
    for options, task in zip(MALFORMED, tasks, strict=True):
        uid = task["uid"]
        name = next(iter(options))
        error = task.get("exception")
        h.expect(
            states[uid] is _S.FAILED and name in str(error),
            "SV-4",
            f"a service with {options!r} ended {states[uid]} ({error!r}), not "
            f"FAILED with an error naming {name!r}",
            uid,
        )
        h.expect(
            not h.readiness.get(uid),
            "SV-4",
            "a service with malformed options was announced ready",
            uid,
        )


@cites("SV-5")
async def early_end_fails_without_ready(h: Harness) -> None:
    """Exits, failures and ready timeouts before ready: FAILED, no service_callback."""
    if not h.can_block():
        h.not_applicable("the backend runs nothing")
    never = str(h.work_dir / "never.flag")
    early: list[dict[str, Any]] = []
    if h.has(_C.EXECUTABLES):
        early.append(_exec_service(h, "exit 0\n", ready={"file": never})[0])
        early.append(
            _exec_service(h, "echo no; exit 3\n", ready={"stdout": "ready"})[0]
        )
    if h.has(_C.FUNCTIONS):
        early.append(
            _as_service(h.function_task(_payloads.fail, "early"), ready={"file": never})
        )
    late = (
        _exec_service(h, "{wait}\n", ready={"file": never}, ready_timeout=0.5)[0]
        if h.has(_C.EXECUTABLES)
        else _as_service(h.blocker().task, ready={"file": never}, ready_timeout=0.5)
    )
    began = time.monotonic()
    states = await h.run([*early, late], timeout=BLOCK_LIMIT / 2)
    took = time.monotonic() - began
    for task in [*early, late]:
        uid = task["uid"]
        h.expect(
            states[uid] is _S.FAILED,
            "SV-5",
            f"a service that ended before it was ready ended {states[uid]}",
            uid,
        )
        h.expect(
            not h.readiness.get(uid),
            "SV-5",
            "a service that never got ready was passed a service_callback",
            uid,
        )
    h.expect(
        isinstance(late.get("exception"), spec.TaskTimeoutError),
        "SV-5",
        f"a service not ready within ready_timeout=0.5 failed with "
        f"{late.get('exception')!r}, not TaskTimeoutError",
        late["uid"],
    )
    h.note(f"early ends and a 0.5 s ready timeout reported in {took:.1f} s")


@cites("SV-6")
async def end_after_ready(h: Harness) -> None:
    """After ready: exit 0 or a return is DONE; an exit code or a raise is FAILED."""
    if not h.can_block():
        h.not_applicable("the backend runs nothing")
    cases: list[tuple[dict[str, Any], Path, spec.TaskState]] = []
    if h.has(_C.EXECUTABLES):
        ok, ok_go = _exec_service(h, "{wait}\nexit 0\n")
        bad, bad_go = _exec_service(h, "{wait}\nexit 3\n")
        cases += [(ok, ok_go, _S.DONE), (bad, bad_go, _S.FAILED)]
    if h.has(_C.FUNCTIONS):
        for func, end in (
            (_payloads.block, _S.DONE),
            (_payloads.block_then_fail, _S.FAILED),
        ):
            uid = h.uid("fsvc")
            started = h.work_dir / f"{uid}.started"
            go = h.work_dir / f"{uid}.release"
            task = h.function_task(func, str(started), str(go), BLOCK_LIMIT, uid=uid)
            cases.append((_as_service(task), go, end))
    states: dict[str, spec.TaskState] = {}
    for task, go, _ in cases:
        await h.submit([task])
        await _wait_ready(h, task, "SV-6")
        go.touch()
        states.update(await h.wait_terminal([task["uid"]]))
    for task, _, end in cases:
        uid = task["uid"]
        h.expect(
            states[uid] is end,
            "SV-6",
            f"a service ending after it was ready ended {states[uid]} "
            f"(exit_code={task.get('exit_code')!r}, "
            f"exception={task.get('exception')!r}), not {end}",
            uid,
        )
    for task, _, end in cases:
        if task.get("executable") and end is _S.FAILED:
            h.expect(
                task.get("exit_code") == 3,
                "SV-6",
                f"exit_code is {task.get('exit_code')!r}, not 3",
                task["uid"],
            )
        if task.get("function") and end is _S.FAILED:
            h.expect(
                isinstance(task.get("exception"), _payloads.PayloadError),
                "SV-6",
                f"exception is {task.get('exception')!r}, not the PayloadError raised",
                task["uid"],
            )


@cites("SV-7", requires=[_C.EXECUTABLES])
async def cancel_and_shutdown_stop_the_group(h: Harness) -> None:
    """A ready service canceled, and one caught by shutdown: CANCELED, group gone."""
    canceled, canceled_pids = h.process_tree()
    stopped, stopped_pids = h.process_tree()
    for blocker in (canceled, stopped):
        _as_service(blocker.task)
    await h.submit([canceled.task])
    await _wait_ready(h, canceled.task, "SV-7")
    await h.wait_started(canceled, "SV-7")
    procs = h.read_pids(canceled_pids)
    h.check(
        await h.backend.cancel_task(canceled.uid),
        "SV-7",
        "cancel_task returned False for a ready service",
        canceled.uid,
    )
    await h.wait_terminal([canceled.uid])
    left = await h.wait_gone(procs, _GRACE)
    h.expect(
        h.final(canceled.uid) is _S.CANCELED and not left,
        "SV-7",
        f"a canceled service ended {h.final(canceled.uid)} with "
        f"{len(left)} of its processes alive {_GRACE:g} s later",
        canceled.uid,
    )
    await h.submit([stopped.task])
    await _wait_ready(h, stopped.task, "SV-7")
    await h.wait_started(stopped, "SV-7")
    procs = h.read_pids(stopped_pids)
    await h.shutdown()
    left = await h.wait_gone(procs, _GRACE)
    final = [s for s in h.delivered(stopped.uid) if spec.is_terminal(s)]
    h.expect(
        final == [_S.CANCELED] and not left,
        "SV-7",
        f"a service caught by shutdown ended {final} with {len(left)} of its "
        f"processes alive {_GRACE:g} s later",
        stopped.uid,
    )


@cites("SV-8", requires=[_C.FUNCTIONS])
async def async_generator_ready_at_first_yield(h: Harness) -> None:
    """An async generator service is ready at its first yield, with its value."""
    if h.has(_C.DRY_RUN):
        h.not_applicable("a dry-run backend runs no generator")
    made: list[tuple[dict[str, Any], Path, Path]] = []
    for fail in (False, True):
        uid = h.uid("gen")
        started = h.work_dir / f"{uid}.started"
        go = h.work_dir / f"{uid}.release"
        value = {"endpoint": f"{uid}:1", "n": 1}
        task = h.function_task(
            _payloads.serve, str(started), str(go), value, BLOCK_LIMIT, fail, uid=uid
        )
        made.append((_as_service(task), started, go))
    found: dict[str, bool] = {}

    def on_state(task: Any, state: Any) -> None:
        uid = task.get("uid")
        for made_task, started, _ in made:
            if uid == made_task["uid"] and uid not in found and _ready_count(h, uid):
                found[uid] = started.exists()

    h.also_call(on_state)
    states: dict[str, spec.TaskState] = {}
    for task, _, go in made:
        uid = task["uid"]
        await h.submit([task])
        await _wait_ready(h, task, "SV-8")
        info = task.get("service_info") or {}
        h.expect(
            found.get(uid) and info.get("value") == task["args"][2],
            "SV-8",
            f"ready with service_info {info!r} (generator started first: "
            f"{found.get(uid)}); expected its first yielded value "
            f"{task['args'][2]!r}",
            uid,
        )
        await asyncio.sleep(_QUIET / 2)  # no event: it must simply go on
        h.expect(
            not _ended(h, uid),
            "SV-8",
            "the generator service ended at its first yield",
            uid,
        )
        go.touch()
        states.update(await h.wait_terminal([uid]))
    ok, bad = made[0][0], made[1][0]
    h.expect(
        states[ok["uid"]] is _S.DONE,
        "SV-8",
        f"a generator service that ended ended {states[ok['uid']]}",
        ok["uid"],
    )
    h.expect(
        states[bad["uid"]] is _S.FAILED
        and isinstance(bad.get("exception"), _payloads.PayloadError),
        "SV-8",
        f"a generator service raising after its yield ended {states[bad['uid']]} "
        f"({bad.get('exception')!r})",
        bad["uid"],
    )
