"""`ContractMonitor`: a runtime validator that wraps any execution backend.

Like ``wsgiref.validate``, it sits between the engine and the backend, proxies
every call and every state callback, and checks the universal rules on each
of them, over time:

* a batch the contract says to reject is rejected with the right spec error,
  and a valid one is accepted (SB-1..SB-7);
* every delivered state is a `spec.TaskState` member (ST-1), follows
  `spec.TASK_TRANSITIONS` (ST-2, ST-3), arrives on the thread of the loop that
  submitted the task (ST-4), never from inside ``submit_tasks`` or
  ``cancel_task`` (ST-5), with the very dict that was submitted (ST-6), only
  to the callback registered last (LC-4), never after ``shutdown()`` has
  returned (SD-3);
* ``state()`` is synchronous, returns a `spec.BackendState` member and only
  moves along `spec.BACKEND_TRANSITIONS` (LC-2, LC-3);
* ``cancel_task`` returns a bool, ``False`` for unknown or finished uids, and
  a task it promised to cancel ends ``CANCELED`` (CN-1..CN-4);
* when ``shutdown()`` returns, every accepted task has a terminal state and
  ``state()`` is ``SHUTDOWN`` (SD-2, LC-3).

A violation raises `ContractViolation` (``on_violation="raise"``, the default)
and is always appended to `ContractMonitor.violations` too, because a
backend may swallow an exception raised inside its callback path. With
``on_violation="record"`` nothing is raised and the caller inspects
`violations` (the conformance suite does this, so one broken rule does not
cascade into unrelated failures).

The package is three parts: `conformance.monitor._recorder` keeps the event
trace and the violations, `conformance.monitor._findings` and
`conformance.monitor._ledger` hold the rules and what the monitor knows about
the backend, judging each observation (pure, tested without a loop or
threads), and `conformance.monitor._proxy` is the `ContractMonitor`
that makes the calls and joins the two.

Use it in an engine (`watch` and ``ContractMonitor(...)`` are the same
factory: they build the class that offers ``await`` / ``async with`` exactly
when the backend does)::

    backend = watch(MyBackend())
    backend.register_callback(engine_callback)  # the engine's, wrapped
    await backend.submit_tasks(tasks)
"""

from conformance.monitor._proxy import (
    AwaitableContextMonitor,
    AwaitableMonitor,
    ContextMonitor,
    ContractMonitor,
    monitor_class,
    watch,
)
from conformance.monitor._recorder import KEPT_PER_CLAUSE

__all__ = [
    "KEPT_PER_CLAUSE",
    "AwaitableContextMonitor",
    "AwaitableMonitor",
    "ContextMonitor",
    "ContractMonitor",
    "monitor_class",
    "watch",
]
