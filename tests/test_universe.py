"""The followed set: the configured universe (index lists or a file, include/exclude, indices) and watched
symbols on top of it, up to max_watched, each kept for a grace period after its last watcher lets it go."""

from datetime import UTC, datetime, timedelta

import pytest

from providers.stooq_csv import quote_urls
from streamer.catalog import Catalog, Security, load_catalog
from streamer.cli import main
from streamer.config import ConfigError, StooqConfig, SymbolsConfig, parse_config
from streamer.universe import Change, FollowedSet, configured_securities, load_index_list

CATALOG = load_catalog()
T0 = datetime(2026, 11, 20, 9, 0, tzinfo=UTC)
GRACE = timedelta(minutes=15)


def symbols(config: SymbolsConfig) -> list[str]:
    return [s.symbol for s in configured_securities(config, CATALOG)]


# --- the configured universe -------------------------------------------------------------------


def test_the_default_is_the_swig80_stocks_then_the_four_quoted_indices():
    chosen = configured_securities(SymbolsConfig(), CATALOG)
    assert [s.symbol for s in chosen[:80]] == [s.symbol for s in load_index_list("swig80")]
    assert [(s.symbol, s.kind) for s in chosen[80:]] == [
        ("WIG", "index"),
        ("WIG20", "index"),
        ("MWIG40", "index"),
        ("SWIG80", "index"),
    ]
    assert chosen[0] == CATALOG.get(chosen[0].symbol)  # names and index membership from the catalog


def test_universes_combine_and_include_exclude_apply():
    config = SymbolsConfig(universe=["wig20", "mwig40"], include=["ska", "PKN"], exclude=["PKO", "WIG"])
    chosen = symbols(config)
    assert len(chosen) == 20 + 40 - 1 + 1 + 3
    assert "SKA" in chosen and "PKO" not in chosen and "WIG" not in chosen
    assert chosen.count("PKN") == 1
    assert chosen[-3:] == ["WIG20", "MWIG40", "SWIG80"]


def test_an_include_outside_the_catalog_is_followed_under_its_ticker():
    chosen = configured_securities(SymbolsConfig(include=["ZZZZ"], indices=[]), CATALOG)
    assert chosen[-1] == Security("ZZZZ", "ZZZZ", "stock")


def test_a_file_of_ones_own_replaces_the_universe_and_keeps_its_names(tmp_path):
    path = tmp_path / "mine.csv"
    path.write_text("symbol,name,kind\nPKN,My Orlen,stock\n", encoding="utf-8")
    chosen = configured_securities(SymbolsConfig(file=path, indices=["WIG20"]), CATALOG)
    assert [(s.symbol, s.name) for s in chosen] == [("PKN", "My Orlen"), ("WIG20", "WIG20")]


def test_an_unknown_universe_is_refused_naming_it():
    with pytest.raises(ConfigError) as err:
        parse_config({"symbols": {"universe": ["swig80", "wig30"]}})
    assert err.value.problems == ["symbols.universe.1: must be 'wig20', 'mwig40' or 'swig80' (got 'wig30')"]
    with pytest.raises(ConfigError, match="lists an index more than once"):
        parse_config({"symbols": {"universe": ["WIG20", "wig20"]}})


def test_check_config_names_an_unknown_universe(tmp_path, capsys):
    path = tmp_path / "config.yaml"
    path.write_text("symbols:\n  universe: [sWIG80, mwig80]\n", encoding="utf-8")
    assert main(["check-config", "-c", str(path)]) == 2
    assert "symbols.universe.1: must be 'wig20', 'mwig40' or 'swig80' (got 'mwig80')" in capsys.readouterr().err


# --- watched symbols ---------------------------------------------------------------------------


def make(max_watched: int = 2) -> tuple[FollowedSet, list[Change]]:
    configured = [CATALOG.get("PKO"), CATALOG.get("WIG20")]
    followed = FollowedSet(configured, CATALOG, max_watched=max_watched, grace=GRACE)
    changes: list[Change] = []
    followed.on_change.append(lambda _f, change: changes.append(change))
    return followed, changes


def test_a_watched_symbol_is_followed_after_the_configured_ones_and_named_from_the_catalog():
    followed, changes = make()
    assert followed.set_list("a", ["PKN", "PKO"], T0) == Change(added=("PKN",))
    assert followed.symbols == ["PKO", "WIG20", "PKN"]
    assert followed.securities[-1].name == "Orlen"
    [watched] = followed.watched()
    assert (watched.security.symbol, watched.watchers, watched.drop_at) == ("PKN", 1, None)
    assert changes == [Change(added=("PKN",))]


def test_past_max_watched_a_symbol_is_refused_until_a_slot_frees():
    followed, _ = make(max_watched=2)
    followed.set_list("a", ["PKN", "KGH"], T0)
    followed.set_list("b", ["CDR"], T0)
    assert followed.symbols[-2:] == ["PKN", "KGH"] and followed.refused == ("CDR",)
    followed.set_list("a", ["PKN"], T0)  # KGH unwatched: still followed for the grace period
    assert followed.refused == ("CDR",) and followed.followed("KGH")
    assert followed.expire(T0 + GRACE) == Change(added=("CDR",), removed=("KGH",))
    assert followed.refused == () and followed.symbols[-2:] == ["PKN", "CDR"]


def test_an_unwatched_symbol_is_dropped_only_after_the_grace_period():
    followed, changes = make()
    followed.set_list("a", ["PKN"], T0)
    followed.remove_list("a", T0 + timedelta(minutes=1))
    assert followed.next_expiry() == T0 + timedelta(minutes=1) + GRACE
    assert [w.drop_at for w in followed.watched()] == [T0 + timedelta(minutes=1) + GRACE]
    assert not followed.expire(T0 + GRACE)  # 14 minutes after: still followed
    assert followed.expire(T0 + timedelta(minutes=1) + GRACE) == Change(removed=("PKN",))
    assert followed.next_expiry() is None and "PKN" not in followed.symbols
    assert changes[-1] == Change(removed=("PKN",))


def test_watching_again_within_the_grace_period_keeps_it_without_a_change():
    followed, changes = make()
    followed.set_list("a", ["PKN"], T0)
    followed.set_list("a", [], T0 + timedelta(minutes=1))
    followed.set_list("b", ["PKN"], T0 + timedelta(minutes=2))
    assert followed.next_expiry() is None
    assert not followed.expire(T0 + timedelta(hours=1))
    assert changes == [Change(added=("PKN",))]


def test_a_full_reread_forgets_lists_that_are_gone():
    followed, _ = make()
    followed.set_list("a", ["PKN"], T0)
    followed.set_list("b", ["KGH"], T0)
    followed.replace_lists({"b": ["KGH"]}, T0)
    assert followed.lists == 1
    assert [w.drop_at for w in followed.watched()] == [T0 + GRACE, None]


def test_a_config_reload_keeps_watched_symbols_and_absorbs_newly_configured_ones():
    followed, changes = make()
    followed.set_list("a", ["PKN", "KGH"], T0)
    change = followed.replace_configured([CATALOG.get("KGH"), CATALOG.get("WIG20")], T0)
    assert change == Change(added=(), removed=("PKO",))
    assert followed.symbols == ["KGH", "WIG20", "PKN"]  # KGH is configured now, not a watched slot
    assert [w.security.symbol for w in followed.watched()] == ["PKN"]
    assert len(changes) == 2  # a reload always reaches the components (names may have changed)


def test_watchable_is_a_catalog_listing_or_a_configured_symbol():
    followed = FollowedSet([Security("ZZZZ", "Mine", "stock")], Catalog([]), max_watched=1, grace=GRACE)
    assert followed.watchable("ZZZZ") and not followed.watchable("PKN")
    assert followed.watchable("PKN") is False
    assert FollowedSet([], CATALOG, max_watched=1, grace=GRACE).watchable("PKN")


def test_stooq_gets_the_universe_and_every_watched_slot_in_one_request_and_splits_beyond():
    stooq = StooqConfig()
    followed = FollowedSet(configured_securities(SymbolsConfig(), CATALOG), CATALOG, max_watched=50, grace=GRACE)
    followed.replace_lists({"a": [s.symbol for s in CATALOG if not followed.followed(s.symbol)]}, T0)
    assert len(followed.symbols) == 84 + 50 and len(followed.refused) > 0
    (request,) = quote_urls(stooq.base_url, [s.lower() for s in followed.symbols], apikey=None, max_length=2000)
    assert len(request.tickers) == 134

    # Even every listing fits the default limit; a shorter one splits, keeping every ticker once.
    everything = [s.symbol.lower() for s in CATALOG]
    assert len(quote_urls(stooq.base_url, everything, apikey=None, max_length=stooq.max_url_length)) == 1
    requests = quote_urls(stooq.base_url, everything, apikey=None, max_length=600)
    assert len(requests) > 1 and all(len(r.url) <= 600 for r in requests)
    assert [t for r in requests for t in r.tickers] == everything
