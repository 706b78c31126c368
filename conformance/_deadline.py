"""`within`: a deadline on an awaitable that lets no loop turn pass on return."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import TypeVar

__all__ = ["within"]

_T = TypeVar("_T")


async def within(awaitable: Awaitable[_T], seconds: float) -> _T:
    """Await ``awaitable`` for at most ``seconds``, in the current task.

    Unlike ``asyncio.wait_for`` on Python < 3.12, no extra task is created,
    so no loop turn passes between the call returning and the caller resuming
    (tests that check what happened *during* a call rely on that).

    Raises:
        asyncio.TimeoutError: The time ran out.
    """
    timeout = getattr(asyncio, "timeout", None)
    if timeout is not None:
        async with timeout(seconds):
            return await awaitable
    # Python 3.10 has no asyncio.timeout, and its wait_for runs the awaitable
    # in a task of its own (a loop turn before the caller resumes): cancel
    # the current task at the deadline instead.
    task = asyncio.current_task()
    assert task is not None  # called from a coroutine run as a task
    expired = False

    def expire() -> None:
        nonlocal expired
        expired = True
        task.cancel()

    handle = asyncio.get_running_loop().call_later(seconds, expire)
    try:
        return await awaitable
    except asyncio.CancelledError:
        if expired:
            raise asyncio.TimeoutError from None
        raise
    finally:
        handle.cancel()
