"""Reference execution backends that honour every clause of the contract.

``reference`` imports only ``spec``.
"""

from __future__ import annotations

from reference.local import LocalExecutionBackend
from reference.noop import NoopExecutionBackend

__all__ = ["LocalExecutionBackend", "NoopExecutionBackend"]
