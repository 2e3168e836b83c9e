"""Bounded problem logging: every occurrence counted, a flood written as a few lines and a summary."""

import logging

import pytest

from providers.bounded_log import BoundedLog


class Ticker:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def test_a_flood_is_counted_in_full_but_logged_in_a_few_lines(caplog: pytest.LogCaptureFixture) -> None:
    now = Ticker()
    problems = BoundedLog(logging.getLogger("t.bounded"), "feed", burst=3, period=60, monotonic=now)
    with caplog.at_level(logging.WARNING, logger="t.bounded"):
        for i in range(1000):
            problems.problem("malformed_frame", "frame %d is not protobuf", i)
        problems.problem("unknown_key", "key %s", "NSE_EQ|X")
    assert problems.counts == {"malformed_frame": 1000, "unknown_key": 1}
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("feed.malformed_frame")]
    assert lines[:3] == [f"feed.malformed_frame frame {i} is not protobuf" for i in range(3)]
    assert len(lines) == 4 and "not logged for 60s" in lines[3]
    caplog.clear()
    now.t = 61  # the next period: the owed summary first, then a fresh burst
    with caplog.at_level(logging.WARNING, logger="t.bounded"):
        problems.problem("malformed_frame", "frame %d is not protobuf", 1000)
    assert [r.getMessage() for r in caplog.records] == [
        "feed.malformed_frame suppressed=997 total=1000 more malformed_frame problems than were logged",
        "feed.malformed_frame frame 1000 is not protobuf",
    ]


def test_flush_writes_the_summaries_still_owed(caplog: pytest.LogCaptureFixture) -> None:
    problems = BoundedLog(logging.getLogger("t.bounded"), "feed", burst=1, period=60, monotonic=Ticker())
    with caplog.at_level(logging.WARNING, logger="t.bounded"):
        for _ in range(5):
            problems.problem("out_of_order", "late")
        problems.flush()
    assert caplog.records[-1].getMessage().startswith("feed.out_of_order suppressed=4 total=5")
