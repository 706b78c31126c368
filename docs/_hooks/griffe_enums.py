"""A griffe extension: every member of an enum is shown in the API reference.

mkdocstrings shows only documented members (``show_if_no_docstring: false``
keeps dataclass fields, already listed under "Attributes", from being shown
twice). Enum members rarely carry a docstring of their own, so `Level`,
`Area`, `TaskKind` and most of `Outcome` vanished from the API pages. This
gives each undocumented member of an enum class a one-line docstring (for a
``str`` enum, that it compares equal to its value, which is what an engine
comparing with strings relies on); a member's own docstring is kept.
"""

from __future__ import annotations

from typing import Any

import griffe

_ENUM_BASES = {"Enum", "StrEnum", "IntEnum", "Flag", "IntFlag"}


def _is_enum(cls: griffe.Class) -> bool:
    return any(str(base).rsplit(".", 1)[-1] in _ENUM_BASES for base in cls.bases)


class EnumMembers(griffe.Extension):
    """Give each undocumented enum member a docstring naming its value."""

    def on_class_members(self, *, cls: griffe.Class, **_: Any) -> None:
        """Document the members of ``cls`` if it is an enum."""
        if not _is_enum(cls):
            return
        is_str = any(str(base) == "str" for base in cls.bases)
        for name, member in cls.members.items():
            if name.startswith("_") or not isinstance(member, griffe.Attribute):
                continue
            if member.docstring is None and member.value is not None:
                text = f"A member of `{cls.name}`"
                if is_str:
                    text += f"; equal to the string `{member.value}`"
                member.docstring = griffe.Docstring(text + ".", parent=member)
