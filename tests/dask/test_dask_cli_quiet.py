"""The CLI on the Dask backend: Dask's own logging stays out of the report.

RS-12's check kills workers on purpose; Dask logs each death (an ERROR from
the scheduler, warnings from the nanny). Without ``-v`` none of that may
appear among the report's lines (issue 23, item 7).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_worker_deaths_the_suite_provokes_are_not_logged() -> None:
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "conformance",
            "reference.dask:shared_local_backend",
            "--clauses",
            "RS-12",
            "--deadline-scale",
            "3",
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=300,
    )
    # The check ran to its end: workers died and the pool healed.
    assert "RS-12   MUST   pass" in out.stdout, out.stdout + out.stderr
    logged = [
        line
        for line in (out.stdout + out.stderr).splitlines()
        if line.startswith("distributed.") or " - ERROR - " in line
    ]
    assert not logged, "\n".join(logged[:10])
