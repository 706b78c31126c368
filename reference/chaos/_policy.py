"""`ChaosPolicy`: what the chaos backend decides, from the seed alone.

Pure: no loop, no backend. The policy checks the options once and answers,
for a task's uid, how its states are delayed, whether its RUNNING is
delivered, whether its cancel loses the race and whether its worker is
lost (`ChaosDecisions`); and how long a submit and a shutdown pause. The
wrapper (`reference.chaos.ChaosBackend`) applies it.
"""

from __future__ import annotations

import enum
import hashlib
import math
import struct
from dataclasses import dataclass

from reference._base import duration
from spec import TaskState, WorkerLostError

__all__ = ["ChaosDecisions", "ChaosPolicy", "RunningPolicy", "sends_late_running"]

_TWO_64 = float(1 << 64)
_SIX_WORDS = struct.Struct("<6Q")
_PERSON_TASK = b"chaos-task"
_PERSON_BACKEND = b"chaos-backend"
_PERSON_SUBMIT = b"chaos-submit"


class RunningPolicy(str, enum.Enum):
    """What the chaos backend does with a task's RUNNING state."""

    ON_TIME = "on_time"
    """Forwarded (after its own random delay) when the inner backend sends it."""
    OMITTED = "omitted"
    """Never delivered."""
    LATE = "late"
    """Held back and delivered just before the terminal state; also sent for a
    task that ends DONE when the inner backend sent no RUNNING (it did run)."""


@dataclass(frozen=True)
class ChaosDecisions:
    """Everything the chaos backend decides about one task, from (seed, uid).

    Attributes:
        uid: The task's uid.
        running: What happens to its RUNNING state.
        running_delay: Seconds an on-time RUNNING is held back.
        terminal_delay: Seconds its terminal state is held back.
        loses_cancel_race: Whether ``cancel_task`` first gives the task a
            chance to finish (and returns False if it does).
        worker_lost: Whether the task is failed with `spec.WorkerLostError`.
    """

    uid: str
    running: RunningPolicy
    running_delay: float
    terminal_delay: float
    loses_cancel_race: bool
    worker_lost: bool


def _rate(name: str, value: object) -> float:
    """Check a probability option: a real number in [0, 1]."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(
            f"{name} must be a number between 0 and 1, "
            f"got {type(value).__name__} {value!r}"
        )
    rate = float(value)
    if math.isnan(rate) or not 0.0 <= rate <= 1.0:
        raise ValueError(f"{name} must be between 0 and 1, got {value!r}")
    return rate


def _draws(seed: int, key: str, person: bytes) -> list[float]:
    """Six independent uniform draws in [0, 1) from (seed, key).

    A hash, not a shared random stream: a task's draws do not depend on which
    tasks came before it, so they replay whatever else the engine submits.
    """
    data = f"{seed}\x00{key}".encode("utf-8", "surrogatepass")
    digest = hashlib.blake2b(data, digest_size=48, person=person).digest()
    return [word / _TWO_64 for word in _SIX_WORDS.unpack(digest)]


@dataclass(frozen=True)
class ChaosPolicy:
    """The seed and the checked options; every decision is drawn from them.

    Build it with `ChaosPolicy.check`; the attributes are the chaos
    backend's options of the same names (see `reference.chaos.ChaosBackend`).
    """

    seed: int
    max_delay: float
    omit_running: float
    late_running: float
    lose_cancel: float
    cancel_wait: float
    shutdown_delay: float
    submit_delay: float
    worker_loss: float

    @classmethod
    def check(
        cls,
        seed: int,
        *,
        max_delay: float,
        omit_running: float,
        late_running: float,
        lose_cancel: float,
        cancel_wait: float,
        shutdown_delay: float,
        submit_delay: float,
        worker_loss: float,
    ) -> ChaosPolicy:
        """Check the options, naming the one at fault.

        Raises:
            TypeError: ``seed`` is not an int, or an option not a number.
            ValueError: A delay is negative, NaN or infinite, a share is
                outside [0, 1] or NaN, or ``omit_running + late_running``
                exceeds 1.
        """
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise TypeError(f"seed must be an int, got {type(seed).__name__} {seed!r}")
        policy = cls(
            seed=seed,
            max_delay=duration("max_delay", max_delay, zero_ok=True),
            omit_running=_rate("omit_running", omit_running),
            late_running=_rate("late_running", late_running),
            lose_cancel=_rate("lose_cancel", lose_cancel),
            cancel_wait=duration("cancel_wait", cancel_wait, zero_ok=True),
            shutdown_delay=duration("shutdown_delay", shutdown_delay, zero_ok=True),
            submit_delay=duration("submit_delay", submit_delay, zero_ok=True),
            worker_loss=_rate("worker_loss", worker_loss),
        )
        if policy.omit_running + policy.late_running > 1.0:
            raise ValueError(
                "omit_running + late_running must be at most 1, got "
                f"{omit_running!r} + {late_running!r}"
            )
        return policy

    def describe(self) -> str:
        """The seed and options, as ``repr()`` shows them."""
        return (
            f"seed={self.seed}, max_delay={self.max_delay:g}, "
            f"omit_running={self.omit_running:g}, "
            f"late_running={self.late_running:g}, "
            f"lose_cancel={self.lose_cancel:g}, cancel_wait={self.cancel_wait:g}, "
            f"shutdown_delay={self.shutdown_delay:g}, "
            f"submit_delay={self.submit_delay:g}, "
            f"worker_loss={self.worker_loss:g}"
        )

    def decisions(self, uid: str) -> ChaosDecisions:
        """Return what is decided for the task ``uid`` (a pure function of it)."""
        draws = _draws(self.seed, uid, _PERSON_TASK)
        if draws[0] < self.omit_running:
            running = RunningPolicy.OMITTED
        elif draws[0] < self.omit_running + self.late_running:
            running = RunningPolicy.LATE
        else:
            running = RunningPolicy.ON_TIME
        return ChaosDecisions(
            uid=uid,
            running=running,
            running_delay=draws[1] * self.max_delay,
            terminal_delay=draws[2] * self.max_delay,
            loses_cancel_race=draws[3] < self.lose_cancel,
            worker_lost=draws[4] < self.worker_loss,
        )

    def worker_loss_error(self, uid: str) -> WorkerLostError:
        """The error of a task whose worker the policy lost (``worker_lost``)."""
        return WorkerLostError(
            f"the worker running task {uid!r} was lost "
            f"(ChaosBackend seed={self.seed}, worker_loss={self.worker_loss:g})"
        )

    def submit_pause(self, first_uid: str) -> float:
        """Seconds a batch is held back: a seeded 0-100% of ``submit_delay``."""
        return self.submit_delay * _draws(self.seed, first_uid, _PERSON_SUBMIT)[0]

    def shutdown_pause(self) -> float:
        """Seconds shutdown keeps delivering: a seeded 50-100% of ``shutdown_delay``."""
        draw = _draws(self.seed, "", _PERSON_BACKEND)[0]
        return self.shutdown_delay * (0.5 + 0.5 * draw)


def sends_late_running(
    decisions: ChaosDecisions, saw_running: bool, terminal: TaskState
) -> bool:
    """Whether a RUNNING held back (LATE) goes out just before ``terminal``.

    When the inner backend sent one, or the task ended DONE without one: it
    did run (ST-4: RUNNING at most once, and only before the terminal state).
    """
    return decisions.running is RunningPolicy.LATE and (
        saw_running or terminal is TaskState.DONE
    )
