"""Two independent store steps at once.

SecantusDB (and MongoDB) serve several connections at once, so two steps that do not depend
on each other cost the longer of the two instead of their sum.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import TypeVar, cast

A = TypeVar("A")
B = TypeVar("B")


async def together(first: Awaitable[A], second: Awaitable[B]) -> tuple[A, B]:
    """Both results, in order. If a step fails, the other one is still run to its end before
    the error is raised as it is (the first step's if both fail; never an ExceptionGroup, so
    callers' ``except`` clauses for the driver's errors keep working): a retry never runs
    beside a leftover step of the attempt before, and a step with effects (a routing pass
    holding an agent's room) is never cut off in the middle. Cancelling the caller cancels
    both."""
    a, b = await asyncio.gather(first, second, return_exceptions=True)
    for result in (a, b):
        if isinstance(result, BaseException):
            raise result
    return cast(A, a), cast(B, b)
