"""Backend factories for the ecosystem matrix (``scripts/ecosystem.py``).

Each builds a released backend the way its own documentation says to:
radical.asyncflow 0.6's and rhapsody-py 0.6's backends are awaited once
(``backend = await Backend()``) before use; their noop backends are used as
constructed. Needs ``radical.asyncflow==0.6.0`` and ``rhapsody-py==0.6.0``
installed. rhapsody's Dask backend is in ``ecosystem_dask.py``.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "asyncflow_local",
    "asyncflow_noop",
    "rhapsody_concurrent",
    "rhapsody_noop",
]


async def asyncflow_noop() -> Any:
    """radical.asyncflow 0.6 ``NoopExecutionBackend()``."""
    from radical.asyncflow import NoopExecutionBackend

    return NoopExecutionBackend()


async def asyncflow_local() -> Any:
    """radical.asyncflow 0.6 ``await LocalExecutionBackend()`` (a thread pool)."""
    from radical.asyncflow import LocalExecutionBackend

    return await LocalExecutionBackend()


async def rhapsody_noop() -> Any:
    """rhapsody-py 0.6 ``await NoopExecutionBackend()``."""
    from rhapsody.backends.execution.noop import NoopExecutionBackend

    return await NoopExecutionBackend()


async def rhapsody_concurrent() -> Any:
    """rhapsody-py 0.6 ``await ConcurrentExecutionBackend()`` (a thread pool)."""
    from rhapsody.backends import ConcurrentExecutionBackend

    return await ConcurrentExecutionBackend()
