"""Configuration: YAML with `${VAR}` / `${VAR:-default}` from the environment, validated into typed models.

A bad file fails before anything starts, with one line per problem naming the key path."""

from __future__ import annotations

import os
import re
from datetime import time
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import SplitResult, unquote, urlsplit

import yaml
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_core import ErrorDetails, PydanticCustomError

Seconds = Annotated[float, Field(gt=0)]
Port = Annotated[int, Field(ge=1, le=65535)]
ListenPort = Annotated[int, Field(ge=0, le=65535)]  # 0 = any free port (tests, benchmarks)
DEFAULT_DATA_DIR = "~/.local/share/stock-streamer"


class ConfigError(Exception):
    """The configuration is invalid; `problems` holds one `key.path: problem` line each."""

    def __init__(self, problems: list[str], source: str | None = None) -> None:
        self.problems = problems
        self.source = source
        where = f"{source}: " if source else ""
        super().__init__(where + "invalid configuration:\n  " + "\n  ".join(problems))


class _Section(BaseModel):
    # Unknown keys are errors: a typo must not silently fall back to a default.
    model_config = ConfigDict(extra="forbid", frozen=True)


def _blank_to_none(value: Any) -> Any:
    # `${VAR:-}` yields "": treat an empty secret or path as "not set".
    return None if isinstance(value, str) and value.strip() == "" else value


UniverseName = Literal["wig20", "mwig40", "swig80"]  # the packaged index lists, streamer/data/<name>.csv


class SymbolsConfig(_Section):
    universe: list[UniverseName] = Field(default=["swig80"], min_length=1)  # index lists whose stocks are followed
    file: Path | None = None  # CSV of symbol,name,kind; when set it replaces `universe` (a list of your own)
    include: list[str] = []  # extra tickers to follow beyond the universe
    exclude: list[str] = []  # tickers of the universe to leave out
    indices: list[str] = ["WIG", "WIG20", "MWIG40", "SWIG80"]  # indices quoted for context
    max_watched: Annotated[int, Field(ge=0)] = 50  # symbols on users' watchlists followed beyond the universe
    watch_grace_period: Seconds = 900  # seconds a symbol nobody watches any more is still followed

    _none = field_validator("file", mode="before")(_blank_to_none)

    @field_validator("universe", mode="before")
    @classmethod
    def _lower(cls, v: Any) -> Any:
        return [s.strip().lower() if isinstance(s, str) else s for s in v] if isinstance(v, list) else v

    @field_validator("universe")
    @classmethod
    def _no_repeated_universe(cls, v: list[str]) -> list[str]:
        if len(set(v)) != len(v):
            raise ValueError("lists an index more than once")
        return v

    @field_validator("include", "exclude", "indices")
    @classmethod
    def _upper(cls, v: list[str]) -> list[str]:
        return [s.strip().upper() for s in v]


class MarketConfig(_Section):
    """GPW equities session boundaries, local (Europe/Warsaw) times."""

    timezone: str = "Europe/Warsaw"
    calendar: str = "XWAR"  # exchange_calendars code: trading days and holidays
    pre_market_start: time = time(8, 30)  # pre-opening phase (orders, no trades)
    open: time = time(9, 0)  # opening auction, then continuous trading
    close: time = time(17, 0)  # closing auction (pre-closing runs 16:50-17:00)
    after_hours_end: time = time(17, 5)  # end of trading at last

    @field_validator("pre_market_start", "open", "close", "after_hours_end", mode="before")
    @classmethod
    def _time_as_text(cls, v: Any) -> Any:
        # YAML reads an unquoted 9:00 as the number 540, which pydantic would take as seconds since midnight UTC.
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            raise ValueError(
                f'must be a time of day written as text, e.g. "09:00" (got the number {v!r}; '
                "YAML reads an unquoted 9:00 as 540)"
            )
        return v

    @field_validator("pre_market_start", "open", "close", "after_hours_end")
    @classmethod
    def _local_time(cls, v: time) -> time:
        if v.tzinfo is not None:
            raise ValueError("must be a local time without a time zone (market.timezone applies)")
        return v

    @model_validator(mode="after")
    def _ordered(self) -> MarketConfig:
        if not self.pre_market_start <= self.open < self.close <= self.after_hours_end:
            raise ValueError("session times must satisfy pre_market_start <= open < close <= after_hours_end")
        return self

    @field_validator("timezone")
    @classmethod
    def _known_tz(cls, v: str) -> str:
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

        try:
            ZoneInfo(v)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {v!r}") from None
        return v


class PollingConfig(_Section):
    interval: Seconds = 30  # cycle length while the market is OPEN
    pre_market_interval: Seconds = 60
    after_hours_interval: Seconds = 60
    publish_unchanged: bool = False  # publish a quote even when it did not change since the last one


class StooqConfig(_Section):
    enabled: bool = True
    base_url: str = "https://stooq.pl"
    apikey: SecretStr | None = None
    interval: Seconds = 5  # minimum seconds between two requests to Stooq (guards against a too-short polling interval)
    timeout: Seconds = 10
    max_url_length: Annotated[int, Field(ge=200)] = 2000  # longer symbol lists are split into several requests
    symbol_map: dict[str, str] = {}  # canonical ticker -> Stooq ticker (default: lower case)

    _none = field_validator("apikey", mode="before")(_blank_to_none)


class AlphaVantageConfig(_Section):
    enabled: bool = True  # also needs an API key: without one the provider is skipped with a log line
    base_url: str = "https://www.alphavantage.co"
    apikey: SecretStr | None = None
    plan: Literal["free", "premium"] = "free"  # premium uses REALTIME_BULK_QUOTES
    requests_per_day: Annotated[int, Field(ge=1)] = 25
    requests_per_minute: Annotated[int, Field(ge=1)] = 5
    interval: Seconds = 60  # minimum seconds between two fetches from Alpha Vantage
    timeout: Seconds = 10
    symbol_map: dict[str, str] = {}  # canonical ticker -> Alpha Vantage ticker (default: unchanged)

    _none = field_validator("apikey", mode="before")(_blank_to_none)


class ReplayConfig(_Section):
    file: Path | None = None  # recorded session CSV (.csv or .csv.gz); None = the built-in demo session
    speed: Seconds = 10  # 10 = ten recorded seconds per wall-clock second: a 30 s cycle every 3 s
    loop: bool = True  # start over at the end of the file

    _none = field_validator("file", mode="before")(_blank_to_none)


class ReconnectConfig(_Section):
    """Exponential backoff with jitter between connection attempts: initial_delay, x2, ... up to max_delay."""

    initial_delay: Seconds = 1
    max_delay: Seconds = 60
    failed_after: Annotated[int, Field(ge=1)] = 10  # attempts before the sink reports FAILED (it keeps retrying)


class UpstoxWatchdogConfig(_Section):
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


class UpstoxConfig(_Section):
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

    _none = field_validator("access_token", "access_token_file", mode="before")(_blank_to_none)

    @field_validator("base_url")
    @classmethod
    def _http_base(cls, v: str) -> str:
        return _url(v, ("http://", "https://")) or v

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


class PushConfig(_Section):
    """A push (streaming) provider: primary for the symbols it delivers; the polling chain fills in the rest and
    takes over when the feed is down or silent."""

    provider: Literal["none", "upstox"] = "none"  # none: polling only
    # Seconds: ticks are merged into at most one batch per cadence (the latest per symbol) for WebSocket, SSE, alerts
    # and QuestDB (which stores every tick); after a quiet spell the first tick goes out at once.
    cadence: Annotated[float, Field(gt=0, le=10)] = 0.02
    # Seconds the feed may deliver nothing (disconnected, or silent while the market is open) before the polling
    # chain takes over its symbols; it hands them back as soon as the feed delivers again.
    takeover_after: Seconds = 10


class ProvidersConfig(_Section):
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


class OutboxConfig(_Section):
    """The sink's durable on-disk queue (SQLite, WAL) used while its backend is unreachable."""

    max_entries: Annotated[int, Field(ge=100)] = 1_000_000  # counted in rows (quotes, records); when full:
    # latest-per-key entries are coalesced, append-only ones (time series, logs) are refused with an error and an alert


class QuestDBSinkConfig(_Section):
    enabled: bool = True
    host: str = "127.0.0.1"
    http_port: Port = 9000  # ILP over HTTP (/write) and /exec
    pg_port: Port = 8812  # PostgreSQL wire protocol, for the read side
    username: str = "admin"
    password: SecretStr = SecretStr("quest")
    database: str = "qdb"
    # Seconds: QuestDB is given at most one batch per interval; batches arriving sooner (a push feed's) go in one
    # transaction, every row kept. 0: every batch as it comes.
    batch_interval: Annotated[float, Field(ge=0, le=60)] = 1
    request_timeout: Seconds = 10
    reconnect: ReconnectConfig = ReconnectConfig()
    outbox: OutboxConfig = OutboxConfig()


class PocketBaseSinkConfig(_Section):
    enabled: bool = True
    url: str = "http://127.0.0.1:8090"
    admin_email: str = "admin@example.com"
    admin_password: SecretStr | None = None
    read_access: Literal["public", "users"] = "public"  # who may read the collections: anyone, or signed-in users
    batch_max_requests: Annotated[int, Field(ge=1, le=1000)] = 100  # records per batch call; larger cycles are split
    movers: Annotated[int, Field(ge=0, le=50)] = 5  # top gainers/losers kept in each market_updates record
    # Seconds: PocketBase is given at most one batch per interval; batches arriving sooner (a push feed's) are merged,
    # the latest quote per symbol. 0: every batch as it comes.
    batch_interval: Annotated[float, Field(ge=0, le=60)] = 1
    request_timeout: Seconds = 10
    reconnect: ReconnectConfig = ReconnectConfig()
    outbox: OutboxConfig = OutboxConfig()

    _none = field_validator("admin_password", mode="before")(_blank_to_none)


class SinksConfig(_Section):
    questdb: QuestDBSinkConfig = QuestDBSinkConfig()
    pocketbase: PocketBaseSinkConfig = PocketBaseSinkConfig()


class WebSocketConfig(_Section):
    enabled: bool = True
    host: str = "127.0.0.1"
    port: Annotated[int, Field(ge=0, le=65535)] = 8765  # 0 = any free port (tests; see WebSocketServer.port)
    tls_cert: Path | None = None  # PEM certificate chain: serve wss:// when set (with tls_key)
    tls_key: Path | None = None
    history_size: Annotated[int, Field(ge=0)] = 1000  # stock_updates messages kept for resume (since_seq)
    # Bytes waiting to be sent to one client before it is closed as too slow (1013); a byte count bounds memory.
    send_buffer: Annotated[int, Field(ge=4096)] = 262144
    max_frame_bytes: Annotated[int, Field(ge=128)] = 65536  # largest client message accepted
    max_subscriptions: Annotated[int, Field(ge=1)] = 500  # symbols one client may subscribe to
    max_messages_per_second: Annotated[float, Field(gt=0)] = 20  # client -> server messages, per client
    max_connects_per_second: Annotated[float, Field(gt=0)] = 300  # new connections accepted per second
    ping_interval: Seconds = 20  # keepalive pings detect dead peers
    ping_timeout: Seconds = 20
    require_auth: bool = False  # when true, a client must present a token (header or first message)
    tokens: list[SecretStr] = []  # shared tokens accepted when require_auth is true
    pocketbase_auth: bool = True  # also accept a PocketBase user token (checked against sinks.pocketbase.url)
    allowed_origins: list[str] = []  # browser Origins allowed; empty = any (non-browser clients send none)

    _none = field_validator("tls_cert", "tls_key", mode="before")(_blank_to_none)

    @field_validator("tokens", mode="before")
    @classmethod
    def _drop_blank(cls, v: Any) -> Any:
        return [t for t in v if not (isinstance(t, str) and not t.strip())] if isinstance(v, list) else v

    @model_validator(mode="after")
    def _tls_pair(self) -> WebSocketConfig:
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("tls_cert and tls_key must be set together")
        return self


class HttpConfig(_Section):
    enabled: bool = True
    host: str = "127.0.0.1"
    port: ListenPort = 8080
    dashboard: bool = True  # serve the web dashboard at / (docs/dashboard.md)
    poll_interval: Seconds = 5  # dashboard: seconds between polls of /api/v1/stocks while the WebSocket is down
    # The URLs a browser uses, when they differ from what the daemon uses (a reverse proxy, another host name):
    websocket_public_url: str | None = None  # default: websocket.host and the port it listens on
    pocketbase_public_url: str | None = None  # default: sinks.pocketbase.url

    _none = field_validator("websocket_public_url", "pocketbase_public_url", mode="before")(_blank_to_none)

    @field_validator("websocket_public_url")
    @classmethod
    def _ws_url(cls, v: str | None) -> str | None:
        return _url(v, ("ws://", "wss://"))

    @field_validator("pocketbase_public_url")
    @classmethod
    def _http_url(cls, v: str | None) -> str | None:
        return _url(v, ("http://", "https://"))


def _url(value: str | None, schemes: tuple[str, ...]) -> str | None:
    if value is not None and not (value.startswith(schemes) and len(value) > len(schemes[0]) + 1):
        raise ValueError(f"must be a URL starting with {' or '.join(schemes)}")
    return value.rstrip("/") if value else value


# --- broker (Redis, for the scale-out roles) ----------------------------------------------------

REDIS_URL_FORM = "redis://[user[:password]@]host[:port][/db], or rediss:// for TLS"
_URL_PASSWORD = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*://[^/@:?#]*):[^/?#]*@")


def redact_url(url: str) -> str:
    """`url` with the password of its userinfo (if any) replaced by `***`."""
    return _URL_PASSWORD.sub(r"\1:***@", url)


def _masked_error(message: str) -> PydanticCustomError:
    # Reported without the offending input (`_describe`), which may hold a password.
    return PydanticCustomError("masked_input", message)


def _split_redis_url(url: str) -> tuple[SplitResult, str | None]:
    """The URL with the password taken out of its userinfo, and that password (percent-decoded)."""
    parts = urlsplit(url)
    if parts.password is None:
        return parts, None
    user = parts.netloc.rpartition("@")[0].partition(":")[0]
    host = parts.netloc.rpartition("@")[2]
    return parts._replace(netloc=f"{user}@{host}" if user else host), unquote(parts.password)


def _url_problem(parts: SplitResult) -> str | None:
    if parts.scheme not in ("redis", "rediss"):
        return f"the scheme must be redis or rediss, not {parts.scheme or 'missing'!r}"
    if not parts.hostname:
        return "it names no host"
    try:
        parts.port  # noqa: B018 (the property validates the port)
    except ValueError:
        return "the port must be a number from 1 to 65535"
    if parts.port == 0:
        return "the port must be a number from 1 to 65535"
    if parts.path not in ("", "/") and not parts.path[1:].isdigit():
        return f"the path must be a database number such as /0, not {parts.path!r}"
    if parts.query or parts.fragment:
        return "it takes no ?query or #fragment (set the broker.* keys instead)"
    return None


class BrokerConfig(_Section):
    """Redis, which carries the quote stream from the ingest role to the edge processes (docs/scaling.md)."""

    url: str | None = None  # None = no broker: the single process (role all) needs none
    password: SecretStr | None = None  # moved here from the URL's userinfo when written there
    key_prefix: Annotated[str, Field(pattern=r"^[^\s{}]*$")] = "streamer:"
    history_size: Annotated[int, Field(ge=1)] = 1000  # stream entries kept (XADD MAXLEN)
    tls_ca_file: Path | None = None  # rediss://: CA bundle to verify the server (default: the system's)
    sentinels: list[str] = []  # host:port of each Redis Sentinel; set = find the master through them
    master_name: str | None = None  # the master's Sentinel service name (required with sentinels)
    sentinel_password: SecretStr | None = None  # the Sentinels' own password (their requirepass), if any
    connect_timeout: Seconds = 5
    command_timeout: Seconds = 5
    read_block: Seconds = 1  # an edge's blocking read waits this long before it checks the stream's position
    lease_ttl: Annotated[float, Field(ge=1)] = 10  # the ingest leader's lease, renewed every third of it
    reconnect: ReconnectConfig = ReconnectConfig(initial_delay=0.2, max_delay=5)

    _none = field_validator("password", "tls_ca_file", "master_name", "sentinel_password", mode="before")(
        _blank_to_none
    )

    @model_validator(mode="before")
    @classmethod
    def _password_out_of_url(cls, data: Any) -> Any:
        # A password written in the URL becomes the `password` secret, so the URL itself is safe to print.
        if not isinstance(data, dict) or not isinstance(data.get("url"), str):
            return data
        try:
            parts, password = _split_redis_url(data["url"].strip())
            if _url_problem(parts) is not None:
                return data  # the `url` validator names the problem, password masked
        except ValueError:
            return data
        if password is None:
            return data
        if _blank_to_none(data.get("password")) is not None:
            raise _masked_error("the password is given twice, in url and in password; keep one")
        return {**data, "url": parts.geturl(), "password": password}

    @field_validator("url", mode="before")
    @classmethod
    def _redis_url(cls, v: Any) -> Any:
        v = _blank_to_none(v)
        if not isinstance(v, str):
            return v
        v = v.strip()
        try:
            problem = _url_problem(urlsplit(v))
        except ValueError as e:
            problem = str(e)
        if problem:
            shown = re.split(r"[?#]", redact_url(v), maxsplit=1)[0]  # a query could carry a password too
            raise _masked_error(f"{shown!r} is not a usable Redis URL: {problem} (expected {REDIS_URL_FORM})")
        return v

    @field_validator("sentinels", mode="before")
    @classmethod
    def _comma_separated(cls, v: Any) -> Any:
        # `${STREAMER_REDIS_SENTINELS:-}` gives one string: "host:port,host:port", or "" for none.
        if isinstance(v, str):
            return [item.strip() for item in v.split(",") if item.strip()]
        return v

    @field_validator("sentinels")
    @classmethod
    def _host_ports(cls, v: list[str]) -> list[str]:
        for item in v:
            host, _, port = item.rpartition(":")
            if not host or not port.isdigit() or not 1 <= int(port) <= 65535:
                raise ValueError(f"each sentinel must be host:port, not {item!r}")
        return v

    @model_validator(mode="after")
    def _consistent(self) -> BrokerConfig:
        # Masked: the input of a section-wide check is the whole section, password included.
        if self.sentinels and not self.master_name:
            raise _masked_error("master_name is required with sentinels (the master's Sentinel service name)")
        if self.read_block >= self.command_timeout:
            raise _masked_error("read_block must be shorter than command_timeout (a blocked read would time out)")
        return self

    @property
    def configured(self) -> bool:
        return self.url is not None


class AlertRule(_Section):
    """One alert rule; `kind` decides which of the thresholds applies."""

    name: Annotated[str, Field(min_length=1, pattern=r"^[A-Za-z0-9_.-]+$")]
    kind: Literal["change_percent", "price_cross", "volume_spike"]
    symbols: list[str] = []  # empty = every symbol
    threshold: float  # change_percent: |% vs previous close|; price_cross: the level; volume_spike: x average
    window: Annotated[int, Field(ge=2)] = 20  # volume_spike: cycles in the recent average
    cooldown: Seconds = 900  # seconds before the same rule may fire again for the same symbol


class AlertsConfig(_Section):
    enabled: bool = True
    rules: list[AlertRule] = []

    @field_validator("rules")
    @classmethod
    def _unique_names(cls, v: list[AlertRule]) -> list[AlertRule]:
        names = [r.name for r in v]
        if len(set(names)) != len(names):
            raise ValueError("rule names must be unique")
        return v


class LoggingConfig(_Section):
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    format: Literal["auto", "console", "json"] = "auto"  # auto = console on a terminal, JSON lines otherwise

    @field_validator("level", mode="before")
    @classmethod
    def _upper(cls, v: Any) -> Any:
        return v.upper() if isinstance(v, str) else v


class Config(_Section):
    data_dir: Path = Field(default=Path(DEFAULT_DATA_DIR), validate_default=True)  # outboxes and other state
    shutdown_timeout: Seconds = 10  # on SIGTERM: how long to drain queued events into the sinks
    symbols: SymbolsConfig = SymbolsConfig()
    market: MarketConfig = MarketConfig()
    polling: PollingConfig = PollingConfig()
    providers: ProvidersConfig = ProvidersConfig()
    sinks: SinksConfig = SinksConfig()
    websocket: WebSocketConfig = WebSocketConfig()
    http: HttpConfig = HttpConfig()
    alerts: AlertsConfig = AlertsConfig()
    broker: BrokerConfig = BrokerConfig()
    logging: LoggingConfig = LoggingConfig()

    @field_validator("data_dir")
    @classmethod
    def _expand(cls, v: Path) -> Path:
        return v.expanduser()

    def masked(self) -> dict[str, Any]:
        """The effective configuration as plain data, secrets replaced by `**********`."""
        return self.model_dump(mode="json")


# --- loading -------------------------------------------------------------------------------------

_VAR = re.compile(r"\$(\$)|\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


_PLAIN_KEY = re.compile(r"[A-Za-z0-9_-]+")


def _key(part: Any) -> str:
    # A key that is empty or holds dots, colons, spaces... is quoted, so the path still reads unambiguously.
    text = str(part)
    return text if isinstance(part, int) or _PLAIN_KEY.fullmatch(text) else repr(text)


def interpolate(value: Any, env: dict[str, str], path: str = "") -> Any:
    """Replace `${VAR}` and `${VAR:-default}` in every string of a parsed YAML tree (`$$` is a literal `$`)."""
    if isinstance(value, dict):
        return {k: interpolate(v, env, f"{path}.{_key(k)}" if path else _key(k)) for k, v in value.items()}
    if isinstance(value, list):
        return [interpolate(v, env, f"{path}[{i}]") for i, v in enumerate(value)]
    if not isinstance(value, str):
        return value

    def sub(m: re.Match[str]) -> str:
        if m.group(1):
            return "$"
        name, default = m.group(2), m.group(3)
        if name in env:
            return env[name]
        if default is not None:
            return default
        raise ConfigError([f"{path}: environment variable {name} is not set (use ${{{name}:-default}} for a default)"])

    return _VAR.sub(sub, value)


class _UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader that refuses a key given twice in one mapping (PyYAML keeps the last silently)."""


def _mapping_without_duplicates(loader: _UniqueKeyLoader, node: yaml.MappingNode) -> dict[object, object]:
    seen: set[object] = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node)
        if key in seen:
            raise yaml.constructor.ConstructorError(None, None, f"duplicate key {key!r}", key_node.start_mark)
        seen.add(key)
    return loader.construct_mapping(node)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _mapping_without_duplicates)


def _describe(err: ErrorDetails) -> str:
    path = ".".join(_key(p) for p in err["loc"]) or "(top level)"
    kind, msg = err["type"], err["msg"]
    if kind == "masked_input":
        return f"{path}: {msg}"
    if kind == "extra_forbidden":
        return f"{path}: unknown key (not one of the documented settings)"
    msg = msg.removeprefix("Value error, ").replace("Input should be", "must be")
    if msg.startswith("must be") or kind in ("missing",):
        msg = msg if kind != "missing" else "is required"
    return f"{path}: {msg} (got {err['input']!r})" if "input" in err and kind != "missing" else f"{path}: {msg}"


def parse_config(data: Any, env: dict[str, str] | None = None, source: str | None = None) -> Config:
    """Validate an already-parsed YAML tree."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError([f"(top level): must be a mapping of settings (got {type(data).__name__})"], source)
    try:
        data = interpolate(data, dict(os.environ) if env is None else env)
    except ConfigError as e:
        raise ConfigError(e.problems, source) from None
    try:
        return Config.model_validate(data)
    except ValidationError as e:
        raise ConfigError([_describe(err) for err in e.errors(include_url=False)], source) from None


def load_config(path: str | Path | None, env: dict[str, str] | None = None) -> Config:
    """Read and validate a config file; `None` gives the built-in defaults."""
    if path is None:
        return parse_config({}, env)
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise ConfigError([f"cannot read the file: {e.strerror}"], str(path)) from None
    except UnicodeDecodeError as e:
        raise ConfigError(
            [f"cannot read the file: not UTF-8 text (byte {e.object[e.start]:#04x} at offset {e.start})"], str(path)
        ) from None
    try:
        data = yaml.load(text, Loader=_UniqueKeyLoader)  # safe: a SafeLoader subclass
    except yaml.YAMLError as e:
        marked = e if isinstance(e, yaml.MarkedYAMLError) else None
        mark = marked.problem_mark if marked else None
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        problem = (marked.problem if marked else None) or str(e)
        raise ConfigError([f"{where}not valid YAML: {problem}"], str(path)) from None
    return parse_config(data, env, str(path))
