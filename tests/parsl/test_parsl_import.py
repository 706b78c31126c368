"""The Parsl backend is optional: a clear error without it, not imported by default."""

from __future__ import annotations

import importlib
import subprocess
import sys

import pytest

pytest.importorskip("parsl")


def test_import_without_parsl_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "parsl", None)
    for name in [m for m in sys.modules if m.startswith("reference.parsl")]:
        monkeypatch.delitem(sys.modules, name)
    with pytest.raises(ImportError, match=r"asyncflow-backend-spec\[parsl\]"):
        importlib.import_module("reference.parsl")


def test_reference_never_imports_parsl() -> None:
    code = "import reference, sys; print('parsl' in sys.modules)"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "False"


def test_entry_point_names_the_backend() -> None:
    from importlib.metadata import entry_points

    (point,) = entry_points(group="asyncflow_backend_spec.backends", name="parsl")
    assert point.value == "reference.parsl:ParslExecutionBackend"
