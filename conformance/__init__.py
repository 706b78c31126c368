"""The conformance suite: proves a backend honours the contract in ``spec``.

``conformance`` imports only ``spec``, so it can judge any backend.
"""

from __future__ import annotations

__all__: list[str] = []
