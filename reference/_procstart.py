"""Start a process-pool worker without the caller's ``__main__``.

`multiprocessing`'s ``spawn`` and ``forkserver`` start methods re-run the
caller's main script (as ``__mp_main__``) in each new process, so that
objects pickled by reference to ``__main__`` resolve there. For a script
without an ``if __name__ == "__main__":`` guard, that runs the whole
workflow again in every worker (issue 20, item 6). The pool's workers need
none of it: functions, arguments and the initializer that live in
``__main__`` travel by value (cloudpickle), and a worker imports only
`reference._procworker`.

`start` therefore starts the process with the main module left out of the
preparation data the child reads (``init_main_from_path``,
``init_main_from_name``, and ``main_path`` for a forkserver this start
launches). `multiprocessing` builds that data in
``multiprocessing.spawn.get_preparation_data``, which both start methods
look up at call time; it is wrapped once, and the wrapper leaves the data
alone unless the calling thread is inside `start`, so every other use of
`multiprocessing` in the process is unchanged.
"""

from __future__ import annotations

import threading
from multiprocessing import spawn
from typing import Any

__all__ = ["start"]

_MAIN_KEYS = ("init_main_from_path", "init_main_from_name", "main_path")
_starting = threading.local()
_original = spawn.get_preparation_data


def _preparation_data(name: str) -> dict[str, Any]:
    data: dict[str, Any] = _original(name)
    if getattr(_starting, "active", False):
        for key in _MAIN_KEYS:
            data.pop(key, None)
    return data


if getattr(spawn.get_preparation_data, "__module__", None) != __name__:
    spawn.get_preparation_data = _preparation_data


def start(process: Any) -> None:
    """``process.start()``, the child left without the caller's ``__main__``."""
    _starting.active = True
    try:
        process.start()
    finally:
        _starting.active = False
