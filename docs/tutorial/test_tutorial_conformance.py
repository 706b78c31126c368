"""The conformance suite, as part of the tutorial backend's own tests."""

import pytest
from tutorial_backend import TutorialBackend

from conformance.suite import ConformanceSuite


class TestTutorialBackend(ConformanceSuite):
    @pytest.fixture
    def backend_factory(self) -> type[TutorialBackend]:
        return TutorialBackend  # a class, or a zero-argument sync or async factory
