"""Two independent store steps at once, while they are small.

SecantusDB (and MongoDB) serve several connections at once, so two small steps that do not
depend on each other cost the longer of the two instead of their sum: at 100 messages/s the
worker's batches of ~8 messages were written in 41-48 ms instead of 44-58, and offers reached
agents sooner (bench/HISTORY.md, 2026-11-24 07:30-09:00 UTC).

Large steps go one after the other: with batches of 500 two big commands at once cost
SecantusDB more CPU (its connections are threads sharing one interpreter lock: 86 % of a core
against 79 %) and identity resolution was 7-9 % slower. Callers pass ``at_once`` from the size
of what they write (:data:`AT_ONCE_MAX`).
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable
from typing import TypeVar, cast

A = TypeVar("A")
B = TypeVar("B")

AT_ONCE_MAX = 50
"""documents (messages, conversations) up to which two steps run at once"""


async def together(
    first: Awaitable[A], second: Awaitable[B], *, at_once: bool = True
) -> tuple[A, B]:
    """Both results, in order; at once, or one after the other if not ``at_once``.

    At once: if a step fails, the other one is still run to its end before the error is
    raised as it is (the first step's if both fail; never an ExceptionGroup, so callers'
    ``except`` clauses for the driver's errors keep working): a retry never runs beside a
    leftover step of the attempt before, and a step with effects (a routing pass holding an
    agent's room) is never cut off in the middle. Cancelling the caller cancels both.
    One after the other: a failure of the first means the second never starts."""
    if not at_once:
        try:
            a = await first
        except BaseException:
            if inspect.iscoroutine(second):
                second.close()  # never started: no "never awaited" warning
            raise
        return a, await second
    ra, rb = await asyncio.gather(first, second, return_exceptions=True)
    for result in (ra, rb):
        if isinstance(result, BaseException):
            raise result
    return cast(A, ra), cast(B, rb)
