"""api.admission: writes take turns; too many waiting, or waiting too long, is a 503."""

from __future__ import annotations

import asyncio

import pytest

from api.admission import WriteAdmission
from api.errors import ApiProblem


async def hold(admission: WriteAdmission, entered: list[int], n: int, gate: asyncio.Event) -> None:
    async with admission.turn():
        entered.append(n)
        await gate.wait()


async def test_at_most_concurrency_in_work_the_others_in_arrival_order() -> None:
    admission = WriteAdmission(concurrency=2, queue_limit=10, max_wait=5)
    gate, entered = asyncio.Event(), list[int]()
    tasks = [asyncio.create_task(hold(admission, entered, n, gate)) for n in range(5)]
    await asyncio.sleep(0.01)
    assert entered == [0, 1]
    assert admission.waiting == 3
    gate.set()
    await asyncio.gather(*tasks)
    assert entered == [0, 1, 2, 3, 4]
    assert admission.waiting == 0


async def test_past_the_queue_limit_a_write_is_refused_at_once() -> None:
    admission = WriteAdmission(concurrency=1, queue_limit=1, max_wait=60)
    gate, entered = asyncio.Event(), list[int]()
    first = asyncio.create_task(hold(admission, entered, 0, gate))
    second = asyncio.create_task(hold(admission, entered, 1, gate))
    await asyncio.sleep(0.01)
    with pytest.raises(ApiProblem) as refused:  # not after waiting: wait_for would time out
        await asyncio.wait_for(hold(admission, entered, 2, gate), 1)
    assert refused.value.status == 503 and refused.value.code == "overloaded"
    assert int(refused.value.headers["Retry-After"]) >= 1
    gate.set()
    await asyncio.gather(first, second)
    assert entered == [0, 1]


async def test_a_write_that_waits_too_long_is_refused_and_frees_its_place() -> None:
    admission = WriteAdmission(concurrency=1, queue_limit=10, max_wait=0.05)
    gate, entered = asyncio.Event(), list[int]()
    first = asyncio.create_task(hold(admission, entered, 0, gate))
    await asyncio.sleep(0.01)
    with pytest.raises(ApiProblem):
        async with admission.turn():
            pytest.fail("admitted while the only slot was held")
    assert admission.waiting == 0
    gate.set()
    await first
    async with admission.turn():  # the slot is free again, nothing leaked
        pass


async def test_a_failing_write_gives_its_slot_back() -> None:
    admission = WriteAdmission(concurrency=1, queue_limit=10, max_wait=0.5)
    with pytest.raises(RuntimeError):
        async with admission.turn():
            raise RuntimeError("the store said no")
    async with admission.turn():
        pass
