"""Symbol-list files: a small CSV (`symbol,name,kind`) with `# key: value` header lines. The packaged index
lists (`streamer/data/wig20.csv`, `mwig40.csv`, `swig80.csv`) and a user's own `symbols.file` use it."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from .catalog import KINDS, SYMBOL, Security, data_rows, parse_header

__all__ = ["COLUMNS", "PACKAGED_NAME", "Security", "data_file_info", "load_securities", "parse_header"]

COLUMNS = ("symbol", "name", "kind")
PACKAGED_NAME = "streamer/data/swig80.csv"


def _read(path: str | Path | None) -> tuple[str, str]:
    """The file's text and the name to cite in errors."""
    if path is None:
        text = resources.files("streamer").joinpath("data", "swig80.csv").read_text(encoding="utf-8")
        return text, PACKAGED_NAME
    path = Path(path)
    return path.read_text(encoding="utf-8-sig"), str(path)


def data_file_info(path: str | Path | None = None) -> dict[str, str]:
    """The `# key: value` header of a symbol file (None = the packaged sWIG80 list), e.g. `as_of`, `source`."""
    text, _ = _read(path)
    return parse_header(text.splitlines())


def parse_securities(text: str, source: str) -> list[Security]:
    """Parse symbol-file text; problems raise ValueError naming `source`, the line and what is wrong."""
    out: list[Security] = []
    seen: dict[str, int] = {}
    header_seen = False
    for lineno, cells in data_rows(text):
        row = ",".join(cells)

        def fail(problem: str, lineno: int = lineno) -> ValueError:
            return ValueError(f"{source}, line {lineno}: {problem}")

        if not header_seen:
            if tuple(c.lower() for c in cells) != COLUMNS:
                raise fail(f"expected the header line {','.join(COLUMNS)!r}, got {row!r}")
            header_seen = True
            continue
        if len(cells) != len(COLUMNS):
            raise fail(f"expected {len(COLUMNS)} columns ({','.join(COLUMNS)}), got {len(cells)}: {row!r}")
        symbol, name, kind = cells[0].upper(), cells[1], cells[2].lower()
        if not symbol:
            raise fail("empty symbol")
        if not SYMBOL.match(symbol):
            raise fail(f"symbol {cells[0]!r} is not a ticker (letters, digits, '.', '_', '-')")
        if kind not in KINDS:
            raise fail(f"kind must be one of {', '.join(KINDS)}, got {cells[2]!r}")
        if symbol in seen:
            raise fail(f"duplicate symbol {symbol} (first on line {seen[symbol]})")
        seen[symbol] = lineno
        out.append(Security(symbol, name or symbol, "stock" if kind == "stock" else "index"))
    if not header_seen:
        raise ValueError(f"{source}: no header line {','.join(COLUMNS)!r} found")
    return out


def load_securities(path: str | Path | None = None) -> list[Security]:
    """Read a symbol file (None = the packaged sWIG80 list), in file order."""
    text, source = _read(path)
    return parse_securities(text, source)
