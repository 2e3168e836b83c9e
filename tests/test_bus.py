import asyncio
import logging
import time
from dataclasses import dataclass
from typing import ClassVar

import pytest

from streamer.bus import EventBus, Overflow
from streamer.events import EventType


@dataclass
class Tick:
    type: ClassVar[EventType] = EventType.STOCK_UPDATE
    n: int
    sent: float = 0.0


@dataclass
class Status:
    type: ClassVar[EventType] = EventType.MARKET_STATUS
    n: int


async def test_events_reach_only_subscribers_of_their_type_in_order():
    bus = EventBus()
    ticks, statuses = [], []

    async def on_tick(e):
        ticks.append(e.n)

    async def on_status(e):
        statuses.append(e.n)

    bus.subscribe("ticks", on_tick, [EventType.STOCK_UPDATE])
    bus.subscribe("statuses", on_status, [EventType.MARKET_STATUS])
    for i in range(50):
        await bus.publish(Tick(i))
        if i % 10 == 0:
            await bus.publish(Status(i))
    assert await bus.close(drain_timeout=5)
    assert ticks == list(range(50))
    assert statuses == [0, 10, 20, 30, 40]


async def test_blocked_subscriber_delays_neither_publisher_nor_others():
    bus = EventBus()
    never = asyncio.Event()
    latencies = []
    got_all = asyncio.Event()
    count = 200

    async def stuck(e):
        await never.wait()

    async def fast(e):
        latencies.append(time.perf_counter() - e.sent)
        if len(latencies) == count:
            got_all.set()

    stalled = bus.subscribe("stuck", stuck, [EventType.STOCK_UPDATE], maxsize=10, overflow=Overflow.DROP_OLDEST)
    bus.subscribe("fast", fast, [EventType.STOCK_UPDATE])
    publish_times = []
    for i in range(count):
        t = time.perf_counter()
        await bus.publish(Tick(i, t))
        publish_times.append(time.perf_counter() - t)
        await asyncio.sleep(0)  # let the fast subscriber's task run, as it would between real cycles
    await asyncio.wait_for(got_all.wait(), 5)
    assert max(publish_times) < 0.005
    assert sorted(latencies)[int(count * 0.99)] < 0.005 and max(latencies) < 0.02
    # The stalled subscriber lost the overflow, counted; its queue stayed bounded.
    assert stalled.dropped == count - 10 - 1 and stalled.depth == 10
    never.set()
    await bus.close(drain_timeout=5)


async def test_wait_policy_waits_for_room_without_holding_back_other_subscribers():
    bus = EventBus()
    release = asyncio.Event()
    fast_seen = []

    async def slow(e):
        await release.wait()

    async def fast(e):
        fast_seen.append(e.n)

    bus.subscribe("slow", slow, [EventType.STOCK_UPDATE], maxsize=1, overflow=Overflow.WAIT, wait_timeout=10)
    bus.subscribe("fast", fast, [EventType.STOCK_UPDATE])
    await bus.publish(Tick(0))  # taken by the slow handler
    await asyncio.sleep(0)
    await bus.publish(Tick(1))  # fills the slow queue
    third = asyncio.create_task(bus.publish(Tick(2)))  # must wait for the slow subscriber
    while len(fast_seen) < 3:
        await asyncio.sleep(0)
    assert fast_seen == [0, 1, 2] and not third.done()
    release.set()
    await asyncio.wait_for(third, 5)
    assert await bus.close(drain_timeout=5)


async def test_wait_policy_drops_after_timeout_and_logs(caplog):
    bus = EventBus()
    never = asyncio.Event()

    async def stuck(e):
        await never.wait()

    sub = bus.subscribe("stuck", stuck, [EventType.STOCK_UPDATE], maxsize=1, overflow=Overflow.WAIT, wait_timeout=0.05)
    with caplog.at_level(logging.WARNING, "streamer.bus"):
        for i in range(3):
            await bus.publish(Tick(i))
            await asyncio.sleep(0)
    assert sub.dropped == 1
    assert "subscriber=stuck" in caplog.text and "dropped a new event" in caplog.text
    never.set()
    await bus.close(1)


async def test_handler_exception_is_logged_with_subscriber_name_and_bus_goes_on(caplog):
    bus = EventBus()
    seen = []

    async def flaky(e):
        if e.n == 1:
            raise RuntimeError("boom")
        seen.append(e.n)

    sub = bus.subscribe("flaky-sink", flaky, [EventType.STOCK_UPDATE])
    with caplog.at_level(logging.ERROR, "streamer.bus"):
        for i in range(3):
            await bus.publish(Tick(i))
        assert await bus.drain(5)
    assert seen == [0, 2] and sub.errors == 1
    assert "subscriber=flaky-sink" in caplog.text and "boom" in caplog.text
    await bus.close(1)


async def test_drain_reports_timeout_and_close_refuses_new_events():
    bus = EventBus()
    never = asyncio.Event()

    async def stuck(e):
        await never.wait()

    bus.subscribe("stuck", stuck, [EventType.STOCK_UPDATE])
    await bus.publish(Tick(0))
    await bus.publish(Tick(1))
    assert await bus.drain(0.05) is False
    assert await bus.close(0.05) is False
    with pytest.raises(RuntimeError):
        await bus.publish(Tick(2))


async def test_lower_priority_subscriber_handles_each_event_first():
    bus = EventBus()
    order = []

    def recorder(name):
        async def handle(e):
            order.append((e.n, name))

        return handle

    bus.subscribe("storage", recorder("storage"), [EventType.STOCK_UPDATE])
    bus.subscribe("alerts", recorder("alerts"), [EventType.STOCK_UPDATE])
    bus.subscribe("websocket", recorder("websocket"), [EventType.STOCK_UPDATE], priority=-1)
    await bus.publish(Tick(0))
    assert await bus.drain(5)  # every subscriber is now idle, waiting for its next event, as in the daemon
    await bus.publish(Tick(1))
    await bus.publish(Tick(2))
    assert await bus.close(drain_timeout=5)
    assert [name for n, name in order if n == 1] == ["websocket", "storage", "alerts"]
    assert sorted(order)[3:] == [
        (1, "alerts"),
        (1, "storage"),
        (1, "websocket"),
        (2, "alerts"),
        (2, "storage"),
        (2, "websocket"),
    ]


async def test_a_batch_subscriber_gets_what_queued_meanwhile_in_one_call_and_drain_counts_each():
    bus = EventBus()
    calls: list[list[int]] = []
    gate = asyncio.Event()

    async def on_ticks(events):
        calls.append([e.n for e in events])
        await gate.wait()  # a slow write: the next events queue up meanwhile

    sub = bus.subscribe("store", on_ticks, [EventType.STOCK_UPDATE], batch=4)
    await bus.publish(Tick(0))
    while not calls:
        await asyncio.sleep(0)
    for i in range(1, 7):
        await bus.publish(Tick(i))
    gate.set()
    assert await bus.drain(2)
    assert calls == [[0], [1, 2, 3, 4], [5, 6]]  # in order, at most `batch` per call
    assert sub.delivered == 7
    with pytest.raises(ValueError, match="batch"):
        bus.subscribe("bad", on_ticks, [EventType.STOCK_UPDATE], batch=0)
    await bus.close(1)
