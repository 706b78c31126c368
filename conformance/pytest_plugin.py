"""pytest plugin of the conformance suite; inert until ``--backend`` is given.

``pytest --backend module:attr`` (or a registered backend name) adds the whole
suite, run against that backend, to the session. Without the option the
plugin registers its options and does nothing else, like anyio's plugin.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from conformance.target import TargetError, load_target

__all__ = ["pytest_addoption", "pytest_configure"]

_SUITE_MODULE = Path(__file__).with_name("_pytest_backend.py")


def pytest_addoption(parser: pytest.Parser) -> None:
    """Add ``--backend`` and ``--conformance-expected-failures``."""
    group = parser.getgroup("conformance", "asyncflow-backend-spec conformance suite")
    group.addoption(
        "--backend",
        metavar="TARGET",
        default=None,
        help="run the conformance suite against TARGET: module:attr or "
        "path/to/file.py:attr (a backend class or zero-argument factory), or a "
        "registered backend name",
    )
    group.addoption(
        "--conformance-expected-failures",
        metavar="FILE",
        default=None,
        help="file of clause or test IDs expected to fail, each with a reason",
    )


def pytest_configure(config: pytest.Config) -> None:
    """Add the suite's module to the collection when ``--backend`` is given.

    The target is loaded here, once: one that cannot be loaded is a usage
    error naming the accepted forms, not a setup error in every test.

    Raises:
        pytest.UsageError: The ``--backend`` target cannot be loaded.
    """
    target = config.getoption("--backend")
    if target is None:
        return
    try:
        load_target(str(target))
    except TargetError as exc:
        raise pytest.UsageError(f"--backend: {exc}") from None
    config.args.append(str(_SUITE_MODULE))
