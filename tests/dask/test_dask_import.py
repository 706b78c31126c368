"""The Dask backend is optional: a clear error without it, never imported by default."""

from __future__ import annotations

import importlib
import os
import subprocess
import sys

import pytest

pytest.importorskip("distributed")


def test_import_without_distributed_names_the_extra(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "distributed", None)
    monkeypatch.delitem(sys.modules, "reference.dask", raising=False)
    with pytest.raises(ImportError, match=r'pip install -e "\.\[dask\]"'):
        importlib.import_module("reference.dask")


def test_reference_does_not_import_dask() -> None:
    code = "import sys, reference; print('distributed' in sys.modules)"
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
    )
    assert out.stdout.strip() == "False"
