"""What a task asks for and where it goes: pure decisions of the local backend.

`read_request` turns a task's resource request into a demand or the error
that refuses it; `place` gives an executable its GPUs and its MPI launcher.
No threads, no loop: tested directly (tests/reference/test_core_placement.py).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from typing import Any

from reference._executables import ExecOptions
from reference._resources import Grant, ResourcePool, function_refusal, unavailable
from spec import (
    RESOURCE_KEYS,
    CapabilityNotSupportedError,
    ResourceDemand,
    resource_demand,
)

__all__ = ["ONE_CORE", "place", "read_request"]

ONE_CORE = ResourceDemand()
"""What a task without a resource request asks for (one core); shared."""


def read_request(
    task: Mapping[str, Any],
    *,
    is_function: bool,
    launcher: list[str] | None,
    pool: ResourcePool[Any],
) -> ResourceDemand | Exception:
    """The demand of ``task``, or the error it must fail with.

    Args:
        task: The task dict (its ``task_backend_specific_kwargs`` are read).
        is_function: It is a function task (no GPUs, one rank).
        launcher: The backend's ``mpi_launcher``, or ``None``.
        pool: The pool it would wait in (only its capacity is read).

    Returns:
        The demand; or a `ValueError` for a malformed request (RQ-3), a
        `CapabilityNotSupportedError` for ranks without a launcher (SB-6),
        a function refusal or `spec.ResourceUnavailableError` for a request
        that can never fit (RQ-2).
    """
    options = task.get("task_backend_specific_kwargs")
    if options is None or (
        isinstance(options, dict) and options.keys().isdisjoint(RESOURCE_KEYS)
    ):
        return ONE_CORE  # the default path: one core fits any capacity
    uid = task["uid"]
    try:
        demand = resource_demand(options if isinstance(options, dict) else None)
    except ValueError as exc:
        return exc  # RQ-3
    refusal = function_refusal(uid, demand) if is_function else None
    if refusal is not None:
        return refusal
    if demand.ranks > 1 and launcher is None:
        return CapabilityNotSupportedError(  # SB-6
            "ranks > 1 without an mpi_launcher",
            f"task {uid!r} asks for {demand.ranks} ranks; construct "
            'the backend with mpi_launcher=["mpiexec", "-n", "{ranks}"]',
        )
    if not pool.fits(demand):
        return unavailable(uid, demand, pool.capacity)  # RQ-2
    return demand


def place(
    grant: Grant,
    ranks: int,
    launcher: list[str] | None,
    options: ExecOptions,
    command: str | list[str],
) -> tuple[ExecOptions, str | list[str]]:
    """Give an executable its GPUs (RQ-4, RQ-6, PL-3) and, for ranks, its launcher.

    Returns:
        The options with ``CUDA_VISIBLE_DEVICES`` set to the granted GPUs (in
        a copy of the environment), empty when none was granted: unset, or
        inherited, it would let CUDA use every device, those other tasks hold
        too; and the command behind the launcher (``"{ranks}"`` replaced)
        when ``ranks > 1``.
    """
    env = dict(os.environ if options.env is None else options.env)
    env["CUDA_VISIBLE_DEVICES"] = ",".join(grant.gpus)
    options = dataclasses.replace(options, env=env)
    if ranks > 1 and launcher is not None:
        count = str(ranks)
        prefix = [arg.replace("{ranks}", count) for arg in launcher]
        inner = ["/bin/sh", "-c", command] if isinstance(command, str) else command
        command = prefix + inner
    return options, command
