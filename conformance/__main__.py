"""``python -m conformance [TARGET]``: run the suite and print the report.

The ``asyncflow-conformance`` console script is the same command.

Exit status: 0 iff every MUST clause passed (or is not applicable) and no
expected failure passed; 1 otherwise; 2 for a usage error (a target that
cannot be loaded, unknown clause, unreadable expected-failures file).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import spec
from conformance.expectations import load_expected_failures
from conformance.registry import cases
from conformance.report import Outcome, TestResult
from conformance.runner import run
from conformance.target import DEFAULT_TARGET, TARGET_FORMS, TargetError, load_target

__all__ = ["main"]

_MARKS = {
    Outcome.PASS: ".",
    Outcome.FAIL: "F",
    Outcome.NOT_APPLICABLE: "s",
    Outcome.XFAIL: "x",
    Outcome.XPASS: "X",
}


CONSOLE_SCRIPT = "asyncflow-conformance"
"""The console script's name (``[project.scripts]`` in ``pyproject.toml``)."""


def _prog() -> str:
    """Name the command as the user typed it, for usage and error lines."""
    invoked = os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else ""
    if invoked.startswith(CONSOLE_SCRIPT):  # also asyncflow-conformance.exe
        return CONSOLE_SCRIPT
    return "python -m conformance"


def _parser(prog: str = "python -m conformance") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=TARGET_FORMS,
        description="Check an execution backend against the asyncflow-backend-spec "
        "contract and print one row per clause.",
    )
    parser.add_argument(
        "target",
        nargs="?",
        default=DEFAULT_TARGET,
        help="module:attr, path/to/file.py:attr (a backend class or a "
        "zero-argument sync or async factory), or a name registered in the "
        f"entry-point group {spec.ENTRY_POINT_GROUP!r} (default: "
        f"{DEFAULT_TARGET}); see the forms below",
    )
    parser.add_argument(
        "--json", metavar="PATH", help="write the JSON report (the certificate)"
    )
    parser.add_argument("--junit", metavar="PATH", help="write a JUnit XML report")
    parser.add_argument(
        "--expected-failures",
        metavar="FILE",
        help="file of clause or test IDs expected to fail, each with a reason",
    )
    parser.add_argument(
        "--clauses", metavar="ID,ID", help="check only these clauses (e.g. ST-2,CN-4)"
    )
    parser.add_argument(
        "--deadline-scale",
        metavar="X",
        type=float,
        default=1.0,
        help="multiply every test's deadline by X (e.g. 3 on a slow machine)",
    )
    parser.add_argument(
        "--repeat",
        metavar="N",
        type=_positive_int,
        default=1,
        help="run the selected tests N times (to flush out races); a clause "
        "fails if it failed in any run",
    )
    parser.add_argument(
        "--seed",
        metavar="S",
        type=int,
        default=None,
        help="shuffle the order of the tests in every run with seed S (also "
        "seeds the stateful test); rerun with the same seed to replay",
    )
    parser.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        help="full clause texts, every test with its time, and whole traces",
    )
    parser.add_argument(
        "--list",
        action="store_true",
        help="list the clauses and their tests, then exit",
    )
    return parser


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def _list() -> None:
    by_clause: dict[str, list[str]] = {}
    for case in cases():
        for clause_id in case.clauses:
            by_clause.setdefault(clause_id, []).append(case.id)
    print(f"asyncflow-backend-spec contract {spec.CONTRACT_VERSION}")
    area = None
    for found in spec.CLAUSES.values():
        if found.area is not area:
            area = found.area
            print(f"\n{area.value}")
        scope = f" [{found.capability.value}]" if found.capability else ""
        print(f"  {found.id:<6} {found.level.value:<6} {found.text}{scope}")
        for test_id in by_clause.get(found.id, ["(no test)"]):
            print(f"           - {test_id}")


def main(argv: Sequence[str] | None = None, prog: str | None = None) -> int:
    """Run the suite from the command line; return the exit status.

    Args:
        argv: The arguments (default: ``sys.argv[1:]``).
        prog: The command's name in usage and error lines (default: the
            console script's name when run as it, else ``python -m conformance``).

    Returns:
        0 iff every MUST clause passed or is not applicable and no expected
        failure passed; 1 otherwise; 2 for a usage error.
    """
    prog = prog or _prog()
    parser = _parser(prog)
    args = parser.parse_args(argv)
    if args.list:
        _list()
        return 0
    try:
        factory = load_target(args.target)
    except TargetError as exc:
        # One usage error: what went wrong, then the accepted forms.
        parser.print_usage(sys.stderr)
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return 2
    try:
        selected = None
        if args.clauses:
            selected = [c.strip() for c in args.clauses.split(",") if c.strip()]
            for clause_id in selected:
                spec.clause(clause_id)
        expected = None
        if args.expected_failures:
            known = {c.id for c in cases()}
            expected = load_expected_failures(args.expected_failures, known)
    except (LookupError, TypeError, ValueError, OSError) as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return 2

    def progress(result: TestResult) -> None:
        if args.verbose:
            run = f" (run {result.run})" if args.repeat > 1 else ""
            print(
                f"{result.outcome.value:<6} {result.id}{run} ({result.duration:.2f} s)",
                flush=True,
            )
        else:
            print(_MARKS.get(result.outcome, "?"), end="", flush=True)

    if args.verbose:
        logging.basicConfig(level=logging.WARNING)
    else:
        # Backends log what the suite provokes on purpose (a raising callback,
        # ST-7); keep the report readable. -v shows those logs.
        logging.getLogger().addHandler(logging.NullHandler())
    began = time.monotonic()
    report = run(
        factory,
        clauses=selected,
        expected_failures=expected,
        progress=progress,
        deadline_scale=args.deadline_scale,
        repeat=args.repeat,
        seed=args.seed,
    )
    report.backend = args.target
    print("\n" if not args.verbose else "")
    print(report.to_text(verbose=args.verbose))
    print(f"wall time: {time.monotonic() - began:.2f} s")
    if args.json:
        Path(args.json).write_text(report.dumps() + "\n")
    if args.junit:
        Path(args.junit).write_text(report.to_junit() + "\n")
    return report.exit_code


if __name__ == "__main__":
    raise SystemExit(main())
