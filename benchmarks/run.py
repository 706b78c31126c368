"""Benchmark the reference backends against raw baselines and radical.asyncflow 0.6.

Run from the repository root::

    python benchmarks/run.py                 # full run (a few minutes)
    python benchmarks/run.py --quick         # tiny sizes, seconds (a smoke run)
    python benchmarks/run.py --check         # exit 1 when a target is missed
    python benchmarks/run.py --repeat 5 --json out.json --chart out.png
    python benchmarks/run.py --profile async-fn:ours-local-thread

Everything is measured in one process and one run, so the ratios compare
like with like even on a noisy machine. See docs/performance.md.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import logging
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from _cancel import cancel_latency
from _engine import CEILINGS, EngineSubject, engine_subjects, run_engine
from _measure import Sample, StallWatch, median, traced_memory
from _report import (
    chart,
    evaluate_targets,
    format_report,
    machine,
    paired_ratio,
    update_docs,
    write_json,
)
from _subjects import (
    Runner,
    Subject,
    Unavailable,
    build_and_warm,
    dask_subjects,
    parsl_backend,
    parsl_subjects,
    pool_sizes,
    subjects,
    subprocess_bound,
)
from _workloads import WORKLOADS, make_tasks

ROOT = Path(__file__).resolve().parent.parent

FULL: dict[str, Any] = {
    "fn": 10_000,
    "exec": 1_000,
    "noop": 10_000,
    "engine": 2_000,
    "engine_repeat": 5,
    "memory": 100_000,
    "memory_local": 10_000,
    "memory_orig_local": 2_000,
    "stall": 10_000,
    "orig_sync": 200,
    "dask": [10_000, 1_000],
    "parsl": 10_000,
    "idle_s": 1.0,
    "cancel": 5,
    "repeat": 3,
}
QUICK: dict[str, Any] = {
    "fn": 200,
    "exec": 20,
    "noop": 1_000,
    "engine": 50,
    "engine_repeat": 1,
    "memory": 2_000,
    "memory_local": 200,
    "memory_orig_local": 100,
    "stall": 500,
    "orig_sync": 20,
    "dask": [200],
    "parsl": 200,
    "idle_s": 0.2,
    "cancel": 1,
    "repeat": 1,
}


PARSL_ENGINE = EngineSubject(
    "engine-ours-parsl",
    "engine + ours Parsl (htex, 2 local workers), async fn",
    "ours",
    parsl_backend,
    "async-fn",
    CEILINGS["async-fn"],
    False,
)
"""The Parsl backend under the engine, against its noop ceiling (--parsl)."""


def _sizes_n(workload: str, sizes: dict[str, Any]) -> int:
    key = {"async-fn": "fn", "sync-fn": "fn", "exec": "exec", "noop": "noop"}
    return int(sizes[key[workload]])


def _row(subject: Subject, n: int) -> dict[str, Any]:
    return {
        "workload": subject.workload,
        "key": subject.key,
        "label": subject.label,
        "family": subject.family,
        "n": n,
        "runs": [],
        "reps": [],
        "seconds": [],
        "submit_seconds": [],
        "tasks_per_s": None,
        "baseline": subject.baseline,
        "baseline_label": None,
        "ratio": None,
        "status": "ok",
        "note": subject.extra.get("note", ""),
    }


def _record(row: dict[str, Any], sample: Sample, rep: int) -> None:
    row["runs"].append(round(sample.rate, 1))
    row["reps"].append(rep)
    row["seconds"].append(round(sample.seconds, 4))
    if sample.submit_seconds is not None:
        row["submit_seconds"].append(round(sample.submit_seconds, 4))
    if sample.failed or sample.canceled or sample.off_loop_callbacks:
        row["status"] = "failed"
        row["note"] = (
            (
                f"all {sample.n} FAILED"
                if sample.failed == sample.n
                else f"{sample.failed} FAILED, {sample.canceled} CANCELED of {sample.n}"
            )
            + (
                f", {sample.off_loop_callbacks} callbacks off the loop thread"
                if sample.off_loop_callbacks
                else ""
            )
            + (f": {sample.first_error}" if sample.first_error else "")
        )


async def _measure_once(subject: Subject, n: int, tag: str, timeout: float) -> Sample:
    runner: Runner = await build_and_warm(subject, timeout)
    try:
        tasks = make_tasks(subject.workload, n, f"{subject.key}.{tag}")
        gc.collect()
        return await runner.run(tasks, timeout)
    finally:
        await runner.close()


async def throughput(
    catalogue: list[Subject],
    sizes: dict[str, Any],
    repeat: int,
    slow_cap: float,
    timeout: float,
    skipped: list[str],
) -> list[dict[str, Any]]:
    """Measure every subject, interleaved across repetitions to share the noise."""
    rows = {
        (s.workload, s.key): _row(s, s.n_override or _sizes_n(s.workload, sizes))
        for s in catalogue
    }
    spent = dict.fromkeys(rows, 0.0)
    dead: set[tuple[str, str]] = set()
    groups: dict[str, list[Subject]] = {}
    for s in catalogue:
        groups.setdefault(s.workload, []).append(s)
    for rep in range(repeat):
        # A workload's subjects run back to back, so a subject and its
        # baseline share the machine's load of the moment; the order rotates
        # each repetition so no subject always runs first.
        order = [
            s
            for group in groups.values()
            for s in group[rep % len(group) :] + group[: rep % len(group)]
        ]
        for s in order:
            ident = (s.workload, s.key)
            row = rows[ident]
            if ident in dead or (rep > 0 and spent[ident] > slow_cap):
                continue
            t0 = time.perf_counter()
            try:
                sample = await _measure_once(s, row["n"], f"r{rep}", timeout)
            except Unavailable as exc:
                row["status"], row["note"] = "skipped", str(exc)
                skipped.append(f"{s.workload} / {s.label}: {exc}")
                dead.add(ident)
                continue
            except (Exception, TimeoutError) as exc:  # report it, keep measuring
                row["status"], row["note"] = "error", f"{type(exc).__name__}: {exc}"
                dead.add(ident)
                continue
            spent[ident] += time.perf_counter() - t0
            _record(row, sample, rep)
            print(
                f"  [{rep + 1}/{repeat}] {s.workload:8} {s.label:42} "
                f"{sample.rate:12,.0f} tasks/s",
                file=sys.stderr,
            )
    out = list(rows.values())
    for row in out:
        # A run whose tasks failed measured how fast they failed: no rate.
        if row["runs"] and row["status"] == "ok":
            row["tasks_per_s"] = round(median(row["runs"]), 1)
        if row["status"] == "ok" and len(row["runs"]) < repeat:
            stopped = f"stopped after {len(row['runs'])} run(s): over {slow_cap:.0f} s"
            row["note"] = f"{row['note']}; {stopped}" if row["note"] else stopped
    for row in out:
        base = rows.get((row["workload"], row["baseline"] or ""))
        if base is None:
            continue
        row["baseline_label"] = base["label"]
        if row["status"] == "ok" and base["status"] == "ok" and base["tasks_per_s"]:
            row["ratio"] = paired_ratio(row, base)
        if row["n"] != base["n"]:
            row["n_differs"] = True
            note = f"N={row['n']:,}, baseline N={base['n']:,}"
            row["note"] = f"{note}; {row['note']}" if row["note"] else note
    return out


async def engine(
    sizes: dict[str, Any],
    repeat: int,
    timeout: float,
    skipped: list[str],
    with_dask: bool,
    with_parsl: bool = False,
) -> list[dict[str, Any]]:
    """End to end through radical.asyncflow 0.6's WorkflowEngine.

    Each repetition runs every subject right after its noop ceiling (the same
    workflow over the noop backend), so each ratio pairs two runs taken
    seconds apart; the subjects' order rotates between repetitions.
    """
    n = sizes["engine"]
    chosen = engine_subjects(with_dask) + ([PARSL_ENGINE] if with_parsl else [])
    by_key = {s.key: s for s in chosen}
    rows: dict[str, dict[str, Any]] = {}
    for s in chosen:
        row = _row(Subject(s.key, s.label, s.family, "engine", s.make), n)
        row["kind"] = s.kind
        row["ceiling_runs"] = []
        row["cpu_us_per_task"] = []
        if s.ceiling is not None:
            row["baseline"] = s.ceiling
            row["baseline_label"] = by_key[s.ceiling].label
        rows[s.key] = row
    dead: set[str] = set()

    async def measure(s: EngineSubject, rep: int) -> float | None:
        row = rows[s.key]
        if s.key in dead:
            return None
        try:
            sample = await run_engine(s, n, timeout)
        except Unavailable as exc:
            row["status"], row["note"] = "skipped", str(exc)
            skipped.append(f"engine / {s.label}: {exc}")
            dead.add(s.key)
            return None
        except (Exception, TimeoutError) as exc:
            row["status"], row["note"] = "error", f"{type(exc).__name__}: {exc}"
            dead.add(s.key)
            return None
        _record(row, sample, rep)
        if sample.cpu_seconds is not None:
            row["cpu_us_per_task"].append(round(sample.cpu_seconds / n * 1e6, 1))
        print(
            f"  [{rep + 1}/{repeat}] engine   {s.label:52} "
            f"{sample.rate:10,.0f} tasks/s",
            file=sys.stderr,
        )
        return sample.rate

    measured = [s for s in chosen if s.ceiling is not None]
    for rep in range(repeat):
        shift = rep % len(measured)
        for s in measured[shift:] + measured[:shift]:
            if s.key in dead:
                continue
            assert s.ceiling is not None
            ceiling = await measure(by_key[s.ceiling], rep)
            rate = await measure(s, rep)
            if ceiling and rate:
                rows[s.key]["ceiling_runs"].append(round(ceiling, 1))
                rows[s.key].setdefault("pair_ratios", []).append(
                    round(rate / ceiling, 4)
                )
    for row in rows.values():
        if row["runs"] and row["status"] == "ok":  # failed tasks: no rate
            row["tasks_per_s"] = round(median(row["runs"]), 1)
        pairs = row.pop("pair_ratios", [])
        if row["status"] == "ok" and pairs:
            row["ratio"] = round(median(pairs), 3)
            row["ratio_runs"] = pairs
        if row["cpu_us_per_task"]:
            row["cpu_us"] = round(median(row["cpu_us_per_task"]), 1)
    # CPU time is what a loaded machine does not inflate: the ceiling's CPU
    # per task over the subject's, for subjects whose work all runs in this
    # process (threads, the loop), is a load-proof estimate of the ratio.
    for s in measured:
        row, base = rows[s.key], rows[s.ceiling or ""]
        if s.in_process and row.get("cpu_us") and base.get("cpu_us"):
            row["cpu_ratio"] = round(base["cpu_us"] / row["cpu_us"], 3)
    return list(rows.values())


def _memory_subjects(sizes: dict[str, Any]) -> list[tuple[Subject, int]]:
    by_key = {(s.workload, s.key): s for s in subjects()}
    return [
        (by_key[("noop", "ours-noop")], sizes["memory"]),
        (by_key[("noop", "orig-noop")], sizes["memory"]),
        (by_key[("sync-fn", "ours-local-thread")], sizes["memory_local"]),
        # 0.6 Local keeps every finished task; async, since sync tasks all fail.
        (by_key[("async-fn", "orig-local-thread")], sizes["memory_orig_local"]),
        (by_key[("async-fn", "ours-local-thread")], sizes["memory_orig_local"]),
    ]


async def memory(
    sizes: dict[str, Any], timeout: float, skipped: list[str]
) -> list[dict[str, Any]]:
    """Python-heap growth (tracemalloc) across one batch; retained after it."""
    rows = []
    for s, n in _memory_subjects(sizes):
        row: dict[str, Any] = {
            "workload": s.workload,
            "key": s.key,
            "label": s.label,
            "n": n,
            "method": "tracemalloc",
            "peak_bytes": None,
            "retained_bytes": None,
            "note": "",
        }
        rows.append(row)
        try:
            runner = await build_and_warm(s, timeout)
        except Unavailable as exc:
            row["note"] = f"skipped: {exc}"
            continue
        holder: dict[str, Sample] = {}

        async def one(
            runner: Runner = runner,
            s: Subject = s,
            n: int = n,
            holder: dict[str, Sample] = holder,
        ) -> None:
            # Build the tasks inside the traced window and drop them before
            # returning: what stays allocated is what the subject kept.
            tasks = make_tasks(s.workload, n, f"mem.{s.key}")
            holder["sample"] = await runner.run(tasks, timeout)
            del tasks

        try:
            figure, _elapsed = await traced_memory(n, one)
        except (Exception, TimeoutError) as exc:
            row["note"] = f"error: {type(exc).__name__}: {exc}"
            await runner.close()
            continue
        await runner.close()
        row["peak_bytes"] = figure.peak_bytes
        row["retained_bytes"] = figure.retained_bytes
        sample = holder.get("sample")
        if sample is not None and (sample.failed or sample.canceled):
            row["note"] = f"{sample.failed} FAILED, {sample.canceled} CANCELED"
        print(
            f"  memory   {s.workload:8} {s.label:33} N={n:<7,} peak "
            f"{figure.peak_bytes / 2**20:7.1f} MiB, retained "
            f"{figure.retained_bytes / 2**20:7.2f} MiB",
            file=sys.stderr,
        )
    return rows


def _stall_subjects() -> list[Subject]:
    by_key = {(s.workload, s.key): s for s in subjects()}
    return [
        # Worker threads compete with the loop thread for the GIL: the raw
        # pool shows the stall that competition alone causes.
        by_key[("async-fn", "raw-thread-loop")],
        by_key[("async-fn", "ours-local-thread")],
        by_key[("async-fn", "orig-local-thread")],
        by_key[("noop", "ours-noop")],
        by_key[("noop", "orig-noop")],
        by_key[("noop", "raw-call-soon")],
    ]


async def _idle_stall(repeat: int, seconds: float) -> dict[str, Any]:
    """The heartbeat alone, no work: the machine's own scheduling noise."""
    runs, gcs, longest = [], [], []
    for _ in range(repeat):
        async with StallWatch() as watch:
            await asyncio.sleep(seconds)
        runs.append(round(watch.max_stall_ms, 2))
        gcs.append(watch.full_gcs)
        longest.append(round(watch.longest_gc * 1000, 2))
    print(f"  stall    idle loop, {seconds} s: {median(runs)} ms", file=sys.stderr)
    return {
        "workload": "-",
        "key": "idle",
        "label": f"idle loop for {seconds:g} s (noise floor)",
        "n": 0,
        "runs": runs,
        "submit_runs_ms": [],
        "full_gcs": gcs,
        "longest_gc_ms": longest,
        "max_stall_ms": round(median(runs), 2),
        "submit_ms": None,
        "note": "no work: what the OS and other processes alone cause",
    }


async def stall(
    sizes: dict[str, Any], repeat: int, slow_cap: float, timeout: float
) -> list[dict[str, Any]]:
    """The longest loop stall from a big submit to its last callback."""
    n = sizes["stall"]
    rows = [await _idle_stall(repeat, sizes["idle_s"])]
    for s in _stall_subjects():
        row: dict[str, Any] = {
            "workload": s.workload,
            "key": s.key,
            "label": s.label,
            "n": n,
            "runs": [],
            "submit_runs_ms": [],
            "full_gcs": [],
            "longest_gc_ms": [],
            "max_stall_ms": None,
            "submit_ms": None,
            "note": "",
        }
        rows.append(row)
        spent = 0.0
        for rep in range(repeat):
            if rep > 0 and spent > slow_cap:
                row["note"] = f"stopped after {rep} run(s): over {slow_cap:.0f} s"
                break
            t0 = time.perf_counter()
            try:
                runner = await build_and_warm(s, timeout)
            except Unavailable as exc:
                row["note"] = f"skipped: {exc}"
                break
            try:
                tasks = make_tasks(s.workload, n, f"stall.{s.key}.{rep}")
                gc.collect()
                async with StallWatch() as watch:
                    sample = await runner.run(tasks, timeout)
            except (Exception, TimeoutError) as exc:
                row["note"] = f"error: {type(exc).__name__}: {exc}"
                break
            finally:
                await runner.close()
            spent += time.perf_counter() - t0
            row["runs"].append(round(watch.max_stall_ms, 2))
            row["full_gcs"].append(watch.full_gcs)
            row["longest_gc_ms"].append(round(watch.longest_gc * 1000, 2))
            if sample.submit_seconds is not None:
                row["submit_runs_ms"].append(round(sample.submit_seconds * 1000, 2))
        if row["runs"]:
            row["max_stall_ms"] = round(median(row["runs"]), 2)
        if row["submit_runs_ms"]:
            row["submit_ms"] = round(median(row["submit_runs_ms"]), 2)
        print(
            f"  stall    {s.workload:8} {s.label:33} N={n:<7,} max stall "
            f"{row['max_stall_ms']} ms {row['note']}",
            file=sys.stderr,
        )
    return rows


async def profile(
    spec: str, sizes: dict[str, Any], timeout: float, slow_ms: float = 0.0
) -> None:
    """Run one subject once under pyinstrument and print where the time went.

    With ``slow_ms``, asyncio's debug mode also logs each loop callback that
    ran longer than that (debug mode slows everything down somewhat).
    """
    workload, _, key = spec.partition(":")
    catalogue = subjects() + dask_subjects(sizes["dask"])
    matches = [s for s in catalogue if s.workload == workload and s.key == key]
    in_engine = [
        e for e in engine_subjects(True) if workload == "engine" and e.key == key
    ]
    if not matches and not in_engine:
        names = ", ".join(
            sorted(
                {f"{s.workload}:{s.key}" for s in catalogue}
                | {f"engine:{e.key}" for e in engine_subjects(True)}
            )
        )
        raise SystemExit(f"unknown subject {spec!r}; choose one of: {names}")
    from pyinstrument import Profiler

    if in_engine:
        await _profile_engine(in_engine[0], sizes["engine"], timeout, slow_ms)
        return
    s = matches[0]

    runner = await build_and_warm(s, timeout)
    n = s.n_override or _sizes_n(workload, sizes)
    tasks = make_tasks(workload, n, "profile")
    profiler = Profiler(interval=0.0005, async_mode="disabled")
    if slow_ms:
        _debug_slow_callbacks(slow_ms)
    try:
        profiler.start()
        sample = await runner.run(tasks, timeout)
        profiler.stop()
    finally:
        await runner.close()
    print(f"{s.label} on {workload}, N={n:,}: {sample.rate:,.0f} tasks/s (profiled)")
    print(profiler.output_text(unicode=True, color=False, show_all=False))


def _debug_slow_callbacks(slow_ms: float) -> None:
    # asyncio's debug mode logs every loop callback slower than this,
    # naming the handle: what stalled the loop, not just how long.
    loop = asyncio.get_running_loop()
    loop.set_debug(True)
    loop.slow_callback_duration = slow_ms / 1000
    logging.getLogger("asyncio").setLevel(logging.WARNING)


async def _profile_engine(
    s: EngineSubject, n: int, timeout: float, slow_ms: float
) -> None:
    """Profile the timed part of one engine run (the engine's loop thread)."""
    from pyinstrument import Profiler

    profiler = Profiler(interval=0.0005, async_mode="disabled")

    @contextlib.contextmanager
    def timed() -> Iterator[None]:
        if slow_ms:
            _debug_slow_callbacks(slow_ms)
        profiler.start()
        try:
            yield
        finally:
            profiler.stop()

    sample = await run_engine(s, n, timeout, timed)
    print(f"{s.label}, N={n:,}: {sample.rate:,.0f} tasks/s (profiled)")
    print(profiler.output_text(unicode=True, color=False, show_all=False))


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    """Run every section asked for and return the result document."""
    sizes = dict(QUICK if args.quick else FULL)
    repeat = args.repeat or sizes["repeat"]
    sections = set(args.only.split(",")) if args.only else None

    def wanted(name: str) -> bool:
        return sections is None or name in sections

    threads, processes = pool_sizes()
    results: dict[str, Any] = {
        "machine": machine(),
        "config": {
            "quick": args.quick,
            "repeat": repeat,
            "sizes": sizes,
            "threads": threads,
            "processes": processes,
            "subprocess_bound": subprocess_bound(),
            "slow_cap_s": args.slow_cap,
        },
        "throughput": [],
        "engine": [],
        "memory": [],
        "stall": [],
        "cancel": [],
        "targets": [],
        "skipped": [],
    }
    skipped: list[str] = results["skipped"]
    catalogue = [s for s in subjects(None, sizes["orig_sync"]) if wanted(s.workload)]
    if args.dask and wanted("dask"):
        catalogue += dask_subjects(sizes["dask"])
    elif not args.dask:
        skipped.append("Dask backend: not asked for (--dask)")
    if args.parsl and wanted("parsl"):
        catalogue += parsl_subjects(sizes["parsl"])
    elif not args.parsl:
        skipped.append("Parsl backend: not asked for (--parsl)")
    # Order the catalogue by workload so the table reads by workload.
    catalogue.sort(key=lambda s: WORKLOADS.index(s.workload))
    if catalogue:
        print("throughput:", file=sys.stderr)
        results["throughput"] = await throughput(
            catalogue, sizes, repeat, args.slow_cap, args.timeout, skipped
        )
    if wanted("engine"):
        print("engine:", file=sys.stderr)
        # Medians of at least five runs: the engine's ceiling is noisy.
        engine_repeat = max(repeat, sizes["engine_repeat"])
        results["engine"] = await engine(
            sizes, engine_repeat, args.timeout, skipped, args.dask, args.parsl
        )
    if wanted("memory"):
        print("memory:", file=sys.stderr)
        results["memory"] = await memory(sizes, args.timeout, skipped)
    if wanted("stall"):
        print("stall:", file=sys.stderr)
        results["stall"] = await stall(sizes, repeat, args.slow_cap, args.timeout)
    if wanted("cancel"):
        print("cancel:", file=sys.stderr)
        results["cancel"] = await cancel_latency(sizes["cancel"], args.timeout, skipped)
    results["machine"]["loadavg_end"] = machine()["loadavg_start"]
    results["targets"] = evaluate_targets(results)
    return results


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "--quick",
        action="store_true",
        help="tiny sizes and one run: a smoke test, not a measurement",
    )
    p.add_argument(
        "--repeat",
        type=int,
        default=0,
        help="runs per figure, the median is reported (default 3; 1 quick)",
    )
    p.add_argument(
        "--json",
        default=None,
        help="write the results as JSON here ('-' for stdout; default "
        "benchmarks/results.json, none with --quick or --only)",
    )
    p.add_argument(
        "--chart",
        default=None,
        help="write the chart here (default docs/assets/benchmarks.png, "
        "none with --quick or --only)",
    )
    p.add_argument("--no-chart", action="store_true", help="draw no chart")
    p.add_argument(
        "--check",
        action="store_true",
        help="exit 1 when a target is missed (MISS), naming it; without it the "
        "run reports and exits 0",
    )
    p.add_argument(
        "--only",
        default="",
        help="comma-separated sections: async-fn,sync-fn,exec,noop,"
        "dask,parsl,engine,memory,stall,cancel",
    )
    p.add_argument(
        "--dask",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="include the Dask backend (default: yes, except with --quick)",
    )
    p.add_argument(
        "--parsl",
        action=argparse.BooleanOptionalAction,
        default=False,
        help="include the Parsl backend and Parsl's python_app (needs the parsl "
        "extra; default: no)",
    )
    p.add_argument(
        "--slow-cap",
        type=float,
        default=40.0,
        help="stop repeating a subject once its runs took this many seconds",
    )
    p.add_argument(
        "--timeout",
        type=float,
        default=300.0,
        help="seconds one run may take before it is reported an error",
    )
    p.add_argument(
        "--profile",
        default="",
        help="profile one subject (WORKLOAD:KEY, or engine:KEY) with pyinstrument "
        "instead",
    )
    p.add_argument(
        "--slow-ms",
        type=float,
        default=0.0,
        help="with --profile: log loop callbacks slower than this (asyncio debug)",
    )
    p.add_argument(
        "--update-docs",
        nargs="?",
        const=str(ROOT / "docs" / "performance.md"),
        default=None,
        help="rewrite the results section of this page (default "
        "docs/performance.md) between its benchmark-results markers",
    )
    p.add_argument(
        "--from-json",
        default=None,
        help="measure nothing: print, chart and --update-docs a saved run",
    )
    args = p.parse_args(argv)
    if args.dask is None:
        args.dask = not args.quick
    # Only a full run replaces the committed results and chart by default.
    full_run = not args.quick and not args.only and not args.from_json
    if args.json is None and full_run:
        args.json = str(ROOT / "benchmarks" / "results.json")
    if args.chart is None and full_run:
        args.chart = str(ROOT / "docs" / "assets" / "benchmarks.png")
    if args.no_chart:
        args.chart = None
    return args


def main(argv: list[str] | None = None) -> int:
    """Run the benchmarks; print the report; write JSON and the chart."""
    args = parse_args(argv)
    # Backends log at WARNING on problems; keep the table readable.
    logging.basicConfig(level=logging.ERROR, format="%(name)s: %(message)s")
    if args.profile:
        sizes = QUICK if args.quick else FULL
        asyncio.run(profile(args.profile, dict(sizes), args.timeout, args.slow_ms))
        return 0
    if args.from_json:
        # Re-render a saved run (table, chart, docs) without measuring again.
        results = json.loads(Path(args.from_json).read_text())
    else:
        results = asyncio.run(main_async(args))
    drawn = False
    if args.chart:
        why_not = chart(results, args.chart)
        drawn = why_not is None
        results["chart"] = args.chart if drawn else None
        if why_not:
            results["skipped"].append(f"chart: {why_not}")
    elif not args.from_json:
        results["chart"] = None
    # (A saved run keeps the chart it was drawn with, for --update-docs.)
    print(format_report(results))
    if args.json:
        write_json(results, args.json)
        if args.json != "-":
            print(f"\nJSON written to {args.json}")
    if drawn:
        print(f"chart written to {results['chart']}")
    if args.update_docs:
        page = Path(args.update_docs)
        chart_ref = None
        if results.get("chart"):
            chart_ref = os.path.relpath(Path(results["chart"]).resolve(), page.parent)
        update_docs(results, str(page), chart_ref)
        print(f"results written into {page}")
    missed = [t for t in results["targets"] if t["status"] == "MISS"]
    if args.check and missed:
        for t in missed:
            print(f"missed: {t['id']} {t['target']}: {t['measured']}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
