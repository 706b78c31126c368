"""Results: what a finished task carries, for functions, executables and dry runs."""

from __future__ import annotations

import contextlib
import os
from typing import Any

import spec
from conformance import _payloads
from conformance.checks._scenarios import FUNCTION_CALLS, SHELL_CASES
from conformance.harness import Harness
from conformance.registry import cites

_C = spec.Capability
_MISSING = "conformance-no-such-program-4f1c"


def _ended(
    h: Harness,
    states: dict[str, spec.TaskState],
    task: dict[str, Any],
    expected: spec.TaskState,
    clause_id: str,
    what: str,
) -> None:
    uid = task["uid"]
    detail = ""
    if states[uid] is not expected:
        detail = (
            f" (exception={task.get('exception')!r}, "
            f"stderr={str(task.get('stderr'))[:200]!r})"
        )
    h.expect(
        states[uid] is expected,
        clause_id,
        f"{what} ended {states[uid]}, not {expected}{detail}",
        uid,
    )


def _called_with(got: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> bool:
    """Whether ``got`` is what `_payloads.combine` returns for these arguments."""
    try:
        return tuple(got[0]) == args and dict(got[1]) == kwargs
    except (TypeError, IndexError, KeyError, ValueError):
        return False  # not even shaped like (args, kwargs)


@cites("RS-1")
async def sync_function_result(h: Harness) -> None:
    """A sync function gets its args and kwargs; its return value is stored."""
    tasks = [h.function_task(_payloads.combine, *a, **k) for a, k in FUNCTION_CALLS]
    tasks.append(h.function_task(_payloads.echo, None))
    states = await h.run(tasks)
    for row, (task, (args, kwargs)) in enumerate(
        zip(tasks[:-1], FUNCTION_CALLS, strict=True)
    ):
        _ended(h, states, task, spec.TaskState.DONE, "RS-1", f"scenario {row}")
        got = task.get("return_value")
        h.expect(
            _called_with(got, args, kwargs),
            "RS-1",
            f"scenario {row}: return_value is {got!r}, expected {(args, kwargs)!r}",
            task["uid"],
        )
    last = tasks[-1]
    _ended(h, states, last, spec.TaskState.DONE, "RS-1", "a function returning None")
    h.expect(
        "return_value" in last and last["return_value"] is None,
        "RS-1",
        "a function returning None has no return_value None",
        last["uid"],
    )


@cites("RS-2")
async def async_function_result(h: Harness) -> None:
    """An ``async def`` function is awaited; its awaited result is stored."""
    task = h.function_task(_payloads.async_echo, {"awaited": True})
    states = await h.run([task])
    _ended(h, states, task, spec.TaskState.DONE, "RS-2", "an async function")
    h.expect(
        task.get("return_value") == {"awaited": True},
        "RS-2",
        f"return_value is {task.get('return_value')!r}, not the awaited result",
        task["uid"],
    )


@cites("RS-3")
async def raising_function(h: Harness) -> None:
    """A raising function is FAILED with the exception (type kept) and a traceback."""
    task = h.function_task(_payloads.fail, "boom from the suite")
    states = await h.run([task])
    _ended(h, states, task, spec.TaskState.FAILED, "RS-3", "a raising function")
    error = task.get("exception")
    h.expect(
        isinstance(error, _payloads.PayloadError)
        and "boom from the suite" in str(error),
        "RS-3",
        f"exception is {error!r}, not the PayloadError the function raised",
        task["uid"],
    )
    stderr = task.get("stderr")
    h.expect(
        isinstance(stderr, str) and "PayloadError" in stderr,
        "RS-3",
        f"stderr is {stderr!r}, not the traceback text",
        task["uid"],
    )


@cites("RS-4")
async def executable_output(h: Harness) -> None:
    """An executable gets stdout/stderr text and exit_code; DONE iff exit_code 0."""
    ok = h.executable_task("echo", ["hello"])
    bad = h.executable_task(h.script("echo out; echo err >&2; exit 3", "exit3.sh"))
    states = await h.run([ok, bad])
    _ended(h, states, ok, spec.TaskState.DONE, "RS-4", "`echo hello`")
    _ended(h, states, bad, spec.TaskState.FAILED, "RS-4", "a script exiting 3")
    for task, code, out, err in ((ok, 0, "hello", None), (bad, 3, "out", "err")):
        uid = task["uid"]
        h.expect(
            task.get("exit_code") == code,
            "RS-4",
            f"exit_code is {task.get('exit_code')!r}, expected {code}",
            uid,
        )
        stdout, stderr = task.get("stdout"), task.get("stderr")
        h.expect(
            isinstance(stdout, str) and stdout.strip() == out,
            "RS-4",
            f"stdout is {stdout!r}, expected {out!r} as text",
            uid,
        )
        h.expect(
            isinstance(stderr, str) and (err is None or stderr.strip() == err),
            "RS-4",
            f"stderr is {stderr!r}, expected {err or 'text'!r}",
            uid,
        )


@cites("RS-5")
async def missing_executable(h: Harness) -> None:
    """An executable that does not exist is FAILED with an exception naming it."""
    tasks = [
        h.executable_task(_MISSING),
        h.executable_task(_MISSING, shell=False),
    ]
    states = await h.run(tasks)
    for task in tasks:
        _ended(h, states, task, spec.TaskState.FAILED, "RS-5", "a missing executable")
        error = task.get("exception")
        h.expect(
            isinstance(error, BaseException) and _MISSING in str(error),
            "RS-5",
            f"exception is {error!r}; it must be an exception naming {_MISSING!r}",
            task["uid"],
        )


@cites("RS-6")
async def capture_stdio_files(h: Harness) -> None:
    """With capture_stdio, stdout/stderr are paths of files present at delivery."""
    work_dir = str(getattr(h.raw, "_work_dir", h.work_dir))
    task = h.executable_task(
        h.script("echo captured; echo trouble >&2", "capture.sh"), capture_stdio=True
    )
    present: dict[str, bool] = {}

    def look(delivered: Any, state: Any) -> None:
        if spec.is_terminal(state):
            for key in ("stdout", "stderr"):
                path = delivered.get(key)
                present[key] = isinstance(path, str) and os.path.isfile(path)

    h.also_call(look)
    states = await h.run([task])
    h.also_call(None)
    uid = task["uid"]
    _ended(h, states, task, spec.TaskState.DONE, "RS-6", "a captured executable")
    for key, text in (("stdout", "captured"), ("stderr", "trouble")):
        expected = os.path.join(work_dir, f"{uid}.{key}")
        h.expect(
            task.get(key) == expected,
            "RS-6",
            f"{key} is {task.get(key)!r}, not the path {expected!r}",
            uid,
        )
        h.expect(
            present.get(key),
            "RS-6",
            f"{expected} did not exist when the state came",
            uid,
        )
        if not os.path.isfile(expected):
            continue  # its absence is the failure above
        with open(expected) as fh:
            content = fh.read()
        h.expect(content.strip() == text, "RS-6", f"{expected} holds {content!r}", uid)


@cites("RS-7")
async def shell_cwd_env(h: Harness) -> None:
    """The ``shell`` (default true), ``cwd`` and ``env`` options are honoured."""
    tasks = [
        h.executable_task(exe, args, **options) for exe, args, options, _ in SHELL_CASES
    ]
    where = h.work_dir / "cwd"
    where.mkdir()
    tasks.append(h.executable_task("pwd", cwd=str(where)))
    states = await h.run(tasks)
    expected = [out for *_, out in SHELL_CASES] + [os.path.realpath(where)]
    for row, (task, out) in enumerate(zip(tasks, expected, strict=True)):
        _ended(h, states, task, spec.TaskState.DONE, "RS-7", f"scenario {row}")
        stdout = str(task.get("stdout")).strip()
        if row == len(SHELL_CASES):
            stdout = os.path.realpath(stdout)
        h.expect(
            stdout == out,
            "RS-7",
            f"scenario {row} ({task['executable']} {task['arguments']}, "
            f"{task['task_backend_specific_kwargs']}): stdout {stdout!r}, "
            f"expected {out!r}",
            task["uid"],
        )


@cites("RS-8")
async def timeout_kills(h: Harness) -> None:
    """An executable past its ``timeout`` is killed and FAILED with TaskTimeoutError."""
    task = h.executable_task("sleep", ["30"], timeout=0.5)
    await h.submit([task])
    states = await h.wait_terminal([task["uid"]], clause_id="RS-8")
    _ended(h, states, task, spec.TaskState.FAILED, "RS-8", "a timed-out executable")
    error = task.get("exception")
    h.expect(
        isinstance(error, spec.TaskTimeoutError),
        "RS-8",
        f"exception is {error!r}, not a TaskTimeoutError",
        task["uid"],
    )


@cites("RS-9")
async def unpicklable_exception(h: Harness) -> None:
    """An exception that cannot be sent back arrives as a StandInError naming it."""
    task = h.function_task(_payloads.fail_unpicklable, "cannot travel")
    states = await h.run([task])
    _ended(h, states, task, spec.TaskState.FAILED, "RS-9", "a function raising it")
    error = task.get("exception")
    kept = isinstance(error, _payloads.UnpicklableError)
    stood_in = (
        isinstance(error, spec.StandInError) and "UnpicklableError" in error.type_name
    )
    h.expect(
        kept or stood_in,
        "RS-9",
        f"exception is {error!r}: neither the original nor a StandInError naming it",
        task["uid"],
    )


@cites("RS-10")
async def dry_run_runs_nothing(h: Harness) -> None:
    """A dry-run backend reports every runnable task DONE without running it."""
    marker = h.work_dir / "ran-function"
    tasks = [
        h.function_task(_payloads.touch, str(marker)),
        h.executable_task("touch", [str(h.work_dir / "ran-executable")]),
    ]
    if h.has(_C.PROMPTS):
        tasks.append(h.prompt_task())
    states = await h.run(tasks)
    for task in tasks:
        _ended(h, states, task, spec.TaskState.DONE, "RS-10", "a dry-run task")
    ran = sorted(p.name for p in h.work_dir.glob("ran-*"))
    h.expect(not ran, "RS-10", f"a dry run ran tasks: {ran} were created")


@cites("RS-13", "RS-14")
async def prompt_results_have_the_contract_shape(h: Harness) -> None:
    """A DONE prompt carries a str answer; a FAILED one an exception object.

    The batch includes a prompt that is not text, which a strict backend
    fails; a backend that answers it anyway is judged on RS-13 only.
    """
    hello = h.prompt_task("say hello")
    odd = h.prompt_task()
    odd["prompt"] = 12345
    tasks = [hello, odd]
    states = await h.run(tasks)
    failed = 0
    for task in tasks:
        uid = task["uid"]
        if states[uid] is spec.TaskState.DONE:
            answer = task.get("stdout")
            h.expect(
                isinstance(answer, str),
                "RS-13",
                f"a DONE prompt's stdout is {answer!r}, not the answer as a str",
                uid,
            )
            h.expect(
                task.get("return_value") == answer,
                "RS-13",
                f"a DONE prompt's return_value is {task.get('return_value')!r}, "
                f"not its answer {answer!r}",
                uid,
            )
        elif states[uid] is spec.TaskState.FAILED:
            failed += 1
            error = task.get("exception")
            h.expect(
                isinstance(error, BaseException),
                "RS-14",
                f"a FAILED prompt's exception is {error!r} "
                f"({type(error).__name__}), not an exception object",
                uid,
            )
            stderr = task.get("stderr")
            h.expect(
                isinstance(stderr, str) and bool(stderr),
                "RS-14",
                f"a FAILED prompt's stderr is {stderr!r}, not the reason",
                uid,
            )
    h.expect(
        states[hello["uid"]] is spec.TaskState.DONE,
        "RS-13",
        f"the prompt 'say hello' ended {states[hello['uid']]} "
        f"({hello.get('exception')!r})",
        hello["uid"],
    )
    if not failed:
        h.note("RS-14: no prompt task failed, so no failure was judged")


def _inside(path: str, work_dir: str) -> bool:
    real, root = os.path.realpath(path), os.path.realpath(work_dir)
    return os.path.commonpath([real, root]) == root and real != root


@cites("RS-11")
async def capture_files_stay_in_work_dir(h: Harness) -> None:
    """Capture files stay inside the work dir for uids like ``../x``, ``/abs/x``."""
    work_dir = str(getattr(h.raw, "_work_dir", h.work_dir))
    # Unique names outside the work dir, where a naive join would write.
    token = h.uid("outside").replace("/", "-")
    parent = os.path.dirname(os.path.realpath(work_dir))
    absolute_dir = os.path.join(parent, f"{token}-abs")
    os.makedirs(absolute_dir, exist_ok=True)
    uids = [f"../{token}", os.path.join(absolute_dir, "x"), f"{token}-dir/y"]
    outside = [
        os.path.join(parent, f"{token}.stdout"),
        os.path.join(absolute_dir, "x.stdout"),
    ]
    tasks = [
        h.executable_task("echo", [f"out{i}"], uid=uid, capture_stdio=True)
        for i, uid in enumerate(uids)
    ]
    try:
        states = await h.run(tasks)
        written = [path for path in outside if os.path.lexists(path)]
        h.check(
            not written,
            "RS-11",
            f"capture files were written outside {work_dir!r}: {written}",
        )
        for task in tasks:
            uid = task["uid"]
            if states[uid] is spec.TaskState.FAILED and task.get("stdout") is None:
                # Refusing such a uid is allowed, with an exception saying why.
                h.check(
                    isinstance(task.get("exception"), BaseException),
                    "RS-11",
                    f"task {uid!r} FAILED without an exception saying why",
                    uid,
                )
                continue
            for key in ("stdout", "stderr"):
                path = task.get(key)
                h.check(
                    isinstance(path, str) and _inside(path, work_dir),
                    "RS-11",
                    f"{key} of uid {uid!r} is {path!r}, outside {work_dir!r}",
                    uid,
                )
    finally:
        for path in outside:
            with contextlib.suppress(OSError):
                os.remove(path)
        with contextlib.suppress(OSError):
            os.rmdir(absolute_dir)
