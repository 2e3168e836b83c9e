"""The symbol list: a small CSV (`symbol,name,kind`) with `# key: value` header lines; the packaged one is
the sWIG80 after the March 2026 revision plus the WIG20 and sWIG80 indices."""

from __future__ import annotations

import csv
import re
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from .config import SymbolsConfig

KINDS = ("stock", "index")
COLUMNS = ("symbol", "name", "kind")
PACKAGED_NAME = "streamer/data/swig80.csv"
# GPW tickers are short upper-case codes, some start with a digit (11B, 1AT); indices are longer (SWIG80).
_SYMBOL = re.compile(r"^[A-Z0-9][A-Z0-9._-]{0,15}$")
_HEADER_LINE = re.compile(r"^#\s*([A-Za-z][A-Za-z0-9_ -]*?)\s*:\s*(.*?)\s*$")


@dataclass(frozen=True, slots=True)
class Security:
    symbol: str
    name: str
    kind: str  # "stock" or "index"


def _read(path: str | Path | None) -> tuple[str, str]:
    """The file's text and the name to cite in errors."""
    if path is None:
        text = resources.files("streamer").joinpath("data", "swig80.csv").read_text(encoding="utf-8")
        return text, PACKAGED_NAME
    path = Path(path)
    return path.read_text(encoding="utf-8-sig"), str(path)


def parse_header(lines: list[str]) -> dict[str, str]:
    """The leading `# key: value` comment lines (free-text comment lines are skipped)."""
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


def data_file_info(path: str | Path | None = None) -> dict[str, str]:
    """The `# key: value` header of a symbol file (None = the packaged one), e.g. `as_of`, `source`."""
    text, _ = _read(path)
    return parse_header(text.splitlines())


def parse_securities(text: str, source: str) -> list[Security]:
    """Parse symbol-file text; problems raise ValueError naming `source`, the line and what is wrong."""
    out: list[Security] = []
    seen: dict[str, int] = {}
    header_seen = False
    for lineno, line in enumerate(text.splitlines(), start=1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        cells = [c.strip() for c in next(csv.reader([line], skipinitialspace=True))]

        def fail(problem: str, lineno: int = lineno) -> ValueError:
            return ValueError(f"{source}, line {lineno}: {problem}")

        if not header_seen:
            if tuple(c.lower() for c in cells) != COLUMNS:
                raise fail(f"expected the header line {','.join(COLUMNS)!r}, got {stripped!r}")
            header_seen = True
            continue
        if len(cells) != len(COLUMNS):
            raise fail(f"expected {len(COLUMNS)} columns ({','.join(COLUMNS)}), got {len(cells)}: {stripped!r}")
        symbol, name, kind = cells[0].upper(), cells[1], cells[2].lower()
        if not symbol:
            raise fail("empty symbol")
        if not _SYMBOL.match(symbol):
            raise fail(f"symbol {cells[0]!r} is not a ticker (letters, digits, '.', '_', '-')")
        if kind not in KINDS:
            raise fail(f"kind must be one of {', '.join(KINDS)}, got {cells[2]!r}")
        if symbol in seen:
            raise fail(f"duplicate symbol {symbol} (first on line {seen[symbol]})")
        seen[symbol] = lineno
        out.append(Security(symbol, name or symbol, kind))
    if not header_seen:
        raise ValueError(f"{source}: no header line {','.join(COLUMNS)!r} found")
    return out


def load_securities(path: str | Path | None = None) -> list[Security]:
    """Read a symbol file (None = the packaged sWIG80 list), in file order."""
    text, source = _read(path)
    return parse_securities(text, source)


def select_symbols(securities: list[Security], config: SymbolsConfig) -> list[Security]:
    """The stocks of the file plus `include`, minus `exclude`, then the configured indices.

    `exclude` wins over everything; an `include` or index ticker the file does not know is followed anyway
    (named by its ticker)."""
    exclude = set(config.exclude)
    known = {s.symbol: s for s in securities}
    chosen: dict[str, Security] = {}
    for s in securities:
        if s.kind == "stock" and s.symbol not in exclude:
            chosen.setdefault(s.symbol, s)
    for symbol in config.include:
        if symbol not in exclude:
            chosen.setdefault(symbol, known.get(symbol) or Security(symbol, symbol, "stock"))
    for symbol in config.indices:
        if symbol not in exclude:
            found = known.get(symbol)
            chosen.setdefault(symbol, found if found and found.kind == "index" else Security(symbol, symbol, "index"))
    return list(chosen.values())
