"""Smoke test: benchmarks/run.py runs end to end with tiny sizes.

No timing assertions: only that every section ran and the JSON has its shape.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "benchmarks" / "run.py"

THROUGHPUT_KEYS = {
    "workload",
    "key",
    "label",
    "family",
    "n",
    "runs",
    "tasks_per_s",
    "baseline",
    "ratio",
    "status",
    "note",
}


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, str]:
    out = tmp_path_factory.mktemp("bench") / "results.json"
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--quick", "--no-chart", "--json", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=90,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    return json.loads(out.read_text()), proc.stdout


def test_json_has_every_section(quick_run: tuple[dict, str]) -> None:
    doc, _ = quick_run
    assert {"machine", "config", "throughput", "engine", "memory", "stall"} <= set(doc)
    assert doc["config"]["quick"] is True
    assert doc["machine"]["nproc"] >= 1


def test_throughput_rows_are_measured(quick_run: tuple[dict, str]) -> None:
    doc, _ = quick_run
    rows = {(r["workload"], r["key"]): r for r in doc["throughput"]}
    for row in rows.values():
        assert set(row) >= THROUGHPUT_KEYS
    # Every raw baseline and our backends ran and finished every task.
    for ident in [
        ("async-fn", "raw-thread-loop"),
        ("sync-fn", "raw-thread"),
        ("exec", "raw-subprocess"),
        ("noop", "raw-call-soon"),
        ("noop", "ours-noop"),
        ("async-fn", "ours-local-thread"),
        ("exec", "ours-local"),
    ]:
        row = rows[ident]
        assert row["status"] == "ok", row
        assert row["tasks_per_s"] > 0
    assert rows[("noop", "ours-noop")]["ratio"] > 0


def test_engine_rows_pair_each_subject_with_its_ceiling(
    quick_run: tuple[dict, str],
) -> None:
    doc, stdout = quick_run
    rows = {r["key"]: r for r in doc["engine"]}
    ceiling = rows["engine-ours-noop"]
    assert ceiling["status"] == "ok" and ceiling["ratio"] is None
    for key in (
        "engine-ours-local-thread",
        "engine-ours-local-thread-sync",
        "engine-ours-local-on-loop",
        "engine-ours-local-exec",
    ):
        row = rows[key]
        assert row["status"] == "ok", row
        assert row["baseline"] in ("engine-ours-noop", "engine-ours-noop-exec")
        # One ceiling run next to every run of the subject, and the ratio of each.
        assert len(row["ceiling_runs"]) == len(row["runs"]) == len(row["ratio_runs"])
        assert row["ratio"] > 0
        assert row["cpu_us"] > 0
    # Only for subjects whose work all runs in the benchmark process.
    assert rows["engine-ours-local-thread"]["cpu_ratio"] > 0
    assert "cpu_ratio" not in rows["engine-ours-local-exec"]
    assert "of the ceiling" in stdout
    ids = {t["id"]: t for t in doc["targets"]}
    assert ids["T13"]["measured"] == rows["engine-ours-local-thread"]["ratio"]


def test_resource_accounting_is_measured_against_it_off(
    quick_run: tuple[dict, str],
) -> None:
    doc, _ = quick_run
    rows = {(r["workload"], r["key"]): r for r in doc["throughput"]}
    for workload in ("async-fn", "sync-fn"):
        row = rows[(workload, "ours-local-thread-res")]
        assert row["status"] == "ok", row
        assert row["baseline"] == "ours-local-thread" and row["ratio"] > 0
    t16 = {t["id"]: t for t in doc["targets"]}["T16"]
    assert t16["measured"] == rows[("sync-fn", "ours-local-thread-res")]["ratio"]


def test_exec_has_the_bare_posix_spawn_baseline(quick_run: tuple[dict, str]) -> None:
    doc, _ = quick_run
    rows = {(r["workload"], r["key"]): r for r in doc["throughput"]}
    bare = rows[("exec", "raw-posix-spawn")]
    assert bare["status"] == "ok" and bare["tasks_per_s"] > 0
    assert rows[("exec", "ours-local")]["baseline"] == "raw-posix-spawn"


def test_targets_and_other_sections(quick_run: tuple[dict, str]) -> None:
    doc, stdout = quick_run
    ids = [t["id"] for t in doc["targets"]]
    assert ids[:3] == ["T1", "T2", "T3"]
    assert all(t["status"] in {"pass", "MISS", "n/a"} for t in doc["targets"])
    noop_mem = [m for m in doc["memory"] if m["key"] == "ours-noop"]
    assert noop_mem and noop_mem[0]["retained_bytes"] is not None
    noop_stalls = [s for s in doc["stall"] if s["key"] == "ours-noop"]
    assert noop_stalls, "the run measured no loop stall for the noop backend"
    assert all(s["max_stall_ms"] is not None for s in noop_stalls)
    assert "Targets" in stdout and "| workload |" in stdout


def test_saved_run_rewrites_the_docs_page(
    quick_run: tuple[dict, str], tmp_path: Path
) -> None:
    doc, _ = quick_run
    saved = tmp_path / "results.json"
    saved.write_text(json.dumps(doc))
    page = tmp_path / "performance.md"
    page.write_text(
        "# P\n\n<!-- benchmark-summary:start -->\nold\n<!-- benchmark-summary:end -->"
        "\n\ntext kept\n\n<!-- benchmark-results:start -->\nold\n"
        "<!-- benchmark-results:end -->\n\ntail kept\n"
    )
    proc = subprocess.run(
        [
            sys.executable,
            str(SCRIPT),
            "--from-json",
            str(saved),
            "--no-chart",
            "--update-docs",
            str(page),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    text = page.read_text()
    assert "old" not in text
    assert "text kept" in text and "tail kept" in text
    assert "**In short**" in text and "### Targets" in text


def test_cancel_latency_rows_show_the_function_stopped(
    quick_run: tuple[dict, str],
) -> None:
    doc, stdout = quick_run
    rows = {(r["workload"], r["key"]): r for r in doc["cancel"]}
    assert set(rows) == {
        ("sync-fn", "ours-local-process"),
        ("async-fn", "ours-local-process"),
        ("async-fn", "ours-local-thread"),
    }
    for row in rows.values():
        assert row["stopped"] is True, row
        assert row["median_ms"] is not None and row["median_ms"] > 0, row
        assert len(row["runs_ms"]) >= 1
    assert "Cancel latency" in stdout


def test_compare_local_runs_against_a_git_revision() -> None:
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("needs a git checkout")
    proc = subprocess.run(
        [
            sys.executable,
            str(ROOT / "benchmarks" / "compare_local.py"),
            "HEAD",
            "--runs",
            "1",
            "--n",
            "20",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    for subject in ("noop ceiling", "HEAD: threads, async fn", "now: threads, sync fn"):
        assert f"| {subject} |" in proc.stdout


def test_quick_run_gives_no_verdict_at_another_size(
    quick_run: tuple[dict, str],
) -> None:
    """T8-T11 are set at a task count; --quick measures far fewer (issue 23)."""
    doc, stdout = quick_run
    ids = {t["id"]: t for t in doc["targets"]}
    for tid in ("T8", "T9", "T10"):
        assert ids[tid]["status"] == "n/a", ids[tid]
        assert "the target is set at N=" in ids[tid]["note"]
        assert "(a --quick run)" in ids[tid]["note"]
    assert "A --quick run:" in stdout


def test_a_row_whose_tasks_failed_has_no_rate(quick_run: tuple[dict, str]) -> None:
    """0.6 Local cannot run sync functions: the row says FAILED, not a rate."""
    doc, stdout = quick_run
    rows = {(r["workload"], r["key"]): r for r in doc["throughput"]}
    row = rows[("sync-fn", "orig-local-thread")]
    assert row["status"] == "failed" and row["tasks_per_s"] is None, row
    assert row["ratio"] is None
    line = next(
        x
        for x in stdout.splitlines()
        if "| 0.6 Local (threads)" in x and "| sync-fn" in x
    )
    assert "| FAILED " in line and "FAILED" in row["note"]


def _saved_with(doc: dict, tmp_path: Path, status: str) -> Path:
    changed = json.loads(json.dumps(doc))
    for t in changed["targets"]:
        t["status"] = "pass"
    changed["targets"][0]["status"] = status
    saved = tmp_path / f"results-{status}.json"
    saved.write_text(json.dumps(changed))
    return saved


@pytest.mark.parametrize(("status", "code"), [("MISS", 1), ("pass", 0)])
def test_check_exits_1_on_a_missed_target(
    quick_run: tuple[dict, str], tmp_path: Path, status: str, code: int
) -> None:
    doc, _ = quick_run
    saved = _saved_with(doc, tmp_path, status)
    proc = subprocess.run(
        [
            sys.executable,
            str(SCRIPT),
            "--from-json",
            str(saved),
            "--no-chart",
            "--check",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == code, proc.stderr[-4000:]
    assert ("missed: T1" in proc.stderr) is (code == 1)
