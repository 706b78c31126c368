"""`reference.local.options.LocalOptions`: the constructor checks, no backend."""

from __future__ import annotations

import dataclasses
import math
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from reference.local.options import LocalOptions

_DEFAULTS: dict[str, Any] = {
    "processes": None,
    "max_processes": 64,
    "kill_grace": 2.0,
    "shutdown_timeout": 5.0,
    "resources": False,
    "cores": None,
    "gpus": None,
    "memory": None,
    "mpi_launcher": None,
    "bind": None,
    "async_on_loop": False,
}


def _check(executor: Any = None, **changes: Any) -> LocalOptions:
    return LocalOptions.check(executor, **{**_DEFAULTS, **changes})


def test_the_defaults_pass_unchanged() -> None:
    options = _check()
    assert options == LocalOptions(None, 64, 2.0, 5.0, False, None, False, False)


@pytest.mark.parametrize(
    "implied", [{"cores": 2}, {"gpus": ["0"]}, {"memory": 10}, {"mpi_launcher": ["m"]}]
)
def test_any_resource_option_turns_accounting_on(implied: dict[str, Any]) -> None:
    assert _check(**implied).resources is True


@pytest.mark.parametrize(
    ("resources", "bind", "binds"),
    [
        (False, None, False),  # no accounting, nothing to bind
        (False, True, False),
        (True, False, False),
        (True, True, True),
    ],
)
def test_binding_needs_accounting(
    resources: bool, bind: bool | None, binds: bool
) -> None:
    assert _check(resources=resources, bind=bind).bind is binds


def test_binding_by_default_where_the_platform_can() -> None:
    from reference._placement import CAN_BIND

    assert _check(resources=True).bind is CAN_BIND


def test_the_launcher_is_copied_from_the_callers_list() -> None:
    launcher = ["mpiexec", "-n", "{ranks}"]
    options = _check(mpi_launcher=launcher)
    launcher.append("--oops")
    assert options.mpi_launcher == ["mpiexec", "-n", "{ranks}"]
    with pytest.raises(dataclasses.FrozenInstanceError):
        options.max_processes = 1  # type: ignore[misc]


@pytest.mark.parametrize(
    ("changes", "error", "names"),
    [
        ({"processes": 0}, ValueError, "processes"),
        ({"processes": True}, TypeError, "processes"),
        ({"max_processes": 0}, ValueError, "max_processes"),
        ({"max_processes": 2.0}, TypeError, "max_processes"),
        ({"kill_grace": -1}, ValueError, "kill_grace"),
        ({"shutdown_timeout": math.nan}, ValueError, "shutdown_timeout"),
        ({"shutdown_timeout": 0}, ValueError, "shutdown_timeout"),
        ({"mpi_launcher": "mpiexec"}, TypeError, "mpi_launcher"),
        ({"mpi_launcher": []}, TypeError, "mpi_launcher"),
        ({"mpi_launcher": ["mpiexec", 4]}, TypeError, "mpi_launcher"),
        ({"async_on_loop": 1}, TypeError, "async_on_loop"),
        ({"bind": 1}, TypeError, "bind"),
    ],
)
def test_a_bad_value_is_named(
    changes: dict[str, Any], error: type[Exception], names: str
) -> None:
    with pytest.raises(error, match=names):
        _check(**changes)


def test_an_executor_and_processes_together_are_refused() -> None:
    with ThreadPoolExecutor(1) as pool, pytest.raises(TypeError, match="not both"):
        _check(pool, processes=2)
    with pytest.raises(TypeError, match="Executor"):
        _check(object())
