"""The catalog: every GPW main-market listing (ticker, company name, index membership) plus the quoted indices,
from the dated file `streamer/data/catalog.csv`. Search covers it whole; the followed set is drawn from it."""

from __future__ import annotations

import csv
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Literal

Kind = Literal["stock", "index"]
KINDS: tuple[Kind, ...] = ("stock", "index")
INDICES = ("WIG20", "MWIG40", "SWIG80")  # the indices whose membership the catalog records
COLUMNS = ("symbol", "name", "kind", "index", "short_name", "isin")
PACKAGED_NAME = "streamer/data/catalog.csv"
# GPW tickers are short upper-case codes, some start with a digit (11B, 1AT); indices are longer (SWIG80).
SYMBOL = re.compile(r"^[A-Z0-9][A-Z0-9._-]{0,15}$")
_ISIN = re.compile(r"^[A-Z]{2}[A-Z0-9]{9}[0-9]$")
_HEADER_LINE = re.compile(r"^#\s*([A-Za-z][A-Za-z0-9_ -]*?)\s*:\s*(.*?)\s*$")


@dataclass(frozen=True, slots=True)
class Security:
    """One instrument: its ticker, company (or index) name, kind and, for a stock, the index it belongs to."""

    symbol: str
    name: str
    kind: Kind
    index: str = ""  # WIG20, MWIG40, SWIG80 or "" (stocks only)
    short_name: str = ""  # the GPW short name (PKNORLEN), also searched
    isin: str = ""


def parse_header(lines: Iterable[str]) -> dict[str, str]:
    """The leading `# key: value` comment lines of a data file (free-text comment lines are skipped)."""
    info: dict[str, str] = {}
    for line in lines:
        stripped = line.strip()
        if not stripped:
            continue
        if not stripped.startswith("#"):
            break
        if m := _HEADER_LINE.match(stripped):
            info[m.group(1).strip()] = m.group(2)
    return info


def data_rows(text: str) -> Iterator[tuple[int, list[str]]]:
    """(line number, stripped cells) of every CSV line that is neither blank nor a `#` comment."""
    for lineno, line in enumerate(text.splitlines(), start=1):
        stripped = line.strip()
        if stripped and not stripped.startswith("#"):
            yield lineno, [c.strip() for c in next(csv.reader([line], skipinitialspace=True))]


class Catalog:
    """The listings by ticker, in file order; `info` is the file's `# key: value` header (as_of, source...)."""

    def __init__(self, securities: Iterable[Security], info: dict[str, str] | None = None) -> None:
        self._by_symbol = {s.symbol: s for s in securities}
        self.info = info or {}

    def __contains__(self, symbol: object) -> bool:
        return symbol in self._by_symbol

    def __iter__(self) -> Iterator[Security]:
        return iter(self._by_symbol.values())

    def __len__(self) -> int:
        return len(self._by_symbol)

    def get(self, symbol: str) -> Security | None:
        return self._by_symbol.get(symbol)

    def members(self, index: str) -> list[Security]:
        """The stocks the catalog places in `index` (WIG20, MWIG40, SWIG80), in file order."""
        return [s for s in self._by_symbol.values() if s.index == index]


def parse_catalog(text: str, source: str) -> Catalog:
    """Parse catalog text; a problem raises ValueError naming `source`, the line and what is wrong."""
    securities: list[Security] = []
    seen: dict[str, int] = {}
    header = False
    for lineno, cells in data_rows(text):

        def fail(problem: str, lineno: int = lineno) -> ValueError:
            return ValueError(f"{source}, line {lineno}: {problem}")

        if not header:
            if tuple(c.lower() for c in cells) != COLUMNS:
                raise fail(f"expected the header line {','.join(COLUMNS)!r}, got {','.join(cells)!r}")
            header = True
            continue
        if len(cells) != len(COLUMNS):
            raise fail(f"expected {len(COLUMNS)} columns ({','.join(COLUMNS)}), got {len(cells)}")
        symbol, name, kind, index, short_name, isin = cells
        if not SYMBOL.match(symbol):
            raise fail(f"symbol {symbol!r} is not an upper-case ticker (letters, digits, '.', '_', '-')")
        if symbol in seen:
            raise fail(f"duplicate symbol {symbol} (first on line {seen[symbol]})")
        if not name:
            raise fail(f"{symbol}: empty name")
        if kind not in KINDS:
            raise fail(f"{symbol}: kind must be one of {', '.join(KINDS)}, got {kind!r}")
        if index and (kind != "stock" or index not in INDICES):
            raise fail(f"{symbol}: index must be empty or, for a stock, one of {', '.join(INDICES)}; got {index!r}")
        if isin and not _ISIN.match(isin):
            raise fail(f"{symbol}: {isin!r} is not an ISIN (two letters, nine letters or digits, a check digit)")
        seen[symbol] = lineno
        securities.append(Security(symbol, name, "stock" if kind == "stock" else "index", index, short_name, isin))
    if not header:
        raise ValueError(f"{source}: no header line {','.join(COLUMNS)!r} found")
    return Catalog(securities, parse_header(text.splitlines()))


def load_catalog(path: str | Path | None = None) -> Catalog:
    """Read a catalog file (None = the packaged one)."""
    if path is None:
        text = resources.files("streamer").joinpath("data", "catalog.csv").read_text(encoding="utf-8")
        return parse_catalog(text, PACKAGED_NAME)
    return parse_catalog(Path(path).read_text(encoding="utf-8-sig"), str(path))
