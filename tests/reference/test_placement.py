"""The pure parts of placement: usable cores, the ``cores=`` option, choosing ids."""

from __future__ import annotations

import copy
import json
import os
import pickle
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest

from reference import _placement
from reference._placement import CoreSet, bound, core_ids_from, placement

needs_affinity = pytest.mark.skipif(
    not _placement.CAN_BIND, reason="needs os.sched_setaffinity (Linux)"
)


def test_default_is_every_usable_core() -> None:
    assert core_ids_from(None, (0, 2, 5)) == (0, 2, 5)


def test_a_count_takes_the_lowest_usable_ids() -> None:
    assert core_ids_from(2, (3, 5, 9)) == (3, 5)


@pytest.mark.parametrize(
    "ids", [{5, 3}, [3, 5], (5, 3), range(3, 6, 2), frozenset({3, 5})]
)
def test_explicit_ids_in_any_iterable(ids: object) -> None:
    assert core_ids_from(ids, (3, 4, 5)) == (3, 5)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("cores", "error", "words"),
    [
        (0, ValueError, "at least 1"),
        (-1, ValueError, "at least 1"),
        (3, ValueError, "may use only 2 core(s)"),
        ([], ValueError, "no core ids"),
        ([0, 0], ValueError, "repeat"),
        ([0, 7], ValueError, "cores [7] are not in this process's CPU affinity"),
        (True, TypeError, "bool"),
        (1.0, TypeError, "float"),
        ("0,1", TypeError, "str"),
        (object(), TypeError, "object"),
        (["0"], TypeError, "core ids must be ints"),
        ([0, None], TypeError, "core ids must be ints"),
    ],
)
def test_bad_cores_option_is_refused_naming_it(
    cores: object, error: type[Exception], words: str
) -> None:
    with pytest.raises(error, match=None) as caught:
        core_ids_from(cores, (0, 1))  # type: ignore[arg-type]
    assert words in str(caught.value)


def test_no_affinity_api_refuses_binding() -> None:
    with pytest.raises(ValueError, match="bind=False"):
        core_ids_from(None, None)


def test_core_set_hands_out_lowest_first_and_takes_back() -> None:
    free = CoreSet([4, 1, 3, 2])
    assert free.take(2) == (1, 2)
    assert free.take(1) == (3,)
    free.give((2, 1))
    assert len(free) == 3
    assert free.take(3) == (1, 2, 4)
    with pytest.raises(ValueError, match="1 core"):
        free.take(1)


def test_placement_record() -> None:
    record = placement((0, 1), ("7",), 64)
    assert record == {
        "host": _placement.HOST,
        "cores": (0, 1),
        "gpus": ("7",),
        "memory": 64,
    }
    assert placement(None, (), 0)["cores"] is None
    assert placement(None, (), 0, "node7", "tcp://node7:1")["worker"] == "tcp://node7:1"


@pytest.mark.parametrize(
    "change",
    [
        lambda r: r.__setitem__("cores", (5,)),
        lambda r: r.__delitem__("host"),
        lambda r: r.clear(),
        lambda r: r.pop("memory"),
        lambda r: r.pop("nothing", None),
        lambda r: r.popitem(),
        lambda r: r.setdefault("note", 1),
        lambda r: r.update(memory=1),
        lambda r: r.__ior__({"memory": 1}),
    ],
)
def test_a_placement_record_cannot_be_changed(change: Any) -> None:
    # Tasks that held one grant in turn share one record: a change to one
    # task's would rewrite the others'.
    record = placement((0,), (), 0)
    before = dict(record)
    with pytest.raises(TypeError, match="read-only"):
        change(record)
    assert record == before


def test_a_placement_record_is_still_a_dict_to_read_copy_and_send() -> None:
    record = placement((0, 1), ("7",), 64)
    assert isinstance(record, dict)
    assert json.loads(json.dumps(record)) == {
        "host": _placement.HOST,
        "cores": [0, 1],
        "gpus": ["7"],
        "memory": 64,
    }
    for again in (
        pickle.loads(pickle.dumps(record)),
        copy.copy(record),
        copy.deepcopy(record),
    ):
        assert again == record
        assert type(again) is type(record)
    mine = dict(record)  # a copy the caller may change
    mine["cores"] = (3,)
    assert record["cores"] == (0, 1)


@needs_affinity
def test_bound_binds_the_thread_and_restores_it() -> None:
    before = os.sched_getaffinity(0)
    core = min(before)
    seen: dict[str, object] = {}

    def body() -> None:
        with bound({core}):
            seen["inside"] = os.sched_getaffinity(0)
            seen["main"] = set(main_mask())
        seen["after"] = os.sched_getaffinity(0)

    def main_mask() -> set[int]:
        return os.sched_getaffinity(os.getpid())

    thread = threading.Thread(target=body)
    thread.start()
    thread.join(10)
    assert seen == {"inside": {core}, "main": before, "after": before}


@needs_affinity
def test_bound_restores_when_the_block_raises() -> None:
    before = os.sched_getaffinity(0)
    with pytest.raises(RuntimeError), bound({min(before)}):
        raise RuntimeError("boom")
    assert os.sched_getaffinity(0) == before


@needs_affinity
def test_a_process_spawned_while_bound_starts_bound(tmp_path: Path) -> None:
    """The race-free way executables are bound: the child inherits the thread's mask."""
    core = min(os.sched_getaffinity(0))
    out = tmp_path / "mask"
    fd = os.open(out, os.O_WRONLY | os.O_CREAT)
    try:
        with bound({core}):
            pid = os.posix_spawn(
                "/bin/sh",
                ["sh", "-c", "grep Cpus_allowed_list: /proc/$$/status"],
                os.environ,
                file_actions=[(os.POSIX_SPAWN_DUP2, fd, 1)],
            )
    finally:
        os.close(fd)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert out.read_text().split() == ["Cpus_allowed_list:", str(core)]


@needs_affinity
def test_usable_cores_follow_the_cpuset() -> None:
    """Under a narrower affinity (as in a batch allocation) only those cores count."""
    core = min(os.sched_getaffinity(0))
    code = (
        "import os; from reference._placement import usable_cores; "
        f"os.sched_setaffinity(0, {{{core}}}); print(usable_cores())"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == f"({core},)"
