"""A remote worker's children: dying with the worker, and isolated re-runs.

Shared by the Dask and Parsl workers, so it imports neither.

- `DIE_WITH_PARENT` is the ``preexec_fn`` that makes a child (an executable,
  an isolated function) die with the worker that started it (Linux), so a
  lost worker leaves no task running unseen.
- `start_isolated` starts a child that runs one function task,
  `isolated_outcome` reads what it left: a function run again after a
  worker died with its chunk runs there, so that if it kills its process
  (``os._exit``, a segfault, the OOM killer) it costs that child only, and
  the task fails alone with `spec.WorkerLostError` (RS-12), its worker
  still alive.
"""

from __future__ import annotations

import ctypes
import os
import pickle
import signal
import subprocess
import sys
from collections.abc import Callable
from typing import Any

from reference import _outcomes
from reference._outcomes import Outcome, failure
from spec import WorkerLostError

__all__ = ["DIE_WITH_PARENT", "isolated_outcome", "start_isolated"]

_PR_SET_PDEATHSIG = 1
# Resolved once here: the forked child must only call it, not look it up.
_prctl: Any = ctypes.CDLL(None).prctl if sys.platform == "linux" else None


def _die_with_parent() -> None:  # pragma: no cover - runs in the forked child
    """Ask Linux to SIGKILL this child if its parent (the worker) dies."""
    _prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


DIE_WITH_PARENT: Callable[[], None] | None = (
    _die_with_parent if _prctl is not None else None
)
"""``preexec_fn`` for a child that must die with its worker; ``None`` off Linux.

Only a ``prctl`` call, so it is safe between fork and exec.
"""

# The child runs the shared outcomes module as a file: importing it would
# import the reference package first (and the worker's framework).
_ISOLATED_MAIN = "import runpy, sys; runpy.run_path(sys.argv[1], run_name='__main__')"


def start_isolated() -> subprocess.Popen[bytes]:
    """Start the child for one function task (`reference._outcomes.isolated_main`).

    Write the task's pickled ``(function, args, kwargs)`` to its stdin, read
    its outcome from its stdout (``communicate``), then `isolated_outcome`.
    It runs in a session of its own (a cancel may kill its group) and dies
    with this worker.
    """
    env = dict(os.environ)
    # The worker's import path, so the child finds what the task's pickle names.
    env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if isinstance(p, str) and p)
    return subprocess.Popen(
        [sys.executable, "-c", _ISOLATED_MAIN, _outcomes.__file__],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        env=env,
        start_new_session=True,
        preexec_fn=DIE_WITH_PARENT,
    )


def isolated_outcome(returncode: int, out: bytes, worker: str) -> Outcome:
    """The task's `Outcome` from what its isolated child left.

    Args:
        returncode: The child's exit status (negative: the signal).
        out: What it wrote to stdout: the pickled outcome when it ran to
            the end.
        worker: What kind of worker died with the task's chunk ("Dask",
            "Parsl"), for the message.

    Returns:
        The child's outcome; or, if it died before sending one, a failure
        with `spec.WorkerLostError` saying how it died.
    """
    if returncode == 0:
        try:
            outcome: Outcome = pickle.loads(out)
        except Exception:
            pass
        else:
            return outcome
    if returncode < 0:
        how = f"signal {signal.Signals(-returncode).name}"
    else:
        how = f"exit code {returncode}"
    error = WorkerLostError(
        f"the process running the task died ({how}) before returning a result; "
        f"the task ran alone in it because a {worker} worker had died with its chunk"
    )
    return failure(error, stderr=str(error))
