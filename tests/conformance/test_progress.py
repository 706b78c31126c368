"""The command line's progress display (conformance/_progress.py)."""

from __future__ import annotations

import io

from conformance._progress import Progress, result_line, status_line
from conformance.report import Outcome, TestResult


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def _result(test_id: str, run: int = 1) -> TestResult:
    result = TestResult(test_id, ("ST-2",), Outcome.PASS, duration=0.25)
    result.run = run
    return result


def test_lines_name_the_test_its_place_and_the_time() -> None:
    assert (
        status_line(3, 87, 12.4, "states.order")
        == "[ 3/87]    12 s  running states.order"
    )
    line = result_line(4, 87, 13.0, _result("states.order", run=2))
    assert line == "[ 4/87] pass   states.order (run 2) (0.25 s; 13 s elapsed)"


def test_off_a_terminal_one_plain_line_per_test() -> None:
    stream = io.StringIO()
    progress = Progress(2, stream)
    assert not progress.live
    progress.start()
    progress.started("lifecycle.a")
    progress.finished(_result("lifecycle.a"))
    progress.started("lifecycle.b")
    progress.finished(_result("lifecycle.b"))
    progress.close()
    lines = stream.getvalue().splitlines()
    assert [x.split()[0:3] for x in lines] == [
        ["[1/2]", "pass", "lifecycle.a"],
        ["[2/2]", "pass", "lifecycle.b"],
    ]
    assert "\r" not in stream.getvalue()


def test_on_a_terminal_one_line_rewritten_then_cleared() -> None:
    stream = _Terminal()
    progress = Progress(2, stream)
    assert progress.live and not progress.every_test
    progress.started("lifecycle.a")
    assert stream.getvalue().endswith("[0/2]     0 s  running lifecycle.a")
    progress.finished(_result("lifecycle.a"))
    assert "pass" not in stream.getvalue()  # no line per test unless -v
    progress.close()
    # What is left on screen after the last carriage return is blank.
    assert stream.getvalue().rsplit("\r", 1)[-1] == ""
    assert "\n" not in stream.getvalue()


def test_on_a_terminal_with_verbose_each_test_gets_a_line_too() -> None:
    stream = _Terminal()
    progress = Progress(1, stream, every_test=True)
    progress.started("lifecycle.a")
    progress.finished(_result("lifecycle.a"))
    progress.close()
    text = stream.getvalue()
    assert "[1/1] pass   lifecycle.a (0.25 s; 0 s elapsed)\n" in text
    # The live line was cleared before the plain line was written over it.
    before = text.split("[1/1] pass", 1)[0]
    assert before.endswith("\r") and "running lifecycle.a" in before


def test_clause_texts_are_wrapped_whole_not_cut() -> None:
    import conformance
    import spec
    from reference import NoopExecutionBackend

    report = conformance.run(NoopExecutionBackend, clauses=["SB-10", "LC-8"])
    text = report.to_text()
    rows = text.split("clause  level  outcome  text\n", 1)[1].split("\n\n", 1)[0]
    lines = rows.splitlines()
    assert all(len(line) <= 96 for line in lines)
    starts = [i for i, line in enumerate(lines) if not line.startswith(" ")]
    assert [lines[i].split()[0] for i in starts] == ["LC-8", "SB-10"]
    sb10 = lines[starts[1] :]
    assert len(sb10) > 1  # a long text: wrapped, not cut
    # The text column, first line and continuations alike, is the whole text.
    assert " ".join(line[24:] for line in sb10) == spec.CLAUSES["SB-10"].text
