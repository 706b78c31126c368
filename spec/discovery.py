"""Finding backends registered by installed distributions.

A distribution registers a backend under the `ENTRY_POINT_GROUP` entry-point
group, naming a backend class or a zero-argument factory::

    [project.entry-points."asyncflow_backend_spec.backends"]
    mybackend = "mypackage.backend:MyBackend"

Engines and ``python -m conformance mybackend`` then find it by name.
"""

from __future__ import annotations

from importlib.metadata import EntryPoint, entry_points

__all__ = ["ENTRY_POINT_GROUP", "load_registered_backend", "registered_backends"]

ENTRY_POINT_GROUP = "asyncflow_backend_spec.backends"
"""The entry-point group backends are registered under."""


def registered_backends() -> dict[str, EntryPoint]:
    """Return the registered backends by name, without importing them."""
    return {ep.name: ep for ep in entry_points(group=ENTRY_POINT_GROUP)}


def load_registered_backend(name: str) -> object:
    """Import and return the class or factory registered under ``name``.

    Args:
        name: The entry point's name.

    Returns:
        Whatever the entry point refers to.

    Raises:
        LookupError: If nothing is registered under ``name``; the message
            lists the names that are.
    """
    found = registered_backends()
    if name not in found:
        known = ", ".join(sorted(found)) or "none"
        raise LookupError(
            f"no backend registered as {name!r} in entry-point group "
            f"{ENTRY_POINT_GROUP!r} (registered: {known})"
        )
    return found[name].load()
