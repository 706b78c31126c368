"""`InnerForwarding`: the engine-facing attributes the chaos backend forwards.

One role: what an engine reads or sets on a backend besides the contract's
methods (``_work_dir``, ``is_attached``, ``attached_to``, the data-linking
flags and hooks, ``build_task``) goes to the wrapped backend, or is kept
here when the wrapped backend lacks it.
"""

from __future__ import annotations

import os
from typing import Any

__all__ = ["InnerForwarding"]


class InnerForwarding:
    """Forwards the engine-facing attributes to ``_inner``.

    Args:
        inner: The wrapped backend.
    """

    def __init__(self, inner: Any) -> None:
        self._inner: Any = inner
        # Engine-facing attributes the inner backend may lack: kept here then.
        self._own_work_dir = os.getcwd()
        self._own_is_attached = False
        self._own_attached_to: list[str] = []

    @property
    def _work_dir(self) -> str:
        return str(getattr(self._inner, "_work_dir", self._own_work_dir))

    @_work_dir.setter
    def _work_dir(self, value: str) -> None:
        self._own_work_dir = value
        if hasattr(self._inner, "_work_dir"):
            self._inner._work_dir = value

    @property
    def is_attached(self) -> bool:
        """Whether an engine has attached the backend (forwarded to the inner one)."""
        return bool(getattr(self._inner, "is_attached", self._own_is_attached))

    @is_attached.setter
    def is_attached(self, value: bool) -> None:
        self._own_is_attached = value
        if hasattr(self._inner, "is_attached"):
            self._inner.is_attached = value

    @property
    def attached_to(self) -> list[str]:
        """UIDs of the engines the backend was attached to (the inner one's list)."""
        found = getattr(self._inner, "attached_to", None)
        return found if isinstance(found, list) else self._own_attached_to

    @attached_to.setter
    def attached_to(self, value: list[str]) -> None:
        self._own_attached_to = value
        if hasattr(self._inner, "attached_to"):
            self._inner.attached_to = value

    @property
    def supports_implicit_data_linking(self) -> bool:
        """The inner backend's flag (False when it has none)."""
        return bool(getattr(self._inner, "supports_implicit_data_linking", False))

    @property
    def supports_explicit_data_linking(self) -> bool:
        """The inner backend's flag (False when it has none)."""
        return bool(getattr(self._inner, "supports_explicit_data_linking", False))

    def link_implicit_data_deps(
        self, src_task: dict[str, Any], dst_task: dict[str, Any]
    ) -> None:
        """Forward to the inner backend's hook, if it has one (CP-2)."""
        hook = getattr(self._inner, "link_implicit_data_deps", None)
        if callable(hook):
            hook(src_task, dst_task)

    def link_explicit_data_deps(
        self,
        src_task: dict[str, Any] | None = None,
        dst_task: dict[str, Any] | None = None,
        file_name: str | None = None,
        file_path: str | None = None,
    ) -> Any:
        """Forward to the inner backend's hook, if it has one (CP-2)."""
        hook = getattr(self._inner, "link_explicit_data_deps", None)
        if callable(hook):
            return hook(
                src_task=src_task,
                dst_task=dst_task,
                file_name=file_name,
                file_path=file_path,
            )
        return None

    def build_task(
        self, uid: str, task_desc: dict[str, Any], task_specific_kwargs: dict[str, Any]
    ) -> None:
        """Forward to the inner backend's ``build_task``, if it has one (CP-3)."""
        hook = getattr(self._inner, "build_task", None)
        if callable(hook):
            hook(uid, task_desc, task_specific_kwargs)
