"""Resources: requests are honoured, refused, or failed, never left hanging.

Every test reads the backend's ``capacity`` (`spec.SupportsResources`) and
sizes its tasks from it, so it runs on any backend that declares the
``resources`` capability. Tasks record when they ran; overlap is judged from
those timestamps, not from the order of callbacks.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import spec
from conformance import _payloads
from conformance.harness import Harness
from conformance.registry import cites

_C = spec.Capability
_HOLD = 0.2
"""Seconds each span task holds its resources: long enough to overlap."""

MALFORMED: tuple[tuple[str, Any], ...] = (
    ("ranks", 0),
    ("ranks", -2),
    ("ranks", True),
    ("ranks", 1.5),
    ("cores_per_rank", 0),
    ("cores_per_rank", "2"),
    ("gpus_per_rank", -0.5),
    ("gpus_per_rank", float("nan")),
    ("gpus_per_rank", "one"),
    ("mem_per_rank", -1),
    ("mem_per_rank", None),
)
"""Requests a backend with ``resources`` must fail, naming key and value (RQ-3)."""


def _capacity(h: Harness, clause_id: str) -> spec.ResourceCapacity:
    capacity = getattr(h.backend, "capacity", None)
    if not isinstance(capacity, spec.ResourceCapacity):
        h.fail(
            clause_id,
            "a backend declaring 'resources' must have a capacity property "
            f"returning spec.ResourceCapacity, got {capacity!r}",
        )
    return capacity


def _span_task(
    h: Harness, seconds: float, **request: Any
) -> tuple[dict[str, Any], Path]:
    """A task that holds its request for ``seconds`` and records when it ran.

    A function where the backend runs functions (unless it asks for GPUs),
    else an executable; the executable also records ``CUDA_VISIBLE_DEVICES``.
    """
    uid = h.uid("span")
    record = h.work_dir / f"{uid}.span"
    if h.has(_C.FUNCTIONS) and not request.get("gpus_per_rank"):
        task = h.function_task(_payloads.span, str(record), seconds, uid=uid)
        task["task_backend_specific_kwargs"] = dict(request)
        return task, record
    if not h.has(_C.EXECUTABLES):
        h.not_applicable("the backend runs neither functions nor executables")
    body = (
        f"start=$(date +%s.%N); sleep {seconds}; "
        f'echo "$start $(date +%s.%N) ${{CUDA_VISIBLE_DEVICES-unset}}" > "{record}"'
    )
    task = h.executable_task(
        h.script(body, f"{uid}.sh"), uid=uid, shell=False, **request
    )
    return task, record


def _spans(
    h: Harness, records: dict[str, Path], clause_id: str
) -> dict[str, list[str]]:
    """Read each task's ``start end [devices]`` record, failing if one is missing."""
    spans: dict[str, list[str]] = {}
    for uid, path in records.items():
        try:
            spans[uid] = path.read_text().split()
        except FileNotFoundError:
            h.fail(clause_id, "a task reported DONE left no record of its run", uid)
    return spans


def _overlapping(spans: dict[str, list[str]], uid: str) -> list[str]:
    """The tasks running at the moment ``uid`` started (itself included)."""
    start = float(spans[uid][0])
    return [
        other
        for other, (begin, end, *_) in spans.items()
        if float(begin) <= start < float(end)
    ]


async def _run_spans(h: Harness, tasks: list[dict[str, Any]], clause_id: str) -> None:
    states = await h.run(tasks)
    for task in tasks:
        uid = task["uid"]
        h.check(
            states[uid] is spec.TaskState.DONE,
            clause_id,
            f"a task whose request fits the capacity ended {states[uid]} "
            f"({task.get('exception')!r})",
            uid,
        )


@cites("RQ-1")
async def running_requests_fit_the_capacity(h: Harness) -> None:
    """Tasks asking for half the cores each never run more than two at once."""
    capacity = _capacity(h, "RQ-1")
    each = max(1, capacity.cores // 2)
    built = [_span_task(h, _HOLD, cores_per_rank=each) for _ in range(5)]
    tasks = [task for task, _ in built]
    await _run_spans(h, tasks, "RQ-1")
    spans = _spans(h, {t["uid"]: path for t, path in built}, "RQ-1")
    for uid in spans:
        together = _overlapping(spans, uid)
        h.check(
            len(together) * each <= capacity.cores,
            "RQ-1",
            f"{len(together)} tasks of {each} core(s) each ran at once "
            f"({', '.join(sorted(together))}) on {capacity.cores} core(s)",
            uid,
        )


@cites("RQ-2")
async def oversized_request_fails_at_once(h: Harness) -> None:
    """A request for more than the whole capacity is FAILED promptly."""
    capacity = _capacity(h, "RQ-2")
    requests: list[dict[str, Any]] = [{"cores_per_rank": capacity.cores + 1}]
    if capacity.memory is not None:
        requests.append({"mem_per_rank": capacity.memory + 1})
    if capacity.gpus and h.has(_C.EXECUTABLES):
        requests.append({"gpus_per_rank": len(capacity.gpus) + 1})
    tasks = []
    for request in requests:
        task = h.runnable_task()
        if task.get("function") is not None and request.get("gpus_per_rank"):
            task = h.executable_task("true")
        task["task_backend_specific_kwargs"] = request
        tasks.append(task)
    await h.submit(tasks)
    limit = min(5.0, h.remaining())
    states = await h.wait_terminal([t["uid"] for t in tasks], limit, clause_id="RQ-2")
    for task in tasks:
        uid = task["uid"]
        h.check(
            states[uid] is spec.TaskState.FAILED,
            "RQ-2",
            f"request {task['task_backend_specific_kwargs']} ended {states[uid]}",
            uid,
        )
        h.check(
            isinstance(task.get("exception"), spec.ResourceUnavailableError),
            "RQ-2",
            f"request {task['task_backend_specific_kwargs']} failed with "
            f"{task.get('exception')!r}, not ResourceUnavailableError",
            uid,
        )


@cites("RQ-3")
async def malformed_request_fails_naming_it(h: Harness) -> None:
    """Each malformed request is FAILED with an error naming key and value."""
    tasks = []
    for key, value in MALFORMED:
        task = h.runnable_task()
        task["task_backend_specific_kwargs"] = {key: value}
        tasks.append(task)
    states = await h.run(tasks)
    for (key, value), task in zip(MALFORMED, tasks, strict=True):
        uid = task["uid"]
        h.check(
            states[uid] is spec.TaskState.FAILED,
            "RQ-3",
            f"request {{{key!r}: {value!r}}} ended {states[uid]}",
            uid,
        )
        message = str(task.get("exception"))
        h.check(
            key in message and str(value) in message,
            "RQ-3",
            f"request {{{key!r}: {value!r}}} failed with {message!r}, which "
            "does not name the key and the value",
            uid,
        )


@cites("RQ-4", requires=[_C.EXECUTABLES])
async def gpus_are_exclusive(h: Harness) -> None:
    """Executables asking for one GPU each see one, never one in use by another."""
    capacity = _capacity(h, "RQ-4")
    if not capacity.gpus:
        h.not_applicable("the backend has no GPUs to hand out")
    built = [
        _span_task(h, _HOLD, gpus_per_rank=1) for _ in range(2 * len(capacity.gpus))
    ]
    await _run_spans(h, [task for task, _ in built], "RQ-4")
    spans = _spans(h, {t["uid"]: path for t, path in built}, "RQ-4")
    for uid, (_, _, *devices) in spans.items():
        seen = devices[0].split(",") if devices else []
        h.check(
            len(seen) == 1 and seen[0] in capacity.gpus,
            "RQ-4",
            f"asked for 1 GPU of {list(capacity.gpus)}, saw "
            f"CUDA_VISIBLE_DEVICES={devices[0] if devices else 'unset'}",
            uid,
        )
        for other in _overlapping(spans, uid):
            if other != uid:
                h.check(
                    spans[other][2:] != devices,
                    "RQ-4",
                    f"shares GPU {devices} with {other}, running at the same time",
                    uid,
                )


@cites("RQ-5")
async def large_request_is_not_starved(h: Harness) -> None:
    """A whole-capacity task runs although one-core tasks keep arriving."""
    capacity = _capacity(h, "RQ-5")
    cores = capacity.cores
    big_uid = h.uid("big")
    # Staggered, so cores come free one at a time, never all at once.
    small = [
        _span_task(h, _HOLD * (1 + i / cores), cores_per_rank=1)[0]
        for i in range(cores)
    ]
    big, _ = _span_task(h, 0.05, cores_per_rank=cores)
    big["uid"] = big_uid
    waiting = [_span_task(h, _HOLD, cores_per_rank=1)[0] for _ in range(cores)]
    await h.submit([*small, big, *waiting])
    small.extend(waiting)

    def ended() -> int:
        return sum(
            1 for t in small if any(spec.is_terminal(s) for s in h.delivered(t["uid"]))
        )

    # Two new one-core tasks for each that ends, as from a busy engine: one
    # is always waiting, so a backend that lets it overtake never starts the
    # big one. Driven by states, not by time, so load cannot thin the stream.
    seen = 0

    def moved() -> bool:
        return ended() > seen or bool(h.delivered(big_uid))

    while not h.delivered(big_uid) and len(small) < 12 * cores:
        await h.wait_for(
            moved,
            "RQ-5",
            f"the task asking for all {cores} cores never started, while "
            f"{len(small)} one-core tasks were let in",
        )
        now = ended()
        fresh = [
            _span_task(h, _HOLD, cores_per_rank=1)[0] for _ in range(2 * (now - seen))
        ]
        seen = now
        await h.submit(fresh)
        small.extend(fresh)
    h.check(
        bool(h.delivered(big_uid)),
        "RQ-5",
        f"the task asking for all {cores} cores had not started after "
        f"{len(small)} one-core tasks were let in",
        big_uid,
    )
    states = await h.wait_terminal(
        [big_uid, *(t["uid"] for t in small)], clause_id="RQ-5"
    )
    h.check(
        states[big_uid] is spec.TaskState.DONE,
        "RQ-5",
        f"the task asking for all {cores} cores ended {states[big_uid]} "
        f"({big.get('exception')!r})",
        big_uid,
    )


@cites("RQ-6", requires=[_C.EXECUTABLES])
async def no_gpu_granted_sees_none(h: Harness) -> None:
    """Executables asking for no GPU see ``CUDA_VISIBLE_DEVICES`` set and empty.

    One inherits the environment, one lists every GPU in its own ``env``; a
    GPU task holds one meanwhile. Unset would let CUDA use every device,
    the held one too.
    """
    capacity = _capacity(h, "RQ-6")
    if not capacity.gpus:
        h.not_applicable("the backend has no GPUs to hand out")
    every = ",".join(capacity.gpus)
    own_env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "CUDA_VISIBLE_DEVICES": every,
    }
    tasks = [_span_task(h, _HOLD, gpus_per_rank=1)[0]]
    records: dict[str, tuple[Path, str]] = {}
    for env, how in ((None, "inheriting the environment"), (own_env, "its env")):
        uid = h.uid("nogpu")
        record = h.work_dir / f"{uid}.gpus"
        records[uid] = (record, how)
        body = f'echo "[${{CUDA_VISIBLE_DEVICES-unset}}]" > "{record}"'
        options: dict[str, Any] = {"shell": False}
        if env is not None:
            options["env"] = env
        script = h.script(body, f"{uid}.sh")
        tasks.append(h.executable_task(script, uid=uid, **options))
    await _run_spans(h, tasks, "RQ-6")
    for uid, (record, how) in records.items():
        try:
            seen = record.read_text().strip()[1:-1]
        except FileNotFoundError:
            h.fail("RQ-6", "a task reported DONE left no record of its run", uid)
        h.check(
            seen == "",
            "RQ-6",
            f"asked for no GPU ({how} listing {every}), saw "
            f"CUDA_VISIBLE_DEVICES={seen}; it must be set and empty",
            uid,
        )
