#!/usr/bin/env python3
"""Generate the synthetic demo session `streamer/data/demo_session.csv.gz`: one GPW trading day for the
default followed set (the sWIG80 list and the quoted indices), random-walk quotes every 30 s, deterministic for a
seed (gzip mtime 0).

    python scripts/make_demo_session.py [--seed N] [--date YYYY-MM-DD] [-o PATH]

The output is the recorded-session format documented in providers/replay.py."""

from __future__ import annotations

import argparse
import gzip
import math
import random
import sys
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run as a plain script from a checkout
    sys.path.insert(0, str(ROOT))

from streamer.catalog import Security, load_catalog
from streamer.config import SymbolsConfig
from streamer.securities import data_file_info
from streamer.universe import configured_securities

WARSAW = ZoneInfo("Europe/Warsaw")
DEFAULT_SEED = 20261120
DEFAULT_DATE = date(2026, 11, 20)  # a Friday, an XWAR session
DEFAULT_OUTPUT = ROOT / "streamer" / "data" / "demo_session.csv.gz"
STEP = timedelta(seconds=30)
OPEN, PRE_CLOSE, CLOSE, LAST_END = time(9, 0), time(16, 50), time(17, 0), time(17, 5)
COLUMNS = "timestamp,symbol,price,open,high,low,volume,prev_close"

# Rough price levels (PLN) so the demo looks familiar; the numbers are synthetic, not quotes.
PRICE_HINTS = {
    "11B": 220,
    "1AT": 60,
    "ABS": 60,
    "ACG": 40,
    "AGO": 11,
    "ALL": 15,
    "AMB": 25,
    "AMC": 60,
    "ANR": 30,
    "APT": 25,
    "ARH": 50,
    "ARL": 30,
    "AST": 45,
    "ATC": 15,
    "ATR": 20,
    "BCX": 45,
    "BIO": 3.5,
    "BLO": 30,
    "BMC": 8,
    "BOS": 10,
    "BRS": 5,
    "CIG": 2.5,
    "CLN": 30,
    "CMP": 70,
    "COG": 8,
    "CRJ": 0.6,
    "CRQ": 20,
    "CTX": 50,
    "DAD": 60,
    "DAT": 80,
    "DCR": 60,
    "DIG": 25,
    "ECH": 5,
    "ELT": 40,
    "ENT": 45,
    "ERB": 40,
    "EUR": 9,
    "FRO": 30,
    "FTE": 20,
    "GRX": 2,
    "HUG": 30,
    "ICE": 3,
    "KGN": 40,
    "LWB": 30,
    "MCI": 25,
    "MDG": 40,
    "MLG": 90,
    "MNC": 25,
    "MRC": 70,
    "MSZ": 5,
    "OND": 10,
    "OPN": 45,
    "PCR": 80,
    "PLW": 220,
    "QRS": 3,
    "RVU": 50,
    "SCP": 60,
    "SCW": 30,
    "SEL": 35,
    "SGN": 50,
    "SHO": 40,
    "SKA": 85,
    "SLV": 40,
    "SNK": 35,
    "STP": 320,
    "STX": 3.5,
    "SVE": 20,
    "TAR": 400,
    "TOA": 9,
    "TOR": 25,
    "UNI": 15,
    "UNT": 140,
    "VGO": 480,
    "VOT": 15,
    "VRG": 4,
    "WLT": 8,
    "WTN": 30,
    "WWL": 700,
    "ZEP": 9,
    "ZRE": 15,
}
INDEX_LEVELS = {"WIG": 110000.0, "WIG20": 2900.0, "MWIG40": 7000.0, "SWIG80": 29000.0}


@dataclass
class Stock:
    """One stock's fixed parameters and its running state through the day."""

    symbol: str
    prev_close: float
    latent: float  # log of the "true" price, walks every step whether or not the stock trades
    beta: float
    sigma: float  # per-step idiosyncratic volatility
    p_trade: float  # chance to trade in a continuous-trading step
    day_volume: float  # expected shares for the day
    weight: float = 0.0  # share in the synthetic sWIG80
    last: float | None = None
    open: float | None = None
    high: float = 0.0
    low: float = math.inf
    volume: int = 0
    closed: bool = False  # printed in the closing auction, so it may trade at last


@dataclass
class Index:
    symbol: str
    prev_close: float
    latent: float = 0.0  # log return since prev close (WIG20 only)
    last: float | None = None
    open: float | None = None
    high: float = 0.0
    low: float = math.inf
    rows: list = field(default_factory=list)


def tick(price: float) -> float:
    """A GPW-like price step for the price level (simplified tick table)."""
    for limit, step in ((5, 0.002), (10, 0.005), (50, 0.01), (100, 0.02), (200, 0.05), (500, 0.1)):
        if price < limit:
            return step
    return 0.2


def to_tick(price: float) -> float:
    step = tick(price)
    return round(max(step, round(price / step) * step), 3)


def fmt(x: float, decimals: int = 3) -> str:
    return f"{x:.{decimals}f}".rstrip("0").rstrip(".")


def timeline(day: date) -> list[datetime]:
    """Every 30 s from the 09:00 opening auction to the 17:05 end of trading at last, in UTC."""
    t = datetime.combine(day, OPEN, tzinfo=WARSAW)
    end = datetime.combine(day, LAST_END, tzinfo=WARSAW)
    out = []
    while t <= end:
        out.append(t.astimezone(UTC))
        t += STEP
    return out


def make_stocks(rng: random.Random, securities: list[Security], steps: int) -> list[Stock]:
    stocks = []
    for s in securities:
        level = PRICE_HINTS.get(s.symbol) or math.exp(rng.uniform(math.log(3), math.log(300)))
        prev_close = to_tick(level * math.exp(rng.gauss(0, 0.08)))
        liquidity = rng.betavariate(1.3, 1.6)  # most names in between, a few very liquid or very thin
        turnover = math.exp(rng.uniform(math.log(3e5), math.log(2e7))) * (0.3 + liquidity)
        stocks.append(
            Stock(
                symbol=s.symbol,
                prev_close=prev_close,
                latent=math.log(prev_close),
                beta=rng.uniform(0.5, 1.3),
                sigma=rng.uniform(0.010, 0.035) / math.sqrt(steps),
                p_trade=0.06 + 0.92 * liquidity,
                day_volume=turnover / prev_close,
            )
        )
    weights = [rng.lognormvariate(0, 0.8) for _ in stocks]
    total = sum(weights)
    for st, w in zip(stocks, weights, strict=False):
        st.weight = min(w / total, 0.10)  # sWIG80 caps one company at 10%
    total = sum(st.weight for st in stocks)
    for st in stocks:
        st.weight /= total
    return stocks


def activity(t: datetime) -> float:
    """Intraday U shape: busy after the open and into the pre-close, quiet at lunch."""
    local = t.astimezone(WARSAW)
    minutes = local.hour * 60 + local.minute - 9 * 60
    return 1.0 + 1.5 * math.exp(-minutes / 40) + 1.0 * math.exp(-(470 - minutes) / 30)


def trade(st: Stock, price: float, volume: int) -> None:
    st.last = price
    st.open = price if st.open is None else st.open
    st.high, st.low = max(st.high, price), min(st.low, price)
    st.volume += max(1, volume)


def generate(
    seed: int = DEFAULT_SEED, day: date = DEFAULT_DATE, securities: list[Security] | None = None
) -> list[tuple]:
    """Rows `(timestamp, symbol, price, open, high, low, volume, prev_close)` in time order."""
    rng = random.Random(seed)
    # The default followed set: the sWIG80 stocks and the quoted indices.
    securities = configured_securities(SymbolsConfig(), load_catalog()) if securities is None else securities
    times = timeline(day)
    continuous = [t for t in times if OPEN < t.astimezone(WARSAW).time() < PRE_CLOSE]
    stocks = make_stocks(rng, [s for s in securities if s.kind == "stock"], len(continuous))
    indices = [
        Index(s.symbol, INDEX_LEVELS.get(s.symbol, 1000.0) * math.exp(rng.gauss(0, 0.05)))
        for s in securities
        if s.kind == "index"
    ]
    mean_activity = sum(activity(t) for t in continuous) / len(continuous)
    market_gap, market_sigma = rng.gauss(0, 0.006), 0.008 / math.sqrt(len(continuous))
    drift = rng.gauss(0, 0.004) / len(continuous)
    for st in stocks:  # overnight news: where the opening auction will print
        st.latent += st.beta * market_gap + rng.gauss(0, 0.006)
    for ix in indices:
        ix.latent = 0.9 * market_gap
    rows: list[tuple] = []
    for t in times:
        local = t.astimezone(WARSAW).time()
        market = None
        if OPEN < local <= CLOSE:  # prices keep moving through the pre-close order book
            market = drift + rng.gauss(0, market_sigma)
            for st in stocks:
                st.latent += st.beta * market + rng.gauss(0, st.sigma)
        traded = []
        for st in stocks:
            price = to_tick(math.exp(st.latent))
            if local == OPEN:
                if rng.random() < 0.55 + st.p_trade:
                    trade(st, price, int(st.day_volume * rng.uniform(0.01, 0.04)))
                    traded.append(st)
            elif local < PRE_CLOSE:
                share = activity(t) / mean_activity / len(continuous)
                if rng.random() < min(0.99, st.p_trade * activity(t) / mean_activity):
                    size = st.day_volume * share / st.p_trade * rng.lognormvariate(-0.18, 0.6)
                    trade(st, price, int(size))
                    traded.append(st)
            elif local == CLOSE:
                if rng.random() < 0.6 + st.p_trade:
                    trade(st, price, int(st.day_volume * rng.uniform(0.06, 0.15)))
                    st.closed = True
                    traded.append(st)
            elif local > CLOSE and st.closed and rng.random() < 0.3 * st.p_trade:
                trade(st, st.last, int(st.day_volume * 0.002 * rng.lognormvariate(0, 0.8)))
                traded.append(st)
        stamp = t.strftime("%Y-%m-%dT%H:%M:%SZ")
        for st in traded:
            rows.append((stamp, st.symbol, st.last, st.open, st.high, st.low, st.volume, st.prev_close))
        for ix in indices:
            value = index_value(ix, stocks, market, rng)
            # Indices are published while trades happen: opening auction, continuous trading, closing auction.
            if (local == OPEN or OPEN < local < PRE_CLOSE or local == CLOSE) and value != ix.last:
                ix.last = value
                ix.open = value if ix.open is None else ix.open
                ix.high, ix.low = max(ix.high, value), min(ix.low, value)
                rows.append((stamp, ix.symbol, value, ix.open, ix.high, ix.low, 0, round(ix.prev_close, 2)))
    return rows


def index_value(ix: Index, stocks: list[Stock], market: float | None, rng: random.Random) -> float:
    """SWIG80 from its (synthetic) constituents; any other index a random walk on the market factor."""
    if ix.symbol == "SWIG80":
        ratio = sum(st.weight * ((st.last or st.prev_close) / st.prev_close) for st in stocks)
        return round(ix.prev_close * ratio, 2)
    if market is not None:  # prices move after the open until the closing auction
        ix.latent += 0.9 * market + rng.gauss(0, 0.0004)
    return round(ix.prev_close * math.exp(ix.latent), 2)


def render(rows: list[tuple], seed: int, day: date) -> str:
    info = data_file_info()
    lines = [
        "# synthetic: true",
        f"# generated by: scripts/make_demo_session.py --seed {seed}",
        f"# session: {day.isoformat()} (Europe/Warsaw)",
        f"# symbols: streamer/data/swig80.csv as_of {info.get('as_of', '?')}",
        "# note: random-walk quotes for demos and tests, NOT market data; prices are plausible levels only",
        "# format: timestamp ISO-8601 UTC; volume = cumulative shares for the day (0 for indices);"
        " a row only when the symbol traded in that 30 s step",
        COLUMNS,
    ]
    for ts, symbol, price, open_, high, low, volume, prev in rows:
        lines.append(f"{ts},{symbol},{fmt(price)},{fmt(open_)},{fmt(high)},{fmt(low)},{volume},{fmt(prev)}")
    return "\n".join(lines) + "\n"


def write(path: Path, text: str) -> None:
    """Gzip with mtime 0 and no file name, so the same text gives the same bytes."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as raw, gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0, compresslevel=9) as gz:
        gz.write(text.encode("utf-8"))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED)
    parser.add_argument(
        "--date", type=date.fromisoformat, default=DEFAULT_DATE, help="the trading day to stamp (default %(default)s)"
    )
    parser.add_argument("-o", "--output", type=Path, default=DEFAULT_OUTPUT)
    args = parser.parse_args(argv)
    rows = generate(args.seed, args.date)
    write(args.output, render(rows, args.seed, args.date))
    print(f"{args.output}: {len(rows)} rows, {args.output.stat().st_size} bytes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
