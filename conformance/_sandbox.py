"""The one directory a test may write in, removed whole when the test ends.

A test's work dir sits three levels down a fresh temporary directory the
suite owns, so what a backend writes for a uid such as ``../x`` (and the
RS-11 check's absolute uids, made under the work dir's parent) still lands
inside it; hypothesis's storage (the stateful test) goes there too, not into
the user's current directory. Everything goes when the test ends, whatever
the backend did.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import stat
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from hypothesis import configuration

__all__ = ["DEPTH", "sandbox"]

DEPTH = 3
"""Levels between the suite's directory and the work dir: ``..`` up to this
many times from the work dir stays inside the suite's directory."""


def _home() -> Any:
    # hypothesis keeps its storage directory in a module global with no getter.
    return vars(configuration).get("__hypothesis_home_directory")


def _writable(func: Any, path: str, _exc: Any) -> None:
    """Rmtree's error handler: make a folder a backend left read-only writable."""
    with contextlib.suppress(OSError):
        os.chmod(os.path.dirname(path), stat.S_IRWXU)
        os.chmod(path, stat.S_IRWXU)
        func(path)


@contextlib.contextmanager
def sandbox() -> Iterator[Path]:
    """Make the test's directory tree; yield its work dir; remove it all after."""
    root = Path(tempfile.mkdtemp(prefix="conformance-"))
    work = root.joinpath(*(["sandbox"] * (DEPTH - 1)), "work")
    previous = _home()
    try:
        work.mkdir(parents=True)
        configuration.set_hypothesis_home_dir(root / "hypothesis")
        yield work
    finally:
        configuration.set_hypothesis_home_dir(previous)
        if sys.version_info >= (3, 12):
            shutil.rmtree(root, onexc=_writable)
        else:
            shutil.rmtree(root, onerror=_writable)
