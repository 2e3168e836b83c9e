"""What every benchmark shares: machine facts and versions, percentiles, /proc sampling, the report writer."""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import re
import resource
import shlex
import subprocess
import sys
from collections.abc import Iterable
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
DOC = REPO / "docs" / "benchmarks.md"
RAW_LOG = "## Raw log"
PAGE = os.sysconf("SC_PAGE_SIZE")
TICKS = os.sysconf("SC_CLK_TCK")


# --- the machine -----------------------------------------------------------------------------------


def load1() -> float:
    return os.getloadavg()[0]


def machine() -> str:
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor() or "?",
    )
    total = re.search(r"MemTotal:\s+(\d+)", Path("/proc/meminfo").read_text())
    mem = int(total.group(1)) / 2**20 if total else float("nan")
    return f"{os.cpu_count()} cores, {mem:.1f} GiB RAM, {cpu}, Linux {platform.release()}"


def _server_version(script: str) -> str:
    out = subprocess.run([str(REPO / "scripts" / script), "fetch"], capture_output=True, text=True).stdout
    m = re.search(r"(\d+\.\d+\.\d+)", out)
    return m.group(1) if m else "?"


def versions(servers: bool = False) -> str:
    libs = ", ".join(f"{name} {metadata.version(name)}" for name in ("websockets", "aiohttp", "questdb"))
    text = f"Python {platform.python_version()}, {libs}"
    if servers:
        text += f", QuestDB {_server_version('run_questdb.sh')}, PocketBase {_server_version('run_pocketbase.sh')}"
    return text


def raise_fd_limit() -> int:
    """Raise RLIMIT_NOFILE as far as allowed (root may lift the hard limit to fs.nr_open)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    for want in (1_048_576, 262_144, 65_536, hard):  # above `hard` needs CAP_SYS_RESOURCE
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (want, max(want, hard)))
            return want
        except (ValueError, OSError):
            continue
    return soft


# --- a process, from /proc -------------------------------------------------------------------------


def rss_bytes(pid: int | str = "self") -> int:
    return int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * PAGE


def cpu_seconds(pid: int | str = "self") -> float:
    """User + system CPU time of a process so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def open_fds(pid: int | str = "self") -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


# --- figures ---------------------------------------------------------------------------------------


def pct(values: Iterable[float] | np.ndarray[Any, Any], *qs: float) -> list[float]:
    """Percentiles (0-100) of `values`; NaN for an empty sample."""
    a = np.asarray(values, dtype=float)
    if a.size == 0:
        return [float("nan")] * len(qs)
    return [float(x) for x in np.percentile(a, qs)]


def num(x: float) -> str:
    """A count with thin-space thousands: 1 000 000."""
    return f"{x:,.0f}".replace(",", " ")


def ms(seconds: float) -> str:
    return "n/a" if seconds != seconds else f"{seconds * 1000:.1f}"


# --- the report ------------------------------------------------------------------------------------


@dataclass
class Report:
    """One benchmark run: its table and verdict, printed and written into docs/benchmarks.md."""

    key: str  # the `## ` section it replaces, e.g. "1. Fan-out"
    title: str
    command: str = field(
        default_factory=lambda: "python -m " + _module() + "".join(" " + shlex.quote(a) for a in sys.argv[1:])
    )
    started: dt.datetime = field(default_factory=lambda: dt.datetime.now().astimezone())
    load_start: float = field(default_factory=load1)
    servers: bool = False
    header: list[str] = field(default_factory=list)
    rows: list[list[str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    verdict: str = ""
    limits: str = ""

    def table(self) -> str:
        lines = ["| " + " | ".join(self.header) + " |", "|" + "---|" * len(self.header)]
        lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in self.rows]
        return "\n".join(lines)

    def section(self) -> str:
        load_end = load1()
        took = (dt.datetime.now().astimezone() - self.started).total_seconds()
        parts = [
            f"## {self.key}",
            "",
            self.title,
            "",
            "```",
            self.command,
            "```",
            "",
            f"- run: {self.started:%Y-%m-%d %H:%M %Z}, {took:.0f} s",
            f"- machine: {machine()}",
            f"- versions: {versions(self.servers)}",
            f"- 1-minute load average: {self.load_start:.2f} at start, {load_end:.2f} at end "
            "(the machine was shared with other jobs unless both are near 0)",
            "",
            self.table(),
            "",
        ]
        parts += [f"- {n}" for n in self.notes]
        parts += [f"- **Verdict:** {self.verdict}", f"- **Limit:** {self.limits}", ""]
        return "\n".join(parts)

    def publish(self) -> str:
        text = self.section()
        print("\n" + text, flush=True)
        write_section(self.key, text)
        return text


def parser(doc: str | None, limits: str) -> argparse.ArgumentParser:
    """A benchmark's command line with the two options they all take: --no-record and --limits."""
    ap = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--no-record", action="store_true", help="print the table, leave docs/benchmarks.md alone")
    ap.add_argument("--limits", default=limits, help="what limits the figure, written under the table")
    return ap


def finish(report: Report, args: argparse.Namespace) -> int:
    """Print the section (--no-record) or rewrite it in docs/benchmarks.md; the exit code."""
    print(report.section()) if args.no_record else report.publish()
    return 0


def _module() -> str:
    main = sys.modules["__main__"]
    spec = getattr(main, "__spec__", None)
    return spec.name if spec and spec.name else Path(sys.argv[0]).stem


def write_section(key: str, text: str) -> None:
    """Replace (or add, in key order) the `## key` section; append the run to the raw log at the bottom."""
    doc = DOC.read_text() if DOC.exists() else "# Benchmarks\n\n" + RAW_LOG + "\n"
    head, _, raw = doc.partition(RAW_LOG + "\n")
    sections = re.split(r"(?m)^(?=## )", head)
    intro, sections = sections[0], sections[1:]
    by_key = {s.splitlines()[0][3:].strip(): s for s in sections}
    by_key[key] = text.rstrip() + "\n\n"
    ordered = sorted(by_key, key=lambda k: (int(m.group(1)) if (m := re.match(r"(\d+)\.", k)) else 99, k))
    stamp = dt.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")
    raw = raw.rstrip() + ("\n\n" if raw.strip() else "") + f"### {stamp}: {key}\n\n" + text.split("\n", 2)[2].strip()
    DOC.write_text(intro + "".join(by_key[k] for k in ordered) + RAW_LOG + "\n\n" + raw.strip() + "\n")
