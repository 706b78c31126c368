"""Shared fixtures for the Parsl backend tests: one local DataFlowKernel per session.

Starting Parsl's interchange and workers costs seconds, so the tests share
the process-wide DataFlowKernel of `reference.parsl.shared_local_backend`
(two workers); tests about starting and stopping Parsl build their own.
Task functions live in `_parsl_helpers`, pickled by value.
"""

from __future__ import annotations

import importlib.util
from typing import Any

import pytest

if importlib.util.find_spec("parsl") is None:
    # Without the parsl extra (the README's test command), this folder is
    # not collected at all: a skip raised while loading a conftest is an
    # error when the folder is named on the command line.
    collect_ignore_glob = ["test_*.py"]


@pytest.fixture(scope="session")
def dfk() -> Any:
    from reference.parsl._shared import _shared_dfk

    return _shared_dfk()
