"""Targets load as Python loads code, from any directory (issue 12, item 3).

Each command runs in a fresh temporary directory holding a tiny backend
file, as a backend author runs it in their own folder: ``python -m
conformance``, the ``asyncflow-conformance`` console script (which, unlike
``python -m``, does not put the current directory on ``sys.path``) and
``pytest --backend``.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from conformance.target import TARGET_FORMS, TargetError, load_target

SCRIPT = Path(sys.executable).with_name("asyncflow-conformance")
BACKEND = "from reference import NoopExecutionBackend as MyBackend\n"


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    """A backend author's folder: ``mybackend.py`` and nothing else."""
    (tmp_path / "mybackend.py").write_text(BACKEND)
    return tmp_path


def _run(cmd: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    # No PYTHONPATH: the current directory must be found by the loader itself.
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    return subprocess.run(
        cmd, capture_output=True, text=True, cwd=cwd, env=env, timeout=300
    )


def _console(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    if not SCRIPT.exists():
        pytest.skip(f"no console script at {SCRIPT} (package not installed)")
    return _run([str(SCRIPT), *args], cwd)


def _module(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return _run([sys.executable, "-m", "conformance", *args], cwd)


def _pytest(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    # The `pytest` script, as the author types it: unlike `python -m pytest`
    # it does not put the current directory on sys.path.
    script = Path(sys.executable).with_name("pytest")
    if not script.exists():
        pytest.skip(f"no pytest script at {script}")
    return _run([str(script), "-p", "no:cacheprovider", *args], cwd)


def _assert_usage_error(out: subprocess.CompletedProcess[str], prog: str) -> None:
    assert out.returncode == 2, out.stdout + out.stderr
    assert f"{prog}: error: cannot load target" in out.stderr
    assert TARGET_FORMS in out.stderr
    assert "Traceback" not in out.stderr


def test_console_script_finds_a_module_in_the_current_directory(folder: Path) -> None:
    out = _console("mybackend:MyBackend", "--clauses", "LC-1", cwd=folder)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "CONFORMS" in out.stdout


def test_python_m_finds_a_module_in_the_current_directory(folder: Path) -> None:
    out = _module("mybackend:MyBackend", "--clauses", "LC-1", cwd=folder)
    assert out.returncode == 0, out.stdout + out.stderr


@pytest.mark.parametrize(
    ("where", "cwd"),
    [
        ("./mybackend.py", "."),
        ("../mybackend.py", "sub"),
        ("{folder}/mybackend.py", "sub"),
    ],
)
def test_a_file_path_target(folder: Path, where: str, cwd: str) -> None:
    (folder / "sub").mkdir()
    target = where.format(folder=folder) + ":MyBackend"
    out = _module(target, "--clauses", "LC-1", cwd=folder / cwd)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "CONFORMS" in out.stdout


def test_a_file_imports_its_siblings(tmp_path: Path) -> None:
    # As `python path/to/file.py` does: the file's folder comes first.
    pkg = tmp_path / "elsewhere"
    pkg.mkdir()
    (pkg / "helper_for_target.py").write_text(BACKEND)
    (pkg / "entry_for_target.py").write_text(
        "from helper_for_target import MyBackend\n"
    )
    out = _console(
        "elsewhere/entry_for_target.py:MyBackend", "--clauses", "LC-1", cwd=tmp_path
    )
    assert out.returncode == 0, out.stdout + out.stderr


def test_pytest_backend_finds_a_module_in_the_current_directory(folder: Path) -> None:
    out = _pytest(
        "-q", "--backend", "mybackend:MyBackend", "-k", "lifecycle", cwd=folder
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert " passed" in out.stdout and "error" not in out.stdout.lower()


def test_pytest_backend_unloadable_is_one_usage_error(folder: Path) -> None:
    out = _pytest("-q", "--backend", "nomodule:X", cwd=folder)
    assert out.returncode == pytest.ExitCode.USAGE_ERROR, out.stdout + out.stderr
    assert "cannot load target 'nomodule:X'" in out.stderr
    assert TARGET_FORMS in out.stderr
    assert "setup" not in out.stdout + out.stderr  # not one error per test


@pytest.mark.parametrize(
    "target",
    [
        "nomodule:X",  # no such module
        "mybackend:Nope",  # no such attribute
        "../mybackend.py",  # a file without :attr
        "missing.py:X",  # no such file
        "not-registered",  # not a registered name
    ],
)
def test_console_script_error_names_itself(folder: Path, target: str) -> None:
    _assert_usage_error(_console(target, cwd=folder), "asyncflow-conformance")


def test_python_m_error_names_python_m(folder: Path) -> None:
    _assert_usage_error(_module("nomodule:X", cwd=folder), "python -m conformance")


# In-process: the loader's own decisions.


def test_a_dependency_missing_is_not_retried_as_the_module(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "needs_missing_dep.py").write_text("import no_such_dependency_xyz\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", ".")])
    with pytest.raises(TargetError, match="no_such_dependency_xyz"):
        load_target("needs_missing_dep:X")


def test_import_errors_keep_their_reason(tmp_path: Path) -> None:
    (tmp_path / "broken_syntax_target.py").write_text("def (:\n")
    (tmp_path / "raising_target.py").write_text("raise RuntimeError('boom')\n")
    with pytest.raises(TargetError, match="SyntaxError"):
        load_target(f"{tmp_path / 'broken_syntax_target.py'}:X")
    with pytest.raises(TargetError, match="RuntimeError: boom"):
        load_target(f"{tmp_path / 'raising_target.py'}:X")


def test_a_file_shadowed_by_a_loaded_module_is_refused(tmp_path: Path) -> None:
    (tmp_path / "json.py").write_text(BACKEND)  # `json` is already imported
    with pytest.raises(TargetError, match="rename the file"):
        load_target(f"{tmp_path / 'json.py'}:MyBackend")


def test_loading_a_file_twice_gives_the_same_factory(tmp_path: Path) -> None:
    (tmp_path / "twice_target.py").write_text("class B:\n    pass\n")
    first = load_target(f"{tmp_path / 'twice_target.py'}:B")
    assert load_target(f"{tmp_path / 'twice_target.py'}:B") is first


@pytest.mark.parametrize(
    "target", ["", ":X", "json:", "json:dumps.nope", "spec:CONTRACT_VERSION"]
)
def test_malformed_or_not_callable(target: str) -> None:
    with pytest.raises(TargetError) as info:
        load_target(target)
    assert str(info.value).endswith(TARGET_FORMS)
    assert isinstance(info.value, LookupError) and isinstance(info.value, TypeError)
