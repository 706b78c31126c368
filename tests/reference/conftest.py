"""Fixtures for the reference-backend tests."""

from __future__ import annotations

import pytest
from _ref_helpers import Recorder


@pytest.fixture
def recorder() -> Recorder:
    return Recorder()
