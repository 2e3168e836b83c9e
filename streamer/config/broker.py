"""The `broker` section: Redis for the scale-out roles, its URL checked and its password kept out of sight."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import SplitResult, unquote, urlsplit

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_core import PydanticCustomError

from .base import ReconnectConfig, Seconds, Section, blank_to_none

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


class BrokerConfig(Section):
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

    _none = field_validator("password", "tls_ca_file", "master_name", "sentinel_password", mode="before")(blank_to_none)

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
        if blank_to_none(data.get("password")) is not None:
            raise _masked_error("the password is given twice, in url and in password; keep one")
        return {**data, "url": parts.geturl(), "password": password}

    @field_validator("url", mode="before")
    @classmethod
    def _redis_url(cls, v: Any) -> Any:
        v = blank_to_none(v)
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
