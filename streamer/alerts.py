"""Alert rules over the quote stream: pure checks per rule kind, and `AlertEngine`, which keeps the per-symbol
state the checks need and publishes `Alert` events on the bus.

Time is always the quote's own timestamp (cooldowns, trading days), never the wall clock, so a replay or a test
gives the same alerts as the live session did."""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import TYPE_CHECKING
from zoneinfo import ZoneInfo

from .bus import EventBus, Overflow, Subscription
from .component import Health, Skipped, State
from .config import AlertRule, AlertsConfig
from .events import Alert, Event, EventType, QuoteBatch
from .metrics import ALERTS_FIRED
from .model import StockUpdate

if TYPE_CHECKING:
    from .compose import Context

log = logging.getLogger("streamer.alerts")

# A volume baseline from fewer samples than this is noise: a quiet morning would make any trade a "spike".
MIN_VOLUME_SAMPLES = 3
RECENT_ALERTS = 200  # kept in memory for GET /api/v1/alerts when QuestDB cannot answer


# --- pure checks -----------------------------------------------------------------------------------


def check_change_percent(rule: AlertRule, update: StockUpdate) -> Alert | None:
    """|change % vs the previous close| >= threshold."""
    pct = update.change_percent
    if pct is None or abs(pct) < rule.threshold:
        return None
    direction = "up" if pct > 0 else "down"
    return Alert(
        rule.name,
        rule.kind,
        update.symbol,
        f"{update.symbol} {direction} {abs(pct):.2f}% vs the previous close "
        f"(threshold {rule.threshold:g}%), price {update.price:g}",
        update.timestamp,
        update.price,
        pct,
        rule.threshold,
    )


def check_price_cross(rule: AlertRule, update: StockUpdate, previous: float | None) -> Alert | None:
    """The price moved across the level: previous < level <= new (up) or new < level <= previous (down)."""
    level = rule.threshold
    if previous is None:
        return None
    if previous < level <= update.price:
        direction = "rose above"
    elif update.price < level <= previous:
        direction = "fell below"
    else:
        return None
    return Alert(
        rule.name,
        rule.kind,
        update.symbol,
        f"{update.symbol} {direction} {level:g} (from {previous:g} to {update.price:g})",
        update.timestamp,
        update.price,
        update.price,
        level,
    )


def volume_delta(previous: StockUpdate | None, update: StockUpdate, tz: ZoneInfo) -> int | None:
    """Volume traded since the previous quote of the same trading day (quote volume is cumulative for the
    day); None for the first quote of a day or when the cumulative volume went down (a provider correction)."""
    if previous is None or trading_day(previous, tz) != trading_day(update, tz):
        return None
    delta = update.volume - previous.volume
    return delta if delta >= 0 else None


def check_volume_spike(rule: AlertRule, update: StockUpdate, delta: int, recent: Sequence[int]) -> Alert | None:
    """`delta` >= threshold × the average of the last `window` deltas (needs MIN_VOLUME_SAMPLES of them)."""
    baseline = list(recent)[-rule.window :]
    if len(baseline) < min(MIN_VOLUME_SAMPLES, rule.window) or delta <= 0:
        return None
    average = sum(baseline) / len(baseline)
    if average <= 0:  # no trading in the baseline: any trade would be "infinitely" more, which says nothing
        return None
    ratio = delta / average
    if ratio < rule.threshold:
        return None
    return Alert(
        rule.name,
        rule.kind,
        update.symbol,
        f"{update.symbol} traded {delta:,} in one cycle, {ratio:.1f}x the average {average:,.0f} of the "
        f"last {len(baseline)} (threshold {rule.threshold:g}x)",
        update.timestamp,
        update.price,
        round(ratio, 4),
        rule.threshold,
    )


def cooling_down(last_fired: datetime | None, at: datetime, cooldown: float) -> bool:
    """True while `at` is within `cooldown` seconds after the last alert (both in quote time)."""
    return last_fired is not None and at < last_fired + timedelta(seconds=cooldown)


def trading_day(update: StockUpdate, tz: ZoneInfo) -> date:
    return update.timestamp.astimezone(tz).date()


# --- engine ----------------------------------------------------------------------------------------


@dataclass(slots=True)
class AlertCounts:
    evaluated: int = 0  # quotes
    fired: int = 0


@dataclass(frozen=True, slots=True)
class Fired:
    """A rule fired: counted, its metric and its log line written together."""

    alert: Alert

    def emit(self, counts: AlertCounts) -> None:
        counts.fired += 1
        ALERTS_FIRED.labels(self.alert.rule).inc()
        log.info("alert.fired rule=%s symbol=%s %s", self.alert.rule, self.alert.symbol, self.alert.message)


@dataclass(frozen=True, slots=True)
class AlertsDetails:
    rules: int
    evaluated: int
    fired: int
    recent: int


@dataclass
class _SymbolState:
    last: StockUpdate | None = None
    deltas: deque[int] = field(default_factory=deque)  # volume per cycle, this trading day only


class AlertEngine:
    """Evaluates every rule on each published quote; a component (`start`, `stop`, `health`)."""

    name = "alerts"

    def __init__(self, config: AlertsConfig, *, timezone: str = "Europe/Warsaw", keep: int = RECENT_ALERTS) -> None:
        self.config = config
        self.tz = ZoneInfo(timezone)
        self.counts = AlertCounts()
        self._recent: deque[Alert] = deque(maxlen=keep)
        self._symbols: dict[str, _SymbolState] = {}
        self._last_fired: dict[tuple[str, str], datetime] = {}
        self._bus: EventBus | None = None
        self._sub: Subscription | None = None
        self._set_rules(list(config.rules) if config.enabled else [])

    def _set_rules(self, rules: list[AlertRule]) -> None:
        self.rules = rules
        # Symbols each rule watches, normalised once; an empty set watches every symbol.
        self._watch = {r.name: frozenset(s.strip().upper() for s in r.symbols) for r in self.rules}
        self._window = max((r.window for r in self.rules if r.kind == "volume_spike"), default=0)

    def replace_rules(self, rules: Sequence[AlertRule]) -> None:
        """Evaluate `rules` from the next quote on (config reload). Cooldowns of rules kept by name carry over,
        and so do the volume baselines, trimmed or widened to the new longest window."""
        self._set_rules(list(rules))
        names = {r.name for r in self.rules}
        self._last_fired = {k: v for k, v in self._last_fired.items() if k[0] in names}
        for state in self._symbols.values():
            state.deltas = deque(state.deltas, maxlen=self._window or 1)
        if self.rules and self._sub is None and self._bus is not None and not self._bus.closed:
            self._subscribe(self._bus)
        log.info("alerts.rules_replaced rules=%d names=%s", len(self.rules), ",".join(sorted(names)) or "-")

    # --- evaluation (synchronous; no I/O) --------------------------------------------------------

    def evaluate(self, update: StockUpdate) -> list[Alert]:
        """The alerts `update` fires, after cooldowns; then remembers it as the symbol's previous quote."""
        state = self._symbols.setdefault(update.symbol, _SymbolState(deltas=deque(maxlen=self._window or 1)))
        previous = state.last
        delta = volume_delta(previous, update, self.tz) if self._window else None
        if previous is not None and trading_day(previous, self.tz) != trading_day(update, self.tz):
            state.deltas.clear()  # a new day: yesterday's pace is no baseline for today's
        alerts: list[Alert] = []
        for rule in self.rules:
            watch = self._watch[rule.name]
            if watch and update.symbol not in watch:
                continue
            alert = self._check(rule, update, previous, delta, state.deltas)
            if alert is None or cooling_down(self._last_fired.get((rule.name, update.symbol)), alert.at, rule.cooldown):
                continue
            self._last_fired[(rule.name, update.symbol)] = alert.at
            alerts.append(alert)
        if delta is not None:
            state.deltas.append(delta)
        state.last = update
        self.counts.evaluated += 1
        return alerts

    @staticmethod
    def _check(
        rule: AlertRule, update: StockUpdate, previous: StockUpdate | None, delta: int | None, deltas: deque[int]
    ) -> Alert | None:
        if rule.kind == "change_percent":
            return check_change_percent(rule, update)
        if rule.kind == "price_cross":
            return check_price_cross(rule, update, previous.price if previous else None)
        if rule.kind == "volume_spike" and delta is not None:
            return check_volume_spike(rule, update, delta, deltas)
        return None

    def recent(self, limit: int | None = None, symbol: str | None = None) -> list[Alert]:
        """The last alerts kept in memory, newest first."""
        out = [a for a in reversed(self._recent) if symbol is None or a.symbol == symbol]
        return out[:limit] if limit is not None else out

    # --- bus component -----------------------------------------------------------------------------

    async def start(self, bus: EventBus) -> None:
        self._bus = bus
        if self.rules:
            self._subscribe(bus)
        log.info("alerts.started rules=%d", len(self.rules))

    def _subscribe(self, bus: EventBus) -> None:
        # Evaluating is fast and local: waiting briefly beats losing a cycle's quotes under a burst.
        self._sub = bus.subscribe(
            self.name, self._on_event, [EventType.STOCK_UPDATE], maxsize=1000, overflow=Overflow.WAIT, wait_timeout=5
        )

    async def stop(self, timeout: float = 5.0) -> None:
        if self._bus is not None and self._sub in self._bus.subscriptions:
            await self._bus.unsubscribe(self._sub)
        self._sub = None
        log.info("alerts.stopped evaluated=%d fired=%d", self.counts.evaluated, self.counts.fired)

    def health(self) -> Health[AlertsDetails]:
        details = AlertsDetails(len(self.rules), self.counts.evaluated, self.counts.fired, len(self._recent))
        if not self.rules:
            return Health(State.OK, details, label="disabled")
        if self._sub is None:
            return Health(State.STOPPED, details)
        return Health(State.OK, details, label="running")

    async def _on_event(self, event: Event) -> None:
        if not isinstance(event, QuoteBatch):
            return
        for update in event.updates:
            for alert in self.evaluate(update):
                await self._fire(alert)

    async def _fire(self, alert: Alert) -> None:
        self._recent.append(alert)
        Fired(alert).emit(self.counts)
        if self._bus is None or self._bus.closed:
            # Shutting down: the bus takes no new events; the alert stays in the in-memory list only.
            log.warning("alert.not_published rule=%s symbol=%s the bus is closed", alert.rule, alert.symbol)
            return
        await self._bus.publish(alert)


def build(ctx: Context) -> AlertEngine | Skipped:
    """The alert engine when `alerts.enabled`; its rules can change on reload, so it runs even with none."""
    if not ctx.config.alerts.enabled:
        return Skipped(AlertEngine.name, "disabled (alerts.enabled: false)")
    engine = AlertEngine(ctx.config.alerts, timezone=ctx.config.market.timezone)
    ctx.alerts = engine  # the HTTP API answers GET /api/v1/alerts from its recent ones when QuestDB cannot
    return engine
