"""pytest plugin of the conformance suite; inert until ``--backend`` is given.

``pytest --backend module:attr`` (or a registered backend name) adds the whole
suite, run against that backend, to the session. Without the option the
plugin registers its options and does nothing else, like anyio's plugin.
"""

from __future__ import annotations

from pathlib import Path

import pytest

__all__ = ["pytest_addoption", "pytest_configure"]

_SUITE_MODULE = Path(__file__).with_name("_pytest_backend.py")


def pytest_addoption(parser: pytest.Parser) -> None:
    """Add ``--backend`` and ``--conformance-expected-failures``."""
    group = parser.getgroup("conformance", "asyncflow-backend-spec conformance suite")
    group.addoption(
        "--backend",
        metavar="TARGET",
        default=None,
        help="run the conformance suite against TARGET: module:attr (a backend "
        "class or zero-argument factory) or a registered backend name",
    )
    group.addoption(
        "--conformance-expected-failures",
        metavar="FILE",
        default=None,
        help="file of clause or test IDs expected to fail, each with a reason",
    )


def pytest_configure(config: pytest.Config) -> None:
    """Add the suite's module to the collection when ``--backend`` is given."""
    if config.getoption("--backend") is None:
        return
    config.args.append(str(_SUITE_MODULE))
