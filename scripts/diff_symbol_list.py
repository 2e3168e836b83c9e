#!/usr/bin/env python3
"""Compare a new GPW list with a shipped one and print what would change (docs/operations.md, "Keeping the
symbol lists true"). Nothing is written: apply the changes by hand, then run the tests.

    python scripts/diff_symbol_list.py NEW [--against swig80|mwig40|wig20|catalog|FILE]

NEW is a file in the shipped format (symbol,name,kind or the catalog's columns) or a plain list of tickers,
one per line or separated by commas or spaces (a `.WA` suffix is dropped, `#` starts a comment), e.g. the
portfolio copied from gpwbenchmark.pl. --against defaults to the shipped list of the same file name, else
swig80. Exit 0 when nothing changes, 1 when something does, 2 when a file cannot be read."""

from __future__ import annotations

import argparse
import re
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run as a plain script from a checkout
    sys.path.insert(0, str(ROOT))

from streamer.catalog import COLUMNS as CATALOG_COLUMNS
from streamer.catalog import SYMBOL, Catalog, load_catalog, parse_catalog
from streamer.securities import COLUMNS as LIST_COLUMNS
from streamer.securities import parse_header, parse_securities
from streamer.universe import INDEX_OF_UNIVERSE, UNIVERSE_FILES, load_index_list

DATA = ROOT / "streamer" / "data"
SIZES = {"wig20": 20, "mwig40": 40, "swig80": 80}


@dataclass(frozen=True)
class Listing:
    """A list to compare: ticker -> name ("" when the source gives none), and where it came from."""

    label: str
    names: dict[str, str]
    info: dict[str, str]


def read_new(path: Path) -> Listing:
    text = path.read_text(encoding="utf-8-sig")
    lines = [line for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    first = tuple(c.strip().lower() for c in lines[0].split(",")) if lines else ()
    if first == CATALOG_COLUMNS:
        catalog = parse_catalog(text, str(path))
        return Listing(str(path), {s.symbol: s.name for s in catalog}, catalog.info)
    if first == LIST_COLUMNS:
        stocks = [s for s in parse_securities(text, str(path)) if s.kind == "stock"]  # old files held indices too
        return Listing(str(path), {s.symbol: s.name for s in stocks}, parse_header(text.splitlines()))
    names: dict[str, str] = {}
    for lineno, line in enumerate(text.splitlines(), start=1):
        for token in re.split(r"[\s,;]+", line.split("#", 1)[0]):
            ticker = token.strip().strip("\"'").upper().removesuffix(".WA")
            if not ticker:
                continue
            if not SYMBOL.match(ticker):
                raise ValueError(f"{path}, line {lineno}: {token!r} is not a ticker")
            names.setdefault(ticker, "")
    return Listing(str(path), names, {})


def read_shipped(which: str, catalog: Catalog) -> Listing:
    if which == "catalog":
        return Listing("streamer/data/catalog.csv", {s.symbol: s.name for s in catalog}, catalog.info)
    if which in UNIVERSE_FILES:
        file = UNIVERSE_FILES[which]
        info = parse_header((DATA / file).read_text(encoding="utf-8").splitlines())
        return Listing(f"streamer/data/{file}", {s.symbol: s.name for s in load_index_list(which)}, info)
    return read_new(Path(which))


def report(old: Listing, new: Listing, catalog: Catalog, expected: int | None) -> tuple[list[str], bool]:
    """The lines to print, and whether anything changes."""
    added = [s for s in new.names if s not in old.names]
    removed = [s for s in old.names if s not in new.names]
    renamed = [s for s in new.names if s in old.names and new.names[s] and new.names[s] != old.names[s]]
    out = [
        f"{old.label} (as_of {old.info.get('as_of', '?')}): {len(old.names)} -> "
        f"{new.label} (as_of {new.info.get('as_of', '?')}): {len(new.names)}"
    ]

    def name(symbol: str) -> str:
        listing = catalog.get(symbol)
        return new.names.get(symbol) or old.names.get(symbol) or (listing.name if listing else "")

    def where(symbol: str) -> str:
        listing = catalog.get(symbol)
        if listing is None:
            return "NOT IN THE CATALOG: add it to streamer/data/catalog.csv"
        return f"catalog index: {listing.index or '-'}"

    out += [f"  + {s:<6} {name(s):<40} {where(s)}" for s in sorted(added)]
    out += [f"  - {s:<6} {name(s):<40} {where(s)}" for s in sorted(removed)]
    out += [f"  ~ {s:<6} {old.names[s]!r} -> {new.names[s]!r}" for s in sorted(renamed)]
    if expected is not None and len(new.names) != expected:
        out.append(f"  ! the new list has {len(new.names)} stocks; the index has exactly {expected}")
    changed = bool(added or removed or renamed)
    out.append(
        f"  {len(added)} added, {len(removed)} removed, {len(renamed)} renamed"
        if changed
        else "  no change: bump as_of and name the new source in the header"
    )
    return out, changed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("new", type=Path, help="the new list (shipped CSV format or plain tickers)")
    parser.add_argument(
        "--against", help="wig20, mwig40, swig80, catalog or a file (default: by NEW's file name, else swig80)"
    )
    args = parser.parse_args(argv)
    stem = args.new.name.split(".")[0].lower()
    against = args.against or (stem if stem in (*UNIVERSE_FILES, "catalog") else "swig80")
    try:
        catalog = load_catalog()
        new = read_new(args.new)
        old = read_shipped(against, catalog)
    except (OSError, ValueError) as e:
        print(f"diff_symbol_list: {e}", file=sys.stderr)
        return 2
    lines, changed = report(old, new, catalog, SIZES.get(against))
    print("\n".join(lines))
    if against in INDEX_OF_UNIVERSE and changed:
        print(f"  then: the index column of catalog.csv ({INDEX_OF_UNIVERSE[against]}) must name the same stocks")
    return 1 if changed else 0


if __name__ == "__main__":
    sys.exit(main())
