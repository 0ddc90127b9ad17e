"""The admission queue: FIFO order, runtime limit changes, shedding, timeouts, cancellation."""
from __future__ import annotations

import asyncio

import pytest
from hypothesis import given, settings, strategies as st

from trimtab.collectors.admission import Admission, QueueFull, QueueTimeout


def run(coro):
    return asyncio.run(coro)


def test_fifo_order_and_release_admits_the_oldest():
    async def scenario():
        adm = Admission(limit=1, max_queue=10)
        await adm.acquire(1)
        order = []

        async def waiter(i):
            await adm.acquire(1)
            order.append(i)

        tasks = [asyncio.create_task(waiter(i)) for i in range(5)]
        await asyncio.sleep(0)
        assert adm.queued == 5
        for _ in range(5):
            adm.release()
            await asyncio.sleep(0)
        await asyncio.gather(*tasks)
        assert order == [0, 1, 2, 3, 4]
    run(scenario())


def test_raising_the_limit_admits_waiters_at_once_lowering_never_preempts():
    async def scenario():
        adm = Admission(limit=2, max_queue=10)
        await adm.acquire(1)
        await adm.acquire(1)
        tasks = [asyncio.create_task(adm.acquire(1)) for _ in range(3)]
        await asyncio.sleep(0)
        adm.set_limit(4)
        await asyncio.sleep(0)
        assert adm.in_flight == 4 and adm.queued == 1
        adm.set_limit(1)                       # 4 in flight stay; the waiter waits for 1 slot
        for _ in range(3):
            adm.release()
        await asyncio.sleep(0)
        assert adm.in_flight == 1 and adm.queued == 1
        adm.release()
        await asyncio.sleep(0)
        assert adm.in_flight == 1 and adm.queued == 0
        await asyncio.gather(*tasks)
    run(scenario())


def test_queue_full_is_refused_immediately():
    async def scenario():
        adm = Admission(limit=1, max_queue=2)
        await adm.acquire(1)
        waiting = [asyncio.create_task(adm.acquire(5)) for _ in range(2)]
        await asyncio.sleep(0)
        with pytest.raises(QueueFull):
            await adm.acquire(5)
        for t in waiting:
            t.cancel()
        await asyncio.gather(*waiting, return_exceptions=True)
        assert adm.queued == 0 and adm.in_flight == 1
    run(scenario())


def test_timeout_leaves_the_queue_and_frees_its_place():
    async def scenario():
        adm = Admission(limit=1, max_queue=1)
        await adm.acquire(1)
        with pytest.raises(QueueTimeout):
            await adm.acquire(0.02)
        assert adm.queued == 0
        adm.release()
        assert adm.in_flight == 0
    run(scenario())


@pytest.mark.parametrize("new_timeout_s, shed_by_s", [
    (0.05, 0.5),       # shorter than they have waited: shed at once
    (0.4, 0.6),        # shorter than they were given: shed at the new deadline
], ids=["already-late", "new-deadline"])
def test_a_new_timeout_reaches_those_already_waiting(new_timeout_s, shed_by_s):
    async def scenario():
        loop = asyncio.get_running_loop()
        adm = Admission(limit=1, max_queue=5)
        await adm.acquire(1)
        t0 = loop.time()
        waiting = [asyncio.create_task(adm.acquire(30)) for _ in range(2)]
        await asyncio.sleep(0.1)
        adm.set_queue_timeout_s(new_timeout_s)
        done = await asyncio.gather(*waiting, return_exceptions=True)
        assert all(isinstance(d, QueueTimeout) for d in done)
        assert loop.time() - t0 < shed_by_s
        assert loop.time() - t0 >= min(new_timeout_s, 0.1)
        assert adm.queued == 0 and adm.in_flight == 1
    run(scenario())


def test_a_longer_timeout_lets_them_wait_longer():
    async def scenario():
        adm = Admission(limit=1, max_queue=5)
        await adm.acquire(1)
        task = asyncio.create_task(adm.acquire(0.1))
        await asyncio.sleep(0.02)
        adm.set_queue_timeout_s(5.0)
        await asyncio.sleep(0.2)            # past the first deadline: still waiting
        assert not task.done() and adm.queued == 1
        adm.release()
        await task
        assert adm.in_flight == 1
    run(scenario())


def test_cancelled_after_grant_gives_the_slot_back():
    async def scenario():
        adm = Admission(limit=1, max_queue=5)
        await adm.acquire(1)
        task = asyncio.create_task(adm.acquire(1))
        await asyncio.sleep(0)
        adm.release()          # grants the waiter's future...
        task.cancel()          # ...but its client went away before it ran
        await asyncio.gather(task, return_exceptions=True)
        assert adm.in_flight == 0
    run(scenario())


@pytest.mark.parametrize("limit,queue", [(0, 1), (1, -1)], ids=["limit0", "queue-1"])
def test_invalid_construction(limit, queue):
    with pytest.raises(ValueError):
        Admission(limit, queue)


@settings(max_examples=80, deadline=None)
@given(ops=st.lists(st.one_of(st.tuples(st.just("arrive"), st.integers(0, 0)),
                              st.tuples(st.just("finish"), st.integers(0, 0)),
                              st.tuples(st.just("limit"), st.integers(1, 6))), max_size=60),
       limit=st.integers(1, 5), max_queue=st.integers(0, 5))
def test_in_flight_never_exceeds_limit_unless_lowered(ops, limit, max_queue):
    async def scenario():
        adm = Admission(limit, max_queue)
        pending: list[asyncio.Task] = []
        lowered_excess = 0
        for op, arg in ops:
            if op == "arrive":
                pending.append(asyncio.create_task(adm.acquire(100)))
            elif op == "finish" and adm.in_flight > 0:
                adm.release()
            elif op == "limit":
                lowered_excess = max(0, adm.in_flight - arg)
                adm.set_limit(arg)
            await asyncio.sleep(0)
            assert adm.in_flight <= adm.limit + lowered_excess
            assert adm.queued <= max_queue
            if adm.in_flight <= adm.limit:
                lowered_excess = 0
        for t in pending:
            t.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
    run(scenario())
