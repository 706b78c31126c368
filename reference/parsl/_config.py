"""Configuration: the default local Parsl setup, and requests mapped for Parsl.

`local_config` builds what the backend runs on by default: one
HighThroughputExecutor with a LocalProvider on the loopback address, one
worker per core. `resource_spec` maps a contract resource request onto a
Parsl ``parsl_resource_specification``, or says why it cannot be honoured;
it is pure, so it is tested without Parsl.
"""

from __future__ import annotations

import os
import sys
from typing import Any

from reference._resources import function_refusal
from spec import BackendError, CapabilityNotSupportedError, ResourceDemand

__all__ = ["LABEL", "local_config", "resource_spec"]

LABEL = "asyncflow_htex"
"""The label of the executor `local_config` builds."""


def local_config(
    workers: int | None = None, run_dir: str | None = None, label: str = LABEL
) -> Any:
    """Build a Parsl ``Config``: a HighThroughputExecutor on this machine.

    Its interchange and worker pool are started with this interpreter
    (``python -m ...``), not the console scripts Parsl's defaults name, so a
    virtual environment that is not on ``PATH`` works.

    Args:
        workers: Worker processes; ``None`` for one per core.
        run_dir: Parsl's run directory (logs, scripts); ``None`` for
            ``./runinfo``, Parsl's default.
        label: The executor's label.

    Returns:
        A ``parsl.config.Config`` with one executor, no retries, no scaling.

    Raises:
        TypeError: ``workers`` is not an int.
        ValueError: ``workers`` is below 1.
    """
    from parsl.config import Config
    from parsl.executors import HighThroughputExecutor
    from parsl.executors.high_throughput.executor import DEFAULT_LAUNCH_CMD
    from parsl.providers import LocalProvider

    if workers is None:
        workers = os.cpu_count() or 1
    if isinstance(workers, bool) or not isinstance(workers, int):
        raise TypeError(f"workers must be an int, got {type(workers).__name__}")
    if workers < 1:
        raise ValueError(f"workers must be at least 1, got {workers}")
    pool = f"{sys.executable} -m parsl.executors.high_throughput.process_worker_pool"
    executor = HighThroughputExecutor(
        label=label,
        address="127.0.0.1",
        loopback_address="127.0.0.1",
        max_workers_per_node=workers,
        interchange_launch_cmd=[
            sys.executable,
            "-m",
            "parsl.executors.high_throughput.interchange",
        ],
        launch_cmd=DEFAULT_LAUNCH_CMD.replace("process_worker_pool.py", pool, 1),
        # A dead worker is noticed (its task failed with WorkerLost) once a
        # heartbeat period: Parsl's default of 30 s is long for one machine.
        heartbeat_period=1,
        heartbeat_threshold=30,
        provider=LocalProvider(  # type: ignore[no-untyped-call,unused-ignore]
            init_blocks=1, min_blocks=1, max_blocks=1
        ),
    )
    options: dict[str, Any] = {"executors": [executor], "strategy": "none"}
    if run_dir is not None:
        options["run_dir"] = run_dir
    return Config(**options)


def resource_spec(
    uid: str, demand: ResourceDemand, *, function: bool, mpi: bool
) -> dict[str, Any] | BackendError:
    """Map a contract resource request onto Parsl's, or say why it cannot be.

    A HighThroughputExecutor accepts no per-task cores, GPUs or memory (its
    workers are sized for the whole executor), so only the default request
    (one core) runs there. An MPI executor (``MPIExecutor``, or htex with
    ``enable_mpi_mode``) places an executable's ranks: ``num_ranks`` and
    ``ranks_per_node`` (all on one node unless ``cores_per_rank`` asks for
    more; Parsl then starts it with ``$PARSL_MPI_PREFIX``).

    Args:
        uid: The task's uid, for the message.
        demand: The validated request.
        function: A function task (which cannot have ranks or GPUs).
        mpi: The executor places MPI tasks.

    Returns:
        The ``parsl_resource_specification`` (empty for the default), or
        the error to fail the task with.
    """
    if demand == ResourceDemand():
        # MPI mode refuses a task without a specification (Parsl #3427).
        return _ranks(1) if mpi else {}
    if function:
        refusal = function_refusal(uid, demand)
        if refusal is not None:
            return refusal
    per_task = []
    if demand.gpus:
        per_task.append(f"{demand.gpus:g} GPU(s)")
    if demand.memory:
        per_task.append(f"{demand.memory} MB")
    if demand.cores != demand.ranks:
        per_task.append(f"{demand.cores // demand.ranks} cores per rank")
    if per_task or not mpi:
        wanted = ", ".join(per_task) or f"{demand.ranks} ranks"
        where = "an MPI executor" if not per_task else "a Parsl executor"
        return CapabilityNotSupportedError(
            "resource requests on this Parsl executor",
            f"task {uid!r} asks for {wanted}, which {where} here cannot place "
            "per task; size the executor's workers for it instead, or use an "
            "MPIExecutor for ranks",
        )
    return _ranks(demand.ranks)


def _ranks(ranks: int) -> dict[str, Any]:
    return {"num_ranks": ranks, "ranks_per_node": ranks, "num_nodes": 1}
