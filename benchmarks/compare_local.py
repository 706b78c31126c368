"""Before/after for the local backend under the engine, interleaved in one process.

Loads the ``reference`` package as it was at a git revision (under another
name, beside today's; ``spec`` is today's), whether its local backend is one
module (``reference/local.py``) or a package, and runs 2,000 gathered
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
import atexit
import contextlib
import importlib
import inspect
import io
import logging
import re
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from _engine import EngineSubject, run_engine

ROOT = Path(__file__).resolve().parent.parent


_OLD = "_compare_reference"
_IMPORTS = re.compile(r"^(\s*)(from|import) reference\b", re.MULTILINE)


def old_backend(rev: str) -> Any:
    """``LocalExecutionBackend`` as it was at ``rev``, with that rev's ``reference``.

    The tree is extracted into a temporary directory as the package
    ``_compare_reference`` (its imports of ``reference`` renamed), so the old
    and the new backend run side by side in one process.
    """
    tmp = Path(tempfile.mkdtemp(prefix="compare-local-"))
    atexit.register(shutil.rmtree, tmp, ignore_errors=True)
    archive = subprocess.run(
        ["git", "archive", rev, "reference"], cwd=ROOT, check=True, capture_output=True
    ).stdout
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        if hasattr(tarfile, "data_filter"):  # Python 3.12, and late 3.10/3.11
            tar.extractall(tmp, filter="data")
        else:  # pragma: no cover - our own git tree, nothing to filter
            tar.extractall(tmp)
    (tmp / "reference").rename(tmp / _OLD)
    for source in (tmp / _OLD).rglob("*.py"):
        text = source.read_text()
        source.write_text(_IMPORTS.sub(rf"\1\2 {_OLD}", text))
    for name in [m for m in sys.modules if m.split(".")[0] == _OLD]:
        del sys.modules[name]  # another revision loaded before
    sys.path.insert(0, str(tmp))
    try:
        module = importlib.import_module(f"{_OLD}.local")
    finally:
        sys.path.remove(str(tmp))
    return module.LocalExecutionBackend


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
