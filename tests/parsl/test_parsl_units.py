"""The Parsl backend's pure parts: claims, decisions, mapping, outcomes."""

from __future__ import annotations

import os
import sys
import threading
import time
from pathlib import Path

import cloudpickle
import pytest
from _parsl_helpers import add, kill_own_worker

from reference.parsl import _claims
from reference.parsl import _worker as w
from reference.parsl._config import resource_spec
from reference.parsl._decisions import MAX_RUNS, AfterLoss, after_loss
from reference.parsl._outcomes import apply_outcome, load_exception, unsendable_error
from reference.parsl._plan import chunk_size, pick_executor, prepare
from spec import (
    BackendError,
    CapabilityNotSupportedError,
    ResourceDemand,
    StandInError,
    TaskKind,
    TaskState,
    WorkerLostError,
)

D = _claims.Decision


@pytest.mark.parametrize(
    ("sent", "won", "executable", "expected"),
    [
        (False, False, False, D.CANCEL_NOW),  # still queued here
        (False, False, True, D.CANCEL_NOW),
        (True, True, False, D.CANCEL_NOW),  # claimed before any worker
        (True, True, True, D.CANCEL_NOW),
        (True, False, False, D.REFUSE),  # a started function cannot be stopped
        (True, False, True, D.KILL_AND_WAIT),  # a started executable can
    ],
)
def test_decide(sent: bool, won: bool, executable: bool, expected: D) -> None:
    assert _claims.decide(sent=sent, won_claim=won, executable=executable) is expected


A = AfterLoss


@pytest.mark.parametrize(
    ("executable", "live", "returned", "runs", "expected"),
    [
        (False, 6, False, 1, A.RUN_AGAIN),  # a chunk's worker died: each alone
        (False, 1, False, 1, A.FAIL),  # died running it alone: the killer
        (False, 1, False, 2, A.FAIL),  # died running it alone, again
        (False, 3, True, 1, A.RUN_AGAIN),  # a chunk returned, its result lost
        (False, 1, True, 1, A.RUN_AGAIN),  # the same for a chunk of one
        # Issue 24's flake: run again alone after its chunk's worker died, it
        # returned, then its worker took the killer and lost its result.
        (False, 1, True, 2, A.RUN_AGAIN),
        (False, 1, True, MAX_RUNS, A.FAIL),  # it keeps losing: bounded
        (False, 4, False, MAX_RUNS, A.FAIL),
        (True, 1, False, 1, A.FAIL),  # an executable never runs twice
        (True, 1, True, 1, A.FAIL),
    ],
)
def test_after_loss(
    executable: bool, live: int, returned: bool, runs: int, expected: AfterLoss
) -> None:
    decided = after_loss(executable=executable, live=live, returned=returned, runs=runs)
    assert decided is expected


def test_claim_has_exactly_one_winner(tmp_path: Path) -> None:
    results: list[bool] = []
    barrier = threading.Barrier(8)

    def race(who: str) -> None:
        barrier.wait()
        results.append(_claims.claim(str(tmp_path), "k", who))

    threads = [
        threading.Thread(
            target=race, args=(_claims.STARTED if i % 2 else _claims.CANCELED,)
        )
        for i in range(8)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == [False] * 7 + [True]
    assert os.readlink(tmp_path / "k") in (_claims.STARTED, _claims.CANCELED)


def test_claim_in_a_missing_directory_says_so(tmp_path: Path) -> None:
    with pytest.raises(_claims.ClaimsMissingError, match="no claims directory"):
        _claims.claim(str(tmp_path / "gone"), "k", _claims.STARTED)


def test_worker_skips_a_task_a_cancel_claimed(tmp_path: Path) -> None:
    assert _claims.claim(str(tmp_path), "k1", _claims.CANCELED)
    blob = w.dumps_call(lambda: 1 / 0, (), {})
    ok = w.dumps_call(lambda x: x + 1, (1,), {})
    outcomes = w.run_functions(str(tmp_path), [("k1", blob), ("k2", ok)])
    assert outcomes[0][0] == w.SKIPPED
    assert outcomes[1][0] == w.OK and cloudpickle.loads(outcomes[1][1]) == 2
    assert os.readlink(tmp_path / "k2") == _claims.STARTED


def test_worker_without_the_claims_directory_runs_nothing(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    blob = w.dumps_call(marker.touch, (), {})
    [outcome] = w.run_functions(str(tmp_path / "absent"), [("k", blob)])
    assert outcome[0] == w.MISSING and "absent" in outcome[4]
    assert not marker.exists()


def test_isolated_rerun_dies_alone(tmp_path: Path) -> None:
    claims = str(tmp_path)
    killer = w.run_isolated(claims, "k", w.dumps_call(kill_own_worker, (), {}))
    assert killer[0] == w.FAILED  # the child died; this process lives on
    error = load_exception(killer[1], killer[3], killer[4])
    assert isinstance(error, WorkerLostError) and "SIGKILL" in str(error)
    adds = w.dumps_call(add, (2, 3), {})
    ok = w.run_isolated(claims, "a", adds)
    assert ok[0] == w.OK and ok[1] is not None and cloudpickle.loads(ok[1]) == 5
    assert os.path.lexists(_claims.done_path(claims, "a"))
    assert _claims.claim(claims, "c", _claims.CANCELED)  # a cancel came first
    assert w.run_isolated(claims, "c", adds)[0] == w.SKIPPED


def test_worker_executable_is_killed_on_request(tmp_path: Path) -> None:
    claims = str(tmp_path)
    blob = w.dumps_task({"uid": "s", "executable": "sleep", "arguments": ["30"]})
    result: list[w.Outcome] = []
    runner = threading.Thread(
        target=lambda: result.append(
            w.run_executable(claims, "s", blob, str(tmp_path), 0.5)
        )
    )
    runner.start()
    deadline = time.monotonic() + 30
    while not os.path.lexists(tmp_path / "s"):  # its claim: the child starts
        assert time.monotonic() < deadline, "the executable never started"
        runner.join(0.01)
    _claims.request_kill(claims, "s")
    runner.join(20)
    assert not runner.is_alive()
    assert result[0][0] == w.KILLED


@pytest.mark.parametrize(
    ("demand", "function", "mpi", "expected"),
    [
        (ResourceDemand(), True, False, {}),
        (
            ResourceDemand(),
            False,
            True,
            {"num_ranks": 1, "ranks_per_node": 1, "num_nodes": 1},
        ),
        (
            ResourceDemand(ranks=4, cores=4),
            False,
            True,
            {"num_ranks": 4, "ranks_per_node": 4, "num_nodes": 1},
        ),
    ],
)
def test_resource_spec_maps(
    demand: ResourceDemand, function: bool, mpi: bool, expected: dict[str, int]
) -> None:
    assert resource_spec("t", demand, function=function, mpi=mpi) == expected


@pytest.mark.parametrize(
    ("demand", "function", "mpi", "named"),
    [
        (ResourceDemand(cores=2), False, False, "cores per rank"),
        (ResourceDemand(gpus=1.0), False, True, "GPU"),
        (ResourceDemand(memory=100), False, False, "100 MB"),
        (ResourceDemand(ranks=2, cores=2), False, False, "2 ranks"),
        (ResourceDemand(ranks=2, cores=2), True, True, "rank"),
    ],
)
def test_resource_spec_refuses_what_parsl_cannot_place(
    demand: ResourceDemand, function: bool, mpi: bool, named: str
) -> None:
    error = resource_spec("t", demand, function=function, mpi=mpi)
    assert isinstance(error, CapabilityNotSupportedError)
    assert named in str(error) and "'t'" in str(error)


def test_chunk_size_bounds() -> None:
    assert chunk_size(1, 2) == 1
    assert chunk_size(10_000, 2) == 64
    assert chunk_size(80, 2) == 10
    assert chunk_size(80, 0) == 20  # no worker count known: as for one


def test_prepare_pickles_or_says_why() -> None:
    blob, spec = prepare({"uid": "f", "function": divmod, "args": (7, 2)},
                         TaskKind.FUNCTION, mpi=False)  # fmt: skip
    assert cloudpickle.loads(blob) == (divmod, (7, 2), {}) and spec == {}
    bad_args = prepare({"uid": "f", "function": divmod, "args": "72"},
                       TaskKind.FUNCTION, mpi=False)  # fmt: skip
    assert isinstance(bad_args, ValueError) and "'args'" in str(bad_args)
    bad_request = prepare(
        {"uid": "e", "executable": "true",
         "task_backend_specific_kwargs": {"ranks": 0}},
        TaskKind.EXECUTABLE, mpi=False,
    )  # fmt: skip
    assert isinstance(bad_request, ValueError) and "ranks" in str(bad_request)
    lock = threading.Lock()
    unsendable = prepare({"uid": "x", "executable": "echo", "arguments": ["a", lock]},
                         TaskKind.EXECUTABLE, mpi=False)  # fmt: skip
    assert isinstance(unsendable, TypeError) and "arguments[1]" in str(unsendable)


def test_pick_executor() -> None:
    one = {"_parsl_internal": 0, "htex": 1}
    assert pick_executor(one, None) == ("htex", 1)
    with pytest.raises(BackendError, match="name the one"):
        pick_executor({**one, "mpi": 2}, None)
    with pytest.raises(BackendError, match="no Parsl executor labelled 'x'"):
        pick_executor(one, "x")
    with pytest.raises(BackendError, match="no Parsl executor"):
        pick_executor(one, "_parsl_internal")


def test_apply_outcome_writes_results() -> None:
    task: dict[str, object] = {"uid": "a"}
    assert (
        apply_outcome(task, (w.OK, cloudpickle.dumps(5), "", "", "")) is TaskState.DONE
    )
    assert task["return_value"] == 5
    task = {"uid": "e"}
    payload = cloudpickle.dumps(("out", "err", 3, None))
    assert apply_outcome(task, (w.EXITED, payload, "", "", "")) is TaskState.FAILED
    assert (task["stdout"], task["stderr"], task["exit_code"]) == ("out", "err", 3)
    assert "exception" not in task


def test_apply_outcome_unloadable_result_fails_naming_it() -> None:
    task: dict[str, object] = {"uid": "u"}
    assert apply_outcome(task, (w.OK, b"not a pickle", "", "", "")) is TaskState.FAILED
    assert isinstance(task["exception"], BackendError)
    assert "cannot be unpickled" in str(task["exception"])


class _ExitsWhenLoaded:
    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (sys.exit, ("_ExitsWhenLoaded cannot be loaded here",))


def test_apply_outcome_result_raising_system_exit_fails_only_its_task() -> None:
    task: dict[str, object] = {"uid": "x"}
    payload = cloudpickle.dumps(_ExitsWhenLoaded())
    assert apply_outcome(task, (w.OK, payload, "", "", "")) is TaskState.FAILED
    assert "_ExitsWhenLoaded" in str(task["exception"])


def test_apply_outcome_unasked_skip_fails() -> None:
    task: dict[str, object] = {"uid": "s"}
    assert apply_outcome(task, (w.SKIPPED, None, "", "", "")) is TaskState.FAILED
    assert "did not ask for" in str(task["exception"])


def test_load_exception_stand_in() -> None:
    error = load_exception(None, "mod.Weird", "boom")
    assert isinstance(error, StandInError) and "mod.Weird" in str(error)


def test_unsendable_error_names_the_argument() -> None:
    lock = threading.Lock()
    task = {"uid": "x", "function": print, "args": [1, lock]}
    error = unsendable_error("x", task, TypeError("no"))
    assert "args[1]" in str(error) and "lock" in str(error)


def test_mpi_prefix_starts_the_executable_through_the_launcher() -> None:
    task: dict[str, object] = {"executable": "a.out", "arguments": ["x"]}
    w.with_mpi_prefix(task, "mpiexec -n 4")
    assert task["executable"] == "mpiexec -n 4 a.out"
    argv: dict[str, object] = {
        "executable": "a.out",
        "arguments": ["x"],
        "task_backend_specific_kwargs": {"shell": False},
    }
    w.with_mpi_prefix(argv, "mpiexec -n 4")
    assert (argv["executable"], argv["arguments"]) == (
        "mpiexec",
        ["-n", "4", "a.out", "x"],
    )
    untouched: dict[str, object] = {"executable": "a.out"}
    w.with_mpi_prefix(untouched, "")
    assert untouched == {"executable": "a.out"}
