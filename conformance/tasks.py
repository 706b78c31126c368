"""Task builders: the task dicts a conformance test submits.

`TaskBuilder` is what `conformance.harness.Harness` inherits its builders
from (``h.function_task(...)``, ``h.blocker()``, ...): it needs only the
backend's capabilities and the test's work directory, so a test (or a tool
of your own) can build the same tasks without a harness.
"""

from __future__ import annotations

import itertools
import os
import stat
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, NoReturn

import spec
from conformance import _payloads, processes
from conformance.errors import NotApplicable

__all__ = ["BLOCK_LIMIT", "Blocker", "TaskBuilder"]

BLOCK_LIMIT = 20.0
"""Seconds a blocking task waits for its release before ending on its own."""


class Blocker:
    """A task that runs until released, with a file telling when it started.

    Attributes:
        task: The task dict to submit.
        started: Path created once the task runs.
        release: Path whose creation lets it finish.
    """

    def __init__(self, task: dict[str, Any], started: Path, release: Path) -> None:
        self.task = task
        self.started = started
        self.release = release

    @property
    def uid(self) -> str:
        """The task's uid."""
        return str(self.task["uid"])

    def let_go(self) -> None:
        """Let the task finish."""
        self.release.touch()


class TaskBuilder:
    """Builds task dicts for one test: unique uids, scripts in its work dir.

    Args:
        capabilities: What the backend declares; decides which kind of task
            `runnable_task` and `blocker` build.
        work_dir: The test's private directory (scripts and marker files).

    Attributes:
        capabilities: As given.
        work_dir: As given.
        blockers: Every `Blocker` built so far (see `release_all`).
    """

    def __init__(
        self, capabilities: frozenset[spec.Capability], work_dir: Path
    ) -> None:
        self.capabilities = capabilities
        self.work_dir = work_dir
        self.blockers: list[Blocker] = []
        self._uids = itertools.count(1)

    def has(self, capability: spec.Capability) -> bool:
        """Tell whether the backend declares ``capability``."""
        return capability in self.capabilities

    def not_applicable(self, reason: str) -> NoReturn:
        """End the test as not applicable to this backend.

        Raises:
            NotApplicable: Always.
        """
        raise NotApplicable(reason)

    def uid(self, prefix: str = "task") -> str:
        """Return a uid unique within this test."""
        return f"{prefix}.{next(self._uids):06d}"

    def function_task(
        self,
        func: Callable[..., Any],
        *args: Any,
        uid: str | None = None,
        **kwargs: Any,
    ) -> dict[str, Any]:
        """Build a function task calling ``func(*args, **kwargs)``."""
        return {
            "uid": uid or self.uid("function"),
            "name": getattr(func, "__name__", "function"),
            "function": func,
            "args": list(args),
            "kwargs": dict(kwargs),
            "executable": None,
            "arguments": [],
            "task_backend_specific_kwargs": {},
        }

    def executable_task(
        self,
        executable: str,
        arguments: Iterable[str] = (),
        *,
        uid: str | None = None,
        capture_stdio: bool = False,
        **backend_kwargs: Any,
    ) -> dict[str, Any]:
        """Build an executable task.

        ``backend_kwargs`` become its ``task_backend_specific_kwargs``.
        """
        return {
            "uid": uid or self.uid("executable"),
            "name": os.path.basename(executable),
            "function": None,
            "args": [],
            "kwargs": {},
            "executable": executable,
            "arguments": list(arguments),
            "capture_stdio": capture_stdio,
            "task_backend_specific_kwargs": dict(backend_kwargs),
        }

    def prompt_task(
        self, prompt: str = "say hello", uid: str | None = None
    ) -> dict[str, Any]:
        """Build a prompt task."""
        return {
            "uid": uid or self.uid("prompt"),
            "name": "prompt",
            "function": None,
            "executable": None,
            "prompt": prompt,
            "task_backend_specific_kwargs": {},
        }

    def script(self, body: str, name: str = "script.sh") -> str:
        """Write an executable ``/bin/sh`` script into the work dir; return its path."""
        path = self.work_dir / name
        path.write_text("#!/bin/sh\n" + body + "\n")
        path.chmod(path.stat().st_mode | stat.S_IXUSR)
        return str(path)

    def runnable_task(self, uid: str | None = None) -> dict[str, Any]:
        """Build a quick task this backend can run to ``DONE``, whatever it offers."""
        if self.has(spec.Capability.FUNCTIONS) or self.has(spec.Capability.DRY_RUN):
            return self.function_task(_payloads.echo, "ok", uid=uid)
        if self.has(spec.Capability.EXECUTABLES):
            return self.executable_task("true", uid=uid)
        if self.has(spec.Capability.PROMPTS):
            return self.prompt_task(uid=uid)
        self.not_applicable("the backend runs no kind of task")

    def can_block(self) -> bool:
        """Tell whether `blocker` can build a task that runs until released."""
        if self.has(spec.Capability.DRY_RUN):
            return False
        return self.has(spec.Capability.FUNCTIONS) or self.has(
            spec.Capability.EXECUTABLES
        )

    def blocker(self, uid: str | None = None) -> Blocker:
        """Build a task that runs until released (at most `BLOCK_LIMIT` s).

        A function task where the backend runs functions, else an executable.
        Not applicable to a backend that runs neither (or runs nothing).
        """
        if not self.can_block():
            self.not_applicable("the backend cannot run a task that blocks")
        uid = uid or self.uid("blocker")
        started = self.work_dir / f"{uid}.started"
        release = self.work_dir / f"{uid}.release"
        if self.has(spec.Capability.FUNCTIONS):
            task = self.function_task(
                _payloads.block, str(started), str(release), BLOCK_LIMIT, uid=uid
            )
        else:
            loop = (
                f'touch "{started}"; i=0; '
                f'while [ ! -e "{release}" ] && [ -d "{self.work_dir}" ] '
                f"&& [ $i -lt {int(BLOCK_LIMIT * 20)} ]; "
                "do sleep 0.05; i=$((i+1)); done"
            )
            task = self.executable_task(self.script(loop, f"{uid}.sh"), uid=uid)
        blocker = Blocker(task, started, release)
        self.blockers.append(blocker)
        return blocker

    def process_tree(self, uid: str | None = None) -> tuple[Blocker, Path]:
        """Build an executable task that starts a child and waits for it.

        The script writes its own pid and its child's to a file, then marks
        itself started; the child sleeps for a minute. Used to check that
        cancel and shutdown kill the whole process group (CN-5, SD-5).

        Returns:
            The blocker (its release is ignored) and the path of the pid file.
        """
        uid = uid or self.uid("tree")
        started = self.work_dir / f"{uid}.started"
        pids = self.work_dir / f"{uid}.pids"
        body = (
            "sleep 60 &\n"
            f'echo $! > "{pids}"\n'
            f'echo $$ >> "{pids}"\n'
            f'touch "{started}"\n'
            "wait"
        )
        task = self.executable_task(self.script(body, f"{uid}.sh"), uid=uid)
        blocker = Blocker(task, started, self.work_dir / f"{uid}.release")
        return blocker, pids

    @staticmethod
    def read_pids(path: Path) -> dict[int, processes.ProcessInfo]:
        """Read the pids a `process_tree` task wrote, with their identities."""
        pids = [int(line) for line in path.read_text().split() if line.strip()]
        return processes.snapshot(pids)

    def release_all(self) -> None:
        """Let every blocker of this test finish."""
        for blocker in self.blockers:
            if blocker.release.parent.is_dir():
                blocker.let_go()
