"""The suite as collected by ``pytest --backend TARGET``.

See `conformance.pytest_plugin`.
"""

from __future__ import annotations

from collections.abc import Mapping

import pytest

from conformance.expectations import load_expected_failures
from conformance.registry import cases
from conformance.suite import ConformanceSuite
from conformance.target import BackendFactory, load_target


class TestBackendConformance(ConformanceSuite):
    """The conformance suite against the ``--backend`` target."""

    @pytest.fixture
    def backend_factory(self, request: pytest.FixtureRequest) -> BackendFactory:
        """Load the ``--backend`` target."""
        return load_target(str(request.config.getoption("--backend")))

    @pytest.fixture
    def conformance_expected_failures(
        self, request: pytest.FixtureRequest
    ) -> Mapping[str, str]:
        """Read ``--conformance-expected-failures`` when given."""
        path = request.config.getoption("--conformance-expected-failures")
        if path is None:
            return {}
        return load_expected_failures(str(path), {c.id for c in cases()})
