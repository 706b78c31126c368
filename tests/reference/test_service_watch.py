"""ServiceWatch and drive_generator on a real loop, with a recording report."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from reference._services import Readiness, ServiceOptions
from reference.local.services import ServiceWatch, drive_generator
from spec import TaskState, parse_ready

pytestmark = [pytest.mark.asyncio, pytest.mark.timeout(30)]


class Host:
    """Records what the watch reports and whether it asked to stop."""

    def __init__(self) -> None:
        self.reports: list[Any] = []
        self.stopped = asyncio.Event()
        self.announced = asyncio.Event()

    def report_ready(self, task: dict[str, Any], ready: Any) -> None:
        self.reports.append(ready)
        self.announced.set()

    def stop(self) -> None:
        self.stopped.set()


def _watch(
    host: Host, ready: Any = None, timeout: float | None = None, cwd: str | None = None
) -> tuple[ServiceWatch, dict[str, Any]]:
    task: dict[str, Any] = {"uid": "svc", "is_service": True}
    readiness = Readiness(ServiceOptions(parse_ready(ready), timeout), {"pid": 1})
    return ServiceWatch(readiness, task, host.report_ready, host.stop, cwd), task


async def _announced(host: Host) -> dict[str, Any]:
    await asyncio.wait_for(host.announced.wait(), 10)
    [ready] = host.reports
    future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
    ready(future, {}, TaskState.RUNNING.value)
    return dict(future.result())


async def test_no_probe_is_announced_at_running() -> None:
    host = Host()
    watch, task = _watch(host, timeout=0.05)
    watch.on_running(asyncio.get_running_loop(), {"pid": 9})
    assert await _announced(host) == {"pid": 9, "probe": "started"}
    assert task["service_info"] == {"pid": 9, "probe": "started"}
    await asyncio.sleep(0.1)  # past the ready timeout: ready in time, no stop
    assert not host.stopped.is_set()
    watch.close()


async def test_a_relative_file_probe_is_read_from_cwd(tmp_path: Path) -> None:
    host = Host()
    watch, _ = _watch(host, {"file": "flag"}, cwd=str(tmp_path))
    watch.on_running(asyncio.get_running_loop())
    await asyncio.sleep(0.1)
    assert not host.reports
    (tmp_path / "flag").touch()
    assert (await _announced(host))["path"] == "flag"
    watch.close()


async def test_a_tcp_probe_waits_for_a_listener() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    host = Host()
    watch, _ = _watch(host, {"tcp": f"127.0.0.1:{port}"})
    watch.on_running(asyncio.get_running_loop())
    await asyncio.sleep(0.1)
    assert not host.reports
    server = await asyncio.start_server(lambda r, w: w.close(), "127.0.0.1", port)
    async with server:
        assert (await _announced(host))["endpoint"] == f"127.0.0.1:{port}"
    watch.close()


async def test_a_stdout_probe_reads_piped_chunks() -> None:
    host = Host()
    chunks: list[bytes] = [b"starting\nread"]
    watch, _ = _watch(host, {"stdout": r"ready on (\d+)"})
    watch.on_running(asyncio.get_running_loop(), output=lambda: chunks)
    await asyncio.sleep(0.1)
    chunks.append(b"y on 80\n")
    assert (await _announced(host))["line"] == "ready on 80"
    watch.close()


async def test_a_stdout_probe_reads_the_capture_file(tmp_path: Path) -> None:
    host = Host()
    out = tmp_path / "svc.stdout"
    out.write_text("booting\n")
    watch, _ = _watch(host, {"stdout": "up"})
    watch.on_running(asyncio.get_running_loop(), output_path=str(out))
    await asyncio.sleep(0.1)
    with out.open("a") as append:
        append.write("all up\n")
    assert (await _announced(host))["line"] == "all up"
    watch.close()


async def test_the_ready_timeout_stops_the_service_unannounced(tmp_path: Path) -> None:
    host = Host()
    watch, _ = _watch(host, {"file": str(tmp_path / "never")}, timeout=0.2)
    watch.on_running(asyncio.get_running_loop())
    await asyncio.wait_for(host.stopped.wait(), 10)
    (tmp_path / "never").touch()
    await asyncio.sleep(0.15)
    assert not host.reports and watch.readiness.timed_out


async def test_close_stops_polling() -> None:
    host = Host()
    chunks: list[bytes] = []
    watch, _ = _watch(host, {"stdout": "x"})
    watch.on_running(asyncio.get_running_loop(), output=lambda: chunks)
    watch.close()
    chunks.append(b"x\n")
    await asyncio.sleep(0.15)
    assert not host.reports


async def test_a_generator_is_announced_at_its_first_yield_then_runs_on() -> None:
    host = Host()
    task: dict[str, Any] = {"uid": "gen", "is_service": True}
    options = ServiceOptions(parse_ready(None), None, generator=True)
    watch = ServiceWatch(
        Readiness(options, {"pid": 1}), task, host.report_ready, host.stop
    )
    go = asyncio.Event()
    closed = asyncio.Event()

    async def service(value: str) -> AsyncIterator[str]:
        try:
            yield value
            await go.wait()
            yield "ignored"
        finally:
            closed.set()

    runner = asyncio.create_task(drive_generator(watch, service, ("first",), {}))
    await asyncio.sleep(0.05)
    assert not host.reports  # found ready, but RUNNING not reported yet
    watch.on_running(asyncio.get_running_loop())
    assert (await _announced(host))["value"] == "first"
    assert not runner.done()
    go.set()
    assert await asyncio.wait_for(runner, 10) == "first" and closed.is_set()


async def test_a_canceled_generator_is_closed() -> None:
    host = Host()
    options = ServiceOptions(parse_ready(None), None, generator=True)
    watch = ServiceWatch(
        Readiness(options, {"pid": 1}), {"uid": "g"}, host.report_ready, host.stop
    )
    closed = asyncio.Event()

    async def service() -> AsyncIterator[int]:
        try:
            yield 1
            await asyncio.sleep(60)
        finally:
            closed.set()

    runner = asyncio.create_task(drive_generator(watch, service, (), {}))
    watch.on_running(asyncio.get_running_loop())
    await _announced(host)
    runner.cancel()
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(runner, 10)
    assert closed.is_set()


async def test_a_generator_ending_before_its_first_yield_returns_none() -> None:
    host = Host()
    options = ServiceOptions(parse_ready(None), None, generator=True)
    watch = ServiceWatch(
        Readiness(options, {"pid": 1}), {"uid": "g"}, host.report_ready, host.stop
    )

    async def service() -> AsyncIterator[int]:
        return
        yield 1  # an async generator that yields nothing

    assert await asyncio.wait_for(drive_generator(watch, service, (), {}), 10) is None
    assert not watch.readiness.ready
