"""Scenario tables shared by the check modules, kept as data.

Each table row is numbered by its position; a failing row is named in the
failure message, so the evidence points at the exact scenario.
"""

from __future__ import annotations

from collections import UserDict
from types import MappingProxyType
from typing import Any

__all__ = [
    "FUNCTION_CALLS",
    "NOT_A_DICT",
    "NO_STRING_UID",
    "SHELL_CASES",
]

NOT_A_DICT: tuple[Any, ...] = (
    42,
    "task",
    None,
    ["uid", "x"],
    ("uid", "x"),
    # Mappings that are not dicts: results cannot be written into a proxy,
    # and a UserDict is not the dict the engine keeps.
    MappingProxyType({"uid": "proxy", "function": None}),
    UserDict({"uid": "userdict", "function": None}),
)
"""Batch entries that are not dicts (SB-2)."""

NO_STRING_UID: tuple[dict[str, Any], ...] = (
    {"function": None},
    {"uid": None},
    {"uid": 7},
    {"uid": b"bytes"},
    {"uid": ["list"]},
)
"""Task dicts without a string uid (SB-3)."""

FUNCTION_CALLS: tuple[tuple[tuple[Any, ...], dict[str, Any]], ...] = (
    ((), {}),
    ((1, "two"), {}),
    ((), {"key": "value"}),
    ((1, 2.5), {"flag": True, "items": [1, 2]}),
)
"""(args, kwargs) a function task is called with (RS-1)."""

SHELL_CASES: tuple[tuple[str, list[str], dict[str, Any], str], ...] = (
    # executable, arguments, task_backend_specific_kwargs, expected stdout
    (
        "echo",
        ["$CONFORMANCE_VALUE"],
        {"env": {"CONFORMANCE_VALUE": "from-env"}},
        "from-env",
    ),
    (
        "echo",
        ["$CONFORMANCE_VALUE"],
        {"shell": False, "env": {"CONFORMANCE_VALUE": "from-env"}},
        "$CONFORMANCE_VALUE",
    ),
    ("echo", ["a", "b"], {"shell": False}, "a b"),
    ("echo", ["a;", "echo", "b"], {}, "a\nb"),
)
"""Shell and env handling (RS-7); ``{work_dir}``-free so they are pure data."""
