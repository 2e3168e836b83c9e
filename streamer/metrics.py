"""Prometheus metrics, defined once; components update them, `GET /metrics` exposes them.

Gauges that describe a component's current state (outbox depth, delivery lag, connected clients) are read
at scrape time from the components themselves (`ComponentCollector`), so they can never go stale."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator

from prometheus_client import Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import REGISTRY, Collector

CYCLES = Counter("streamer_cycles", "Polling cycles run", ["status"])
CYCLE_SECONDS = Histogram(
    "streamer_cycle_duration_seconds",
    "Time to fetch and publish one cycle",
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30),
)
SKIPPED_TICKS = Counter("streamer_skipped_ticks", "Cycles skipped because the previous one overran")
UPDATES_PUBLISHED = Counter("streamer_updates_published", "Quotes published on the bus")
PROVIDER_ERRORS = Counter("streamer_provider_errors", "Provider problems by reason", ["provider", "reason"])
SINK_RECONNECTS = Counter("streamer_sink_reconnects", "Connections lost and re-established", ["sink"])
SINK_DELIVERED = Counter("streamer_sink_delivered", "Rows (quotes, records) delivered to the backend", ["sink"])
SINK_REJECTED = Counter("streamer_sink_rejected", "Rows the backend refused as data", ["sink"])
WS_MESSAGES_SENT = Counter("streamer_ws_messages_sent", "WebSocket messages sent to clients", ["type"])
WS_MESSAGES_DROPPED = Counter("streamer_ws_messages_dropped", "WebSocket messages not sent (client too slow)")
WS_CLIENTS_CLOSED = Counter("streamer_ws_clients_closed", "WebSocket clients closed by the server", ["reason"])
ALERTS_FIRED = Counter("streamer_alerts_fired", "Alerts fired", ["rule"])
PUSH_TICKS = Counter("streamer_push_ticks", "Ticks a push feed delivered (each stored in QuestDB)", ["provider"])
PUSH_BATCHES = Counter("streamer_push_batches", "Batches published from a push feed's ticks", ["provider"])
PUSH_TAKEOVERS = Counter(
    "streamer_push_takeovers", "Times the polling chain took a push feed's symbols over", ["provider"]
)
ROLE = Gauge("streamer_info", "1; which role this process runs (docs/scaling.md) and its version", ["role", "version"])
# The broker (docs/scaling.md): the ingest's publishing, the edge's reading.
_DELAY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
BROKER_PUBLISHED = Counter("streamer_broker_published", "Batches and events the ingest published to Redis", ["kind"])
BROKER_PUBLISH_DELAY = Histogram(
    "streamer_broker_publish_delay_seconds",
    "From a batch on the ingest's bus to Redis confirming it (a Redis outage included)",
    buckets=_DELAY_BUCKETS,
)
BROKER_RESEEDS = Counter(
    "streamer_broker_reseeds", "New epochs the ingest started with every latest quote (Redis came back empty or older)"
)
BROKER_FENCED = Counter("streamer_broker_fenced", "Publishes Redis refused because another process holds the lease")
BROKER_RELOADS = Counter("streamer_broker_reloads", "Whole-stream loads an edge made", ["reason"])
BROKER_DELIVERY = Histogram(
    "streamer_broker_delivery_seconds",
    "From Redis taking a batch to the edge handing it to its clients (the two machines' clocks)",
    buckets=_DELAY_BUCKETS,
)


class ComponentCollector(Collector):
    """Reads live gauges from registered components at scrape time."""

    def __init__(self) -> None:
        self._sources: dict[str, Callable[[], Iterable[tuple[str, str, dict[str, str], float]]]] = {}

    def register(self, name: str, source: Callable[[], Iterable[tuple[str, str, dict[str, str], float]]]) -> None:
        """`source()` yields (metric name, help, labels, value) tuples."""
        self._sources[name] = source

    def unregister(self, name: str) -> None:
        self._sources.pop(name, None)

    def collect(self) -> Iterator[Metric]:
        families: dict[str, GaugeMetricFamily] = {}
        for source in list(self._sources.values()):
            for name, help_text, labels, value in source():
                family = families.get(name)
                if family is None:
                    family = families[name] = GaugeMetricFamily(name, help_text, labels=sorted(labels))
                family.add_metric([labels[k] for k in sorted(labels)], value)
        return iter(families.values())

    def describe(self) -> Iterator[Metric]:
        return iter(())


COMPONENTS = ComponentCollector()
REGISTRY.register(COMPONENTS)
