"""aio.py: the byte budget that bounds decoded records in memory."""

from __future__ import annotations

import asyncio

from cloudtrail_adapter.aio import ByteBudget


async def test_a_reservation_waits_until_enough_is_released() -> None:
    budget = ByteBudget(100)
    await budget.reserve(70)
    waiting = asyncio.create_task(budget.reserve(40))
    await asyncio.sleep(0)
    assert not waiting.done() and budget.used == 70
    budget.release(20)
    assert await asyncio.wait_for(waiting, 1) == 40
    assert budget.used == 90


async def test_an_amount_over_the_whole_budget_waits_for_an_empty_budget_not_forever() -> None:
    budget = ByteBudget(100)
    await budget.reserve(10)
    huge = asyncio.create_task(budget.reserve(500))
    await asyncio.sleep(0)
    assert not huge.done()
    budget.release(10)
    assert await asyncio.wait_for(huge, 1) == 500
    assert not budget.fits(1), "over budget now: the next reservation waits"


async def test_resizing_an_estimate_down_wakes_a_waiter() -> None:
    budget = ByteBudget(100)
    estimate = await budget.reserve(100)
    waiting = asyncio.create_task(budget.reserve(30))
    await asyncio.sleep(0)
    assert budget.resize(estimate, 60) == 60
    assert await asyncio.wait_for(waiting, 1) == 30
    assert budget.used == 90
