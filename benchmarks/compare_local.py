"""Before/after for the local backend under the engine, interleaved in one process.

Loads ``reference/local.py`` and ``reference/_workers.py`` as they were at a
git revision (the rest of ``reference`` is today's), and runs 2,000 gathered
tasks through radical.asyncflow 0.6's ``WorkflowEngine`` over that backend
and over today's, each run right after a run of the noop ceiling::

    python benchmarks/compare_local.py main            # 10 runs each
    python benchmarks/compare_local.py main --runs 5 --n 1000

Prints, per subject, the median tasks/s, the median and range of the
per-run ratios to the ceiling, and the CPU time the whole process spent
per task (``time.process_time``), which a loaded machine does not inflate
the way it scatters wall-clock rates.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import inspect
import logging
import statistics
import subprocess
import sys
import time
import types
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from _engine import EngineSubject, run_engine

ROOT = Path(__file__).resolve().parent.parent


def _module_at(rev: str, path: str, name: str, source_edit: Any = None) -> Any:
    """Import ``path`` as it was at ``rev`` under the module name ``name``."""
    source = subprocess.run(
        ["git", "show", f"{rev}:{path}"],
        cwd=ROOT,
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    if source_edit is not None:
        source = source_edit(source)
    module = types.ModuleType(name)
    module.__file__ = f"<{rev}:{path}>"
    sys.modules[name] = module
    exec(compile(source, module.__file__, "exec"), module.__dict__)
    return module


def old_backend(rev: str) -> Any:
    """``LocalExecutionBackend`` as it was at ``rev`` (with that rev's _workers)."""
    _module_at(rev, "reference/_workers.py", "_compare_workers")
    local = _module_at(
        rev,
        "reference/local.py",
        "_compare_local",
        lambda text: text.replace(
            "from reference import _workers\n", "import _compare_workers as _workers\n"
        ),
    )
    return local.LocalExecutionBackend


def _maker(cls: Any, **options: Any) -> Any:
    async def make() -> Any:
        return await cls(executor=ThreadPoolExecutor(6), **options)

    return make


async def _noop() -> Any:
    from reference import NoopExecutionBackend

    return NoopExecutionBackend()


async def compare(rev: str, n: int, runs: int) -> list[list[str]]:
    """Measure; return the table rows."""
    from reference import LocalExecutionBackend

    old = old_backend(rev)
    subjects = [
        EngineSubject(f"{rev}: threads, async fn", "", "", _maker(old)),
        EngineSubject("now: threads, async fn", "", "", _maker(LocalExecutionBackend)),
        EngineSubject(f"{rev}: threads, sync fn", "", "", _maker(old), "sync-fn"),
        EngineSubject(
            "now: threads, sync fn", "", "", _maker(LocalExecutionBackend), "sync-fn"
        ),
    ]
    if "async_on_loop" in inspect.signature(LocalExecutionBackend).parameters:
        subjects.append(
            EngineSubject(
                "now: async_on_loop=True, async fn",
                "",
                "",
                _maker(LocalExecutionBackend, async_on_loop=True),
            )
        )
    ceiling = EngineSubject("noop ceiling", "", "", _noop)
    cpu: list[float] = []

    @contextlib.contextmanager
    def timed() -> Iterator[None]:
        start = time.process_time()
        yield
        cpu.append(time.process_time() - start)

    rates: dict[str, list[float]] = {s.key: [] for s in [ceiling, *subjects]}
    ratios: dict[str, list[float]] = {s.key: [] for s in subjects}
    cpus: dict[str, list[float]] = {s.key: [] for s in [ceiling, *subjects]}
    for rep in range(runs):
        shift = rep % len(subjects)
        for s in subjects[shift:] + subjects[:shift]:
            base = await run_engine(ceiling, n, 300, timed)
            cpus[ceiling.key].append(cpu[-1] / n * 1e6)
            sample = await run_engine(s, n, 300, timed)
            cpus[s.key].append(cpu[-1] / n * 1e6)
            if sample.done != n:
                raise RuntimeError(f"{s.key}: {sample}")
            rates[ceiling.key].append(base.rate)
            rates[s.key].append(sample.rate)
            ratios[s.key].append(sample.rate / base.rate)
            print(
                f"  [{rep + 1}/{runs}] {s.key:36} {sample.rate:8,.0f}/s",
                file=sys.stderr,
            )
    rows = []
    for key in rates:
        r = ratios.get(key)
        rows.append(
            [
                key,
                f"{statistics.median(rates[key]):,.0f}",
                f"{statistics.median(r):.2f}x" if r else "-",
                f"{min(r):.2f}-{max(r):.2f}" if r else "-",
                f"{statistics.median(cpus[key]):.0f}",
            ]
        )
    return rows


def main() -> int:
    """Run the comparison and print a Markdown table."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("rev", help="git revision to compare with, e.g. main")
    p.add_argument("--n", type=int, default=2_000, help="tasks per run")
    p.add_argument("--runs", type=int, default=10, help="runs per subject")
    args = p.parse_args()
    logging.basicConfig(level=logging.ERROR)
    with contextlib.suppress(OSError):
        print(f"load average at start: {Path('/proc/loadavg').read_text().split()[:3]}")
    rows = asyncio.run(compare(args.rev, args.n, args.runs))
    with contextlib.suppress(OSError):
        print(f"load average at end: {Path('/proc/loadavg').read_text().split()[:3]}")
    print(
        "| subject | tasks/s (median) | of the ceiling (median) | per-run ratios "
        "| CPU µs per task (median) |"
    )
    print("| --- | ---: | ---: | ---: | ---: |")
    for row in rows:
        print("| " + " | ".join(row) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
