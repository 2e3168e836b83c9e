"""PocketBase collections, record ids and record mapping for the PocketBase sink (pure: no I/O).

Facts checked against PocketBase v0.39 (apis/batch.go, tools/router/error.go, a live server):
- record ids are exactly 15 chars of `[a-z0-9]`; a duplicate id fails with `validation_not_unique` on `id`;
- wrong values are coerced, not refused (`"abc"` -> 0, a bad date -> ""): `required` is what makes them fail;
- a failed batch answers 400 `{"data": {"requests": {"<index>": {"code": "batch_request_failed",
  "response": {"status", "message", "data"}}}}}` and rolls the whole transaction back."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from streamer.events import QuoteBatch
from streamer.model import StockUpdate, format_timestamp, parse_timestamp

STOCK_DATA = "stock_data"
MARKET_UPDATES = "market_updates"
ALERTS = "alerts"
WATCHLISTS = "watchlists"  # the dashboard's: one per user, read and written by that user (docs/dashboard.md)
COLLECTIONS = (STOCK_DATA, MARKET_UPDATES, ALERTS, WATCHLISTS)  # ensured on every connect
# The default `users` auth collection's id: fixed by PocketBase's initial migration on every fresh server.
USERS_COLLECTION_ID = "_pb_users_auth_"
MAX_WATCHLIST_BYTES = 20_000  # the JSON list of tickers: room for a few thousand

# Entry.kind -> collection name
COLLECTION_OF_KIND = {"stock_data": STOCK_DATA, "market_update": MARKET_UPDATES, "alert": ALERTS}

ReadAccess = Literal["public", "users"]
ID_LENGTH = 15
_BASE36 = "0123456789abcdefghijklmnopqrstuvwxyz"


def _text(name: str, *, required: bool = False, max_len: int = 0) -> dict[str, Any]:
    return {"name": name, "type": "text", "required": required, "max": max_len}


def _number(
    name: str, *, required: bool = False, only_int: bool = False, min_value: float | None = None
) -> dict[str, Any]:
    return {"name": name, "type": "number", "required": required, "onlyInt": only_int, "min": min_value}


def _date(name: str, *, required: bool = False) -> dict[str, Any]:
    return {"name": name, "type": "date", "required": required}


_AUTODATES = [
    {"name": "created", "type": "autodate", "onCreate": True, "onUpdate": False},
    {"name": "updated", "type": "autodate", "onCreate": True, "onUpdate": True},
]

# PocketBase stores no NULLs: an absent number reads back as 0, an absent text as "".
FIELDS: dict[str, list[dict[str, Any]]] = {
    STOCK_DATA: [
        _text("symbol", required=True, max_len=32),
        _number("price", required=True, min_value=0),  # required: 0 (or a non-number) is refused
        _number("open"),
        _number("high"),
        _number("low"),
        _number("volume", only_int=True, min_value=0),
        _number("change"),
        _number("change_percent"),
        _number("prev_close"),
        _date("timestamp", required=True),
        _date("received_at"),
        _text("market_status", max_len=32),
        _text("data_source", max_len=64),
        *_AUTODATES,
    ],
    MARKET_UPDATES: [
        _text("status", required=True, max_len=32),
        _number("count", only_int=True, min_value=0),
        _date("time", required=True),
        {"name": "movers", "type": "json", "maxSize": 0},
        _number("cycle", only_int=True),
        *_AUTODATES,
    ],
    WATCHLISTS: [
        {
            "name": "owner",
            "type": "relation",
            "required": True,
            "collectionId": USERS_COLLECTION_ID,
            "maxSelect": 1,
            "cascadeDelete": True,
        },  # a deleted user takes their list along
        _text("name", max_len=100),
        {"name": "symbols", "type": "json", "maxSize": MAX_WATCHLIST_BYTES},
        *_AUTODATES,
    ],
    ALERTS: [
        _text("symbol", max_len=32),
        _text("rule", max_len=200),
        _text("kind", max_len=64),  # "" = system alert
        _text("message", max_len=2000),
        _number("price"),
        _number("value"),
        _number("threshold"),
        _date("time", required=True),
        *_AUTODATES,
    ],
}

INDEXES: dict[str, list[str]] = {
    STOCK_DATA: ["CREATE UNIQUE INDEX idx_stock_data_symbol ON stock_data (symbol)"],
    MARKET_UPDATES: ["CREATE INDEX idx_market_updates_time ON market_updates (time)"],
    ALERTS: ["CREATE INDEX idx_alerts_time ON alerts (time)"],
    WATCHLISTS: ["CREATE UNIQUE INDEX idx_watchlists_owner ON watchlists (owner)"],
}

# A user sees and changes only their own watchlist; creating one for someone else, or handing one over, is
# refused (PocketBase: 400 on create, 404 on update/delete of a record the rule hides).
_OWN = '@request.auth.id != "" && owner = @request.auth.id'
WATCHLIST_RULES: dict[str, str | None] = {
    "listRule": _OWN,
    "viewRule": _OWN,
    "deleteRule": _OWN,
    "createRule": '@request.auth.id != "" && @request.body.owner = @request.auth.id',
    "updateRule": _OWN + " && (@request.body.owner:isset = false || @request.body.owner = @request.auth.id)",
}


def rules(read_access: ReadAccess, name: str = STOCK_DATA) -> dict[str, str | None]:
    """API rules: watchlists are their owner's; the others have readers per `read_access` and `None`
    (superuser only) for every write."""
    if name == WATCHLISTS:
        return WATCHLIST_RULES
    read = "" if read_access == "public" else '@request.auth.id != ""'
    return {"listRule": read, "viewRule": read, "createRule": None, "updateRule": None, "deleteRule": None}


def collection_definition(name: str, read_access: ReadAccess) -> dict[str, Any]:
    """Body of `POST /api/collections` for one of our collections."""
    return {"name": name, "type": "base", "fields": FIELDS[name], "indexes": INDEXES[name], **rules(read_access, name)}


def collection_patch(existing: Mapping[str, Any], read_access: ReadAccess) -> dict[str, Any]:
    """What to PATCH on an existing collection so rules, fields and indexes match ours ({} = nothing)."""
    name = existing["name"]
    patch: dict[str, Any] = {k: v for k, v in rules(read_access, name).items() if existing.get(k) != v}
    have = {f["name"] for f in existing.get("fields", [])}
    missing = [f for f in FIELDS[name] if f["name"] not in have]
    if missing:  # PATCH `fields` replaces the whole list: resend the existing ones (with their ids)
        patch["fields"] = [*existing["fields"], *missing]
    indexes = list(existing.get("indexes") or [])
    index_names = " ".join(indexes)
    extra = [ix for ix in INDEXES[name] if ix.split(" ON ")[0].split()[-1] not in index_names]
    if extra:
        patch["indexes"] = indexes + extra
    return patch


# --- record ids and mapping --------------------------------------------------------------------


def record_id(*parts: str) -> str:
    """Deterministic PocketBase record id: 15 base36 chars of a SHA-256 of `parts`."""
    n = int.from_bytes(hashlib.sha256("\x1f".join(parts).encode()).digest(), "big")
    chars = []
    for _ in range(ID_LENGTH):
        n, r = divmod(n, 36)
        chars.append(_BASE36[r])
    return "".join(chars)


def stock_record_id(symbol: str) -> str:
    return record_id("stock_data", symbol)


def market_update_id(payload: Mapping[str, Any]) -> str:
    return record_id("market_update", str(payload["time"]), str(payload["status"]))


def alert_id(payload: Mapping[str, Any]) -> str:
    """From an `Alert.to_dict()`: its time, symbol and rule (a rule fires once per symbol and quote)."""
    return record_id("alert", str(payload["timestamp"]), str(payload.get("symbol") or ""), str(payload["rule"]))


def alert_record(payload: Mapping[str, Any]) -> dict[str, Any]:
    """`Alert.to_dict()` -> an `alerts` record body (`timestamp` becomes `time`; a system alert has symbol "")."""
    body = _pick(payload, ALERTS)
    body["symbol"] = payload.get("symbol") or ""
    body["time"] = payload["timestamp"]
    return body


def _pick(payload: Mapping[str, Any], collection: str) -> dict[str, Any]:
    names = {f["name"] for f in FIELDS[collection]} - {"created", "updated"}
    return {k: v for k, v in payload.items() if k in names}


@dataclass(frozen=True, slots=True)
class Planned:
    """One record write: collection, deterministic record id and body (without the id)."""

    collection: str
    record_id: str
    body: dict[str, Any]


def plan_record(kind: str, payload: Mapping[str, Any], stock_id: str | None = None) -> Planned:
    """Map an outbox entry to a record write; ValueError when it can never be written."""
    collection = COLLECTION_OF_KIND.get(kind)
    if collection is None:
        raise ValueError(f"unknown entry kind {kind!r}")
    body = _pick(payload, collection)
    try:
        if collection == STOCK_DATA:
            rid = stock_id or stock_record_id(str(payload["symbol"]))
            parse_timestamp(str(payload["timestamp"]))  # the never-older check needs it
        elif collection == MARKET_UPDATES:
            rid = market_update_id(payload)
        else:
            rid, body = alert_id(payload), alert_record(payload)
    except KeyError as e:
        raise ValueError(f"{e.args[0]}: is required") from None
    json.dumps(body, allow_nan=False)  # PocketBase cannot parse NaN/Infinity: it would fail the whole batch
    return Planned(collection, rid, body)


def quote_time(payload: Mapping[str, Any]) -> datetime:
    return parse_timestamp(str(payload["timestamp"]))


def movers(updates: Iterable[StockUpdate], n: int) -> dict[str, list[dict[str, Any]]]:
    """Top `n` gainers and losers by change_percent (quotes without one are left out)."""
    known = [(u.change_percent, u) for u in updates if u.change_percent is not None]
    up = [u for _, u in sorted(((c, u) for c, u in known if c > 0), key=lambda cu: (-cu[0], cu[1].symbol))]
    down = [u for _, u in sorted(((c, u) for c, u in known if c < 0), key=lambda cu: (cu[0], cu[1].symbol))]
    return {"gainers": [_mover(u) for u in up[:n]], "losers": [_mover(u) for u in down[:n]]}


def _mover(u: StockUpdate) -> dict[str, Any]:
    return {"symbol": u.symbol, "price": u.price, "change_percent": u.change_percent}


def market_update_payload(batch: QuoteBatch, n_movers: int) -> dict[str, Any]:
    return {
        "status": batch.market_status.value,
        "count": len(batch.updates),
        "time": format_timestamp(batch.ready_at),
        "cycle": batch.cycle,
        "movers": movers(batch.updates, n_movers),
    }


# --- PocketBase error bodies ------------------------------------------------------------------


def describe_error(body: Any) -> str:
    """One line from a PocketBase error body: message plus `field: message (code)` for each field."""
    if not isinstance(body, Mapping):
        return str(body)[:300]
    parts = [str(body.get("message", "")).strip()]
    data = body.get("data")
    if isinstance(data, Mapping):
        for field, err in data.items():
            if isinstance(err, Mapping):
                parts.append(f"{field}: {err.get('message', '')} ({err.get('code', '?')})")
    return " ".join(p for p in parts if p) or "no reason given"


def batch_failure(body: Any) -> tuple[int, int, Any] | None:
    """(index, status, response body) of the request that failed a batch, or None if no request is named."""
    requests = body.get("data", {}).get("requests") if isinstance(body, Mapping) else None
    if not isinstance(requests, Mapping):
        return None
    for key, err in requests.items():
        if key.isdigit() and isinstance(err, Mapping) and isinstance(err.get("response"), Mapping):
            response = err["response"]
            return int(key), int(response.get("status", 0)), response
    return None


def batch_limit_error(body: Any) -> int | None:
    """The server's max requests per batch when a batch was refused as too long, else None."""
    requests = body.get("data", {}).get("requests") if isinstance(body, Mapping) else None
    if isinstance(requests, Mapping) and requests.get("code") == "validation_length_too_long":
        return int(requests.get("params", {}).get("max", 0))
    return None


def field_error_code(body: Any, field: str) -> str | None:
    data = body.get("data") if isinstance(body, Mapping) else None
    err = data.get(field) if isinstance(data, Mapping) else None
    return err.get("code") if isinstance(err, Mapping) else None
