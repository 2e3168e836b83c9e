"""The `polling` and `providers` sections: the polling chain (Stooq, Alpha Vantage, replay) and the push feed."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, SecretStr, field_validator, model_validator

from .base import ReconnectConfig, Seconds, Section, blank_to_none, checked_url


class PollingConfig(Section):
    interval: Seconds = 30  # cycle length while the market is OPEN
    pre_market_interval: Seconds = 60
    after_hours_interval: Seconds = 60
    publish_unchanged: bool = False  # publish a quote even when it did not change since the last one


class StooqConfig(Section):
    enabled: bool = True
    base_url: str = "https://stooq.pl"
    apikey: SecretStr | None = None
    interval: Seconds = 5  # minimum seconds between two requests to Stooq (guards against a too-short polling interval)
    timeout: Seconds = 10
    max_url_length: Annotated[int, Field(ge=200)] = 2000  # longer symbol lists are split into several requests
    symbol_map: dict[str, str] = {}  # canonical ticker -> Stooq ticker (default: lower case)

    _none = field_validator("apikey", mode="before")(blank_to_none)


class AlphaVantageConfig(Section):
    enabled: bool = True  # also needs an API key: without one the provider is skipped with a log line
    base_url: str = "https://www.alphavantage.co"
    apikey: SecretStr | None = None
    plan: Literal["free", "premium"] = "free"  # premium uses REALTIME_BULK_QUOTES
    requests_per_day: Annotated[int, Field(ge=1)] = 25
    requests_per_minute: Annotated[int, Field(ge=1)] = 5
    interval: Seconds = 60  # minimum seconds between two fetches from Alpha Vantage
    timeout: Seconds = 10
    symbol_map: dict[str, str] = {}  # canonical ticker -> Alpha Vantage ticker (default: unchanged)

    _none = field_validator("apikey", mode="before")(blank_to_none)


class ReplayConfig(Section):
    file: Path | None = None  # recorded session CSV (.csv or .csv.gz); None = the built-in demo session
    speed: Seconds = 10  # 10 = ten recorded seconds per wall-clock second: a 30 s cycle every 3 s
    loop: bool = True  # start over at the end of the file

    _none = field_validator("file", mode="before")(blank_to_none)


class UpstoxWatchdogConfig(Section):
    """Liveness of the Upstox feed: our pings and their pongs, and a data watchdog for trading hours."""

    ping_interval: Seconds = 10  # seconds between our pings on the feed connection
    ping_timeout: Seconds = 10  # a pong later than this: the connection is dead, reconnect
    # No data for this long while the market is open: the feed is stalled, reconnect. Outside trading hours a pong
    # counts as liveness too (the feed is silent when nothing trades).
    data_timeout: Seconds = 30


# Instrument keys are SEGMENT|ID, e.g. NSE_EQ|INE002A01018 (an ISIN) or NSE_INDEX|Nifty 50.
_INSTRUMENT_KEY = re.compile(r"[A-Z][A-Z0-9_]*\|\S.*")
# Keys one connection may subscribe in one mode (Upstox V3 limits; see providers/upstox/wire.py).
_UPSTOX_MODE_LIMITS = {"ltpc": 5000, "full": 2000}


class UpstoxConfig(Section):
    """The Upstox Market Data Feed V3 (WebSocket, protobuf): NSE/BSE instruments pushed as they trade."""

    base_url: str = "https://api.upstox.com"  # the API host; the feed URL is derived from it (wss://...)
    # Bearer token from the Upstox login flow; it expires at 03:30 IST the next day, so it is renewed daily.
    access_token: SecretStr | None = None
    # A file holding the token instead (its first line): read at start and on every reload (SIGHUP), so a new
    # token takes effect without a restart.
    access_token_file: Path | None = None
    connect: Literal["authorize", "redirect"] = "authorize"  # ask the authorize endpoint, or follow the redirect
    mode: Literal["ltpc", "full"] = "full"  # ltpc: last trade only; full: adds the day's open/high/low and volume
    instruments: dict[str, str] = {}  # canonical ticker -> instrument key, e.g. RELIANCE: "NSE_EQ|INE002A01018"
    open_timeout: Seconds = 10  # seconds for the authorize request and for the WebSocket handshake
    watchdog: UpstoxWatchdogConfig = UpstoxWatchdogConfig()
    reconnect: ReconnectConfig = ReconnectConfig()

    _none = field_validator("access_token", "access_token_file", mode="before")(blank_to_none)

    @field_validator("base_url")
    @classmethod
    def _http_base(cls, v: str) -> str:
        return checked_url(v, ("http://", "https://")) or v

    @model_validator(mode="after")
    def _token_from_file(self) -> UpstoxConfig:
        if self.access_token_file is None:
            return self
        path = self.access_token_file.expanduser()
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as e:
            raise ValueError(f"access_token_file: cannot read {path}: {getattr(e, 'strerror', None) or e}") from None
        token = lines[0].strip() if lines else ""
        if not token:
            raise ValueError(f"access_token_file: {path} is empty (write the token on its first line)")
        if self.access_token is not None and self.access_token.get_secret_value() != token:
            raise ValueError("set access_token or access_token_file, not both")
        # The token is a secret like one given directly: masked in logs, compared by value on reload.
        object.__setattr__(self, "access_token", SecretStr(token))
        return self

    @field_validator("instruments")
    @classmethod
    def _keys(cls, v: dict[str, str]) -> dict[str, str]:
        upper = {symbol.strip().upper(): key.strip() for symbol, key in v.items()}
        for symbol, key in upper.items():
            if not _INSTRUMENT_KEY.fullmatch(key):
                raise ValueError(f"{symbol}: {key!r} is not an instrument key (SEGMENT|ID, e.g. NSE_EQ|INE002A01018)")
        seen: dict[str, str] = {}
        for symbol, key in upper.items():
            if key in seen:
                raise ValueError(f"{seen[key]} and {symbol} both map to {key}")
            seen[key] = symbol
        return upper

    @model_validator(mode="after")
    def _within_limit(self) -> UpstoxConfig:
        limit = _UPSTOX_MODE_LIMITS[self.mode]
        if len(self.instruments) > limit:
            raise ValueError(
                f"{len(self.instruments)} instruments, but Upstox allows {limit} per connection in {self.mode} mode"
            )
        return self


ProviderName = Literal["stooq", "alpha_vantage", "replay"]


class PushConfig(Section):
    """A push (streaming) provider: primary for the symbols it delivers; the polling chain fills in the rest and
    takes over when the feed is down or silent."""

    provider: Literal["none", "upstox"] = "none"  # none: polling only
    # Seconds: ticks are merged into at most one batch per cadence (the latest per symbol) for WebSocket, SSE, alerts
    # and QuestDB (which stores every tick); after a quiet spell the first tick goes out at once.
    cadence: Annotated[float, Field(gt=0, le=10)] = 0.02
    # Seconds the feed may deliver nothing (disconnected, or silent while the market is open) before the polling
    # chain takes over its symbols; it hands them back as soon as the feed delivers again.
    takeover_after: Seconds = 10


class ProvidersConfig(Section):
    chain: list[ProviderName] = Field(default=["stooq", "alpha_vantage"], min_length=1)  # primary first
    push: PushConfig = PushConfig()
    stooq: StooqConfig = StooqConfig()
    alpha_vantage: AlphaVantageConfig = AlphaVantageConfig()
    replay: ReplayConfig = ReplayConfig()
    upstox: UpstoxConfig = UpstoxConfig()

    @field_validator("chain")
    @classmethod
    def _no_repeats(cls, v: list[str]) -> list[str]:
        if len(set(v)) != len(v):
            raise ValueError("lists a provider more than once")
        if "replay" in v and len(v) > 1:
            # The replay feed drives the clock (time follows the recording), so it cannot mix with live feeds.
            raise ValueError("replay cannot be combined with live providers")
        return v

    @model_validator(mode="after")
    def _push_has_instruments(self) -> ProvidersConfig:
        # With the replay feed, the push feed is the offline demo's own loopback server, which maps every symbol.
        if self.push.provider == "upstox" and self.chain != ["replay"] and not self.upstox.instruments:
            raise ValueError(
                "push.provider is upstox but upstox.instruments is empty: map each symbol to its instrument key, "
                'e.g. {RELIANCE: "NSE_EQ|INE002A01018"}'
            )
        return self
