"""Fallback chain: with in-memory providers for the logic, and with the real providers on loopback servers."""

import logging
from collections.abc import Sequence
from datetime import UTC, datetime

import pytest

from providers.alpha_vantage import AlphaVantageProvider
from providers.base import FetchResult, ProviderHealth
from providers.chain import FallbackChain
from providers.stooq import StooqProvider
from streamer.clock import FakeClock
from streamer.config import AlphaVantageConfig, StooqConfig
from streamer.events import ProviderState
from streamer.model import StockUpdate
from tests.providers.wire import (
    POW_PAGE,
    StooqRow,
    WireServer,
    alpha_vantage_book,
    global_quote,
    stooq_book,
    text,
)

NOW = datetime(2024, 7, 15, 16, 0, tzinfo=UTC)


class Fake:
    """A provider that knows `quotes`; `answer_all` makes it return every quote it knows, asked or not."""

    def __init__(
        self,
        name: str,
        quotes: dict[str, float],
        *,
        fail: Exception | None = None,
        answer_all: bool = False,
        not_due: bool = False,
    ) -> None:
        self.name, self.quotes, self.fail = name, quotes, fail
        self.answer_all, self.not_due = answer_all, not_due
        self.health = ProviderHealth()
        self.asked: list[list[str]] = []
        self.closed = False

    async def fetch(self, symbols: Sequence[str]) -> FetchResult:
        self.asked.append(list(symbols))
        if self.fail:
            raise self.fail
        if self.not_due:  # like a throttled provider whose turn has not come: neither delivered nor missing
            return FetchResult(self.name, ())
        known = self.quotes if self.answer_all else {s: p for s, p in self.quotes.items() if s in symbols}
        updates = tuple(
            StockUpdate(symbol=s, price=p, timestamp=NOW, data_source=self.name, received_at=NOW)
            for s, p in known.items()
        )
        missing = frozenset(s for s in symbols if s not in self.quotes)
        return FetchResult(self.name, updates, missing, tuple(f"{self.name}: no {s}" for s in sorted(missing)))

    async def close(self) -> None:
        self.closed = True
        if self.fail:
            raise self.fail


def prices(result: FetchResult) -> dict[str, tuple[float, str]]:
    return {u.symbol: (u.price, u.data_source) for u in result.updates}


async def test_secondary_is_asked_only_for_what_the_primary_missed():
    primary = Fake("primary", {"PKN": 63.5, "PKO": 58.4})
    secondary = Fake("secondary", {"KGH": 120.0, "PKN": 1.0})
    result = await FallbackChain([primary, secondary]).fetch(["PKN", "KGH", "PKO"])
    assert secondary.asked == [["KGH"]]
    assert [u.symbol for u in result.updates] == ["PKN", "KGH", "PKO"]  # in the order asked
    assert prices(result)["KGH"] == (120.0, "secondary")
    assert result.missing == frozenset() and result.problems == ("primary: no KGH",)


async def test_primary_down_everything_comes_from_the_secondary():
    primary = Fake("primary", {})
    secondary = Fake("secondary", {"PKN": 63.5, "PKO": 58.4})
    chain = FallbackChain([primary, secondary])
    result = await chain.fetch(["PKN", "PKO"])
    assert secondary.asked == [["PKN", "PKO"]]
    assert prices(result) == {"PKN": (63.5, "secondary"), "PKO": (58.4, "secondary")}
    assert chain.health.state is ProviderState.OK


async def test_symbols_nobody_has_are_missing_and_problems_are_concatenated():
    chain = FallbackChain([Fake("primary", {"PKN": 63.5}), Fake("secondary", {})])
    result = await chain.fetch(["PKN", "XYZ"])
    assert result.missing == {"XYZ"}
    assert result.problems == ("primary: no XYZ", "secondary: no XYZ")
    assert chain.health.state is ProviderState.DEGRADED


async def test_first_provider_wins_and_unasked_symbols_are_ignored():
    primary = Fake("primary", {"PKN": 63.5})
    secondary = Fake("secondary", {"PKN": 1.0, "PKO": 58.4, "CDR": 99.0}, answer_all=True)
    result = await FallbackChain([primary, secondary]).fetch(["PKN", "PKO"])
    assert prices(result) == {"PKN": (63.5, "primary"), "PKO": (58.4, "secondary")}


async def test_a_provider_that_raises_is_contained_and_its_symbols_move_on(caplog):
    buggy = Fake("buggy", {}, fail=RuntimeError("boom"))
    backup = Fake("backup", {"PKN": 63.5})
    chain = FallbackChain([buggy, backup])
    result = await chain.fetch(["PKN"])
    assert prices(result) == {"PKN": (63.5, "backup")}
    assert backup.asked == [["PKN"]]
    (record,) = [r for r in caplog.records if r.name == "providers.chain"]
    assert record.levelno == logging.ERROR and record.exc_info is not None  # logged with its traceback
    assert "chain.provider_error provider=buggy" in record.getMessage()
    assert buggy.health.state is ProviderState.DOWN and buggy.health.errors_by_reason == {"internal_error": 1}
    assert any("RuntimeError: boom" in p for p in result.problems)


async def test_symbols_not_due_at_the_primary_are_not_passed_on():
    primary = Fake("primary", {}, not_due=True)
    secondary = Fake("secondary", {"PKN": 1.0})
    result = await FallbackChain([primary, secondary]).fetch(["PKN"])
    assert secondary.asked == [] and result.updates == () and result.missing == frozenset()


async def test_members_expose_each_providers_health_in_order():
    primary, secondary = Fake("primary", {}), Fake("secondary", {})
    chain = FallbackChain([primary, secondary])
    assert [m.name for m in chain.members] == ["primary", "secondary"]
    primary.health.down("timeout", "no answer")
    assert chain.members[0].health.state is ProviderState.DOWN


async def test_close_closes_every_member_even_if_one_fails(caplog):
    failing, other = Fake("failing", {}, fail=RuntimeError("close failed")), Fake("other", {})
    await FallbackChain([failing, other]).close()
    assert failing.closed and other.closed
    assert "chain.close_failed provider=failing" in caplog.text


def test_a_chain_needs_a_provider():
    with pytest.raises(ValueError):
        FallbackChain([])


# --- real providers on loopback servers ----------------------------------------------------------

PKN = StooqRow("pkn", "2024-07-15", "17:05:12", "63.10", "64.00", "62.80", "63.52", "1234567")
KGH_AV = global_quote(
    "KGH.WAR", price="120.5000", prev_close="119.0000", change="1.5000", change_percent="1.2605%", day="2024-07-12"
)


@pytest.fixture
async def wired():
    async with WireServer() as stooq_srv, WireServer(alpha_vantage_book({"KGH.WAR": KGH_AV})) as av_srv:
        clock = FakeClock(NOW)
        stooq = StooqProvider(StooqConfig(base_url=stooq_srv.base_url), clock=clock)
        av = AlphaVantageProvider(
            AlphaVantageConfig(base_url=av_srv.base_url, apikey="k", symbol_map={"KGH": "KGH.WAR", "PKN": "PKN.WAR"}),
            clock=clock,
        )
        chain = FallbackChain([stooq, av])
        yield chain, stooq_srv, av_srv
        await chain.close()


async def test_wired_stooq_unknown_symbol_is_fetched_from_alpha_vantage(wired):
    chain, stooq_srv, av_srv = wired
    stooq_srv.reply = stooq_book([PKN])  # KGH gets an N/D row
    result = await chain.fetch(["PKN", "KGH"])
    assert [s.query["symbol"] for s in av_srv.requests] == ["KGH.WAR"]
    assert prices(result) == {"PKN": (63.52, "stooq"), "KGH": (120.5, "alpha_vantage")}
    assert result.missing == frozenset()
    stooq, av = chain.members
    assert stooq.health.state is ProviderState.DEGRADED and av.health.state is ProviderState.OK


async def test_wired_stooq_down_everything_asked_from_alpha_vantage(wired):
    chain, stooq_srv, av_srv = wired
    stooq_srv.reply = text(POW_PAGE, content_type="text/html")
    result = await chain.fetch(["PKN", "KGH"])
    assert [s.query["symbol"] for s in av_srv.requests] == ["PKN.WAR", "KGH.WAR"]
    assert prices(result) == {"KGH": (120.5, "alpha_vantage")}
    assert result.missing == {"PKN"}  # Alpha Vantage does not know it either
    assert chain.members[0].health.state is ProviderState.DOWN
