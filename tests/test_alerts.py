"""Alert rules: each kind fires exactly at its threshold, cooldowns run on quote time, the volume baseline
restarts each trading day, and the engine publishes on a real EventBus."""

from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from prometheus_client import REGISTRY

from streamer.alerts import MIN_VOLUME_SAMPLES, AlertEngine, check_change_percent, check_price_cross
from streamer.bus import EventBus
from streamer.config import AlertRule, AlertsConfig
from streamer.events import Alert, EventType, QuoteBatch
from streamer.model import MarketStatus, StockUpdate
from tests.support import quotes
from tests.support.waiting import until

WAW = ZoneInfo("Europe/Warsaw")
T0 = datetime(2026, 11, 20, 10, 0, tzinfo=WAW)  # a Friday session
STEP = timedelta(seconds=30)


def quote(
    symbol: str = "PKN", at: datetime = T0, price: float = 100.0, prev_close: float | None = 100.0, volume: int = 0
) -> StockUpdate:
    return quotes.quote(symbol, price, at=at, prev_close=prev_close, volume=volume, received_at=at)


def engine(*rules: dict) -> AlertEngine:
    return AlertEngine(AlertsConfig(rules=[AlertRule(**r) for r in rules]))


# --- change_percent ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "price, fires, direction", [(105.0, True, "up"), (95.0, True, "down"), (104.99, False, None), (95.01, False, None)]
)
def test_change_percent_fires_from_the_threshold_on(price, fires, direction):
    rule = AlertRule(name="move", kind="change_percent", threshold=5.0)
    alert = check_change_percent(rule, quote(price=price))
    assert (alert is not None) is fires
    if fires:
        assert f"PKN {direction} " in alert.message
        assert alert.value == pytest.approx((price - 100.0) / 100.0 * 100)
        assert (alert.rule, alert.kind, alert.symbol, alert.threshold) == ("move", "change_percent", "PKN", 5.0)


def test_change_percent_needs_a_previous_close():
    rule = AlertRule(name="move", kind="change_percent", threshold=1.0)
    assert check_change_percent(rule, quote(price=150.0, prev_close=None)) is None


# --- price_cross ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "previous, new, expected",
    [
        (99.0, 100.0, "rose above"),  # reaching the level from below is a cross
        (99.0, 101.0, "rose above"),
        (100.0, 99.5, "fell below"),  # leaving the level downwards is a cross
        (101.0, 99.0, "fell below"),
        (100.0, 101.0, None),  # already at the level: not a new cross upwards
        (101.0, 102.0, None),
        (98.0, 99.0, None),
        (None, 120.0, None),  # no previous price: nothing to cross from
    ],
)
def test_price_cross_needs_the_previous_price_on_the_other_side(previous, new, expected):
    rule = AlertRule(name="level", kind="price_cross", threshold=100.0)
    alert = check_price_cross(rule, quote(price=new), previous)
    if expected is None:
        assert alert is None
    else:
        assert alert.message.startswith(f"PKN {expected} {rule.threshold:g} ")
        assert (alert.price, alert.threshold) == (new, rule.threshold)


def test_price_cross_keeps_the_previous_price_per_symbol():
    e = engine({"name": "level", "kind": "price_cross", "threshold": 50.0, "cooldown": 1})
    assert e.evaluate(quote("PKN", T0, price=49.0)) == []
    assert e.evaluate(quote("PKO", T0, price=51.0)) == []  # PKO's first quote: no cross from PKN's price
    fired = e.evaluate(quote("PKN", T0 + STEP, price=50.5))
    assert [(a.symbol, a.threshold, a.price) for a in fired] == [("PKN", 50.0, 50.5)]


# --- volume_spike --------------------------------------------------------------------------------


def feed(e: AlertEngine, symbol: str, start: datetime, deltas: list[int], volume: int = 0) -> list[list[Alert]]:
    """Quotes one cycle apart whose cumulative volume grows by `deltas` (the first quote sets the base)."""
    out = [e.evaluate(quote(symbol, start, volume=volume))]
    for i, d in enumerate(deltas, start=1):
        volume += d
        out.append(e.evaluate(quote(symbol, start + i * STEP, volume=volume)))
    return out


def test_volume_spike_compares_the_cycle_delta_with_the_recent_average():
    window, threshold, steady = 5, 4.0, 1000
    e = engine({"name": "spike", "kind": "volume_spike", "threshold": threshold, "window": window})
    results = feed(e, "PKN", T0, [steady] * window + [int(steady * threshold)])
    assert all(r == [] for r in results[:-1])
    [alert] = results[-1]
    assert alert.value == pytest.approx(threshold)
    assert f"{int(steady * threshold):,}" in alert.message


def test_volume_spike_below_the_threshold_does_not_fire():
    e = engine({"name": "spike", "kind": "volume_spike", "threshold": 4.0, "window": 5})
    results = feed(e, "PKN", T0, [1000] * 5 + [3999])
    assert all(r == [] for r in results)


def test_volume_spike_needs_a_few_samples():
    e = engine({"name": "spike", "kind": "volume_spike", "threshold": 2.0, "window": 20})
    # Too few deltas before the big one: no baseline yet, whatever its size.
    results = feed(e, "PKN", T0, [100] * (MIN_VOLUME_SAMPLES - 1) + [10_000])
    assert all(r == [] for r in results)
    # One more ordinary delta makes the baseline: now the spike counts.
    e = engine({"name": "spike", "kind": "volume_spike", "threshold": 2.0, "window": 20})
    results = feed(e, "PKN", T0, [100] * MIN_VOLUME_SAMPLES + [10_000])
    assert len(results[-1]) == 1


def test_a_new_trading_day_restarts_the_volume_baseline():
    rule = {"name": "spike", "kind": "volume_spike", "threshold": 3.0, "window": 10}
    friday_deltas = [1000] * 10
    spike = [50] * (MIN_VOLUME_SAMPLES - 1) + [100_000]  # huge against Friday's pace
    # The same day: Friday's deltas are the baseline, so the big delta fires.
    same_day = engine(rule)
    feed(same_day, "PKN", T0, friday_deltas)
    assert len(feed(same_day, "PKN", T0 + timedelta(hours=1), spike, volume=sum(friday_deltas))[-1]) == 1
    # Monday: the cumulative volume starts again near zero, the first quote only sets the base, and
    # Friday's deltas are no baseline: too few Monday samples yet, so nothing fires.
    next_day = engine(rule)
    feed(next_day, "PKN", T0, friday_deltas)
    assert all(r == [] for r in feed(next_day, "PKN", T0 + timedelta(days=3), spike, volume=10))


def test_a_falling_cumulative_volume_is_not_a_sample():
    e = engine({"name": "spike", "kind": "volume_spike", "threshold": 3.0, "window": 5})
    feed(e, "PKN", T0, [1000] * 5, volume=10_000)
    # A provider correction (volume goes down) and the next delta measured from it: neither is a spike.
    assert e.evaluate(quote("PKN", T0 + 10 * STEP, volume=100)) == []
    assert e.evaluate(quote("PKN", T0 + 11 * STEP, volume=1100)) == []


# --- cooldown and symbols -------------------------------------------------------------------------


def test_cooldown_runs_on_quote_time_per_rule_and_symbol():
    cooldown = 900
    e = engine({"name": "move", "kind": "change_percent", "threshold": 2.0, "cooldown": cooldown})
    assert len(e.evaluate(quote("PKN", T0, price=103.0))) == 1
    assert e.evaluate(quote("PKN", T0 + timedelta(seconds=cooldown - 1), price=104.0)) == []
    assert len(e.evaluate(quote("PKO", T0 + STEP, price=97.0))) == 1  # another symbol: its own cooldown
    assert len(e.evaluate(quote("PKN", T0 + timedelta(seconds=cooldown), price=104.0))) == 1


def test_rules_watch_only_their_symbols():
    e = engine(
        {"name": "pkn-only", "kind": "change_percent", "threshold": 1.0, "symbols": ["pkn"]},
        {"name": "all", "kind": "change_percent", "threshold": 1.0},
    )
    assert sorted(a.rule for a in e.evaluate(quote("PKN", price=110.0))) == ["all", "pkn-only"]
    assert [a.rule for a in e.evaluate(quote("CDR", price=110.0))] == ["all"]


def test_disabled_alerts_evaluate_nothing():
    e = AlertEngine(AlertsConfig(enabled=False, rules=[AlertRule(name="m", kind="change_percent", threshold=0.1)]))
    assert e.evaluate(quote(price=150.0)) == []
    assert e.health().wire()["state"] == "disabled"


# --- end to end ----------------------------------------------------------------------------------


def fired_total(rule: str) -> float:
    return REGISTRY.get_sample_value("streamer_alerts_fired_total", {"rule": rule}) or 0.0


async def test_the_engine_publishes_alerts_on_the_bus_and_counts_them():
    rule = "e2e-move"
    e = engine({"name": rule, "kind": "change_percent", "threshold": 3.0, "symbols": ["PKN", "PKO"]})
    bus = EventBus()
    received: list[Alert] = []

    async def record(event):
        received.append(event)

    bus.subscribe("test", record, [EventType.ALERT])
    await e.start(bus)
    before = fired_total(rule)
    moves = {"PKN": 104.0, "PKO": 101.0, "CDR": 110.0}  # PKN moves enough; PKO too little; CDR is not watched
    await bus.publish(QuoteBatch(1, tuple(quote(s, T0, price=p) for s, p in moves.items()), MarketStatus.OPEN, T0))
    expected = [s for s, p in moves.items() if s in ("PKN", "PKO") and abs(p - 100.0) >= 3.0]
    await until(lambda: len(received) == len(expected))
    assert [a.symbol for a in received] == expected
    assert fired_total(rule) - before == len(expected)
    assert [a.symbol for a in e.recent()] == expected[::-1]
    assert e.health().wire()["state"] == "running" and e.health().wire()["fired"] == len(expected)
    assert await bus.close(5)
    await e.stop(1)
    assert e.health().wire()["state"] == "stopped"
