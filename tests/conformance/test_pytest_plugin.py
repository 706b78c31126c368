"""The pytest forms of the suite, run in a pytest of their own (``pytester``).

The plugin is installed through the ``pytest11`` entry point, so every
pytest session loads it: without ``--backend`` it must do nothing; with it,
the suite's tests join the session and report pass, fail (with the clause
and the trace), skip (not applicable) and xfail (listed as expected).
Each run is cut down with ``-k`` to a few quick tests, in a subprocess: the
suite's registry cannot be imported twice in one process.
"""

from __future__ import annotations

import pytest

pytest_plugins = ["pytester"]

_BROKEN = '''
from reference import NoopExecutionBackend


class SaysNone(NoopExecutionBackend):
    """cancel_task returns None: breaks CN-1 (and CN-2)."""

    async def cancel_task(self, uid):
        await super().cancel_task(uid)
        return None
'''


def test_without_backend_the_plugin_does_nothing(pytester: pytest.Pytester) -> None:
    pytester.makepyfile("def test_own():\n    pass\n")
    # A project's own setting (docs/conformance.md): without it pytest-asyncio
    # warns, in process, into this run's summary.
    pytester.makeini("[pytest]\nasyncio_default_fixture_loop_scope = function\n")
    # In process: nothing of the suite is imported when the plugin is inert.
    result = pytester.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(passed=1)
    assert "test_conformance" not in result.stdout.str()


def test_backend_option_adds_the_suite(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest_subprocess(
        "-p",
        "no:cacheprovider",
        "--backend",
        "reference:NoopExecutionBackend",
        "-k",
        "lifecycle or unknown_uid",
        "-v",
    )
    outcomes = result.parseoutcomes()
    assert outcomes.get("failed", 0) == 0, result.stdout.str()
    assert outcomes.get("passed", 0) >= 5
    result.stdout.fnmatch_lines(["*test_conformance?cancellation.unknown_uid? PASSED*"])


def test_a_broken_backend_fails_with_its_clause(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(broken_backend=_BROKEN)
    pytester.syspathinsert()
    result = pytester.runpytest_subprocess(
        "-p",
        "no:cacheprovider",
        "--backend",
        "broken_backend:SaysNone",
        "-k",
        "unknown_uid",
    )
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*[[]CN-1[]] cancel_task*returned None*"])


def test_expected_failures_xfail(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(broken_backend=_BROKEN)
    pytester.syspathinsert()
    listed = pytester.path / "expected.txt"
    listed.write_text("CN-1 cancel_task returns None\nCN-2 cancel_task returns None\n")
    result = pytester.runpytest_subprocess(
        "-p",
        "no:cacheprovider",
        "--backend",
        "broken_backend:SaysNone",
        "--conformance-expected-failures",
        str(listed),
        "-k",
        "unknown_uid",
    )
    result.assert_outcomes(xfailed=1)


def test_a_suite_subclass_runs_against_its_factory(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        test_mine="""
import pytest

from conformance.suite import ConformanceSuite
from reference import NoopExecutionBackend


class TestNoop(ConformanceSuite):
    @pytest.fixture
    def backend_factory(self):
        return NoopExecutionBackend
"""
    )
    result = pytester.runpytest_subprocess(
        "-p", "no:cacheprovider", "-k", "lifecycle or sync_function_result", "-rs"
    )
    outcomes = result.parseoutcomes()
    assert outcomes.get("failed", 0) == 0, result.stdout.str()
    assert outcomes.get("passed", 0) >= 5
    # Not applicable to a dry-run backend: skipped, with the reason.
    assert outcomes.get("skipped", 0) >= 1
    result.stdout.fnmatch_lines(["*not applicable: needs functions*"])


def test_a_subclass_must_override_the_factory(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        test_mine="""
from conformance.suite import ConformanceSuite


class TestNothing(ConformanceSuite):
    pass
"""
    )
    result = pytester.runpytest_subprocess(
        "-p", "no:cacheprovider", "-k", "name_is_str"
    )
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*must override the backend_factory fixture*"])
