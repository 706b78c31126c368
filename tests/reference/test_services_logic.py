"""Service readiness decided without threads or a loop: spec.parse_ready,
reference._services (options, Readiness, the service_callback), and the noop
backend's dry-run services."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest

from reference import NoopExecutionBackend
from reference._services import (
    LineSplitter,
    Readiness,
    ServiceOptions,
    ServiceReady,
    service_options,
)
from spec import (
    ProbeKind,
    ServiceInfo,
    TaskKind,
    TaskState,
    TaskTimeoutError,
    is_service,
    parse_ready,
)


async def _agen() -> Any:
    yield 1


def _service(**options: Any) -> dict[str, Any]:
    return {
        "uid": "svc",
        "executable": "true",
        "is_service": True,
        "task_backend_specific_kwargs": options,
    }


@pytest.mark.parametrize(
    ("value", "kind", "target"),
    [
        (None, ProbeKind.STARTED, ""),
        ({"tcp": "127.0.0.1:8799"}, ProbeKind.TCP, "127.0.0.1:8799"),
        ({"tcp": "[::1]:80"}, ProbeKind.TCP, "[::1]:80"),
        ({"file": "ready.flag"}, ProbeKind.FILE, "ready.flag"),
        ({"stdout": r"listening on (\d+)"}, ProbeKind.STDOUT, r"listening on (\d+)"),
    ],
)
def test_parse_ready_reads_each_probe(value: Any, kind: ProbeKind, target: str) -> None:
    probe = parse_ready(value)
    assert probe.kind is kind and probe.target == target


def test_a_tcp_probe_splits_host_and_port() -> None:
    probe = parse_ready({"tcp": "[::1]:8080"})
    assert (probe.host, probe.port) == ("::1", 8080)


@pytest.mark.parametrize(
    ("value", "named"),
    [
        ("tcp", "'ready' must be a dict"),
        ({}, "'ready' must be a dict"),
        ({"tcp": "a:1", "file": "x"}, "'ready' must be a dict"),
        ({"http": "x"}, "'http' is unknown"),
        ({"tcp": ""}, "'tcp' needs a non-empty str"),
        ({"file": 3}, "'file' needs a non-empty str, got int 3"),
        ({"file": None}, "'file' needs a non-empty str"),
        ({"tcp": "nohost"}, "'host:port'"),
        ({"tcp": ":80"}, "'host:port'"),
        ({"tcp": "h:http"}, "'host:port'"),
        ({"tcp": "h:0"}, "1..65535"),
        ({"tcp": "h:70000"}, "1..65535"),
        ({"stdout": "("}, "not a valid regex"),
        ({("un", "hashable"): "x"}, "is unknown"),
    ],
)
def test_parse_ready_names_what_is_wrong(value: Any, named: str) -> None:
    with pytest.raises(ValueError, match=named.replace("(", r"\(").replace(")", r"\)")):
        parse_ready(value)


def test_a_stdout_probe_searches_the_line() -> None:
    probe = parse_ready({"stdout": r"port (\d+)"})
    assert probe.matches("serving on port 8000 now")
    assert not probe.matches("starting")
    assert not parse_ready({"file": "x"}).matches("x")


@pytest.mark.parametrize(
    ("task", "expected"),
    [
        ({"is_service": True}, True),
        ({"is_service": 1}, False),
        ({"is_service": "yes"}, False),
        ({}, False),
        ("not a dict", False),
    ],
)
def test_is_service_wants_true(task: Any, expected: bool) -> None:
    assert is_service(task) is expected


def test_service_options_reads_ready_and_ready_timeout() -> None:
    options = service_options(
        _service(ready={"file": "f"}, ready_timeout=2), TaskKind.EXECUTABLE
    )
    assert options == ServiceOptions(parse_ready({"file": "f"}), 2.0, False)
    assert service_options(_service(), TaskKind.EXECUTABLE).ready_timeout is None
    # Options that are not a dict are another check's business (RS-7): no probe.
    task = _service()
    task["task_backend_specific_kwargs"] = None
    assert service_options(task, TaskKind.EXECUTABLE).probe.kind is ProbeKind.STARTED


@pytest.mark.parametrize(
    ("options", "error", "named"),
    [
        ({"ready_timeout": -1}, ValueError, "ready_timeout"),
        ({"ready_timeout": 0}, ValueError, "ready_timeout"),
        ({"ready_timeout": float("nan")}, ValueError, "ready_timeout"),
        ({"ready_timeout": float("inf")}, ValueError, "ready_timeout"),
        ({"ready_timeout": "5"}, TypeError, "ready_timeout"),
        ({"ready_timeout": True}, TypeError, "ready_timeout"),
        ({"ready": ["tcp", "h:1"]}, ValueError, "'ready'"),
    ],
)
def test_service_options_refuse_bad_values(
    options: dict[str, Any], error: type[Exception], named: str
) -> None:
    with pytest.raises(error, match=named):
        service_options(_service(**options), TaskKind.EXECUTABLE)


def test_a_function_service_cannot_use_a_stdout_probe() -> None:
    task = {"uid": "f", "function": print, "is_service": True}
    task["task_backend_specific_kwargs"] = {"ready": {"stdout": "x"}}
    with pytest.raises(ValueError, match="needs an executable service"):
        service_options(task, TaskKind.FUNCTION)


def test_an_async_generator_service_is_ready_at_its_yield_only() -> None:
    task: dict[str, Any] = {"uid": "g", "function": _agen, "is_service": True}
    assert service_options(task, TaskKind.FUNCTION).generator
    task["task_backend_specific_kwargs"] = {"ready": {"file": "x"}}
    with pytest.raises(ValueError, match="ready at its first yield"):
        service_options(task, TaskKind.FUNCTION)


def _readiness(ready: Any = None, timeout: float | None = None) -> Readiness:
    options = ServiceOptions(parse_ready(ready), timeout)
    return Readiness(options, {"pid": 42})


def test_without_a_probe_a_service_is_ready_once_running() -> None:
    readiness = _readiness()
    assert not readiness.waits
    assert readiness.on_line("anything") is None
    assert readiness.on_probe_held() is None
    assert readiness.on_running() == {"pid": 42, "probe": "started"}
    assert readiness.announced and not readiness.waits
    assert readiness.on_running() is None  # announced once (SV-2)


def test_the_identity_known_at_running_replaces_the_first() -> None:
    readiness = _readiness()
    assert readiness.on_running({"pid": 7}) == {"pid": 7, "probe": "started"}


def test_a_stdout_probe_is_ready_at_the_first_matching_line() -> None:
    readiness = _readiness({"stdout": "listening"})
    assert readiness.waits
    assert readiness.on_running() is None
    assert readiness.on_line("starting") is None
    assert readiness.on_line("now listening on 80") == {
        "pid": 42,
        "probe": "stdout",
        "line": "now listening on 80",
    }
    assert readiness.on_line("listening again") is None


def test_readiness_found_before_running_waits_for_it() -> None:
    readiness = _readiness({"stdout": "up"})
    assert readiness.on_line("up") is None  # RUNNING not reported yet
    assert readiness.ready and not readiness.announced
    assert readiness.on_running() == {"pid": 42, "probe": "stdout", "line": "up"}
    assert readiness.on_running() is None


@pytest.mark.parametrize(
    ("ready", "key", "value"),
    [({"tcp": "h:1"}, "endpoint", "h:1"), ({"file": "/f"}, "path", "/f")],
)
def test_polled_probes_are_ready_when_they_hold(
    ready: dict[str, str], key: str, value: str
) -> None:
    readiness = _readiness(ready)
    assert readiness.on_running() is None
    info = readiness.on_probe_held()
    assert info is not None and info[key] == value  # type: ignore[literal-required]
    assert info["probe"] == next(iter(ready))


def test_an_async_generator_is_ready_at_its_first_yield() -> None:
    readiness = Readiness(ServiceOptions(parse_ready(None), None, True), {"pid": 1})
    assert readiness.on_running() is None
    assert readiness.on_yield({"url": "u"}) == {
        "pid": 1,
        "probe": "yield",
        "value": {"url": "u"},
    }
    assert readiness.on_yield("second") is None
    assert _readiness().on_yield("x") is None


def _end(
    readiness: Readiness, state: TaskState, closing: bool = False, **task: Any
) -> Any:
    return readiness.outcome("svc", state, {"uid": "svc", **task}, closing=closing)


def test_ending_well_before_ready_is_a_failure_saying_what_was_awaited() -> None:
    readiness = _readiness({"file": "/f"})
    readiness.on_running()
    state, error = _end(readiness, TaskState.DONE, exit_code=0)
    assert state is TaskState.FAILED and isinstance(error, RuntimeError)
    assert "'svc' exited with code 0 before it was ready" in str(error)
    assert "ready probe file '/f'" in str(error)
    state, error = _end(readiness, TaskState.DONE, return_value=1)
    assert "'svc' returned before" in str(error)
    # A failure keeps its own error (RS-3 keeps the type); a cancel stays.
    assert _end(readiness, TaskState.FAILED) == (TaskState.FAILED, None)
    assert _end(readiness, TaskState.CANCELED) == (TaskState.CANCELED, None)


def test_without_a_probe_a_quick_end_is_a_plain_end() -> None:
    readiness = _readiness()  # its RUNNING was never reported: it ended first
    assert _end(readiness, TaskState.DONE, return_value=1) == (TaskState.DONE, None)
    generator = Readiness(ServiceOptions(parse_ready(None), None, True), {"pid": 1})
    state, error = _end(generator, TaskState.DONE, return_value=None)
    assert state is TaskState.FAILED and "waiting for its first yield" in str(error)


def test_after_ready_a_service_ends_like_any_task() -> None:
    readiness = _readiness()
    readiness.on_running()
    for state in TaskState:
        if state is not TaskState.RUNNING:
            assert _end(readiness, state) == (state, None)


def test_a_ready_timeout_fails_with_task_timeout_error() -> None:
    readiness = _readiness({"file": "/f"}, timeout=1.5)
    readiness.on_running()
    assert readiness.on_deadline()
    assert readiness.on_probe_held() is None  # too late: it is being stopped
    state, error = _end(readiness, TaskState.CANCELED)  # stopped for it
    assert state is TaskState.FAILED and isinstance(error, TaskTimeoutError)
    assert "1.5 s" in str(error) and "ready probe file '/f'" in str(error)
    # At shutdown, what shutdown stops is CANCELED (SD-2).
    assert _end(readiness, TaskState.CANCELED, closing=True) == (
        TaskState.CANCELED,
        None,
    )
    ready = _readiness(timeout=1.0)
    ready.on_running()
    assert not ready.on_deadline()  # ready in time: nothing to stop


def test_lines_are_split_across_chunks() -> None:
    splitter = LineSplitter()
    assert splitter.feed(b"star") == []
    assert splitter.feed(b"ting\r\nready on") == ["starting"]
    assert splitter.feed("  80\nmore") == ["ready on  80"]
    assert splitter.feed(b"\xff\n") == ["more\ufffd"]
    splitter.feed(b"x" * (LineSplitter.LIMIT * 2))
    assert splitter.feed(b"\n") == ["x" * LineSplitter.LIMIT]


@pytest.mark.asyncio
async def test_service_ready_resolves_a_pending_future_only() -> None:
    info: ServiceInfo = {"probe": "started", "pid": 7}
    ready = ServiceReady(info)
    loop = asyncio.get_running_loop()
    future: asyncio.Future[Any] = loop.create_future()
    ready(future, {}, "RUNNING")
    assert future.result() is info
    ready(future, {}, "RUNNING")  # already done: left alone, no InvalidStateError
    failed: asyncio.Future[Any] = loop.create_future()
    failed.set_exception(RuntimeError("x"))
    ready(failed, {}, "RUNNING")
    assert isinstance(failed.exception(), RuntimeError)
    canceled: asyncio.Future[Any] = loop.create_future()
    canceled.cancel()
    ready(canceled, {}, "RUNNING")
    assert canceled.cancelled()


@pytest.mark.asyncio
async def test_service_ready_from_another_thread_resolves_on_the_loop() -> None:
    loop = asyncio.get_running_loop()
    future: asyncio.Future[Any] = loop.create_future()
    ready = ServiceReady({"probe": "started", "pid": 1})
    thread = threading.Thread(target=ready, args=(future, {}, "RUNNING"))
    thread.start()
    thread.join()
    assert await asyncio.wait_for(future, 5) == {"probe": "started", "pid": 1}


class _Engine:
    """Records states like radical.asyncflow 0.6's callback, keyword included."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, TaskState, Any]] = []
        self.changed = asyncio.Event()

    def __call__(
        self, task: dict[str, Any], state: TaskState, service_callback: Any = None
    ) -> None:
        self.calls.append((task["uid"], state, service_callback))
        self.changed.set()

    async def ended(self, count: int) -> None:
        async def wait() -> None:
            while (
                sum(s in (TaskState.DONE, TaskState.FAILED) for _, s, _ in self.calls)
                < count
            ):
                self.changed.clear()
                await self.changed.wait()

        await asyncio.wait_for(wait(), 10)


@pytest.mark.asyncio
async def test_noop_runs_a_service_dry_ready_at_once_then_done() -> None:
    backend = NoopExecutionBackend()
    engine = _Engine()
    backend.register_callback(engine)
    service = _service()
    plain = {"uid": "plain", "function": len, "args": [[1]]}
    bad = _service(ready={"tcp": "nohost"})
    bad["uid"] = "bad"
    await backend.submit_tasks([service, plain, bad])
    await engine.ended(3)
    svc = [(s, cb) for uid, s, cb in engine.calls if uid == "svc"]
    assert [s for s, _ in svc] == [TaskState.RUNNING, TaskState.RUNNING, TaskState.DONE]
    assert svc[0][1] is None and svc[2][1] is None
    assert service["service_info"] == {"probe": "dry_run", "dry_run": True}
    future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
    svc[1][1](future, service, TaskState.RUNNING)
    assert future.result() == {"probe": "dry_run", "dry_run": True}
    assert [(s, cb) for uid, s, cb in engine.calls if uid == "plain"] == [
        (TaskState.DONE, None)
    ]
    assert [s for uid, s, _ in engine.calls if uid == "bad"] == [TaskState.FAILED]
    assert "host:port" in str(bad["exception"])
    await backend.shutdown()


@pytest.mark.asyncio
async def test_noop_contains_a_readiness_callback_that_raises() -> None:
    backend = NoopExecutionBackend()
    seen: list[tuple[str, TaskState]] = []

    def engine(task: dict[str, Any], state: TaskState, **extra: Any) -> None:
        seen.append((task["uid"], state))
        if extra:
            raise asyncio.CancelledError  # contained like any callback error (ST-8)

    backend.register_callback(engine)
    await backend.submit_tasks([_service()])
    for _ in range(100):
        if ("svc", TaskState.DONE) in seen:
            break
        await asyncio.sleep(0)
    assert seen == [("svc", TaskState.RUNNING)] * 2 + [("svc", TaskState.DONE)]
    await backend.shutdown()
