"""scripts/diff_symbol_list.py: what a new index list or catalog would change against the shipped one."""

import subprocess
import sys
from pathlib import Path

from streamer.universe import load_index_list

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "diff_symbol_list.py"


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=60)


def test_the_shipped_list_as_plain_tickers_changes_nothing(tmp_path):
    new = tmp_path / "portfolio.txt"
    new.write_text(
        "# copied from the portfolio page\n" + ", ".join(f"{s.symbol}.WA" for s in load_index_list("swig80"))
    )
    result = run(str(new))
    assert result.returncode == 0, result.stderr
    assert "80 -> " in result.stdout and "no change" in result.stdout


def test_a_revision_prints_additions_removals_and_a_wrong_count(tmp_path):
    symbols = [s.symbol for s in load_index_list("wig20") if s.symbol not in ("LPP", "PZU")] + ["OPL", "ZZZ"]
    new = tmp_path / "wig20.txt"
    new.write_text("\n".join([*symbols[:-1], "zzz", ""]), encoding="utf-8")
    result = run(str(new))  # compared with wig20 by the file name
    assert result.returncode == 1, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith("streamer/data/wig20.csv (as_of 2026-07-09): 20 -> ")
    assert any(line.split()[:3] == ["+", "OPL", "Orange"] and "catalog index: MWIG40" in line for line in lines)
    assert any(line.split()[:2] == ["+", "ZZZ"] and "NOT IN THE CATALOG" in line for line in lines)
    assert any(line.split()[:3] == ["-", "LPP", "LPP"] for line in lines)
    assert any(line.split()[:2] == ["-", "PZU"] for line in lines)
    assert "  2 added, 2 removed, 0 renamed" in lines


def test_a_renamed_company_and_a_bad_ticker(tmp_path):
    new = tmp_path / "mine.csv"
    new.write_text("symbol,name,kind\nPKN,Orlen Group,stock\n", encoding="utf-8")
    result = run(str(new), "--against", "wig20")
    assert result.returncode == 1 and "  ~ PKN    'Orlen' -> 'Orlen Group'" in result.stdout
    assert "the new list has 1 stocks; the index has exactly 20" in result.stdout
    bad = tmp_path / "bad.txt"
    bad.write_text("PKN\nnot/a/ticker\n", encoding="utf-8")
    result = run(str(bad))
    assert result.returncode == 2 and "line 2: 'not/a/ticker' is not a ticker" in result.stderr
