"""Reference execution backends that honour every clause of the contract.

``reference`` imports only ``spec``.
"""

from __future__ import annotations

from reference.noop import NoopExecutionBackend

__all__ = ["NoopExecutionBackend"]
