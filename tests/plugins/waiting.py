"""Wait for an observable condition with a deadline, never for a guessed amount of time.

``await wait_for(cond, timeout=10, what="the claim")`` polls ``cond`` (a plain or async callable)
until it returns something truthy and returns that value; after ``timeout`` seconds it fails the
test with ``what`` in the message. ``wait_until`` is the same for synchronous tests.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Callable
from typing import Any

INTERVAL = 0.02  # seconds between two checks


async def wait_for(
    cond: Callable[[], Any],
    *,
    timeout: float = 10.0,  # noqa: ASYNC109 - a deadline that fails with ``what``, no cancelling
    what: str,
    interval: float = INTERVAL,
) -> Any:
    """Poll ``cond()`` (awaited if it returns an awaitable) until truthy; fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = cond()
        if inspect.isawaitable(value):
            value = await value
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(interval)


def wait_until(
    cond: Callable[[], Any], *, timeout: float = 10.0, what: str, interval: float = INTERVAL
) -> Any:
    """:func:`wait_for` for synchronous tests (blocks the thread between checks)."""
    deadline = time.monotonic() + timeout
    while True:
        value = cond()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)
