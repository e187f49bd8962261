"""Two independent store steps at once (pipeline/together.py), as the worker and the router
run them."""

from __future__ import annotations

import asyncio

import pytest
from pymongo.errors import AutoReconnect, OperationFailure

from pipeline.together import together


async def step(name: str, delay: float, log: list[str]) -> str:
    log.append(f"{name} started")
    await asyncio.sleep(delay)
    log.append(f"{name} done")
    return name


async def test_both_results_in_order_and_the_steps_overlap() -> None:
    log: list[str] = []
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    assert await together(step("a", 0.2, log), step("b", 0.1, log)) == ("a", "b")
    assert loop.time() - t0 < 0.3  # at once, not one after the other
    assert log == ["a started", "b started", "b done", "a done"]


async def test_a_failure_lets_the_other_step_finish_then_is_raised_as_it_is() -> None:
    log: list[str] = []

    async def failing() -> None:
        await asyncio.sleep(0.01)
        raise AutoReconnect("store went away")

    # the worker's retry catches the driver's own error type: never an ExceptionGroup
    with pytest.raises(AutoReconnect, match="store went away"):
        await together(step("pass", 0.2, log), failing())
    # the other step was not cut off in the middle, and is over before the error arrives
    assert log == ["pass started", "pass done"]


async def test_when_both_fail_the_first_steps_error_is_raised() -> None:
    async def fail(exc: Exception) -> None:
        await asyncio.sleep(0)
        raise exc

    with pytest.raises(OperationFailure, match="first"):
        await together(fail(OperationFailure("first")), fail(AutoReconnect("second")))


async def test_cancelling_the_caller_cancels_both_steps() -> None:
    log: list[str] = []
    task = asyncio.ensure_future(together(step("a", 5, log), step("b", 5, log)))
    await asyncio.sleep(0.05)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await asyncio.sleep(0.05)
    assert log == ["a started", "b started"]


async def test_one_after_the_other_when_not_at_once() -> None:
    log: list[str] = []
    assert await together(step("a", 0.05, log), step("b", 0.01, log), at_once=False) == (
        "a",
        "b",
    )
    assert log == ["a started", "a done", "b started", "b done"]


@pytest.mark.filterwarnings("error::RuntimeWarning")  # "coroutine ... was never awaited"
async def test_one_after_the_other_a_failure_of_the_first_means_the_second_never_starts() -> None:
    log: list[str] = []

    async def failing() -> None:
        raise AutoReconnect("store went away")

    with pytest.raises(AutoReconnect):
        await together(failing(), step("b", 0.01, log), at_once=False)
    assert log == []
