"""The component contract and the composition root: one vocabulary of states decides the overall health, the
lifecycle starts in order and stops in reverse (only what started, each within the one shared timeout), each
module's build says why it skips, and a role is a selection over the list."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field

import pytest

from streamer.app import COMPONENTS, build_daemon, demo_config, status_line
from streamer.bus import EventBus
from streamer.component import Health, Skipped, State, overall
from streamer.compose import EDGE, INGEST, Lifecycle, Part, Role, build_all
from streamer.config import Config
from streamer.events import EventType
from streamer.manager import CycleReport
from streamer.model import MarketStatus
from tests.support.doubles import Fields, Reporting
from tests.support.quotes import batch


@pytest.mark.parametrize(
    "states, status",
    [
        ([], State.OK),
        ([State.OK, State.STARTING], State.OK),
        ([State.OK, State.DEGRADED], State.DEGRADED),
        ([State.OK, State.STOPPED], State.DEGRADED),
        ([State.DEGRADED, State.FAILED, State.OK], State.FAILED),
    ],
)
def test_the_shared_states_alone_decide_the_overall_status(states, status):
    assert overall(states) is status


def test_the_wire_form_is_the_components_word_then_its_details():
    assert Health(State.OK, Fields(outbox_depth=3), label="connected").wire() == {
        "state": "connected",
        "outbox_depth": 3,
        "last_error": None,
    }
    assert Health(State.STARTING, Fields()).wire()["state"] == "starting"  # no word of its own: the state's


@dataclass
class Recorded(Reporting):
    """A component that records its starts and stops in a shared journal, and may refuse either."""

    journal: list[str] = field(default_factory=list)
    refuse_start: bool = False
    refuse_stop: bool = False
    stop_timeout: float | None = None

    async def start(self, bus: EventBus) -> None:
        if self.refuse_start:
            raise OSError(f"{self.name}: address already in use")
        self.journal.append(f"start {self.name}")

    async def stop(self, timeout: float) -> None:
        self.stop_timeout = timeout
        self.journal.append(f"stop {self.name}")
        if self.refuse_stop:
            raise RuntimeError(f"{self.name} failed to stop")


def recorded(journal: list[str], *names: str, **options: bool) -> list[Recorded]:
    return [Recorded(n, journal=journal, **options) for n in names]


async def test_components_start_in_order_and_stop_in_reverse_within_the_one_timeout():
    journal: list[str] = []
    parts = recorded(journal, "a", "b", "c")
    lifecycle = Lifecycle(parts)
    await lifecycle.start(EventBus(), timeout=1)
    await lifecycle.stop(2.5)
    assert journal == ["start a", "start b", "start c", "stop c", "stop b", "stop a"]
    assert [p.stop_timeout for p in parts] == [2.5] * 3
    await lifecycle.stop(1)  # stopped already: nothing is stopped twice
    assert len(journal) == 6


async def test_a_start_that_fails_stops_what_started_before_it_and_re_raises(caplog):
    journal: list[str] = []
    first, second, third = recorded(journal, "a", "b", "c")
    second.refuse_start = True
    with pytest.raises(OSError, match="address already in use"):
        await Lifecycle([first, second, third]).start(EventBus(), timeout=1)
    assert journal == ["start a", "stop a"]  # c never started, b did not: neither is stopped
    assert "component.start_failed component=b" in caplog.text


async def test_one_failing_stop_stops_no_other(caplog):
    journal: list[str] = []
    parts = recorded(journal, "a", "b", "c")
    parts[1].refuse_stop = True
    lifecycle = Lifecycle(parts)
    await lifecycle.start(EventBus(), timeout=1)
    await lifecycle.stop(1)
    assert sorted(journal[3:]) == ["stop a", "stop b", "stop c"]
    assert "component.stop_failed component=b" in caplog.text


async def test_shutdown_drains_the_bus_into_the_components_before_stopping_them():
    journal: list[str] = []
    bus = EventBus()
    handled = asyncio.Event()

    async def slow(_event: object) -> None:
        await asyncio.sleep(0.05)
        journal.append("event handled")
        handled.set()

    component = Recorded("sink", journal=journal)
    lifecycle = Lifecycle([component])
    await lifecycle.start(bus, timeout=1)
    bus.subscribe("sink", slow, [EventType.STOCK_UPDATE])
    await bus.publish(batch("PKN"))
    assert await lifecycle.shutdown(bus, 5)
    assert journal == ["start sink", "event handled", "stop sink"]


async def test_a_component_whose_health_raises_is_reported_degraded_not_fatal():
    class Broken(Reporting):
        def health(self) -> Health[Fields]:
            raise KeyError("outbox_depth")

    lifecycle = Lifecycle([Reporting("questdb"), Broken("pocketbase")], reports=lambda: {})
    healths = lifecycle.healths()
    assert healths["questdb"].state is State.OK
    assert healths["pocketbase"].state is State.DEGRADED
    assert healths["pocketbase"].wire() == {"state": "unknown", "error": "health() raised KeyError"}


def test_each_skipped_component_is_logged_once_with_its_reason_and_a_role_selects(caplog):
    caplog.set_level(logging.INFO, logger="streamer.app")
    parts = [
        Part(lambda ctx: Reporting("storage"), INGEST),
        Part(lambda ctx: Skipped("alerts", "disabled (alerts.enabled: false)"), INGEST),
        Part(lambda ctx: Reporting("websocket"), EDGE),
    ]
    context = None  # the parts above read nothing of it
    assert [c.name for c in build_all(parts, Role.ALL, context)] == ["storage", "websocket"]
    assert [c.name for c in build_all(parts, Role.EDGE, context)] == ["websocket"]
    skipped = [r.getMessage() for r in caplog.records if r.getMessage().startswith("component.skipped")]
    assert skipped == ["component.skipped component=alerts reason=disabled (alerts.enabled: false)"]  # ALL only


def test_the_whole_daemon_is_the_list_in_start_order_with_reasons_for_what_is_left_out(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="streamer.app")
    raw = {
        "data_dir": str(tmp_path),
        "sinks": {"questdb": {"enabled": False}, "pocketbase": {"admin_password": ""}},
        "websocket": {"port": 0},
        "http": {"port": 0},
    }
    daemon = build_daemon(demo_config(Config.model_validate(raw)))  # PocketBase enabled, without a password
    assert [c.name for c in daemon.components] == ["alerts", "stream", "feeds", "websocket", "http"]
    assert len(COMPONENTS) == 11
    skipped = {m.split()[1]: m for m in (r.getMessage() for r in caplog.records) if m.startswith("component.skipped")}
    assert set(skipped) == {
        "component=demo-upstox",
        "component=questdb",
        "component=pocketbase",
        "component=watchlists",
    }
    assert "disabled (sinks.questdb.enabled: false)" in skipped["component=questdb"]
    assert "no superuser password" in skipped["component=pocketbase"]
    levels = {r.getMessage().split()[1]: r.levelno for r in caplog.records if "component.skipped" in r.getMessage()}
    assert levels["component=pocketbase"] == logging.WARNING  # enabled but cannot run: worth a warning
    assert levels["component=questdb"] == logging.INFO
    assert daemon.storage == [] and daemon.alerts is daemon.component("alerts")
    # Health before start: the manager starting, the replay provider ok, every component in its own words.
    words = {name: h.wire()["state"] for name, h in daemon.healths().items()}
    assert words == {
        "manager": "starting",
        "provider:replay": "ok",
        "market": "ok",
        "alerts": "disabled",  # no rules configured (a reload may bring some)
        "stream": "stopped",
        "feeds": "stopped",
        "websocket": "stopped",
        "http": "stopped",
    }


@pytest.mark.parametrize(
    "role, names",
    [
        (Role.INGEST, ["alerts", "broker", "feeds", "http"]),  # the HTTP API for health, metrics and REST
        (Role.EDGE, ["stream", "websocket", "http"]),  # the stream from Redis: no manager, storage or alerts
    ],
)
def test_the_broker_roles_are_selections_over_the_one_list(tmp_path, role, names):
    raw = {
        "data_dir": str(tmp_path),
        "sinks": {"questdb": {"enabled": False}, "pocketbase": {"enabled": False}},
        "websocket": {"port": 0},
        "http": {"port": 0},
        "broker": {"url": "redis://127.0.0.1:1/0"},  # never dialled: nothing is started
    }
    daemon = build_daemon(demo_config(Config.model_validate(raw)), role=role)
    assert [c.name for c in daemon.components] == names
    assert (daemon.manager is None) == (role is Role.EDGE)
    if role is Role.EDGE:
        assert daemon.component("stream").health().wire()["source"] == "broker"


def test_the_systemd_status_line_sums_typed_clients_and_backlog():
    ws = Reporting("websocket")
    ws.health_now = Health(State.OK, Fields(), label="listening", clients=3)
    sse = Reporting("http")
    sse.health_now = Health(State.OK, Fields(), label="listening", clients=2)
    sink = Reporting("questdb")
    sink.set(State.DEGRADED, "reconnecting", outbox_depth=40)
    report = CycleReport(7, MarketStatus.OPEN, fetched=80, published=12, missing=0, seconds=0.2)
    line = status_line(80, [c.health() for c in (ws, sse, sink)], report)
    assert line == "open: cycle 7, 12 of 80 symbols updated, 5 clients, outbox 40"
