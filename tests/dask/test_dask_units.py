"""The Dask backend's pure parts, called directly: no cluster, loop or threads.

`reference.dask._decisions` (outcomes to states, re-runs, cancel answers,
chunks, refusals), `reference.dask._options` (constructor checks) and the
worker's `reference.dask._registry` (started or marked, never both).
"""

from __future__ import annotations

import subprocess
from typing import Any, cast

import cloudpickle
import pytest

pytest.importorskip("distributed")

from reference.dask import _decisions, _outcomes
from reference.dask._decisions import AfterLoss, Replies
from reference.dask._options import DaskOptions
from reference.dask._registry import CanceledBeforeStart, KeyRegistry
from spec import (
    CapabilityNotSupportedError,
    ResourceCapacity,
    ResourceDemand,
    ResourceUnavailableError,
    StandInError,
    TaskKind,
    TaskState,
)

# -- outcomes to states ------------------------------------------------------------


def test_function_ok_is_done_with_its_value() -> None:
    found = _decisions.settlement(TaskKind.FUNCTION, _outcomes.success([1, 2]))
    assert found.state is TaskState.DONE
    assert found.fields == {"return_value": [1, 2]}
    assert found.error is None


def test_function_failure_keeps_the_exception_type_and_traceback() -> None:
    try:
        raise KeyError("k")
    except KeyError as exc:
        outcome = _outcomes.failure(exc)
    found = _decisions.settlement(TaskKind.FUNCTION, outcome)
    assert found.state is TaskState.FAILED
    assert isinstance(found.error, KeyError)
    assert found.stderr is not None and "KeyError" in found.stderr


def test_unloadable_exception_is_a_stand_in_naming_its_type() -> None:
    outcome = (_outcomes.FAILED, None, "tb", "mod.Odd", "odd message")
    found = _decisions.settlement(TaskKind.FUNCTION, outcome)
    assert isinstance(found.error, StandInError)
    assert "mod.Odd" in str(found.error) and "odd message" in str(found.error)


@pytest.mark.parametrize(
    ("code", "state"), [(0, TaskState.DONE), (3, TaskState.FAILED)]
)
def test_executable_state_follows_its_exit_code(code: int, state: TaskState) -> None:
    payload = cloudpickle.dumps(("out", "err", code, None))
    outcome = (_outcomes.EXITED, payload, "", "", "")
    found = _decisions.settlement(TaskKind.EXECUTABLE, outcome)
    assert found.state is state
    assert found.fields["exit_code"] == code and found.fields["stdout"] == "out"
    assert found.error is None  # FAILED by exit code: exception/stderr as sent


def test_executable_that_could_not_start_has_no_exit_code() -> None:
    outcome = _outcomes.failure(FileNotFoundError("nope"))
    found = _decisions.settlement(TaskKind.EXECUTABLE, outcome)
    assert found.state is TaskState.FAILED
    assert found.fields == {"stdout": None, "exit_code": None}
    assert isinstance(found.error, FileNotFoundError)


@pytest.mark.parametrize("kind", [TaskKind.FUNCTION, TaskKind.EXECUTABLE])
def test_skipped_task_is_canceled(kind: TaskKind) -> None:
    assert _decisions.settlement(kind, _outcomes.SKIPPED).state is TaskState.CANCELED


def test_unknown_status_fails_rather_than_claiming_a_state() -> None:
    found = _decisions.settlement(TaskKind.FUNCTION, ("??", None, "", "", ""))
    assert found.state is TaskState.FAILED and "'??'" in str(found.error)


# -- a lost worker -----------------------------------------------------------------


def test_a_task_runs_again_until_its_worker_died_max_times() -> None:
    runs = [_decisions.after_loss(n) for n in range(1, _decisions.MAX_LOSSES + 1)]
    assert runs[:-1] == [AfterLoss.RUN_AGAIN] * (_decisions.MAX_LOSSES - 1)
    assert runs[-1] is AfterLoss.FAIL


# -- what a cancel may report ---------------------------------------------------------


def test_replies_read_killed_unstoppable_and_completeness() -> None:
    found = _decisions.read_replies({"w1": (["a"], ["b"]), "w2": ([], ["c"])})
    assert found == Replies(frozenset({"a"}), frozenset({"b", "c"}), True)
    assert not _decisions.read_replies({"w1": ([], []), "w2": OSError()}).complete
    assert not _decisions.read_replies(None).complete
    assert not _decisions.read_replies({}).complete


COMPLETE = Replies(frozenset({"killed"}), frozenset({"started"}), True)
PARTIAL = Replies(frozenset({"killed"}), frozenset(), False)


@pytest.mark.parametrize(
    ("key", "replies", "in_thread", "arrived", "skipped", "stopped"),
    [
        # A thread-run function's own outcome decides, whatever the workers say.
        ("x", COMPLETE, True, True, True, True),
        ("x", COMPLETE, True, True, False, False),
        # A killed child ran there, so nowhere else: stopped.
        ("killed", PARTIAL, False, False, False, True),
        # Every worker answered: marked everywhere, unless one had started it.
        ("x", COMPLETE, True, False, False, True),
        ("started", COMPLETE, True, False, False, False),
        # A worker did not answer: it may be running there.
        ("x", PARTIAL, True, False, False, False),
        ("x", PARTIAL, False, True, True, True),
        ("x", PARTIAL, False, True, False, False),
    ],
)
def test_cancel_reports_canceled_only_when_it_was_stopped(
    key: str,
    replies: Replies,
    in_thread: bool,
    arrived: bool,
    skipped: bool,
    stopped: bool,
) -> None:
    found = _decisions.cancel_stopped(
        key, replies, in_thread=in_thread, outcome_arrived=arrived, skipped=skipped
    )
    assert found is stopped


# -- chunks and resources -----------------------------------------------------------


def test_chunk_size_as_configured_or_from_the_backlog() -> None:
    assert _decisions.chunk_size(7, 10_000, 2) == 7
    assert _decisions.chunk_size(None, 10_000, 2) == _decisions.MAX_CHUNK
    assert _decisions.chunk_size(None, 80, 2) == 10
    assert _decisions.chunk_size(None, 1, 8) == 1


def test_dask_resources_hold_the_largest_request() -> None:
    small, big = ResourceDemand(), ResourceDemand(cores=2, memory=64)
    assert _decisions.dask_resources([small, big], True) == {"CPU": 2, "MEMORY": 64}
    assert _decisions.dask_resources([small, big], False) == {"CPU": 2}
    gpu = ResourceDemand(gpus=1.0)
    assert _decisions.dask_resources([gpu], False) == {"CPU": 1, "GPU": 1}


def test_refusals_name_the_task() -> None:
    capacity = ResourceCapacity(cores=2, gpus=(), memory=None)
    ranks = ResourceDemand(ranks=2)
    found = _decisions.refusal("t", TaskKind.EXECUTABLE, ranks, capacity)
    assert isinstance(found, CapabilityNotSupportedError) and "'t'" in str(found)
    wide = ResourceDemand(cores=3)
    found = _decisions.refusal("w", TaskKind.EXECUTABLE, wide, capacity)
    assert isinstance(found, ResourceUnavailableError) and "'w'" in str(found)
    fits = ResourceDemand(cores=2)
    assert _decisions.refusal("f", TaskKind.EXECUTABLE, fits, capacity) is None


# -- options -----------------------------------------------------------------------


def check(**given: Any) -> DaskOptions:
    options: dict[str, Any] = {
        "chunk_size": None,
        "kill_grace": 2.0,
        "resources": False,
        "cores": None,
        "gpus": None,
        "memory": None,
        "cluster_kwargs": {},
    }
    client, address = given.pop("client", None), given.pop("address", None)
    options.update(given)
    return DaskOptions.check(client, address, **options)


def test_options_refuse_what_contradicts() -> None:
    with pytest.raises(ValueError, match="not both"):
        check(client=object(), address="tcp://x:1")
    with pytest.raises(ValueError, match="n_workers"):
        check(address="tcp://x:1", cluster_kwargs={"n_workers": 2})
    with pytest.raises(ValueError, match="asynchronous"):
        check(client=object())
    with pytest.raises(ValueError, match="own cluster"):
        check(address="tcp://x:1", cores=2)
    with pytest.raises(ValueError, match="threads_per_worker"):
        check(cores=2, cluster_kwargs={"threads_per_worker": 2})
    with pytest.raises(TypeError, match="chunk_size"):
        check(chunk_size=True)
    with pytest.raises(ValueError, match="chunk_size"):
        check(chunk_size=0)
    with pytest.raises(ValueError, match="kill_grace"):
        check(kill_grace=float("nan"))


def test_accounting_makes_one_worker_declaring_the_capacity() -> None:
    options = check(cores=3, gpus=["a"], memory=100, cluster_kwargs={"silence_logs": 1})
    assert options.capacity == ResourceCapacity(cores=3, gpus=("a",), memory=100)
    built = options.cluster_options()
    assert built["n_workers"] == 1 and built["threads_per_worker"] == 3
    assert built["resources"] == {"CPU": 3, "GPU": 1, "MEMORY": 100}
    assert built["silence_logs"] == 1
    assert built["scheduler_kwargs"] == {"allowed_failures": 0}
    assert check().capacity is None


# -- the worker's registry -----------------------------------------------------------


class FakeChild:
    pid = 12345


def fake_start() -> subprocess.Popen[bytes]:
    return cast("subprocess.Popen[bytes]", FakeChild())


def test_a_key_is_started_or_marked_never_both() -> None:
    registry = KeyRegistry()
    assert registry.start_function("a", "chunk") is True
    found = registry.mark_canceled(["a", "b"], ["chunk", "chunk"], held=())
    assert found.unstoppable == ["a"] and found.children == []
    assert registry.start_function("b", "chunk") is False  # marked first


def test_a_returned_chunk_keeps_its_started_keys_unstoppable() -> None:
    registry = KeyRegistry()
    registry.start_function("a", "c1")
    registry.functions_returned("c1", ["a"])
    assert registry.mark_canceled(["a"], ["c1"], held=()).unstoppable == ["a"]
    # A chunk whose result the worker holds ran here, whatever was forgotten.
    assert registry.mark_canceled(["z"], ["c2"], held={"c2"}).unstoppable == ["z"]


def test_a_running_child_is_returned_to_kill_and_reported_canceled() -> None:
    registry = KeyRegistry()
    child = registry.spawn("x", fake_start)
    found = registry.mark_canceled(["x"], ["x"], held=())
    assert found.children == [("x", child)]
    assert registry.child_ended("x", "x") is True  # killed, not "ran"


def test_a_key_canceled_before_spawn_never_calls_start() -> None:
    registry = KeyRegistry()
    registry.mark_canceled(["x"], ["x"], held=())
    started: list[str] = []

    def start() -> subprocess.Popen[bytes]:
        started.append("x")
        return fake_start()

    with pytest.raises(CanceledBeforeStart):
        registry.spawn("x", start)
    assert started == []
    registry.spawn("x", start)  # the mark is used up: a new submission runs
    assert started == ["x"]


def test_stale_marks_are_forgotten() -> None:
    now = [0.0]
    registry = KeyRegistry(clock=lambda: now[0])
    registry.mark_canceled(["old"], [""], held=())
    now[0] = 10_000.0
    registry.mark_canceled(["new"], [""], held=())
    assert registry.start_function("old", "") is True
    assert registry.start_function("new", "") is False
