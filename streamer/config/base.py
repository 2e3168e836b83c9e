"""What every section of the configuration shares: its base model, common types, the error a bad file raises."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field

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


class Section(BaseModel):
    # Unknown keys are errors: a typo must not silently fall back to a default.
    model_config = ConfigDict(extra="forbid", frozen=True)


def blank_to_none(value: Any) -> Any:
    # `${VAR:-}` yields "": treat an empty secret or path as "not set".
    return None if isinstance(value, str) and value.strip() == "" else value


class ReconnectConfig(Section):
    """Exponential backoff with jitter between connection attempts: initial_delay, x2, ... up to max_delay."""

    initial_delay: Seconds = 1
    max_delay: Seconds = 60
    failed_after: Annotated[int, Field(ge=1)] = 10  # attempts before the sink reports FAILED (it keeps retrying)


def checked_url(value: str | None, schemes: tuple[str, ...]) -> str | None:
    """`value` if it starts with one of `schemes` (without a trailing slash); None stays None."""
    if value is not None and not (value.startswith(schemes) and len(value) > len(schemes[0]) + 1):
        raise ValueError(f"must be a URL starting with {' or '.join(schemes)}")
    return value.rstrip("/") if value else value
