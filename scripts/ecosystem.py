r"""The ecosystem matrix: the conformance suite on the released backends.

Two steps, so the docs build never runs a backend:

``run``
    Runs ``python -m conformance TARGET --json`` on radical.asyncflow 0.6's
    and rhapsody-py 0.6's backends, with the Python of an environment that
    has them (and this project) installed, and records the date, the
    versions and the wall times in ``meta.json`` beside the reports::

        python3 -m venv /tmp/eco
        /tmp/eco/bin/pip install -e . radical.asyncflow==0.6.0 \
            rhapsody-py==0.6.0 "dask[distributed]"
        python scripts/ecosystem.py run --python /tmp/eco/bin/python --out /tmp/eco-runs

``render``
    Turns those reports into ``docs/ecosystem.md``: the outcome of every
    clause on every backend, a one-line diagnosis of each failure, and what a
    port must change (the `PORT` table below)::

        python scripts/ecosystem.py render /tmp/eco-runs

The factories are in ``ecosystem_targets.py`` and ``ecosystem_dask.py`` (this
folder). Backends that need hardware or services this machine lacks (Dragon,
RADICAL-Pilot, Orbit, vLLM) are described from their 0.6 source
(`UNRUNNABLE`).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
HERE = Path(__file__).resolve().parent
PAGE = ROOT / "docs" / "ecosystem.md"


@dataclass(frozen=True)
class Subject:
    """One released backend in the matrix."""

    key: str
    target: str
    label: str
    short: str


SUBJECTS = (
    Subject(
        "asyncflow_noop",
        "ecosystem_targets:asyncflow_noop",
        "radical.asyncflow 0.6 `NoopExecutionBackend`",
        "af Noop",
    ),
    Subject(
        "asyncflow_local",
        "ecosystem_targets:asyncflow_local",
        "radical.asyncflow 0.6 `LocalExecutionBackend`",
        "af Local",
    ),
    Subject(
        "rhapsody_noop",
        "ecosystem_targets:rhapsody_noop",
        "rhapsody-py 0.6 `NoopExecutionBackend`",
        "rh Noop",
    ),
    Subject(
        "rhapsody_concurrent",
        "ecosystem_targets:rhapsody_concurrent",
        "rhapsody-py 0.6 `ConcurrentExecutionBackend`",
        "rh Concurrent",
    ),
    Subject(
        "rhapsody_dask",
        "ecosystem_dask:rhapsody_dask",
        "rhapsody-py 0.6 `DaskExecutionBackend`",
        "rh Dask",
    ),
)

PACKAGES = ("radical.asyncflow", "rhapsody-py", "dask", "distributed")

PORT: dict[str, str] = {
    "LC-1": "accept `submit_tasks` on a fresh instance, before any `await backend`",
    "LC-2": "make `state()` a plain method returning a `spec.BackendState` member",
    "LC-3": "INITIALIZED -> RUNNING -> SHUTDOWN only; SHUTDOWN once `shutdown()` ran",
    "LC-4": "deliver every state to the latest `register_callback` function only",
    "LC-5": "`__await__` returns the backend itself, ready",
    "LC-6": "`__aexit__` calls `shutdown()`",
    "LC-7": "keep the four state names and `terminal_states` on the states map",
    "LC-8": "keep `name` a `str`",
    "SB-1": "return `None` from `submit_tasks`, not a list of asyncio tasks",
    "SB-2": "call `spec.validate_batch(tasks, in_flight)` before accepting anything",
    "SB-3": "`spec.validate_batch`: a missing or non-string uid rejects the batch",
    "SB-4": "`spec.validate_batch`: duplicate or in-flight uids reject the batch",
    "SB-5": "report a task with nothing to run FAILED, with an exception saying so",
    "SB-6": "report unsupported task kinds FAILED with `CapabilityNotSupportedError`",
    "SB-7": "raise `BackendShutdownError` from `submit_tasks` after shutdown",
    "SB-8": "accept `[]` and report nothing",
    "SB-9": "isolate each task: one failure must not touch the others",
    "SB-10": "copy what you need from the batch list before `submit_tasks` returns",
    "ST-1": "deliver `spec.TaskState` members, not plain strings",
    "ST-2": "one place reports a terminal state and drops the task from the table",
    "ST-3": "RUNNING once, before the end; nothing after the terminal state",
    "ST-4": "hand results from worker threads to the loop (`call_soon_threadsafe`)",
    "ST-5": "never call the callback inside `submit_tasks`/`cancel_task`: `call_soon`",
    "ST-6": "write results into the submitted dict and pass that very dict",
    "ST-7": "wrap the callback call: log its exception and carry on",
    "ST-8": "catch `BaseException` (not KeyboardInterrupt, SystemExit) around it",
    "RS-1": "call the function with `args`/`kwargs`; store `return_value`",
    "RS-2": "await `async def` functions; store the awaited result",
    "RS-3": "store the exception (type kept) in `exception`, the traceback in `stderr`",
    "RS-4": "set `stdout`/`stderr` text and `exit_code`; DONE iff exit code 0",
    "RS-5": "name the missing program in the exception (shell exit 127 included)",
    "RS-6": "write `<_work_dir>/<uid>.stdout|.stderr` and report their paths",
    "RS-7": "honour `shell` (default true), `cwd` and `env`",
    "RS-8": "kill at `timeout` and report FAILED with `TaskTimeoutError`",
    "RS-9": "replace an unpicklable exception with `StandInError`",
    "RS-10": "a `dry_run` backend reports runnable tasks DONE without running them",
    "RS-11": "escape the uid in capture file names: stay inside `_work_dir`",
    "RS-12": "a dead worker fails only its own task with `WorkerLostError`",
    "RS-13": "report a prompt's answer as a `str` in `stdout` and `return_value`",
    "RS-14": "a failed prompt: an exception object in `exception`, reason in `stderr`",
    "RQ-1": "admit tasks only while their requests fit the declared `capacity`",
    "RQ-2": "fail a request beyond the capacity at once: `ResourceUnavailableError`",
    "RQ-3": "validate requests: fail a malformed one naming the key and value",
    "RQ-4": "hand out whole GPUs, exclusively, through `CUDA_VISIBLE_DEVICES`",
    "RQ-5": "schedule so that a large request is not starved by small ones",
    "RQ-6": 'give an executable granted no GPU `CUDA_VISIBLE_DEVICES=""`',
    "SV-1": "run a service until it ends, is canceled or shut down; no default timeout",
    "SV-2": "once a service is ready, report RUNNING again with `service_callback=`",
    "SV-3": "`service_callback` resolves a pending future with `task['service_info']`",
    "SV-4": "honour `ready` probes (`tcp`, `file`, `stdout`); refuse malformed ones",
    "SV-5": "fail a service that ends or times out before ready; no `service_callback`",
    "SV-6": "report a ready service's end like any task's: DONE or FAILED",
    "SV-7": "stop a ready service's whole process group on cancel and shutdown",
    "SV-8": "run an async generator service: ready at its first `yield`",
    "PL-1": 'write `task["placement"]` (host, cores, GPUs, MB) before the final state',
    "PL-2": "hand out core and GPU ids exclusively, from those the capacity names",
    "PL-3": "bind at spawn (CPU affinity, `CUDA_VISIBLE_DEVICES`) and report that",
    "PL-4": "restore a pool thread's or worker's affinity when its task ends",
    "CN-1": "make `cancel_task` an `async def` returning a `bool`",
    "CN-2": "return `False`, never raise, for an unknown uid",
    "CN-3": "return `False` for a task already reported terminal",
    "CN-4": "after `True`, report CANCELED exactly once and nothing else",
    "CN-5": "start children with `start_new_session=True`; TERM, grace, KILL the group",
    "CN-6": "drop a queued task on cancel, so it never starts",
    "CN-7": "bound the wait for output after a kill (no pipe held open forever)",
    "CN-8": "stop a running function on cancel (a process you can kill)",
    "CN-9": "return `False` for a running function you cannot stop; never CANCELED",
    "SD-1": "make `shutdown()` idempotent",
    "SD-2": "report every unfinished task CANCELED before `shutdown()` returns",
    "SD-3": "nothing reaches the callback once `shutdown()` has returned",
    "SD-4": "never wait unboundedly on a worker in `shutdown()`",
    "SD-5": "kill every child's process group in `shutdown()`",
    "SC-1": "drop a task's dict once it is reported terminal",
    "SC-2": "accept and finish a 10,000-task batch",
    "SC-3": "start large batches in slices, yielding to the loop",
    "SC-4": "bound the number of children running at once",
    "CP-1": "keep `_work_dir`, `is_attached`, `attached_to` plain writable attributes",
    "CP-2": "bool data-linking flags; hooks that accept the engine's calls",
    "CP-3": "`build_task(uid, task_desc, task_specific_kwargs)`",
}
"""What a port must change, per clause: one line the matrix shows for every
clause that is not passed by all five backends."""

UNRUNNABLE = (
    (
        "rhapsody-py 0.6 `DragonExecutionBackend`",
        "needs the Dragon runtime (HPC)",
        "`async def state()`; `async def build_task(task)`; `submit_tasks` calls "
        "the callback itself (RUNNING, FAILED: ST-5); results arrive from a "
        "monitor thread through `call_soon_threadsafe`, but a Dragon-side "
        "cancel is reported from that thread (ST-4); `cancel_task` raises "
        "`ValueError` for an unknown uid (CN-2) and reports CANCELED inside "
        "itself (ST-5); `get_task_states_map()` returns its own "
        "`TaskStateMapper`; no batch validation (SB-2..SB-4).",
    ),
    (
        "rhapsody-py 0.6 `RadicalExecutionBackend`",
        "needs a RADICAL-Pilot session and resources",
        "`submit_tasks` returns RADICAL-Pilot's tasks (SB-1) and skips tasks "
        "that fail to build instead of reporting them FAILED (SB-5, ST-2); "
        "the callback runs on RADICAL-Pilot's threads with its own state "
        "names such as `AGENT_EXECUTING` (ST-1, ST-4); `task_state_cb` raises "
        "`NotImplementedError`; `cancel_task` returns True for any known uid, "
        "finished ones too (CN-3); `async def state()`; finished tasks are "
        "kept (SC-1).",
    ),
    (
        "rhapsody-py 0.6 `OrbitExecutionBackend`",
        "needs an Orbit endpoint (a remote service)",
        "buffers submissions and flushes them on a timer, so `submit_tasks` "
        "returns before the endpoint knows the tasks; `cancel_task` reports "
        "CANCELED inside itself (ST-5) and marks a remote task CANCELED "
        "before the endpoint confirms it (CN-4 needs the confirmation); "
        "`cancel_all_tasks()` is an extra; `async def state()`; the engine's "
        "`build_task(uid, task_desc, task_specific_kwargs)` is kept.",
    ),
    (
        "rhapsody-py 0.6 `DragonVllmInferenceBackend`",
        "needs Dragon and a GPU model server",
        "prompts only; `submit_tasks` calls the callback (RUNNING) inside "
        "itself (ST-5); `cancel_task` always returns False, so prompts cannot "
        "be canceled (CN-6: SHOULD; declare no cancel support instead); "
        "`state()` is synchronous but returns a `str`; `build_task(task)` "
        "takes the rhapsody form.",
    ),
)
"""Backends read, not run: (backend, why not run here, interface differences)."""


def _versions(python: str) -> dict[str, str]:
    code = (
        "import importlib.metadata as m, json, platform\n"
        "out = {'python': platform.python_version()}\n"
        f"for name in {list(PACKAGES)!r}:\n"
        "    try:\n"
        "        out[name] = m.version(name)\n"
        "    except m.PackageNotFoundError:\n"
        "        out[name] = 'not installed'\n"
        "print(json.dumps(out))\n"
    )
    done = subprocess.run(
        [python, "-c", code], capture_output=True, text=True, check=True
    )
    found: dict[str, str] = json.loads(done.stdout)
    return found


def _suite_revision() -> str:
    try:
        done = subprocess.run(
            ["git", "-C", str(ROOT), "log", "-1", "--format=%h %s"],
            capture_output=True,
            text=True,
            check=True,
        )
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return done.stdout.strip()[:100]


def run(python: str, out: Path, only: list[str], suite: str | None) -> int:
    """Run the suite on each subject; write reports and ``meta.json``."""
    out.mkdir(parents=True, exist_ok=True)
    meta_path = out / "meta.json"
    meta: dict[str, Any] = (
        json.loads(meta_path.read_text()) if meta_path.exists() else {"runs": {}}
    )
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(HERE), env.get("PYTHONPATH")) if p
    )
    for subject in SUBJECTS:
        if only and subject.key not in only:
            continue
        report = out / f"{subject.key}.json"
        print(f"::: {subject.label}: {subject.target}", flush=True)
        began = time.monotonic()
        done = subprocess.run(
            [python, "-m", "conformance", subject.target, "--json", str(report)],
            env=env,
            cwd=out,
            capture_output=True,
            text=True,
            timeout=1800,
        )
        wall = time.monotonic() - began
        (out / f"{subject.key}.txt").write_text(done.stdout + done.stderr)
        summary = [
            line for line in done.stdout.splitlines() if line.endswith("CONFORM.")
        ]
        print(f"    {summary[-1] if summary else done.stderr[-300:]} ({wall:.0f} s)")
        meta["runs"][subject.key] = {"wall_s": round(wall, 1), "exit": done.returncode}
    meta["date"] = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    meta["versions"] = _versions(python)
    meta["suite_revision"] = suite or _suite_revision()
    meta_path.write_text(json.dumps(meta, indent=2) + "\n")
    return 0


_NOISE = (
    (re.compile(r"<(\w+) (?:[^<>]|<[^<>]*>)*>"), r"<\1 ...>"),  # <Task pending ...>
    (re.compile(r" at 0x[0-9a-f]+"), ""),
    (re.compile(r"(?:/[\w.+-]+)+/site-packages/"), ""),
    (re.compile(r"/tmp/[\w./-]+"), "<tmp>"),
)


def _one_line(text: str, limit: int = 170) -> str:
    line = " ".join(text.split())
    for pattern, replacement in _NOISE:
        line = pattern.sub(replacement, line)
    if len(line) > limit:
        line = line[: limit - 3].rstrip() + "..."
    return line.replace("|", "\\|")


def diagnosis(report: dict[str, Any], clause_id: str) -> tuple[str, str]:
    """Return a clause's outcome in ``report`` and a one-line diagnosis."""
    row = next((c for c in report["clauses"] if c["id"] == clause_id), None)
    if row is None:  # a clause newer than the suite that made the report
        return "-", "not in the suite version that made this report"
    outcome = row["outcome"]
    if outcome == "fail":
        for test in report["tests"]:
            for failure in test.get("failures", []):
                if failure.get("clause") == clause_id:
                    return outcome, _one_line(failure["message"])
    if outcome == "untested":
        return outcome, "no test of the suite cites it yet"
    return outcome, _one_line(row.get("reason") or "")


_SHOWN = {
    "pass": "pass",
    "fail": "**FAIL**",
    "blocked": "blocked",
    "n/a": "n/a",
    "untested": "untested",
    "xfail": "xfail",
    "xpass": "xpass",
}


def render(runs: Path, output: Path) -> str:
    """Write the page from the reports in ``runs``; return its text."""
    sys.path.insert(0, str(ROOT))
    import spec

    meta = json.loads((runs / "meta.json").read_text())
    reports = {
        s.key: json.loads((runs / f"{s.key}.json").read_text()) for s in SUBJECTS
    }
    first = reports[SUBJECTS[0].key]
    versions = meta["versions"]
    lines = [
        "---",
        "# Generated by scripts/ecosystem.py from --json runs; do not edit.",
        "hide:",
        "  - toc",
        "---",
        "",
        "# The ecosystem matrix",
        "",
        "The conformance suite run on the released backends of radical.asyncflow",
        "0.6 and rhapsody-py 0.6, as each one's documentation says to build it",
        "(`scripts/ecosystem_targets.py`). A port of one of them to the contract",
        "starts here: which clauses it breaks, why, and what to change.",
        "",
        "This page is generated by `scripts/ecosystem.py` from the suite's",
        "`--json` reports, not at build time; rerun it after a release of either",
        "project or of the suite (see the script's docstring).",
        "",
        "| what | version |",
        "| --- | --- |",
        f"| run on | {meta['date']} |",
        f"| radical.asyncflow | {versions.get('radical.asyncflow')} |",
        f"| rhapsody-py | {versions.get('rhapsody-py')} |",
        f"| dask / distributed | {versions.get('dask')} / "
        f"{versions.get('distributed')} |",
        f"| Python | {versions.get('python')} |",
        f"| contract / suite | {first['contract_version']} / "
        f"{first['suite_version']} at `{meta['suite_revision']}` |",
        "",
        "## Summary",
        "",
        "| backend | pass | fail | blocked | n/a | untested | wall time |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for s in SUBJECTS:
        counts = reports[s.key]["counts"]
        wall = meta["runs"].get(s.key, {}).get("wall_s")
        wall_text = f"{wall:.0f} s" if wall is not None else "-"
        lines.append(
            f"| {s.label} | {counts.get('pass', 0)} | {counts.get('fail', 0)} | "
            f"{counts.get('blocked', 0)} | {counts.get('n/a', 0)} | "
            f"{counts.get('untested', 0)} | {wall_text} |"
        )
    lines += [
        "",
        "*blocked*: a test citing the clause stopped before it could judge it,",
        "because an earlier clause of the same test failed first (see each",
        "backend's list below for which). *n/a*: the backend does not declare",
        "the capability the clause belongs to.",
        "",
        "Neither project has a Parsl backend (rhapsody-py 0.6 has Dask, Dragon,",
        "RADICAL-Pilot and concurrent ones; its Flux backend is a request). The",
        "reference [`ParslExecutionBackend`](parsl.md) fills that row: it",
        "conforms (`python -m conformance reference.parsl:shared_local_backend`",
        "in CI), declaring crash isolation but not preemptive cancels or",
        "resources.",
        "",
        "## Clause by clause",
        "",
        "| clause | level | "
        + " | ".join(s.short for s in SUBJECTS)
        + " | what a port must change |",
        "| --- | --- | " + " | ".join("---" for _ in SUBJECTS) + " | --- |",
    ]
    for clause_id, item in spec.CLAUSES.items():
        outcomes = [diagnosis(reports[s.key], clause_id)[0] for s in SUBJECTS]
        change = PORT.get(clause_id, "")
        if all(o in ("pass", "n/a") for o in outcomes):
            change = "nothing (passed wherever it applies)" if change else change
        lines.append(
            f"| [{clause_id}](contract.md#{clause_id}) | {item.level.value} | "
            + " | ".join(_SHOWN.get(o, o) for o in outcomes)
            + f" | {change} |"
        )
    lines += [
        "",
        "Columns: af = radical.asyncflow 0.6, rh = rhapsody-py 0.6.",
        "",
        "## Each backend's diagnosis",
        "",
        "Every clause that did not pass, with the first failure the suite",
        "recorded (or, for a blocked clause, what stopped its test).",
    ]
    for s in SUBJECTS:
        report = reports[s.key]
        lines += [
            "",
            f"### {s.label}",
            "",
            f"`python -m conformance {s.target}` (with `scripts/` on `PYTHONPATH`)"
            f": {report['backend_type']}, capabilities "
            f"{', '.join(report['capabilities']) or 'none declared'}.",
            "",
            "| clause | outcome | diagnosis |",
            "| --- | --- | --- |",
        ]
        for clause_id in spec.CLAUSES:
            outcome, text = diagnosis(report, clause_id)
            if outcome in ("pass", "n/a", "-"):
                continue
            lines.append(f"| {clause_id} | {_SHOWN.get(outcome, outcome)} | {text} |")
    lines += [
        "",
        "## Backends not run here",
        "",
        "These need hardware or services this project's machines do not have.",
        "Their interface differences, read from rhapsody-py 0.6's source:",
        "",
        "| backend | why not run | differences from the contract |",
        "| --- | --- | --- |",
    ]
    for name, why, what in UNRUNNABLE:
        lines.append(f"| {name} | {why} | {what} |")
    lines.append("")
    text = "\n".join(lines)
    output.write_text(text, encoding="utf-8")
    return text


def main(argv: list[str] | None = None) -> int:
    """Parse the command line and run a step."""
    parser = argparse.ArgumentParser(prog="scripts/ecosystem.py", description=__doc__)
    steps = parser.add_subparsers(dest="step", required=True)
    run_p = steps.add_parser("run", help="run the suite on each released backend")
    run_p.add_argument("--python", default=sys.executable)
    run_p.add_argument("--out", type=Path, required=True)
    run_p.add_argument("--only", nargs="*", default=[], metavar="KEY")
    run_p.add_argument("--suite", help="label of the suite version (default: git)")
    render_p = steps.add_parser("render", help="write docs/ecosystem.md")
    render_p.add_argument("runs", type=Path)
    render_p.add_argument("--output", type=Path, default=PAGE)
    args = parser.parse_args(argv)
    if args.step == "run":
        return run(args.python, args.out, args.only, args.suite)
    render(args.runs, args.output)
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
