"""One DataFlowKernel for the whole process, for the conformance suite and tests.

The suite builds a backend per test; starting Parsl's interchange and
workers for each would cost seconds a test. `shared_local_backend` starts
one local DataFlowKernel on first use (two workers) and hands out backends
that use it and leave it running; it is cleaned up when the interpreter
exits, and so is its run directory (logs, scripts) under the temporary
directory.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import shutil
import tempfile
import threading
from typing import Any

from reference.parsl._backend import ParslExecutionBackend
from reference.parsl._config import LABEL, local_config
from reference.parsl._start import close_dfk, open_dfk, wait_for_workers
from spec import BackendError

__all__ = ["shared_local_backend"]

_lock = threading.Lock()
_shared: list[Any] = []
_warm: list[bool] = []  # non-empty once a worker was seen connected
_WARM_BUDGET = 7.0  # seconds; the suite gives a factory 10


def _shared_dfk() -> Any:
    with _lock:
        if not _shared:
            run_dir = tempfile.mkdtemp(prefix="asyncflow-parsl-")
            # atexit runs last-in first-out: the DataFlowKernel is closed
            # (its interchange and workers gone), then its run directory.
            atexit.register(shutil.rmtree, run_dir, True)
            dfk = open_dfk(local_config(workers=2, run_dir=run_dir))
            atexit.register(close_dfk, dfk)
            _shared.append(dfk)
        return _shared[0]


async def shared_local_backend() -> ParslExecutionBackend:
    """Return a backend on a process-wide local DataFlowKernel (two workers).

    The DataFlowKernel starts on the first call and is cleaned up when the
    interpreter exits; every backend returned uses it::

        python -m conformance reference.parsl:shared_local_backend

    Returns:
        A new backend, not yet started (``await`` it, or submit).
    """
    dfk = await asyncio.to_thread(_shared_dfk)
    if not _warm:
        # The first call waits (a while, not past the suite's build deadline)
        # for the workers to connect, so the first test does not pay for it.
        executor = dfk.executors[LABEL]
        with contextlib.suppress(BackendError):
            await wait_for_workers(executor, LABEL, _WARM_BUDGET, dfk.run_dir)
            _warm.append(True)
    return ParslExecutionBackend(dfk=dfk, name="parsl")
