"""Hypothesis settings for the fuzz tests and a count of the inputs each target was fed.

CI runs a moderate number of examples per test; STREAMER_LONG_TESTS=1 runs many more. The counts are printed
at the end of the run (docs/reliability.md quotes them)."""

from __future__ import annotations

import os
from collections import Counter

from hypothesis import HealthCheck, settings

LONG = os.environ.get("STREAMER_LONG_TESTS") == "1"
EXAMPLES = 10_000 if LONG else 300

settings.register_profile(
    "fuzz",
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=False,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
)
FUZZ = settings.get_profile("fuzz")
TRIED: Counter[str] = Counter()  # target -> inputs tried


def pytest_terminal_summary(terminalreporter):
    if TRIED:
        terminalreporter.write_sep("-", "fuzz inputs tried")
        for target, count in sorted(TRIED.items()):
            terminalreporter.write_line(f"{target}: {count}")
        terminalreporter.write_line(f"total: {sum(TRIED.values())}")
