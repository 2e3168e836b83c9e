"""The configuration's sections and the whole `Config`."""

from __future__ import annotations

from datetime import time
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, SecretStr, field_validator, model_validator

from .base import DEFAULT_DATA_DIR, ListenPort, Port, ReconnectConfig, Seconds, Section, blank_to_none, checked_url
from .broker import BrokerConfig
from .providers import PollingConfig, ProvidersConfig

UniverseName = Literal["wig20", "mwig40", "swig80"]  # the packaged index lists, streamer/data/<name>.csv


class SymbolsConfig(Section):
    universe: list[UniverseName] = Field(default=["swig80"], min_length=1)  # index lists whose stocks are followed
    file: Path | None = None  # CSV of symbol,name,kind; when set it replaces `universe` (a list of your own)
    include: list[str] = []  # extra tickers to follow beyond the universe
    exclude: list[str] = []  # tickers of the universe to leave out
    indices: list[str] = ["WIG", "WIG20", "MWIG40", "SWIG80"]  # indices quoted for context
    max_watched: Annotated[int, Field(ge=0)] = 50  # symbols on users' watchlists followed beyond the universe
    watch_grace_period: Seconds = 900  # seconds a symbol nobody watches any more is still followed

    _none = field_validator("file", mode="before")(blank_to_none)

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


class MarketConfig(Section):
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


class OutboxConfig(Section):
    """The sink's durable on-disk queue (SQLite, WAL) used while its backend is unreachable."""

    max_entries: Annotated[int, Field(ge=100)] = 1_000_000  # counted in rows (quotes, records); when full:
    # latest-per-key entries are coalesced, append-only ones (time series, logs) are refused with an error and an alert


class QuestDBSinkConfig(Section):
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


class PocketBaseSinkConfig(Section):
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

    _none = field_validator("admin_password", mode="before")(blank_to_none)


class SinksConfig(Section):
    questdb: QuestDBSinkConfig = QuestDBSinkConfig()
    pocketbase: PocketBaseSinkConfig = PocketBaseSinkConfig()


class WebSocketConfig(Section):
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

    _none = field_validator("tls_cert", "tls_key", mode="before")(blank_to_none)

    @field_validator("tokens", mode="before")
    @classmethod
    def _drop_blank(cls, v: Any) -> Any:
        return [t for t in v if not (isinstance(t, str) and not t.strip())] if isinstance(v, list) else v

    @model_validator(mode="after")
    def _tls_pair(self) -> WebSocketConfig:
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("tls_cert and tls_key must be set together")
        return self


class HttpConfig(Section):
    enabled: bool = True
    host: str = "127.0.0.1"
    port: ListenPort = 8080
    dashboard: bool = True  # serve the web dashboard at / (docs/dashboard.md)
    poll_interval: Seconds = 5  # dashboard: seconds between polls of /api/v1/stocks while the WebSocket is down
    # The URLs a browser uses, when they differ from what the daemon uses (a reverse proxy, another host name):
    websocket_public_url: str | None = None  # default: websocket.host and the port it listens on
    pocketbase_public_url: str | None = None  # default: sinks.pocketbase.url

    _none = field_validator("websocket_public_url", "pocketbase_public_url", mode="before")(blank_to_none)

    @field_validator("websocket_public_url")
    @classmethod
    def _ws_url(cls, v: str | None) -> str | None:
        return checked_url(v, ("ws://", "wss://"))

    @field_validator("pocketbase_public_url")
    @classmethod
    def _http_url(cls, v: str | None) -> str | None:
        return checked_url(v, ("http://", "https://"))


class AlertRule(Section):
    """One alert rule; `kind` decides which of the thresholds applies."""

    name: Annotated[str, Field(min_length=1, pattern=r"^[A-Za-z0-9_.-]+$")]
    kind: Literal["change_percent", "price_cross", "volume_spike"]
    symbols: list[str] = []  # empty = every symbol
    threshold: float  # change_percent: |% vs previous close|; price_cross: the level; volume_spike: x average
    window: Annotated[int, Field(ge=2)] = 20  # volume_spike: cycles in the recent average
    cooldown: Seconds = 900  # seconds before the same rule may fire again for the same symbol


class AlertsConfig(Section):
    enabled: bool = True
    rules: list[AlertRule] = []

    @field_validator("rules")
    @classmethod
    def _unique_names(cls, v: list[AlertRule]) -> list[AlertRule]:
        names = [r.name for r in v]
        if len(set(names)) != len(names):
            raise ValueError("rule names must be unique")
        return v


class LoggingConfig(Section):
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    format: Literal["auto", "console", "json"] = "auto"  # auto = console on a terminal, JSON lines otherwise

    @field_validator("level", mode="before")
    @classmethod
    def _upper(cls, v: Any) -> Any:
        return v.upper() if isinstance(v, str) else v


class Config(Section):
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
