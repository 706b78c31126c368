"""The conformance report as text for a terminal and as JUnit XML.

`conformance.report.Report.to_text` and `Report.to_junit` call these; the
JSON certificate (`Report.to_json`) stays with the data it mirrors.
"""

from __future__ import annotations

import textwrap
from typing import TYPE_CHECKING
from xml.etree import ElementTree

from conformance._escapes import ESCAPED, TRACEBACK
from conformance.report import Outcome

if TYPE_CHECKING:
    from conformance.report import ClauseResult, Report

__all__ = ["TEXT_WIDTH", "junit", "text"]

TEXT_WIDTH = 72
"""Columns of a clause's text in the table (rows stay under 96 columns)."""


def text(report: Report, *, verbose: bool = False, evidence_lines: int = 8) -> str:
    """Render ``report`` as a table for a terminal (see `Report.to_text`)."""
    caps = ", ".join(report.capabilities) or "none"
    lines = [
        "asyncflow-backend-spec conformance report",
        f"backend:      {report.backend} "
        f"({report.backend_type}, name={report.backend_name!r})",
        f"capabilities: {caps}",
        f"contract:     {report.contract_version}    suite: {report.suite_version}"
        f"    python: {report.python}    platform: {report.platform}",
        f"started:      {report.started}    duration: {report.duration:.2f} s"
        f"    tests: {len(report.tests)}"
        + (
            f"    runs: {report.repeat} (seed {report.seed})"
            if report.repeat > 1 or report.seed is not None
            else ""
        ),
        "",
        f"{'clause':<7} {'level':<6} {'outcome':<8} text",
    ]
    for result in report.clauses.values():
        # The whole text, wrapped under its column: a cut rule misleads.
        wrapped = textwrap.wrap(result.clause.text, TEXT_WIDTH) or [""]
        lines.append(
            f"{result.clause.id:<7} {result.clause.level.value:<6} "
            f"{result.outcome.value:<8} {wrapped[0]}"
        )
        lines.extend(f"{'':>24}{more}" for more in wrapped[1:])
        if result.outcome in (Outcome.FAIL, Outcome.XFAIL, Outcome.XPASS):
            shown = _evidence_shown(
                result.evidence, None if verbose else evidence_lines
            )
            lines.extend(f"{'':>23}{line}" for line in shown)
        if result.reason and (verbose or result.outcome is not Outcome.NOT_APPLICABLE):
            lines.append(f"{'':>23}({result.reason})")
    if report.measurements:
        lines.append("")
        lines.append("measurements:")
        lines.extend(f"  {k}: {v:.3f}" for k, v in sorted(report.measurements.items()))
    if verbose:
        lines.append("")
        lines.append("tests:")
        for test in report.tests:
            run = f" (run {test.run})" if report.repeat > 1 else ""
            lines.append(
                f"  {test.outcome.value:<8} {test.id}{run} "
                f"[{', '.join(test.clauses)}] {test.duration:.2f} s {test.reason}"
            )
            lines.extend(f"           {note}" for note in test.notes)
    for error in report.errors:
        lines.append(f"ERROR: {error}")
    counts = ", ".join(f"{v} {k}" for k, v in report.counts().items() if v)
    verdict = "CONFORMS" if report.ok else "DOES NOT CONFORM"
    lines.append("")
    lines.append(f"{len(report.clauses)} clauses: {counts}. {verdict}.")
    return "\n".join(lines)


def junit(report: Report) -> str:
    """Render ``report`` as JUnit XML: one testcase per clause."""
    suite = ElementTree.Element(
        "testsuite",
        name=f"conformance[{report.backend}]",
        tests=str(len(report.clauses)),
        failures=str(len(report.clauses_with(Outcome.FAIL, Outcome.XPASS))),
        skipped=str(
            len(
                report.clauses_with(
                    Outcome.NOT_APPLICABLE, Outcome.XFAIL, Outcome.UNTESTED
                )
            )
        ),
        errors=str(len(report.clauses_with(Outcome.BLOCKED))),
        time=f"{report.duration:.3f}",
    )
    props = ElementTree.SubElement(suite, "properties")
    for key in ("backend", "contract_version", "suite_version", "python"):
        ElementTree.SubElement(
            props, "property", name=key, value=str(getattr(report, key))
        )
    ElementTree.SubElement(
        props, "property", name="capabilities", value=",".join(report.capabilities)
    )
    ElementTree.SubElement(props, "property", name="repeat", value=str(report.repeat))
    for result in report.clauses.values():
        case = ElementTree.SubElement(
            suite,
            "testcase",
            classname=f"conformance.{result.clause.area.name}",
            name=f"{result.clause.id} [{result.clause.level.value}]",
            time=f"{result.seconds:.3f}",
        )
        _junit_outcome(case, result)
        citing = [t for t in report.tests if result.clause.id in t.clauses]
        if citing:
            # Per-test times: a clause's time is the sum of its tests'.
            out = ElementTree.SubElement(case, "system-out")
            out.text = "\n".join(
                f"{t.id}{f' (run {t.run})' if report.repeat > 1 else ''}: "
                f"{t.outcome.value} in {t.duration:.3f} s"
                for t in citing
            )
    return ElementTree.tostring(suite, encoding="unicode")


def _evidence_shown(evidence: list[str], limit: int | None) -> list[str]:
    """The evidence lines to print: all, or the head and the trace's end.

    The head (which test, the message, and what escaped the backend with
    its traceback) comes first and whole; the trace is cut from its start,
    so the violating event and the events just before it stay.
    """
    if limit is None or len(evidence) <= limit:
        return list(evidence)
    end = 2
    while end < len(evidence) and evidence[end].startswith((ESCAPED, TRACEBACK)):
        end += 1
    head = evidence[:end]
    tail = evidence[len(evidence) - max(1, limit - len(head)) :]
    cut = len(evidence) - len(head) - len(tail)
    return [
        *head,
        f"  ... {cut} earlier line(s): -v or --json for the whole trace",
        *tail,
    ]


def _failure_message(result: ClauseResult) -> str:
    """The JUnit failure message: the reason, and the test that saw it."""
    if len(result.evidence) >= 2 and result.evidence[0].startswith("in "):
        where = result.evidence[0][3:].rstrip(":")
        return f"{result.evidence[1].splitlines()[0]} (in {where})"
    return result.evidence[0] if result.evidence else "failed"


def _junit_outcome(case: ElementTree.Element, result: ClauseResult) -> None:
    text = "\n".join(result.evidence)
    if result.outcome is Outcome.FAIL:
        node = ElementTree.SubElement(case, "failure", message=_failure_message(result))
        node.text = text
    elif result.outcome is Outcome.XPASS:
        ElementTree.SubElement(
            case, "failure", message=f"expected to fail: {result.reason}"
        )
    elif result.outcome is Outcome.BLOCKED:
        node = ElementTree.SubElement(case, "error", message=result.reason or "blocked")
    elif result.outcome in (Outcome.NOT_APPLICABLE, Outcome.XFAIL, Outcome.UNTESTED):
        node = ElementTree.SubElement(
            case, "skipped", message=f"{result.outcome.value}: {result.reason}"
        )
        node.text = text or None
