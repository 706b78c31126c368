"""Turn measurements into the table, the target verdicts, JSON and the chart."""

from __future__ import annotations

import json
import os
import platform
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from _measure import median

__all__ = [
    "TARGETS",
    "chart",
    "evaluate_targets",
    "format_report",
    "machine",
    "paired_ratio",
    "summary",
    "update_docs",
    "write_json",
]

MiB = 1024 * 1024


@dataclass(frozen=True)
class Target:
    """A ratio (or bound) the issue sets, checked against this run."""

    id: str
    text: str
    section: str
    """``throughput``, ``engine``, ``memory``, ``stall`` or ``absolute``."""
    workload: str
    subject: str
    reference: str | None
    """Key divided by (throughput), or ``None`` for bounds."""
    threshold: float
    at_most: bool = False
    n: int | None = None
    """The task count the target is set at, where the figure depends on it
    (a stall, retained memory, an absolute rate); a run at another N (a
    ``--quick`` run) gets ``n/a`` for it, not a verdict about another size."""


TARGETS = [
    Target("T1", "Local async fn >= 0.8x raw thread pool (loop per thread)",
           "throughput", "async-fn", "ours-local-thread", "raw-thread-loop", 0.8),
    Target("T2", "Local async fn >= 20x radical.asyncflow 0.6 Local",
           "throughput", "async-fn", "ours-local-thread", "orig-local-thread", 20.0),
    Target("T3", "Local sync fn >= 0.8x raw thread pool",
           "throughput", "sync-fn", "ours-local-thread", "raw-thread", 0.8),
    Target("T4", "Local executables >= 0.9x raw subprocess loop",
           "throughput", "exec", "ours-local", "raw-subprocess", 0.9),
    Target("T5", "Local process pool, async fn >= 1.0x raw process pool",
           "throughput", "async-fn", "ours-local-process", "raw-process-loop", 1.0),
    Target("T6", "Local process pool, sync fn >= 1.0x raw process pool",
           "throughput", "sync-fn", "ours-local-process", "raw-process", 1.0),
    Target("T7", "Noop >= 0.5x bare loop.call_soon",
           "throughput", "noop", "ours-noop", "raw-call-soon", 0.5),
    Target("T8", "Noop memory retained after a 100,000-task run <= 10 MiB",
           "memory", "noop", "ours-noop", None, 10.0, at_most=True, n=100_000),
    Target("T9", "Loop stall during a 10,000-task submit < 50 ms (Local)",
           "stall", "async-fn", "ours-local-thread", None, 50.0, at_most=True,
           n=10_000),
    Target("T10", "Loop stall during a 10,000-task submit < 50 ms (Noop)",
           "stall", "noop", "ours-noop", None, 50.0, at_most=True, n=10_000),
    Target("T11", "Dask async fn at 10,000 >= 615 tasks/s (5x rhapsody 0.6's 123)",
           "absolute", "async-fn", "dask-2x1-10000", None, 615.0, n=10_000),
    Target("T12", "Local executables >= 0.9x bare posix_spawn loop (same width)",
           "throughput", "exec", "ours-local", "raw-posix-spawn", 0.9),
    Target("T13", "Engine + Local threads, async fn >= 0.8x engine + Noop",
           "engine", "engine", "engine-ours-local-thread", None, 0.8),
    Target("T14", "Engine + Local threads, sync fn >= 0.7x engine + Noop",
           "engine", "engine", "engine-ours-local-thread-sync", None, 0.7),
    Target("T15", "Engine + Dask 2x1, async fn >= 0.3x engine + Noop",
           "engine", "engine", "engine-ours-dask", None, 0.3),
    Target("T16", "Local threads, sync fn, resources on >= 0.9x off",
           "throughput", "sync-fn", "ours-local-thread-res", "ours-local-thread",
           0.9),
    Target("T17", "Parsl backend, sync fn >= 0.8x Parsl python_app (same htex)",
           "throughput", "sync-fn", "parsl-ours", "parsl-app", 0.8),
]  # fmt: skip


def _find(rows: list[dict[str, Any]], workload: str, key: str) -> dict[str, Any] | None:
    for row in rows:
        if row["workload"] == workload and row["key"] == key:
            return row
    return None


def _usable(row: dict[str, Any] | None) -> bool:
    return row is not None and row["status"] == "ok" and row["tasks_per_s"] is not None


def paired_ratio(row: dict[str, Any], base: dict[str, Any]) -> float | None:
    """Median over repetitions of ``row``'s rate / ``base``'s rate.

    Each repetition measures a subject and its baseline seconds apart, so
    their ratio cancels most of the load the machine had at that moment;
    the median of those ratios is steadier than the ratio of the medians.
    Falls back to the ratio of the medians when no repetition has both.
    """
    rates = dict(zip(base.get("reps", []), base["runs"], strict=True))
    pairs = [
        rate / rates[rep]
        for rep, rate in zip(row.get("reps", []), row["runs"], strict=True)
        if rates.get(rep)
    ]
    if pairs:
        return round(median(pairs), 3)
    if row["tasks_per_s"] and base["tasks_per_s"]:
        return round(float(row["tasks_per_s"]) / float(base["tasks_per_s"]), 3)
    return None


def evaluate_targets(results: dict[str, Any]) -> list[dict[str, Any]]:
    """Check every target against this run's medians.

    A target whose inputs were skipped, failed, or measured at different task
    counts is reported ``n/a`` with the reason, never silently compared.
    """
    out: list[dict[str, Any]] = []
    for t in TARGETS:
        verdict: dict[str, Any] = {
            "id": t.id,
            "target": t.text,
            "threshold": t.threshold,
            "measured": None,
            "status": "n/a",
            "note": "",
        }
        if t.section in ("throughput", "absolute"):
            row = _find(results["throughput"], t.workload, t.subject)
            ref = _find(results["throughput"], t.workload, t.reference or "")
            if not _usable(row):
                verdict["note"] = f"{t.subject} not measured" + (
                    f": {row['note']}" if row else ""
                )
            elif t.reference is None:
                assert row is not None
                verdict["measured"] = row["tasks_per_s"]
                verdict["n"] = row["n"]
            elif not _usable(ref):
                verdict["note"] = f"{t.reference} not measured" + (
                    f": {ref['note']}" if ref else ""
                )
            else:
                assert row is not None and ref is not None
                verdict["measured"] = paired_ratio(row, ref)
                if row["n"] != ref["n"]:
                    verdict["note"] = (
                        f"N differs: {row['n']:,} vs {ref['n']:,} for {t.reference}"
                    )
        elif t.section == "engine":
            row = _find(results["engine"], t.workload, t.subject)
            if row is None or row.get("ratio") is None:
                verdict["note"] = f"{t.subject} not measured" + (
                    f": {row['note']}" if row and row["note"] else ""
                )
            else:
                verdict["measured"] = row["ratio"]
                verdict["note"] = (
                    f"N={row['n']:,}, median of {len(row.get('ratio_runs', []))} "
                    "paired runs"
                )
        elif t.section == "memory":
            mem = _find(results["memory"], t.workload, t.subject)
            if mem is not None and mem.get("retained_bytes") is not None:
                verdict["measured"] = mem["retained_bytes"] / MiB
                verdict["note"] = f"tracemalloc, N={mem['n']:,}"
                verdict["n"] = mem["n"]
        elif t.section == "stall":
            stall = _find(results["stall"], t.workload, t.subject)
            if stall is not None and stall.get("max_stall_ms") is not None:
                verdict["measured"] = stall["max_stall_ms"]
                verdict["note"] = f"N={stall['n']:,}"
                verdict["n"] = stall["n"]
        measured = verdict["measured"]
        measured_n = verdict.pop("n", None)
        if measured is not None and t.n is not None and measured_n != t.n:
            # A figure at another size says nothing about this target.
            verdict["status"] = "n/a"
            verdict["note"] = (
                f"measured at N={measured_n:,}, the target is set at N={t.n:,}"
                + (" (a --quick run)" if results["config"].get("quick") else "")
            )
        elif measured is not None:
            ok = measured <= t.threshold if t.at_most else measured >= t.threshold
            verdict["status"] = "pass" if ok else "MISS"
        out.append(verdict)
    return out


def machine() -> dict[str, Any]:
    """Describe where the run happened: CPU, cores, Python, load, date."""
    model = "unknown"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        model = platform.processor() or "unknown"
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count() or 1
    return {
        "cpu_model": model,
        "nproc": usable,
        "cpu_count": os.cpu_count(),
        "python": sys.version.split()[0],
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "date_utc": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "loadavg_start": _loadavg(),
    }


def _loadavg() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def _fmt_rate(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:,.0f}" if value >= 10 else f"{value:.2f}"


def _rate_cell(row: dict[str, Any]) -> str:
    """A row's rate, or what went wrong: a run whose tasks failed has no rate."""
    if row["status"] in ("failed", "error"):
        return row["status"].upper()
    return _fmt_rate(row["tasks_per_s"])


def _fmt_ratio(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}x"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    """A GitHub-flavoured Markdown table (readable in a terminal too)."""
    widths = [max([len(h), *(len(r[i]) for r in rows)]) for i, h in enumerate(header)]
    num = [
        all(_numeric(r[i]) for r in rows) if rows else False for i in range(len(header))
    ]

    def line(cells: list[str]) -> str:
        parts = [
            c.rjust(w) if is_num else c.ljust(w)
            for c, w, is_num in zip(cells, widths, num, strict=True)
        ]
        return "| " + " | ".join(parts) + " |"

    sep = (
        "| "
        + " | ".join(
            ("-" * (w - 1) + ":") if is_num else "-" * w
            for w, is_num in zip(widths, num, strict=True)
        )
        + " |"
    )
    return [line(header), sep, *(line(r) for r in rows)]


def _numeric(cell: str) -> bool:
    stripped = cell.replace(",", "").replace(".", "").rstrip("x").replace("-", "")
    return stripped.isdigit() or cell == "-"


def format_report(results: dict[str, Any], heading: str = "") -> str:
    """The human-readable report: throughput, engine, memory, stall, targets.

    Args:
        results: The result document.
        heading: Markdown heading prefix for section titles (``"###"`` for
            the docs page), or empty for plain titles in a terminal.
    """
    out: list[str] = []

    def title(text: str) -> None:
        out.extend(["", f"{heading} {text}" if heading else f"{text}:", ""])

    m = results["machine"]
    out.append(
        f"Machine: {m['cpu_model']}, {m['nproc']} CPUs, Python {m['python']} "
        f"({m['platform']}), {m['date_utc']}, load average at start "
        f"{m['loadavg_start']}, at end {m.get('loadavg_end')}."
    )
    cfg = results["config"]
    out.append("")
    out.append(
        f"tasks/s: median of up to {cfg['repeat']} runs; ratio: median of the "
        "per-run ratios to the baseline measured next to it; pools: "
        f"{cfg['threads']} threads / {cfg['processes']} processes; subprocess "
        f"bound {cfg['subprocess_bound']}."
    )
    if cfg.get("quick"):
        out += [
            "",
            "A --quick run: tiny task counts, one run per figure, no Dask unless "
            "--dask: a smoke test that every part runs, not a measurement. Targets "
            "set at a task count (T8-T11) are n/a at these sizes; the others "
            "compare ratios at the sizes shown.",
        ]
    rows = []
    if results["throughput"]:
        title("Throughput (first submit to last terminal callback)")
    for r in results["throughput"]:
        rows.append(
            [
                r["workload"],
                f"{r['n']:,}",
                r["label"],
                _rate_cell(r),
                str(len(r["runs"])),
                _fmt_ratio(r["ratio"]),
                r["baseline_label"] or "",
                r["note"],
            ]
        )
    if rows:
        out += _table(
            [
                "workload",
                "N",
                "subject",
                "tasks/s",
                "runs",
                "ratio",
                "baseline",
                "note",
            ],
            rows,
        )
    if results["engine"]:
        title(
            "End to end through radical.asyncflow 0.6's WorkflowEngine "
            "(N independent tasks, gathered; each run paired with a run of its "
            "noop ceiling just before it)"
        )
        rows = [
            [
                f"{r['n']:,}",
                r["label"],
                _rate_cell(r),
                str(len(r["runs"])),
                _fmt_ratio(r["ratio"]),
                _ratio_range(r),
                "-" if r.get("cpu_us") is None else f"{r['cpu_us']:.0f}",
                _fmt_ratio(r.get("cpu_ratio")),
                r["note"],
            ]
            for r in results["engine"]
        ]
        out += _table(
            [
                "N",
                "subject",
                "tasks/s",
                "runs",
                "of the ceiling",
                "per-run ratios",
                "CPU µs/task",
                "ceiling CPU / CPU",
                "note",
            ],
            rows,
        )
        out += [
            "",
            "CPU µs/task: CPU time of the benchmark process over the timed part "
            "(median), which the machine's load does not inflate the way it "
            "scatters wall-clock rates; it leaves out pool worker processes, "
            "children and Dask's cluster, so the last column is given only for "
            "subjects whose work all runs in this process.",
        ]
    if results["memory"]:
        title("Memory (tracemalloc: Python heap, not RSS), growth over one batch")
        rows = [
            [
                r["workload"],
                f"{r['n']:,}",
                r["label"],
                "-" if r["peak_bytes"] is None else f"{r['peak_bytes'] / MiB:.1f}",
                "-"
                if r["retained_bytes"] is None
                else f"{r['retained_bytes'] / MiB:.2f}",
                "-"
                if r["retained_bytes"] is None
                else f"{r['retained_bytes'] / r['n']:.0f}",
                r["note"],
            ]
            for r in results["memory"]
        ]
        out += _table(
            ["workload", "N", "subject", "peak MiB", "retained MiB", "B/task", "note"],
            rows,
        )
    if results["stall"]:
        title("Longest event-loop stall (1 ms heartbeat), submit to last callback")
        rows = [
            [
                r["workload"],
                f"{r['n']:,}",
                r["label"],
                "-" if r["max_stall_ms"] is None else f"{r['max_stall_ms']:.1f}",
                "-" if r["submit_ms"] is None else f"{r['submit_ms']:.1f}",
                _gc_cell(r),
                str(len(r["runs"])),
                r["note"],
            ]
            for r in results["stall"]
        ]
        out += _table(
            [
                "workload",
                "N",
                "subject",
                "max stall ms",
                "submit_tasks ms",
                "full GCs per run (longest ms)",
                "runs",
                "note",
            ],
            rows,
        )
    if results.get("cancel"):
        title(
            "Cancel latency: cancel_task of a running function to its CANCELED "
            "(the function stopped)"
        )
        rows = [
            [
                r["workload"],
                r["label"],
                "-" if r["median_ms"] is None else f"{r['median_ms']:.1f}",
                str(len(r["runs_ms"])),
                {True: "yes", False: "NO", None: "-"}[r["stopped"]],
                r["note"],
            ]
            for r in results["cancel"]
        ]
        out += _table(
            ["workload", "subject", "median ms", "runs", "stopped", "note"], rows
        )
    title("Targets (ratios from this run)")
    rows = []
    for t in results["targets"]:
        rows.append([t["id"], t["target"], _shown(t), t["status"], t["note"]])
    out += _table(["id", "target", "measured", "status", "note"], rows)
    if results["skipped"]:
        out.append("")
    for msg in results["skipped"]:
        out.append(f"- skipped: {msg}")
    return "\n".join(out)


DOCS_START = "<!-- benchmark-results:start -->"
DOCS_END = "<!-- benchmark-results:end -->"
SUMMARY_START = "<!-- benchmark-summary:start -->"
SUMMARY_END = "<!-- benchmark-summary:end -->"

# (target ids, what, workload, subject key) for the summary's rows.
_SUMMARY_ROWS = [
    (("T1", "T2"), "Local, async functions, threads", "async-fn", "ours-local-thread"),
    (("T3",), "Local, sync functions, threads", "sync-fn", "ours-local-thread"),
    (("T16",), "Local, sync functions, threads, resources on", "sync-fn",
     "ours-local-thread-res"),
    (("T5",), "Local, async functions, processes", "async-fn", "ours-local-process"),
    (("T6",), "Local, sync functions, processes", "sync-fn", "ours-local-process"),
    (("T4", "T12"), "Local, `/bin/true` executables", "exec", "ours-local"),
    (("T7",), "Noop", "noop", "ours-noop"),
    (("T11",), "Dask, async functions, 2 workers x 1 thread", "async-fn",
     "dask-2x1-10000"),
]  # fmt: skip


_SHORT = {
    "T1": "raw thread pool, loop per thread (>= 0.8x)",
    "T2": "radical.asyncflow 0.6 (>= 20x)",
    "T3": "raw thread pool (>= 0.8x)",
    "T4": "raw subprocess loop (>= 0.9x)",
    "T5": "raw process pool (>= 1.0x)",
    "T6": "raw process pool (>= 1.0x)",
    "T7": "bare call_soon loop (>= 0.5x)",
    "T11": "(>= 615/s)",
    "T12": "bare posix_spawn loop (>= 0.9x)",
    "T16": "resources off, same pool (>= 0.9x)",
}

# (target id, what, engine subject key) for the summary's engine rows.
_SUMMARY_ENGINE_ROWS = [
    ("T13", "Local, async functions, threads", "engine-ours-local-thread"),
    ("T14", "Local, sync functions, threads", "engine-ours-local-thread-sync"),
    (None, "Local, async functions, `async_on_loop=True`",
     "engine-ours-local-on-loop"),
    (None, "Local, async functions, processes", "engine-ours-local-process"),
    (None, "Local, `/bin/true` executables", "engine-ours-local-exec"),
    ("T15", "Dask, async functions, 2 workers x 1 thread", "engine-ours-dask"),
]  # fmt: skip


def summary(results: dict[str, Any]) -> str:
    """A short Markdown summary: headline figures and every target's verdict."""
    m = results["machine"]
    verdicts = {t["id"]: t for t in results["targets"]}
    met = sum(t["status"] == "pass" for t in results["targets"])
    missed = [t for t in results["targets"] if t["status"] == "MISS"]
    out = [
        f"**In short** (the run recorded [below](#results), {m['date_utc']}, "
        f"{m['nproc']} CPUs, load average {m['loadavg_start'][0]} at start and "
        f"{(m.get('loadavg_end') or ['?'])[0]} at end): {met} of "
        f"{len(results['targets'])} targets met"
        + (
            "; missed: " + ", ".join(f"{t['id']} ({_shown(t)})" for t in missed)
            if missed
            else ""
        )
        + ".",
        "",
    ]
    rows = []
    for ids, what, workload, key in _SUMMARY_ROWS:
        row = _find(results["throughput"], workload, key)
        if not _usable(row):
            continue
        assert row is not None
        rows.append(
            [
                what,
                f"{row['n']:,}",
                _fmt_rate(row["tasks_per_s"]),
                "; ".join(
                    f"{i}: {_shown(verdicts[i])} {_SHORT[i]}, {verdicts[i]['status']}"
                    for i in ids
                ),
            ]
        )
    out += _table(["backend", "N", "tasks/s", "measured (target)"], rows)
    engine_rows = []
    for tid, what, key in _SUMMARY_ENGINE_ROWS:
        row = _find(results.get("engine", []), "engine", key)
        if row is None or row.get("ratio") is None:
            continue
        verdict = ""
        if tid is not None:
            t = verdicts[tid]
            verdict = f"{tid}: >= {t['threshold']:g}x, {t['status']}"
        engine_rows.append(
            [
                what,
                f"{row['n']:,}",
                _fmt_rate(row["tasks_per_s"]),
                f"{row['ratio']:.2f}x",
                _fmt_ratio(row.get("cpu_ratio")),
                verdict,
            ]
        )
    if engine_rows:
        out += [
            "",
            "Through radical.asyncflow 0.6's `WorkflowEngine`, as a share of the "
            "same workflow over the noop backend (the engine's own ceiling), "
            "measured next to it (by CPU: the ceiling's CPU time per task over "
            "the backend's, for backends that run in the engine's process):",
            "",
        ]
        out += _table(
            ["backend", "N", "tasks/s", "of the ceiling", "by CPU", "target"],
            engine_rows,
        )
    out.append("")
    for i in ("T8", "T9", "T10"):
        t = verdicts[i]
        out.append(f"- {i}: {t['target']}: {_shown(t)} ({t['status']})")
    return "\n".join(out)


def _ratio_range(row: dict[str, Any]) -> str:
    """The lowest and highest of a row's per-run ratios to its ceiling."""
    runs = row.get("ratio_runs") or []
    if not runs:
        return "-"
    return f"{min(runs):.2f}-{max(runs):.2f}"


def _gc_cell(row: dict[str, Any]) -> str:
    """Median full collections per run, and the longest one seen."""
    counts, longest = row.get("full_gcs") or [], row.get("longest_gc_ms") or []
    if not counts:
        return "-"
    return f"{median([float(c) for c in counts]):g} ({max(longest):.1f})"


def _shown(t: dict[str, Any]) -> str:
    measured = t["measured"]
    if measured is None:
        return "-"
    if t["id"] == "T8":
        return f"{measured:.2f} MiB"
    if t["id"] in ("T9", "T10"):
        return f"{measured:.1f} ms"
    if t["id"] == "T11":
        return f"{measured:,.0f}/s"
    return f"{measured:.2f}x"


def update_docs(results: dict[str, Any], path: str, chart_ref: str | None) -> None:
    """Replace the results between the markers in a Markdown page.

    Raises:
        ValueError: The page lacks the markers.
    """
    page = Path(path).read_text()
    body = [""]
    if chart_ref:
        body += [f"![Throughput per backend and baseline]({chart_ref})", ""]
    body += [format_report(results, heading="###"), ""]
    page = _replace_between(page, DOCS_START, DOCS_END, "\n".join(body), path)
    page = _replace_between(
        page, SUMMARY_START, SUMMARY_END, f"\n{summary(results)}\n", path
    )
    Path(path).write_text(page)


def _replace_between(page: str, start: str, end: str, body: str, path: str) -> str:
    i, j = page.find(start), page.find(end)
    if i < 0 or j < i:
        raise ValueError(f"{path} has no {start} ... {end} markers")
    return page[: i + len(start)] + "\n" + body + "\n" + page[j:]


def write_json(results: dict[str, Any], path: str) -> None:
    """Write the whole result document as JSON (``-`` for stdout)."""
    text = json.dumps(results, indent=2, sort_keys=False, default=str)
    if path == "-":
        print(text)
        return
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(text + "\n")


_COLOURS = {
    "raw": "#9e9e9e",
    "ceiling": "#9e9e9e",  # the engine over the noop backend: a baseline
    "ours": "#1e88e5",
    "orig": "#fb8c00",
}


def chart(results: dict[str, Any], path: str) -> str | None:
    """Draw tasks/s per subject, one panel per workload, on a log scale.

    Returns:
        ``None`` on success, else why no chart was drawn.
    """
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "matplotlib is not installed (pip install '.[bench]')"
    groups: dict[str, list[dict[str, Any]]] = {}
    # Only clean runs: a rate of tasks that all FAILED is no throughput.
    for r in results["throughput"]:
        if r["tasks_per_s"] and r["status"] == "ok":
            groups.setdefault(r["workload"], []).append(r)
    engine = [r for r in results["engine"] if r["tasks_per_s"] and r["status"] == "ok"]
    if engine:
        groups["engine (WorkflowEngine)"] = [dict(r, workload="engine") for r in engine]
    if not groups:
        return "nothing was measured"
    heights = [max(1.2, 0.38 * len(rows) + 0.6) for rows in groups.values()]
    fig, axes = plt.subplots(
        len(groups),
        1,
        figsize=(9, sum(heights) + 0.8),
        gridspec_kw={"height_ratios": heights},
        squeeze=False,
    )
    lo = min(r["tasks_per_s"] for rows in groups.values() for r in rows)
    hi = max(r["tasks_per_s"] for rows in groups.values() for r in rows)
    for ax, (name, rows) in zip(axes[:, 0], groups.items(), strict=True):
        labels = [
            f"{r['label']} (N={r['n']:,})" if r.get("n_differs") else r["label"]
            for r in rows
        ]
        values = [r["tasks_per_s"] for r in rows]
        colours = [_COLOURS.get(r["family"], "#666666") for r in rows]
        y = list(range(len(rows)))[::-1]
        ax.barh(y, values, color=colours)
        ax.set_yticks(y, labels, fontsize=8)
        ax.set_xscale("log")
        ax.set_xlim(lo / 3, hi * 6)
        n = rows[0]["n"]
        ax.set_title(f"{name}, N={n:,}", fontsize=9, loc="left")
        for yi, v, r in zip(y, values, rows, strict=True):
            # Engine rows also show their share of the noop ceiling.
            share = (
                f" ({r['ratio']:.2f}x of the ceiling)"
                if r["workload"] == "engine" and r.get("ratio") is not None
                else ""
            )
            ax.text(v * 1.08, yi, f"{v:,.0f}{share}", va="center", fontsize=7)
        ax.grid(axis="x", which="major", alpha=0.3)
    axes[-1, 0].set_xlabel(
        "tasks/s (log scale; grey = raw baseline, blue = this project, "
        "orange = radical.asyncflow 0.6)"
    )
    m = results["machine"]
    fig.suptitle(
        f"Throughput, median of runs - {m['nproc']} CPUs, Python {m['python']}, "
        f"{m['date_utc']}",
        fontsize=10,
    )
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return None
