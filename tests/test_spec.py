from __future__ import annotations

import re
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

import spec
from spec import (
    BACKEND_TRANSITIONS,
    CLAUSES,
    TASK_TRANSITIONS,
    TERMINAL_STATES,
    BackendState,
    Capability,
    DuplicateTaskError,
    InvalidTaskError,
    TaskKind,
    TaskState,
    capabilities_of,
    task_kind,
    validate_batch,
)


def test_states_are_strings_engines_can_compare() -> None:
    assert TaskState.DONE == "DONE"
    assert {s.value for s in TaskState} == {"RUNNING", "DONE", "FAILED", "CANCELED"}
    assert {s.value for s in BackendState} == {"INITIALIZED", "RUNNING", "SHUTDOWN"}
    assert str(TaskState.CANCELED) == "CANCELED"


def test_task_transition_table() -> None:
    assert {TaskState.DONE, TaskState.FAILED, TaskState.CANCELED} == TERMINAL_STATES
    assert TASK_TRANSITIONS[None] == {TaskState.RUNNING, *TERMINAL_STATES}
    assert TASK_TRANSITIONS[TaskState.RUNNING] == TERMINAL_STATES
    for state in TERMINAL_STATES:
        assert TASK_TRANSITIONS[state] == frozenset()
        assert spec.is_terminal(state) and spec.is_terminal(state.value)
    assert not spec.is_terminal("RUNNING")


def test_backend_states_only_move_forward() -> None:
    order = list(BackendState)
    for index, state in enumerate(order):
        assert BACKEND_TRANSITIONS[state] == frozenset(order[index:])


def test_clause_ids_are_well_formed_and_unique() -> None:
    for clause_id, clause in CLAUSES.items():
        areas = "|".join(area.name for area in spec.Area)
        assert re.fullmatch(rf"({areas})-\d+", clause_id)
        assert re.fullmatch(r"[A-Z]{2}-[1-9]\d*", clause_id)
        assert clause.id == clause_id
        assert clause.area.name == clause_id.split("-")[0]
        assert clause.text.endswith(".")
    assert spec.clause("ST-2").level is spec.Level.MUST
    with pytest.raises(KeyError, match="no contract clause 'XX-1'"):
        spec.clause("XX-1")


def test_protocol_docstrings_cite_existing_clauses() -> None:
    cited: set[str] = set()
    for name in (
        "submit_tasks",
        "cancel_task",
        "shutdown",
        "state",
        "register_callback",
    ):
        doc = getattr(spec.ExecutionBackend, name).__doc__ or ""
        found = re.findall(r"\b[A-Z]{2}-\d+\b", doc)
        assert found, f"ExecutionBackend.{name} cites no clause"
        cited.update(found)
    assert cited <= set(CLAUSES)


def _ok(uid: str) -> dict[str, Any]:
    return {"uid": uid, "function": print}


def test_validate_batch_accepts_a_good_batch() -> None:
    validate_batch([_ok("a"), _ok("b")], in_flight={"c"})
    validate_batch([], in_flight=set())


@pytest.mark.parametrize(
    ("batch", "index", "message"),
    [
        ([_ok("a"), "not a dict"], 1, "expected a task dict, got str"),
        ([{"function": print}], 0, "missing 'uid'"),
        ([_ok("a"), {"uid": 7}], 1, "'uid' must be a str, got int"),
    ],
)
def test_validate_batch_names_the_bad_entry(
    batch: list[Any], index: int, message: str
) -> None:
    with pytest.raises(InvalidTaskError, match=re.escape(message)) as caught:
        validate_batch(batch, in_flight=set())
    assert caught.value.index == index
    assert "no task was submitted" in str(caught.value)


def test_validate_batch_rejects_non_list() -> None:
    with pytest.raises(InvalidTaskError, match="expects a list"):
        validate_batch("abc", in_flight=set())  # type: ignore[arg-type]


def test_duplicates_in_batch_and_in_flight() -> None:
    with pytest.raises(DuplicateTaskError, match="appears twice") as caught:
        validate_batch([_ok("a"), _ok("b"), _ok("a")], in_flight=set())
    assert (caught.value.index, caught.value.uid, caught.value.in_flight) == (
        2,
        "a",
        False,
    )
    with pytest.raises(DuplicateTaskError, match="already in flight") as caught:
        validate_batch([_ok("a")], in_flight={"a"})
    assert caught.value.in_flight


@given(st.lists(st.text(max_size=3), max_size=20))
def test_validate_batch_raises_iff_a_uid_repeats(uids: list[str]) -> None:
    batch = [_ok(uid) for uid in uids]
    if len(set(uids)) == len(uids):
        validate_batch(batch, in_flight=set())
    else:
        with pytest.raises(DuplicateTaskError):
            validate_batch(batch, in_flight=set())


def test_task_kind() -> None:
    assert (
        task_kind({"uid": "a", "function": print, "executable": None})
        is TaskKind.FUNCTION
    )
    assert (
        task_kind({"uid": "a", "function": None, "executable": "ls"})
        is TaskKind.EXECUTABLE
    )
    assert task_kind({"uid": "a", "prompt": "hi"}) is TaskKind.PROMPT
    assert task_kind({"uid": "a", "function": None, "executable": None}) is None


class _Declares:
    capabilities = ("functions", Capability.PROMPTS)


class _DeclaresJunk:
    capabilities = ("teleport",)


def test_capabilities_of() -> None:
    assert capabilities_of(object()) == spec.DEFAULT_CAPABILITIES
    assert capabilities_of(_Declares()) == {Capability.FUNCTIONS, Capability.PROMPTS}
    with pytest.raises(TypeError, match=r"'teleport', which is not a spec\.Capability"):
        capabilities_of(_DeclaresJunk())


def test_standin_error_pickles() -> None:
    import pickle

    error = spec.StandInError("mod.Weird", "boom")
    copy = pickle.loads(pickle.dumps(error))
    assert (copy.type_name, copy.message, str(copy)) == (
        "mod.Weird",
        "boom",
        "mod.Weird: boom",
    )


def test_public_names() -> None:
    for name in spec.__all__:
        assert hasattr(spec, name), name
    assert spec.CONTRACT_VERSION == "1.2"


def test_registered_backends_lookup() -> None:
    with pytest.raises(LookupError, match="no backend registered as 'nope'"):
        spec.load_registered_backend("nope")


def test_typeddicts_know_their_required_keys_at_run_time() -> None:
    assert spec.TaskDescription.__required_keys__ == {"uid"}
    assert spec.TaskDict.__required_keys__ == {"uid"}
    assert {"return_value", "exception", "function"} <= spec.TaskDict.__optional_keys__
