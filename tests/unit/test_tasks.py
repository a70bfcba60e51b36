"""sessions.adapters.tasks.stop: a task that swallows its cancellation is stopped all the same."""

from __future__ import annotations

import asyncio

import pytest

from sessions.adapters.tasks import stop

pytestmark = pytest.mark.unit


async def swallows_one_cancellation(ticks: list[int]) -> None:
    """As a loop does when redis-py swallows the cancellation of the command it awaits."""
    swallowed = False
    while True:
        try:
            await asyncio.sleep(0.01)
        except asyncio.CancelledError:
            if swallowed:
                raise
            swallowed = True  # lost: the loop goes on
        ticks.append(1)


async def test_a_task_that_swallows_its_cancellation_is_stopped() -> None:
    ticks: list[int] = []
    task = asyncio.create_task(swallows_one_cancellation(ticks))
    await asyncio.sleep(0.03)
    task.cancel()  # what a shutdown did before: it then waited forever
    done, _ = await asyncio.wait({task}, timeout=0.2)
    assert not done

    await asyncio.wait_for(stop(task), timeout=2)
    assert task.cancelled()


async def test_finished_and_failed_tasks_are_left_as_they_are() -> None:
    async def fail() -> None:
        raise RuntimeError("boom")

    finished = asyncio.create_task(asyncio.sleep(0))
    failed = asyncio.create_task(fail())
    await asyncio.sleep(0.01)
    await stop(finished, failed)  # the failure is retrieved, not raised or reported
    assert finished.done() and not finished.cancelled()
    assert isinstance(failed.exception(), RuntimeError)
