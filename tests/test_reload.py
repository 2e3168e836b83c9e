"""SIGHUP re-reads the configuration: symbols, alert rules and the log level change under a connected
WebSocket client; an invalid file is refused and the running configuration kept."""

import asyncio
import json
import signal
import urllib.request

from websockets.asyncio.client import connect

from streamer.config import parse_config
from streamer.reload import changed_keys
from tests.support.daemon import start_daemon, wait_for, write_config

BEFORE = """\
symbols: {exclude: [SCW]}
alerts: {rules: []}
"""
AFTER = """\
symbols: {exclude: []}
alerts:
  rules:
    - {name: any-move, kind: change_percent, threshold: 0.0001, cooldown: 900}
"""


async def receive(ws, accept, timeout: float = 30) -> dict:
    """The first message `accept` takes, skipping others."""
    async with asyncio.timeout(timeout):
        while True:
            message = json.loads(await ws.recv())
            if accept(message):
                return message


def get_json(url: str):
    with urllib.request.urlopen(url, timeout=10) as r:
        return json.load(r)


def has_symbol(symbol: str):
    return lambda m: m["type"] == "stock_updates" and any(q["symbol"] == symbol for q in m["data"])


async def test_sighup_applies_symbols_rules_and_level_without_dropping_clients(tmp_path):
    config = write_config(tmp_path, BEFORE)
    daemon = start_daemon(tmp_path, config)
    try:
        ws_url = (await wait_for(daemon, "ws.listening"))[0]["msg"].split()[0].removeprefix("url=")
        api = (await wait_for(daemon, "http.listening"))[0]["msg"].split()[0].removeprefix("url=")
        async with connect(ws_url) as ws:
            await receive(ws, lambda m: m["type"] == "connection")
            await ws.send(json.dumps({"type": "subscribe", "symbols": ["SCW", "BMC"]}))
            refused = await receive(ws, lambda m: m["type"] == "error")
            assert refused["code"] == "unknown_symbols" and refused["symbols"] == ["SCW"]
            await receive(ws, has_symbol("BMC"))
            assert not daemon.events("ws.connect")  # DEBUG lines are off at INFO

            config.write_text(
                config.read_text().replace(BEFORE, AFTER).replace("format: json}", "format: json, level: DEBUG}")
            )
            daemon.proc.send_signal(signal.SIGHUP)
            done = (await wait_for(daemon, "reload.done"))[0]["msg"]
            assert "applied=alerts.rules,logging.level,symbols.exclude" in done, done
            assert not daemon.events("reload.needs_restart")

            # The same connection: SCW is followed now, and quotes for it arrive.
            await ws.send(json.dumps({"type": "subscribe", "symbols": ["SCW"]}))
            confirmed = await receive(ws, lambda m: m["type"] in ("subscription_confirmed", "error"))
            assert confirmed["type"] == "subscription_confirmed", confirmed
            await receive(ws, has_symbol("SCW"))
            assert get_json(f"{api}/api/v1/stocks/SCW")["data"]["symbol"] == "SCW"
            health = get_json(f"{api}/api/v1/health")
            assert health["components"]["alerts"]["rules"] == 1
            await wait_for(daemon, "alert.fired")  # the new rule is evaluated

            # DEBUG is on: a second client's connect is logged.
            async with connect(ws_url) as other:
                await receive(other, lambda m: m["type"] == "connection")
            await wait_for(daemon, "ws.connect")

            # An invalid file is refused with the problem named; the running configuration stays.
            config.write_text(config.read_text() + "polling: {interval: -5}\n")
            daemon.proc.send_signal(signal.SIGHUP)
            invalid = (await wait_for(daemon, "reload.invalid"))[0]
            assert invalid["level"] == "error" and "polling.interval" in invalid["msg"], invalid
            await ws.send(json.dumps({"type": "ping", "id": 7}))
            assert (await receive(ws, lambda m: m["type"] == "pong"))["id"] == 7
            cycles = len(daemon.events("cycle.done"))
            await receive(ws, has_symbol("SCW"))
            assert len(daemon.events("cycle.done")) > cycles  # still polling, SCW still followed
            assert get_json(f"{api}/api/v1/health")["components"]["alerts"]["rules"] == 1

            # A valid change that cannot apply live is named, not applied.
            config.write_text(config.read_text().replace("polling: {interval: -5}", "polling: {interval: 45}"))
            daemon.proc.send_signal(signal.SIGHUP)
            restart = (await wait_for(daemon, "reload.needs_restart"))[0]["msg"]
            assert restart.startswith("keys=polling.interval "), restart
        assert daemon.stop() == 0
    finally:
        daemon.stop()
    assert len(daemon.events("reload.done")) == 2


def test_changed_keys_names_leaf_paths():
    old = parse_config({}, env={})
    new = parse_config(
        {
            "symbols": {"include": ["PKN"]},
            "polling": {"interval": 10},
            "alerts": {"rules": [{"name": "a", "kind": "price_cross", "threshold": 1}]},
        },
        env={},
    )
    assert changed_keys(old.model_dump(), new.model_dump()) == ["alerts.rules", "polling.interval", "symbols.include"]
    assert changed_keys(old.model_dump(), old.model_dump()) == []
