"""Configuration: YAML with `${VAR}` / `${VAR:-default}` from the environment, validated into typed models.

A bad file fails before anything starts, with one line per problem naming the key path. Modules: `providers`
(the polling chain and the push feed), `broker` (Redis), `model` (the other sections and the whole `Config`),
`loading` (reading a file), `base` (what they share)."""

from .base import DEFAULT_DATA_DIR, ConfigError, ListenPort, Port, ReconnectConfig, Seconds
from .broker import REDIS_URL_FORM, BrokerConfig, redact_url
from .loading import interpolate, load_config, parse_config
from .model import (
    AlertRule,
    AlertsConfig,
    Config,
    HttpConfig,
    LoggingConfig,
    MarketConfig,
    OutboxConfig,
    PocketBaseSinkConfig,
    QuestDBSinkConfig,
    SinksConfig,
    SymbolsConfig,
    UniverseName,
    WebSocketConfig,
)
from .providers import (
    AlphaVantageConfig,
    PollingConfig,
    ProviderName,
    ProvidersConfig,
    PushConfig,
    ReplayConfig,
    StooqConfig,
    UpstoxConfig,
    UpstoxWatchdogConfig,
)

__all__ = [
    "DEFAULT_DATA_DIR",
    "REDIS_URL_FORM",
    "AlertRule",
    "AlertsConfig",
    "AlphaVantageConfig",
    "BrokerConfig",
    "Config",
    "ConfigError",
    "HttpConfig",
    "ListenPort",
    "LoggingConfig",
    "MarketConfig",
    "OutboxConfig",
    "PocketBaseSinkConfig",
    "PollingConfig",
    "Port",
    "ProviderName",
    "ProvidersConfig",
    "PushConfig",
    "QuestDBSinkConfig",
    "ReconnectConfig",
    "ReplayConfig",
    "Seconds",
    "SinksConfig",
    "StooqConfig",
    "SymbolsConfig",
    "UniverseName",
    "UpstoxConfig",
    "UpstoxWatchdogConfig",
    "WebSocketConfig",
    "interpolate",
    "load_config",
    "parse_config",
    "redact_url",
]
