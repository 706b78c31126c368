"""Engine compatibility: what radical.asyncflow 0.6's WorkflowEngine touches."""

from __future__ import annotations

import inspect
from typing import Any

import spec
from conformance.harness import Harness
from conformance.registry import cites


@cites("CP-1")
async def engine_attributes(h: Harness) -> None:
    """``_work_dir`` (str), ``is_attached`` (bool), ``attached_to`` (list), writable."""
    raw: Any = h.raw
    for name, kind in (
        ("_work_dir", str),
        ("is_attached", bool),
        ("attached_to", list),
    ):
        value = getattr(raw, name, None)
        h.expect(
            isinstance(value, kind),
            "CP-1",
            f"{name} is {value!r}, not a {kind.__name__}",
        )
    # What WorkflowEngine does when it attaches the backend.
    target = str(h.work_dir / "engine-0001")
    raw._work_dir = target
    raw.is_attached = True
    raw.attached_to.append("engine-0001")
    h.expect(
        raw._work_dir == target, "CP-1", "_work_dir did not keep the engine's value"
    )
    h.expect(raw.is_attached is True, "CP-1", "is_attached did not keep True")
    h.expect(
        raw.attached_to[-1] == "engine-0001",
        "CP-1",
        f"attached_to is {raw.attached_to!r} after the engine appended to it",
    )


@cites("CP-2")
async def data_linking_hooks(h: Harness) -> None:
    """The data-linking flags are bools and the hooks accept the engine's calls."""
    raw: Any = h.raw
    for flag in ("supports_implicit_data_linking", "supports_explicit_data_linking"):
        value = getattr(raw, flag, None)
        h.expect(isinstance(value, bool), "CP-2", f"{flag} is {value!r}, not a bool")
    src = dict(h.runnable_task(), metadata={"output_files": ["out.txt"]})
    dst = dict(h.runnable_task(), metadata={"input_files": ["out.txt"]})
    calls: tuple[tuple[str, tuple[Any, ...], dict[str, Any]], ...] = (
        ("link_implicit_data_deps", (src, dst), {}),
        (
            "link_explicit_data_deps",
            (),
            {"src_task": src, "dst_task": dst, "file_name": "out.txt"},
        ),
        (
            "link_explicit_data_deps",
            (),
            {
                "src_task": None,
                "dst_task": dst,
                "file_name": "in.txt",
                "file_path": str(h.work_dir / "in.txt"),
            },
        ),
    )
    flags = {
        "link_implicit_data_deps": getattr(raw, "supports_implicit_data_linking", None),
        "link_explicit_data_deps": getattr(raw, "supports_explicit_data_linking", None),
    }
    for name, args, kwargs in calls:
        hook = getattr(raw, name, None)
        if not callable(hook):
            h.fail("CP-2", f"{name} is missing")
        if flags[name] is not True:
            # The engine calls a hook only when its flag is true; the hook
            # must still take the engine's arguments (the protocol says so).
            try:
                inspect.signature(hook).bind(*args, **kwargs)
            except TypeError as exc:
                h.fail("CP-2", f"{name} cannot take the engine's call: {exc}")
            except ValueError:
                pass  # no signature to inspect (a builtin): nothing to judge
            continue
        try:
            hook(*args, **kwargs)
        except Exception as exc:
            h.fail("CP-2", f"{name}(*{args!r}, **{kwargs!r}) raised {exc!r}")


@cites("CP-3")
async def build_task_hook(h: Harness) -> None:
    """``build_task(uid, task_desc, task_specific_kwargs)`` accepts the call."""
    task = h.runnable_task()
    try:
        h.raw.build_task(task["uid"], task, {})
    except Exception as exc:
        h.fail("CP-3", f"build_task(uid, task_desc, {{}}) raised {exc!r}")
    states = await h.run([task])
    h.expect(
        states[task["uid"]] is spec.TaskState.DONE,
        "CP-3",
        f"a task passed through build_task ended {states[task['uid']]}",
        task["uid"],
    )
