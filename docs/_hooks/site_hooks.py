"""mkdocs hooks: refuse to build from pages whose generated parts are stale.

The pages carry their generated parts (the clause tables, the diagrams, the
task-dict tables, the tutorial's listings) committed between markers, so
they read complete outside the site too; `pages` rewrites them. A build
from stale pages would publish a contract that is not the code's, so it
fails and names the command that fixes it.
"""

from __future__ import annotations

from typing import Any

import pages
from mkdocs.config.defaults import MkDocsConfig
from mkdocs.exceptions import PluginError


def on_pre_build(config: MkDocsConfig, **_: Any) -> None:
    """Fail the build when a page differs from what the code generates."""
    try:
        stale = pages.stale_pages(pages.expected_pages())
    except LookupError as exc:
        raise PluginError(str(exc)) from exc
    if stale:
        names = ", ".join(p.relative_to(pages.ROOT).as_posix() for p in stale)
        raise PluginError(
            f"generated parts are stale in {names}: run `{pages.COMMAND}` "
            "and commit the result"
        )
