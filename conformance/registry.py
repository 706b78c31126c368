"""The suite's tests, each tagged with the clause IDs it checks.

A test is an ``async def`` taking a `conformance.harness.Harness`; the
`cites` decorator registers it under ``<area module>.<function name>``::

    @cites("ST-2", "ST-3")
    async def one_terminal_state(h: Harness) -> None: ...

`cases` imports every area module of `conformance.checks` and returns the
registered tests in a stable order. The registry is data the report, the CLI,
the pytest plugin and the clause-coverage meta-test all read.
"""

from __future__ import annotations

import importlib
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeVar

import spec

if TYPE_CHECKING:
    from conformance.harness import Harness

__all__ = [
    "AREA_MODULES",
    "DRY_RUN_EXEMPT",
    "Case",
    "case",
    "cases",
    "cites",
    "clause",
]

AREA_MODULES = (
    "lifecycle",
    "submission",
    "states",
    "results",
    "cancellation",
    "isolation",
    "shutdown",
    "scale",
    "compat",
    "resources",
    "services",
    "placement",
    "stateful",
)
"""The modules of `conformance.checks`: one per area of the contract, then the
hypothesis state machine, whose test checks clauses of several areas."""

DRY_RUN_EXEMPT = frozenset(
    {f"RS-{n}" for n in range(1, 10)}
    | {"CN-5", "SC-4"}
    | {"SV-1", "SV-5", "SV-6", "SV-7", "SV-8"}
)
"""Clauses about really running tasks, not applicable to a ``dry_run`` backend
(which must instead report every runnable task DONE, RS-10)."""

DEFAULT_DEADLINE = 15.0
"""Seconds a test's body may take before the backend is deemed to hang."""

TestFunction = Callable[["Harness"], Awaitable[None]]
_F = TypeVar("_F", bound=TestFunction)


@dataclass(frozen=True)
class Case:
    """One registered conformance test.

    Attributes:
        id: ``<area module>.<function name>``, e.g. ``"states.one_terminal_state"``.
        clauses: The clause IDs it checks: the only ones its own checks may
            fail (`conformance.errors.UndeclaredClauseError`); the first is
            blamed for a hang.
        func: The test body.
        requires: Capabilities it needs: those of its clauses plus any extra
            given to `cites`. Without them it is not applicable.
        deadline: Seconds its body may take.
        doc: First line of the test's docstring.
    """

    id: str
    clauses: tuple[str, ...]
    func: TestFunction
    requires: frozenset[spec.Capability]
    deadline: float
    doc: str

    def applies_to(self, capabilities: Iterable[spec.Capability]) -> bool:
        """Tell whether a backend with ``capabilities`` can run this test."""
        return self.why_not(capabilities) is None

    def why_not(self, capabilities: Iterable[spec.Capability]) -> str | None:
        """Say why this test does not apply to ``capabilities`` (``None``: it does)."""
        caps = frozenset(capabilities)
        missing = self.requires - caps
        if missing:
            return "needs " + ", ".join(sorted(c.value for c in missing))
        if spec.Capability.DRY_RUN in caps and DRY_RUN_EXEMPT & set(self.clauses):
            return "a dry-run backend runs nothing"
        return None


_CASES: dict[str, Case] = {}


def cites(
    *clause_ids: str,
    requires: Iterable[spec.Capability] = (),
    deadline: float = DEFAULT_DEADLINE,
) -> Callable[[_F], _F]:
    """Register a conformance test checking the given clauses.

    Args:
        *clause_ids: IDs from `spec.CLAUSES`; at least one.
        requires: Capabilities needed beyond those of the clauses.
        deadline: Seconds the body may take.

    Returns:
        A decorator that registers the function and returns it unchanged.

    Raises:
        KeyError: If an ID names no clause.
        ValueError: If no ID is given, or the test ID is already taken.
    """
    if not clause_ids:
        raise ValueError("a conformance test must cite at least one clause")
    needed = set(requires)
    for clause_id in clause_ids:
        found = spec.clause(clause_id)
        if found.capability is not None:
            needed.add(found.capability)

    def register(func: _F) -> _F:
        area = func.__module__.rsplit(".", 1)[-1]
        test_id = f"{area}.{func.__name__}"
        if test_id in _CASES and _CASES[test_id].func is not func:
            raise ValueError(f"conformance test {test_id!r} is registered twice")
        doc = (func.__doc__ or "").strip().splitlines()
        _CASES[test_id] = Case(
            test_id,
            tuple(clause_ids),
            func,
            frozenset(needed),
            deadline,
            doc[0] if doc else "",
        )
        return func

    return register


def cases() -> list[Case]:
    """Return every registered test, area by area, in definition order."""
    for area in AREA_MODULES:
        importlib.import_module(f"conformance.checks.{area}")
    order = {area: index for index, area in enumerate(AREA_MODULES)}
    return sorted(
        _CASES.values(), key=lambda c: order.get(c.id.split(".", 1)[0], len(order))
    )


def case(test_id: str) -> Case:
    """Look a registered test up by its ID.

    Raises:
        KeyError: If no test has that ID.
    """
    for found in cases():
        if found.id == test_id:
            return found
    raise KeyError(f"no conformance test {test_id!r}")


clause = cites
"""Deprecated name of `cites` (it was easy to confuse with `spec.clause`, the
clause lookup); kept so that checks written against it still register."""
