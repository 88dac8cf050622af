"""The reconcile work queue (issue 25: per-key serialisation, several workers, no lost change)."""

from __future__ import annotations

import asyncio

from medusa_operator.controller.queue import WorkQueue


async def test_a_key_is_queued_once_however_often_it_is_added() -> None:
    queue: WorkQueue[str] = WorkQueue()
    for _ in range(5):
        queue.add("a")
    queue.add("b")
    assert len(queue) == 2
    assert [await queue.get(), await queue.get()] == ["a", "b"]


async def test_a_key_added_during_its_pass_comes_back_after_it_and_not_in_parallel() -> None:
    queue: WorkQueue[str] = WorkQueue()
    queue.add("a")
    key = await queue.get()
    queue.add("a")  # a change arrives while the pass runs
    assert len(queue) == 0, "no second worker may take the key while it is in a pass"
    queue.done(key)
    assert len(queue) == 1 and await queue.get() == "a"


async def test_add_after_keeps_the_earliest_time_and_forget_drops_it() -> None:
    queue: WorkQueue[str] = WorkQueue()
    queue.add_after("a", 30)
    queue.add_after("a", 0.05)
    queue.add_after("a", 60)
    assert await asyncio.wait_for(queue.get(), timeout=1) == "a"
    queue.done("a")
    queue.add_after("b", 0.05)
    queue.forget("b")
    await asyncio.sleep(0.1)
    assert len(queue) == 0


async def test_waiting_workers_each_get_a_different_key() -> None:
    queue: WorkQueue[int] = WorkQueue()
    workers = [asyncio.create_task(queue.get()) for _ in range(3)]
    await asyncio.sleep(0)
    for key in range(3):
        queue.add(key)
    got = await asyncio.wait_for(asyncio.gather(*workers), timeout=1)
    assert sorted(got) == [0, 1, 2]


async def test_the_wait_for_a_worker_is_told_from_when_the_key_was_queued() -> None:
    waits: list[float] = []
    queue: WorkQueue[str] = WorkQueue(on_wait=waits.append)
    queue.add("a")
    await asyncio.sleep(0.2)
    queue.add("a")  # already queued: its wait still counts from the first add
    assert await queue.get() == "a"
    queue.done("a")
    queue.add_after("b", 0.1)  # a timer's wait counts from when it fired, not from the add_after
    assert await asyncio.wait_for(queue.get(), timeout=1) == "b"
    assert len(waits) == 2 and waits[0] >= 0.2 and waits[1] < 0.1
