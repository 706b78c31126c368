"""``python -m conformance``: for now, print the contract the suite will check."""

from __future__ import annotations

import spec


def main() -> int:
    """Print the contract's clauses, one per line, grouped by area."""
    print(f"asyncflow-backend-spec contract {spec.CONTRACT_VERSION}")
    area = None
    for clause in spec.CLAUSES.values():
        if clause.area is not area:
            area = clause.area
            print(f"\n{area.value}")
        scope = f" [{clause.capability.value}]" if clause.capability else ""
        print(f"  {clause.id:<6} {clause.level.value:<6} {clause.text}{scope}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
