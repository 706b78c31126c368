"""``python -m conformance [TARGET]``: run the suite and print the report.

The ``asyncflow-conformance`` console script is the same command.

Exit status: 0 iff every MUST clause passed (or is not applicable) and no
expected failure passed; 1 otherwise; 2 for a usage error (a target that
cannot be loaded, unknown clause, unreadable expected-failures file, an
output file that cannot be written), found before any test runs.
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import NoReturn, TextIO

import spec
from conformance._progress import Progress
from conformance.expectations import load_expected_failures
from conformance.registry import cases
from conformance.runner import run, select
from conformance.target import DEFAULT_TARGET, TARGET_FORMS, TargetError, load_target

__all__ = ["cli", "main"]

STDOUT = "-"
"""``--json -`` / ``--junit -``: write that report to stdout (the text report
then goes to stderr, so stdout holds one document)."""

EXIT_GRACE = 3.0
"""Seconds the process may take to end after the report before it is ended
anyway: a backend's thread or shutdown that never finishes must not keep a
CI job waiting forever."""


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
        "--json",
        metavar="PATH",
        type=_output_path,
        help="write the JSON report (the certificate); '-' for stdout",
    )
    parser.add_argument(
        "--junit",
        metavar="PATH",
        type=_output_path,
        help="write a JUnit XML report; '-' for stdout",
    )
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
        type=_scale,
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


def _scale(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"must be a finite number above 0, not {text}")
    return value


def _output_path(text: str) -> str:
    """A file the report can be written to, checked before the run starts."""
    if text == STDOUT:
        return text
    path = Path(text)
    if path.is_dir():
        raise argparse.ArgumentTypeError(f"{text!r} is a folder, not a file")
    folder = path.parent
    if not folder.is_dir():
        raise argparse.ArgumentTypeError(
            f"no folder {str(folder)!r} to write {text!r} in"
        )
    if not os.access(folder, os.W_OK):
        raise argparse.ArgumentTypeError(f"cannot write in folder {str(folder)!r}")
    return text


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


def _usage_error(parser: argparse.ArgumentParser, message: str) -> int:
    parser.print_usage(sys.stderr)
    print(f"{parser.prog}: error: {message}", file=sys.stderr)
    return 2


def _quiet_dask(verbose: bool) -> None:
    """Keep Dask's own logging (worker deaths the suite provokes) out of the report.

    A backend on ``dask.distributed`` logs ERRORs and nanny warnings for the
    workers the suite kills on purpose (RS-12). Unless ``-v``, its loggers
    are silenced here and, through Dask's configuration in the environment,
    in the worker processes the backend starts.
    """
    if verbose:
        return
    os.environ.setdefault("DASK_LOGGING__DISTRIBUTED", "critical")
    for name in list(logging.root.manager.loggerDict):
        if name == "distributed" or name.startswith("distributed."):
            logging.getLogger(name).setLevel(logging.CRITICAL)


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
    if args.json == STDOUT and args.junit == STDOUT:
        return _usage_error(parser, "--json - and --junit - cannot both use stdout")
    try:
        factory = load_target(args.target)
    except TargetError as exc:
        # One usage error: what went wrong, then the accepted forms.
        return _usage_error(parser, str(exc))
    try:
        selected = None
        if args.clauses is not None:
            selected = [c.strip() for c in args.clauses.split(",") if c.strip()]
            if not selected:
                raise ValueError(f"--clauses {args.clauses!r} names no clause")
            for clause_id in selected:
                spec.clause(clause_id)
        total = len(select(selected)[0]) * args.repeat
        expected = None
        if args.expected_failures:
            known = {c.id for c in cases()}
            expected = load_expected_failures(args.expected_failures, known)
    except KeyError as exc:  # its str() would quote the message
        return _usage_error(parser, str(exc.args[0]))
    except (LookupError, TypeError, ValueError, OSError) as exc:
        return _usage_error(parser, str(exc))

    if args.verbose:
        logging.basicConfig(level=logging.WARNING)
    else:
        # Backends log what the suite provokes on purpose (a raising callback,
        # ST-7); keep the report readable. -v shows those logs.
        logging.getLogger().addHandler(logging.NullHandler())
    _quiet_dask(args.verbose)
    # The report alone on stdout; with a document sent there, not even that.
    out: TextIO = sys.stderr if STDOUT in (args.json, args.junit) else sys.stdout
    progress = Progress(total, sys.stderr, every_test=args.verbose)
    began = time.monotonic()
    progress.start()
    try:
        report = run(
            factory,
            clauses=selected,
            expected_failures=expected,
            progress=progress.finished,
            deadline_scale=args.deadline_scale,
            repeat=args.repeat,
            seed=args.seed,
            started=progress.started,
        )
    finally:
        progress.close()
    report.backend = args.target
    print(report.to_text(verbose=args.verbose), file=out)
    print(f"wall time: {time.monotonic() - began:.2f} s", file=out)
    for path, text in ((args.json, report.dumps()), (args.junit, report.to_junit())):
        if path == STDOUT:
            sys.stdout.write(text + "\n")
        elif path:
            Path(path).write_text(text + "\n")
    return report.exit_code


def _end_within(seconds: float, code: int) -> NoReturn:
    """Exit with ``code``; end the process anyway if that takes over ``seconds``.

    Python waits at exit for every non-daemon thread. A backend may leave one
    that never ends (a shutdown that hangs in a worker thread of its own, a
    pool it never closed): the report is out, so the status must be too.
    """
    sys.stdout.flush()
    sys.stderr.flush()

    def end_now() -> None:
        print(
            f"{_prog()}: still running {seconds:g} s after the report (a thread "
            f"the backend left behind); exiting with status {code} without it",
            file=sys.stderr,
            flush=True,
        )
        os._exit(code)

    timer = threading.Timer(seconds, end_now)
    timer.daemon = True
    timer.start()
    sys.exit(code)


def cli() -> NoReturn:
    """The console script and ``python -m conformance``: run, then exit promptly."""
    _end_within(EXIT_GRACE, main())


if __name__ == "__main__":
    cli()
