"""`--demo`: a catalog symbol the recording lacks still ticks, on a deterministic synthetic walk seeded by its
ticker and replayed like recorded rows; a symbol outside the catalog stays unknown."""

import itertools
import logging
from datetime import timedelta

import pytest

from providers.replay import ReplayProvider, load_session
from providers.synthetic import STEP, synthetic_walk, tick
from streamer.catalog import load_catalog
from streamer.clock import FakeClock

CATALOG = load_catalog()


@pytest.fixture(scope="module")
def demo():
    return load_session()


def test_a_walk_is_the_same_for_the_same_ticker_and_differs_between_tickers(demo):
    a = synthetic_walk("PKN", demo.start, demo.end)
    assert a == synthetic_walk("PKN", demo.start, demo.end)
    assert [u.price for u in a[:20]] != [u.price for u in synthetic_walk("PKO", demo.start, demo.end)[:20]]


def test_a_walk_quotes_every_30_seconds_with_a_new_price_and_growing_volume(demo):
    rows = synthetic_walk("PKN", demo.start, demo.end)
    assert rows[0].timestamp == demo.start and rows[-1].timestamp <= demo.end
    assert len(rows) == (demo.end - demo.start) // STEP + 1
    for prev, u in itertools.pairwise(rows):
        assert u.timestamp - prev.timestamp == STEP
        assert u.price != prev.price and u.volume > prev.volume
        assert u.open == rows[0].price and u.low <= u.price <= u.high
        assert u.data_source == "replay" and u.prev_close == rows[0].prev_close
    # Plausible: a GPW-like level, on the tick grid, within a few percent of the previous close over the day.
    assert 2 < rows[0].prev_close < 400
    assert all(abs(u.price / u.prev_close - 1) < 0.15 for u in rows)
    assert all(abs(round(u.price / tick(u.price)) * tick(u.price) - u.price) < 1e-6 for u in rows[:50])


def test_an_index_walks_at_its_level_without_volume(demo):
    rows = synthetic_walk("WIG", demo.start, demo.end, index=True)
    assert 90_000 < rows[0].price < 130_000 and {u.volume for u in rows} == {0}


async def test_the_provider_replays_a_walk_for_a_catalog_symbol_it_has_no_recording_of(demo, caplog):
    assert "PKN" not in demo.symbols and "PKN" in CATALOG
    clock = FakeClock(demo.start + timedelta(hours=2))
    provider = ReplayProvider(demo, clock, catalog=CATALOG)
    with caplog.at_level(logging.INFO, logger="providers.replay"):
        first = await provider.fetch(["PKN", "ZZZZ", demo.symbols[0]])
        clock.advance(30)
        second = await provider.fetch(["PKN", "ZZZZ"])
    pkn = [u for u in first.updates if u.symbol == "PKN"]
    assert len(pkn) == 1 and pkn[0].data_source == "replay" and pkn[0].timestamp <= clock.now()
    assert [u.symbol for u in second.updates] == ["PKN"] and second.updates[0].price != pkn[0].price
    assert first.missing == second.missing == {"ZZZZ"}  # not in the catalog: unknown, as before
    assert [r.getMessage() for r in caplog.records].count(
        "replay.synthetic symbol=PKN not in the recording: replaying a synthetic walk"
    ) == 1

    # The same ticker walks the same way in another run.
    again = ReplayProvider(demo, FakeClock(demo.start + timedelta(hours=2)), catalog=CATALOG)
    assert (await again.fetch(["PKN"])).updates == tuple(pkn)


async def test_without_a_catalog_the_provider_knows_only_the_recording(demo):
    provider = ReplayProvider(demo, FakeClock(demo.start + timedelta(hours=2)))
    assert (await provider.fetch(["PKN"])).missing == {"PKN"}
