"""The `providers.upstox` section: the token from the environment (masked), instrument keys checked, the mode's
subscription limit enforced, each problem named by its key path."""

from pathlib import Path
from typing import Any

import pytest

from providers.upstox.connect import feed_url
from providers.upstox.instruments import InstrumentMap
from streamer.config import ConfigError, UpstoxConfig, load_config, parse_config

REPO = Path(__file__).resolve().parents[2]


def upstox(**section: Any) -> UpstoxConfig:
    return parse_config({"providers": {"upstox": section}}, env={}).providers.upstox


def test_the_shipped_config_reads_the_token_from_the_environment() -> None:
    config = load_config(REPO / "config.yaml", env={"UPSTOX_ACCESS_TOKEN": "eyJ-a-day-token"}).providers.upstox
    assert config.access_token is not None and config.access_token.get_secret_value() == "eyJ-a-day-token"
    assert "eyJ-a-day-token" not in str(config.model_dump(mode="json"))
    assert load_config(REPO / "config.yaml", env={}).providers.upstox.access_token is None  # unset: no token


def test_instruments_map_upper_cased_symbols_to_keys_both_ways() -> None:
    config = upstox(instruments={"reliance": "NSE_EQ|INE002A01018", "nifty50": "NSE_INDEX|Nifty 50"})
    assert config.instruments == {"RELIANCE": "NSE_EQ|INE002A01018", "NIFTY50": "NSE_INDEX|Nifty 50"}
    mapping = InstrumentMap(config.instruments)
    assert (mapping.key_of("reliance"), mapping.symbol_of("NSE_INDEX|Nifty 50")) == ("NSE_EQ|INE002A01018", "NIFTY50")
    assert mapping.keys_for(["NIFTY50", "PKN", "RELIANCE"]) == (
        {"NSE_INDEX|Nifty 50": "NIFTY50", "NSE_EQ|INE002A01018": "RELIANCE"},
        ["PKN"],
    )


@pytest.mark.parametrize(
    ("section", "says"),
    [
        ({"instruments": {"RELIANCE": "INE002A01018"}}, "RELIANCE: 'INE002A01018' is not an instrument key"),
        ({"instruments": {"A": "NSE_EQ|X1", "B": "NSE_EQ|X1"}}, "A and B both map to NSE_EQ|X1"),
        ({"instruments": {f"S{i}": f"NSE_EQ|I{i}" for i in range(2001)}}, "2001 instruments, but Upstox allows 2000"),
        ({"mode": "full_d30"}, "providers.upstox.mode: must be 'ltpc' or 'full'"),
        ({"connect": "poll"}, "providers.upstox.connect"),
        ({"base_url": "wss://api.upstox.com"}, "must be a URL starting with http:// or https://"),
        ({"watchdog": {"data_timeout": 0}}, "providers.upstox.watchdog.data_timeout"),
        ({"token": "x"}, "providers.upstox.token: unknown key"),
    ],
)
def test_bad_settings_are_named(section: dict[str, Any], says: str) -> None:
    with pytest.raises(ConfigError) as err:
        upstox(**section)
    assert says in str(err.value)


def test_ltpc_mode_allows_more_instruments() -> None:
    assert len(upstox(mode="ltpc", instruments={f"S{i}": f"NSE_EQ|I{i}" for i in range(2001)}).instruments) == 2001


@pytest.mark.parametrize(
    ("base", "url"),
    [
        ("https://api.upstox.com", "wss://api.upstox.com/v3/feed/market-data-feed"),
        ("http://127.0.0.1:8123/", "ws://127.0.0.1:8123/v3/feed/market-data-feed"),
    ],
)
def test_the_feed_url_follows_the_base_url(base: str, url: str) -> None:
    assert feed_url(base) == url
