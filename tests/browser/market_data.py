"""A small recorded session for the browser tests: a few WIG20 companies whose prices move every 30 s step,
so any few replayed cycles change what the page shows (the packaged demo session has no WIG20 stocks)."""

from __future__ import annotations

import math
from datetime import date, datetime, time, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

WARSAW = ZoneInfo("Europe/Warsaw")
SESSION_DAY = date(2026, 11, 18)  # a Wednesday, an XWAR session
STOCKS = {
    "PKN": ("Orlen", 62.0),
    "PKO": ("PKO Bank Polski", 71.0),
    "CDR": ("CD Projekt", 255.0),
    "KGH": ("KGHM Polska Miedź", 190.0),
    "PZU": ("Powszechny Zakład Ubezpieczeń", 58.0),
}
INDICES = {"WIG20": 2900.0}


def write_symbols(path: Path) -> Path:
    lines = [
        "symbol,name,kind",
        *(f"{s},{name},stock" for s, (name, _) in STOCKS.items()),
        *(f"{s},{s},index" for s in INDICES),
    ]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def write_session(path: Path, hours: float = 8) -> Path:
    """Every symbol trades every 30 s from 09:00 (Warsaw); the price follows a wave, never repeating twice."""
    start = datetime.combine(SESSION_DAY, time(9, 0), WARSAW)
    rows = ["timestamp,symbol,price,open,high,low,volume,prev_close"]
    levels = {s: p for s, (_, p) in STOCKS.items()} | INDICES
    for step in range(int(hours * 120)):
        at = (start + timedelta(seconds=30 * step)).astimezone(ZoneInfo("UTC")).strftime("%Y-%m-%dT%H:%M:%SZ")
        for i, (symbol, level) in enumerate(levels.items()):
            price = round(level * (1 + 0.02 * math.sin(step / 7 + i) + 0.0005 * step / 10), 2)
            volume = 0 if symbol in INDICES else 1000 * (step + 1)
            rows.append(
                f"{at},{symbol},{price},{level},{max(level, price)},{min(level, price)},{volume},"
                f"{round(level * 0.99, 2)}"
            )
    path.write_text("\n".join(rows) + "\n", encoding="utf-8")
    return path
