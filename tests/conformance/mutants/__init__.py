"""Deliberately broken backends: the proof that the conformance suite can fail.

`MUTANTS` is the table: one row per mutant, naming the clause it breaks, the
factory that builds it, and the clauses it unavoidably breaks as well. The
one-line description of the break is the first line of the mutant class's
docstring, after its ``"<clause>: "`` prefix. ``test_mutants.py`` runs the
suite on every row, restricted to the row's clause, and asserts the report
fails that clause; ``test_clause_coverage.py`` checks every MUST clause has
a row.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from mutants import local_mutants as local
from mutants import noop_mutants as noop
from mutants import placement_mutants as placement
from mutants import resource_mutants as resources
from mutants import service_mutants as services
from mutants import tutorial_mutants as tutorial

__all__ = ["MUTANTS", "Mutant"]


@dataclass(frozen=True)
class Mutant:
    """One row of the table.

    Attributes:
        clause: The clause the mutant breaks.
        factory: Builds the mutant (a zero-argument class).
        also_fails: Other clauses the break unavoidably trips as well; the
            test allows them (and only them) to fail alongside ``clause``.
    """

    clause: str
    factory: Callable[[], Any]
    also_fails: frozenset[str] = field(default_factory=frozenset)

    @property
    def name(self) -> str:
        """The mutant's class name."""
        return str(getattr(self.factory, "__name__", repr(self.factory)))

    @property
    def description(self) -> str:
        """What the mutant breaks, in one line (from its docstring)."""
        first = (self.factory.__doc__ or "").strip().splitlines()[0]
        return first.split(": ", 1)[-1].rstrip(".")

    @property
    def id(self) -> str:
        """``<clause>-<class name>``, for test IDs."""
        return f"{self.clause}:{self.name}"


def _row(clause: str, factory: Callable[[], Any], *also: str) -> Mutant:
    return Mutant(clause, factory, frozenset(also))


MUTANTS: tuple[Mutant, ...] = (
    # Lifecycle
    _row("LC-1", noop.NotReadyUntilStarted),
    _row("LC-1", noop.RefusesUntilAwaited),
    _row("LC-2", noop.AsyncState),
    _row("LC-3", noop.StateGoesBackToInitialized),
    _row("LC-4", noop.KeepsFirstCallback),
    _row("LC-5", noop.AwaitReturnsNone),
    _row("LC-6", noop.AsyncWithDoesNotShutDown),
    _row("LC-6", noop.AsyncWithBindsOther),
    _row("LC-7", noop.BritishStatesMap),
    _row("LC-8", noop.NameNotStr),
    # Submission
    _row("SB-1", noop.SubmitReturnsList),
    _row("SB-2", noop.DropsNonDicts),
    _row("SB-3", noop.DropsTasksWithoutUid),
    _row("SB-4", noop.IgnoresUidsInFlight),
    _row("SB-5", noop.NothingToRunIsDone),
    _row("SB-6", local.WrongCapabilityError),
    _row("SB-6", services.RunsServicesAsBatchTasks),
    _row("SB-7", noop.IgnoresSubmitAfterShutdown),
    _row("SB-8", noop.RejectsEmptyBatch),
    _row("SB-9", noop.OneFailureFailsBatch),
    _row("SB-10", noop.ReadsCallerList),
    # States and callbacks
    _row("ST-1", noop.StatesAsStrings),
    _row("ST-2", noop.LosesFailedTasks),
    _row("ST-3", noop.RunningTwice),
    _row("ST-4", noop.DeliversFromThread),
    _row("ST-5", noop.DeliversInsideSubmit),
    _row("ST-6", noop.DeliversCopy),
    _row("ST-7", noop.CallbackErrorStopsBatch),
    _row("ST-8", noop.CallbackCancelStopsBatch),
    # Results
    _row("RS-1", local.DropsKwargs),
    _row("RS-2", local.ForgetsAwaitedResult),
    _row("RS-3", local.LosesExceptionType),
    _row("RS-4", local.NonZeroExitIsDone),
    _row("RS-5", local.VagueExecutableError),
    _row("RS-6", local.IgnoresCaptureStdio),
    _row("RS-7", local.IgnoresEnv),
    _row("RS-8", local.PlainTimeoutError),
    _row("RS-9", local.DropsUnpicklableException),
    _row("RS-10", noop.RunsWhatItShouldNot),
    _row("RS-11", local.CaptureOutsideWorkDir),
    _row("RS-12", local.CrashFailsEveryTask),
    _row("RS-12", local.ResultExitBreaksPool),
    # Cancellation
    _row("CN-1", noop.CancelReturnsNone),
    _row("CN-2", noop.CancelUnknownRaises),
    _row("CN-3", noop.CancelFinishedSaysTrue),
    _row("CN-4", noop.CancelPromisesButCompletes),
    _row("CN-5", local.KillsOnlyTheLeader),
    _row("CN-5", local.NeverKills),
    _row("CN-6", local.QueuedTasksNotCancellable),
    _row("CN-7", local.WaitsForHeldPipes),
    _row("CN-8", local.CancelLeavesFunctionRunning),
    _row("CN-9", tutorial.LiesAboutThreadCancel),
    # Shutdown
    _row("SD-1", noop.SecondShutdownRaises),
    _row("SD-2", noop.ShutdownForgetsTasks),
    _row("SD-3", noop.CancelsAfterShutdownReturns, "SD-2", "ST-2"),
    _row("SD-4", local.ShutdownWaitsForFunctions),
    _row("SD-5", local.LeavesChildrenRunning),
    # Scale
    _row("SC-1", noop.KeepsFinishedTasks),
    _row("SC-2", noop.BatchTooLarge),
    _row("SC-3", noop.BlocksLoopOnSubmit),
    _row("SC-4", local.UnboundedChildren),
    # Engine compatibility
    _row("CP-1", noop.AttachedToTuple),
    _row("CP-2", noop.NarrowLinkHook),
    _row("CP-3", noop.RhapsodyBuildTask),
    _row("RS-13", resources.PromptAnswerInResponse),
    _row("RS-14", resources.PromptErrorAsString),
    _row("RQ-1", resources.Oversubscribes),
    _row("RQ-2", resources.OversizedWaitsForever),
    _row("RQ-3", resources.IgnoresMalformedRequests),
    _row("RQ-4", resources.SharesFirstGpu),
    _row("RQ-5", resources.StarvesLargeRequests),
    _row("RQ-6", resources.NoGpuSeesEvery),
    # Services
    _row("SV-1", services.StopsServicesOnceReady),
    _row("SV-2", services.NeverAnnouncesServices),
    _row("SV-2", services.AnnouncesEveryTask),
    _row("SV-3", services.CallbackOverwritesDoneFutures),
    _row("SV-4", services.IgnoresProbes),
    _row("SV-5", services.EarlyEndEndsAsItWould),
    _row("SV-6", services.ReadyServicesEndDone),
    _row("SV-7", services.StopsOnlyTheServiceLeader),
    _row("SV-8", services.GeneratorsRunToTheEnd),
    _row("PL-1", placement.OmitsPlacement),
    _row("PL-2", placement.LeaksCoreZero),
    _row("PL-3", placement.LiesAboutCores),
    _row("PL-4", placement.ForgetsToRestore),
)
"""Every mutant, in clause order."""
