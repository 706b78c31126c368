"""A Parsl backend: `ParslExecutionBackend` (docs/parsl.md).

Needs the ``parsl`` extra (``pip install "asyncflow-backend-spec[parsl]"``);
importing this package without Parsl raises an `ImportError` that says so.
``reference`` itself never imports it.
"""

from __future__ import annotations

try:
    import parsl as _parsl  # noqa: F401 - only to fail early, with a clear message
except ImportError as _missing:  # pragma: no cover - exercised with a fake import
    raise ImportError(
        "reference.parsl needs Parsl, which is not installed; install the parsl "
        f'extra: pip install "asyncflow-backend-spec[parsl]" ({_missing})'
    ) from _missing

from reference.parsl._backend import ParslExecutionBackend
from reference.parsl._config import local_config
from reference.parsl._shared import shared_local_backend

__all__ = ["ParslExecutionBackend", "local_config", "shared_local_backend"]
