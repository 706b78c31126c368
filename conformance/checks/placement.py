"""Placement: tasks run where their placement says, and leave no binding behind.

Clauses PL-1 to PL-4 (capability ``placement``, contract 1.2). The tasks
report where they really ran: an executable prints its own
``Cpus_allowed_list`` (from ``/proc/$$/status``) and ``CUDA_VISIBLE_DEVICES``;
a function task records ``os.sched_getaffinity(0)`` and the thread that ran
it. Overlap in time is judged from the timestamps the tasks write, never
from the order of callbacks. Linux only: elsewhere the clauses are not
applicable.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import spec
from conformance import _payloads
from conformance.checks.resources import _capacity, _run_spans
from conformance.harness import Harness
from conformance.registry import cites

_C = spec.Capability
_HOLD = 0.2
"""Seconds each task holds its cores: long enough for tasks to overlap."""
_MANY = 16
"""At most this many one-core tasks at once, whatever the capacity."""


@dataclass(frozen=True)
class _Seen:
    """What one task recorded about where it ran."""

    start: float
    end: float
    cores: list[int]
    gpus: list[str] | None
    """``CUDA_VISIBLE_DEVICES`` as ids (an executable's); ``None`` for functions."""
    thread: tuple[int, int] | None
    """The pid and native thread id that ran a function task."""


def _cpu_list(text: str) -> list[int]:
    """Read a Linux CPU list such as ``"0-2,5"`` (``Cpus_allowed_list``)."""
    ids: set[int] = set()
    for part in text.strip().split(","):
        if part:
            first, _, last = part.partition("-")
            ids.update(range(int(first), int(last or first) + 1))
    return sorted(ids)


def _mask(pid: int, tid: int) -> list[int] | None:
    """The CPU affinity of one thread; ``None`` once it is gone."""
    try:
        with open(f"/proc/{pid}/task/{tid}/status") as status:
            for line in status:
                if line.startswith("Cpus_allowed_list:"):
                    return _cpu_list(line.split(":", 1)[1])
    except OSError:
        return None
    return None


def _linux_only(h: Harness) -> None:
    if not hasattr(os, "sched_getaffinity") or not os.path.exists("/proc/self/status"):
        h.not_applicable("placement is checked through Linux CPU affinity and /proc")


def _where_task(
    h: Harness, *, function: bool, seconds: float = _HOLD, **request: Any
) -> tuple[dict[str, Any], Path]:
    """A task that records where it runs (see `_Seen`), holding it ``seconds``."""
    uid = h.uid("where")
    record = h.work_dir / f"{uid}.where"
    if function:
        task = h.function_task(_payloads.where, str(record), seconds, uid=uid)
        task["task_backend_specific_kwargs"] = dict(request)
        return task, record
    body = (
        "start=$(date +%s.%N)\n"
        "while read -r key value; do\n"
        '  if [ "$key" = "Cpus_allowed_list:" ]; then cpus=$value; fi\n'
        "done < /proc/$$/status\n"
        f"sleep {seconds}\n"
        'printf \'%s\\n%s\\n%s\\n%s\\n\' "$start" "$(date +%s.%N)" "$cpus" '
        f'"${{CUDA_VISIBLE_DEVICES-}}" > "{record}"'
    )
    task = h.executable_task(
        h.script(body, f"{uid}.sh"), uid=uid, shell=False, **request
    )
    return task, record


def _kinds(h: Harness) -> list[bool]:
    """Which kinds to build (``True``: function), functions first."""
    kinds = [
        kind
        for kind, cap in ((True, _C.FUNCTIONS), (False, _C.EXECUTABLES))
        if h.has(cap)
    ]
    if not kinds:
        h.not_applicable("the backend runs neither functions nor executables")
    return kinds


def _seen(h: Harness, task: dict[str, Any], path: Path, clause_id: str) -> _Seen:
    try:
        lines = path.read_text().split("\n")
        if task.get("function") is not None:
            pid, tid = int(lines[3]), int(lines[4])
            return _Seen(
                float(lines[0]), float(lines[1]), _cpu_list(lines[2]), None, (pid, tid)
            )
        gpus = [g for g in lines[3].split(",") if g]
        return _Seen(float(lines[0]), float(lines[1]), _cpu_list(lines[2]), gpus, None)
    except (OSError, ValueError, IndexError) as exc:
        h.fail(clause_id, f"the task left no readable record of where it ran ({exc})")


def _placement(h: Harness, task: dict[str, Any], clause_id: str) -> dict[str, Any]:
    record = task.get("placement")
    if not isinstance(record, dict):
        h.fail(
            clause_id,
            f"task ran but carries no placement to judge (placement={record!r})",
            task["uid"],
        )
    return record


def _expect_record(
    h: Harness,
    task: dict[str, Any],
    want: tuple[int, int, int],
    capacity: spec.ResourceCapacity,
) -> None:
    """Judge the shape of one placement (PL-1): ``want`` is cores, GPUs, MB."""
    uid = task["uid"]
    record = task.get("placement")
    if not isinstance(record, dict):
        h.expect(False, "PL-1", f"a task that ran has placement={record!r}", uid)
        return
    cores, gpus, memory = want
    host = record.get("host")
    h.expect(isinstance(host, str) and bool(host), "PL-1", f"host is {host!r}", uid)
    ids = record.get("cores", "missing")
    h.expect(
        ids is None
        or (
            isinstance(ids, (tuple, list))
            and all(isinstance(c, int) and not isinstance(c, bool) for c in ids)
            and len(set(ids)) == len(ids) == cores
        ),
        "PL-1",
        f"asked for {cores} core(s); placement cores is {ids!r}",
        uid,
    )
    devices = record.get("gpus", "missing")
    h.expect(
        isinstance(devices, (tuple, list))
        and all(isinstance(g, str) for g in devices)
        and len(set(devices)) == len(devices) == gpus,
        "PL-1",
        f"asked for {gpus} GPU(s); placement gpus is {devices!r}",
        uid,
    )
    granted = memory if capacity.memory is not None else 0
    mb = record.get("memory", "missing")
    h.expect(
        isinstance(mb, int) and not isinstance(mb, bool) and mb == granted,
        "PL-1",
        f"was granted {granted} MB; placement memory is {mb!r}",
        uid,
    )


@cites("PL-1")
async def placement_is_reported(h: Harness) -> None:
    """Every task that ran, DONE or FAILED, says where: host, cores, GPUs, memory."""
    _linux_only(h)
    capacity = _capacity(h, "PL-1")
    mb = 1 if capacity.memory else 0
    wanted: list[tuple[dict[str, Any], tuple[int, int, int]]] = []
    kinds = _kinds(h)
    for function in kinds:
        task, _ = _where_task(h, function=function, seconds=0, mem_per_rank=mb)
        wanted.append((task, (1, 0, mb)))
    if _C.FUNCTIONS in h.capabilities:
        wanted.append((h.function_task(_payloads.fail, "placed anyway"), (1, 0, 0)))
    if _C.EXECUTABLES in h.capabilities:
        every = capacity.cores
        task, _ = _where_task(h, function=False, seconds=0, cores_per_rank=every)
        wanted.append((task, (every, 0, 0)))
        wanted.append((h.executable_task("false"), (1, 0, 0)))
        if capacity.gpus:
            task, _ = _where_task(h, function=False, seconds=0, gpus_per_rank=1)
            wanted.append((task, (1, 1, 0)))
    states = await h.run([task for task, _ in wanted])
    for task, want in wanted:
        uid = task["uid"]
        if states[uid] is spec.TaskState.CANCELED:
            h.fail("PL-1", "a task nobody canceled ended CANCELED", uid)
        _expect_record(h, task, want, capacity)


@cites("PL-2")
async def running_tasks_share_no_ids(h: Harness) -> None:
    """Tasks running at once hold disjoint core and GPU ids, all the capacity's."""
    _linux_only(h)
    capacity = _capacity(h, "PL-2")
    kinds = _kinds(h)
    built = [
        _where_task(h, function=kinds[i % len(kinds)], cores_per_rank=1)
        for i in range(min(2 * capacity.cores, _MANY))
    ]
    if capacity.gpus and h.has(_C.EXECUTABLES):
        built += [
            _where_task(h, function=False, gpus_per_rank=1)
            for _ in range(min(2 * len(capacity.gpus), _MANY))
        ]
    await _run_spans(h, [task for task, _ in built], "PL-2")
    held: list[tuple[str, _Seen, set[int], set[str]]] = []
    for task, path in built:
        uid, record = task["uid"], _placement(h, task, "PL-2")
        cores = set(record.get("cores") or ())
        gpus = set(record.get("gpus") or ())
        h.expect(
            cores <= set(capacity.core_ids),
            "PL-2",
            f"placed on cores {sorted(cores)}, not all among the capacity's "
            f"core_ids {list(capacity.core_ids)}",
            uid,
        )
        h.expect(
            gpus <= set(capacity.gpus),
            "PL-2",
            f"placed on GPUs {sorted(gpus)}, not all among {list(capacity.gpus)}",
            uid,
        )
        held.append((uid, _seen(h, task, path, "PL-2"), cores, gpus))
    for i, (uid, seen, cores, gpus) in enumerate(held):
        for other, their, their_cores, their_gpus in held[i + 1 :]:
            if seen.start < their.end and their.start < seen.end:
                shared = sorted(cores & their_cores), sorted(gpus & their_gpus)
                h.expect(
                    not any(shared),
                    "PL-2",
                    f"shares cores {shared[0]} / GPUs {shared[1]} with {other}, "
                    "running at the same time",
                    uid,
                )


@cites("PL-3")
async def tasks_run_where_placed(h: Harness) -> None:
    """What each task sees (affinity, CUDA_VISIBLE_DEVICES) is its placement."""
    _linux_only(h)
    capacity = _capacity(h, "PL-3")
    built = []
    if h.has(_C.FUNCTIONS):
        built += [_where_task(h, function=True, seconds=0.05) for _ in range(2)]
    if h.has(_C.EXECUTABLES):
        built += [
            _where_task(h, function=False, seconds=0),
            _where_task(h, function=False, seconds=0, cores_per_rank=capacity.cores),
        ]
        if capacity.gpus:
            built.append(_where_task(h, function=False, seconds=0, gpus_per_rank=1))
    if not built:
        h.not_applicable("the backend runs neither functions nor executables")
    await _run_spans(h, [task for task, _ in built], "PL-3")
    for task, path in built:
        uid, record = task["uid"], _placement(h, task, "PL-3")
        seen = _seen(h, task, path, "PL-3")
        if record.get("cores") is not None:
            h.expect(
                seen.cores == sorted(record["cores"]),
                "PL-3",
                f"ran with CPU affinity {seen.cores}; its placement says "
                f"cores {record['cores']}",
                uid,
            )
        if seen.gpus is not None:
            h.expect(
                seen.gpus == list(record.get("gpus") or ()),
                "PL-3",
                f"saw CUDA_VISIBLE_DEVICES={','.join(seen.gpus)!r}; its placement "
                f"says GPUs {record.get('gpus')}",
                uid,
            )


def _threads() -> set[int]:
    return {int(tid) for tid in os.listdir("/proc/self/task")}


@cites("PL-4")
async def binding_is_undone(h: Harness) -> None:
    """Once no task is in flight, no thread that ran or spawned one is still bound."""
    _linux_only(h)
    capacity = _capacity(h, "PL-4")
    before = sorted(os.sched_getaffinity(0))
    old_threads = _threads()
    kinds = _kinds(h)
    built = [
        _where_task(h, function=kinds[i % len(kinds)], seconds=0.02)
        for i in range(min(4 * capacity.cores, _MANY))
    ]
    await _run_spans(h, [task for task, _ in built], "PL-4")
    pid = os.getpid()
    suspects = {(pid, threading.get_native_id()): "the event-loop thread"}
    for tid in _threads() - old_threads:
        suspects[(pid, tid)] = f"thread {tid}, started during the test"
    for task, path in built:
        thread = _seen(h, task, path, "PL-4").thread
        if thread is not None:
            suspects[thread] = f"thread {thread[1]} of pid {thread[0]}, which ran it"
    for (owner, tid), what in sorted(suspects.items()):
        mask = _mask(owner, tid)
        h.expect(
            mask is None or mask == before,
            "PL-4",
            f"no task is in flight, yet {what} is bound to cores {mask} "
            f"(it had {before})",
        )
