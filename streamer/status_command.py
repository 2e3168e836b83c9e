"""`streamer status`: a short human summary of a running daemon, from its `GET /api/v1/health`.

Exit codes: 0 ok or degraded, 1 failed (a required component is FAILED), 3 unreachable or not a streamer."""

from __future__ import annotations

import json
import sys
import urllib.error
import urllib.request
from typing import Any, TextIO

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_UNREACHABLE = 3


def fetch_health(url: str, timeout: float) -> dict[str, Any]:
    """The health document; 503 carries one too. Raises OSError/ValueError when there is none."""
    request = urllib.request.Request(url.rstrip("/") + "/api/v1/health", headers={"Accept": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as resp:  # an operator-given URL
            body = resp.read()
    except urllib.error.HTTPError as e:
        if e.code != 503:
            raise OSError(f"HTTP {e.code} {e.reason}") from None
        body = e.read()
    health = json.loads(body)
    if not isinstance(health, dict) or not isinstance(health.get("components"), dict):
        raise ValueError("not a stock-streamer health document")
    return health


def _detail(name: str, c: dict[str, Any]) -> str:
    parts = []
    if name == "manager" and c.get("last_cycle"):
        cyc = c["last_cycle"]
        parts.append(
            f"last cycle #{cyc['cycle']} ({cyc['status']}): {cyc['fetched']} fetched, "
            f"{cyc['published']} published, {cyc['missing']} missing, {cyc['seconds']:.2f} s"
        )
    if c.get("outbox_depth") is not None:
        parts.append(f"outbox {c['outbox_depth']}")
    if c.get("source") == "broker" and c.get("epoch"):  # an edge's stream: where it is and how far behind
        lag = f", lag {c['lag_entries']} entries" if c.get("lag_entries") is not None else ""
        parts.append(f"seq {c['seq']} of {c['epoch']}{lag}")
    if c.get("leader") is not None:  # an ingest's publisher
        parts.append(f"{'leader' if c['leader'] else 'not leader'}, {c.get('waiting', 0)} waiting")
    if c.get("clients") is not None:
        parts.append(f"{c['clients']} clients")
    reason = c.get("last_error") if c.get("state") not in ("connected", "ok") else None
    reason = reason or c.get("reason")
    if reason:
        parts.append(str(reason)[:120])
    return ", ".join(parts)


def _role(health: dict[str, Any]) -> str:
    """` (edge)`, ` (ingest)`: a process of a scaled-out deployment says which (the single process says nothing)."""
    role = health.get("role")
    return f" ({role})" if isinstance(role, str) and role != "all" else ""


def render(url: str, health: dict[str, Any]) -> str:
    """The summary lines printed by `streamer status`."""
    lines = [
        f"stock-streamer{_role(health)} at {url}: {str(health.get('status', '?')).upper()}",
        f"market: {health.get('market_status') or 'unknown'}   time: {health.get('time', '?')}",
    ]
    components = health["components"]
    width = max((len(n) for n in components), default=0)
    for name, c in components.items():
        state = str(c.get("state", "?")) if isinstance(c, dict) else "?"
        detail = _detail(name, c) if isinstance(c, dict) else ""
        lines.append(f"  {name:<{width}}  {state:<12} {detail}".rstrip())
    return "\n".join(lines)


def status_main(url: str, timeout: float, out: TextIO | None = None) -> int:
    """Print the summary; 0 ok/degraded, 1 failed, 3 unreachable (see the module docstring)."""
    out = out or sys.stdout
    try:
        health = fetch_health(url, timeout)
    except (OSError, ValueError) as e:  # URLError and timeouts are OSErrors; a non-JSON body is a ValueError
        reason = (e.reason if isinstance(e, urllib.error.URLError) else None) or e
        print(f"stock-streamer at {url}: UNREACHABLE ({reason})", file=out)
        return EXIT_UNREACHABLE
    print(render(url, health), file=out)
    return EXIT_FAILED if health.get("status") == "failed" else EXIT_OK
