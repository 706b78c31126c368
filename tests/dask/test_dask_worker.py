"""The worker side, called in this process: no cluster, no Dask worker.

`reference.dask._worker.cancel_keys` marks a key; `run_executable` and an
isolated `run_functions` must then never start its child (CN-6).
"""

from __future__ import annotations

import asyncio
import itertools
import os
from pathlib import Path
from typing import Any

import cloudpickle
import pytest

pytest.importorskip("distributed")

from reference.dask import _outcomes, _worker

pytestmark = pytest.mark.timeout(60)

_keys = itertools.count()


def fresh_key() -> str:
    """A key no other test used: the worker's registry is per process."""
    return f"unit-{os.getpid()}-{next(_keys)}"


def touch_job(key: str, marker: Path) -> _worker.ExecutableJob:
    task: dict[str, Any] = {
        "uid": key,
        "executable": "touch",
        "arguments": [str(marker)],
    }
    return _worker.ExecutableJob(key, cloudpickle.dumps(task), str(marker.parent), 1.0)


def cancel(key: str) -> tuple[list[str], list[str]]:
    return asyncio.run(_worker.cancel_keys([key], 1.0, [key]))


def test_a_canceled_key_s_executable_never_starts(tmp_path: Path) -> None:
    key, marker = fresh_key(), tmp_path / "started"
    assert cancel(key) == ([], [])  # not running here: marked, nothing killed
    assert _worker.run_executable(touch_job(key, marker)) == _outcomes.SKIPPED
    assert not marker.exists()


def test_an_executable_not_canceled_runs(tmp_path: Path) -> None:
    # The guard skips only what was canceled: the same job under its own key runs.
    marker = tmp_path / "started"
    outcome = _worker.run_executable(touch_job(fresh_key(), marker))
    assert outcome[0] == _outcomes.EXITED
    assert cloudpickle.loads(outcome[1])[2] == 0  # exit code
    assert marker.exists()


def touch(path: str) -> str:
    with open(path, "w"):
        pass
    return path


def test_a_canceled_key_s_isolated_function_never_starts(tmp_path: Path) -> None:
    canceled, other = fresh_key(), fresh_key()
    marker = tmp_path / "started"
    blob = _outcomes.dumps_function_item(touch, (str(marker),), {})
    cancel(canceled)
    batch = _worker.FunctionBatch([(canceled, blob)], isolated=True, key="c")
    assert _worker.run_functions(batch) == [_outcomes.SKIPPED]
    assert not marker.exists()
    batch = _worker.FunctionBatch([(other, blob)], isolated=True, key="c2")
    [outcome] = _worker.run_functions(batch)
    assert outcome[0] == _outcomes.OK, outcome
    assert marker.exists()


def test_a_canceled_key_s_function_in_a_thread_never_starts(tmp_path: Path) -> None:
    canceled, other = fresh_key(), fresh_key()
    first, second = tmp_path / "first", tmp_path / "second"
    cancel(canceled)
    batch = _worker.FunctionBatch(
        [
            (canceled, _outcomes.dumps_function_item(touch, (str(first),), {})),
            (other, _outcomes.dumps_function_item(touch, (str(second),), {})),
        ],
        key="c3",
    )
    outcomes = _worker.run_functions(batch)
    assert outcomes[0] == _outcomes.SKIPPED
    assert outcomes[1][0] == _outcomes.OK
    assert not first.exists() and second.exists()
    # Started and returned here: a cancel now says it cannot be stopped.
    assert asyncio.run(_worker.cancel_keys([other], 1.0, ["c3"])) == ([], [other])
