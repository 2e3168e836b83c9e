"""Config reload on SIGHUP: read and validate the file again, apply what can change while running (the
symbol list, alert rules, log level, the Upstox access token), and name everything else that changed as needing a
restart.

A file that fails validation is logged and the running configuration is kept."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import SecretStr

from .catalog import Security
from .config import Config, ConfigError, load_config
from .logs import set_level
from .universe import configured_securities

if TYPE_CHECKING:
    from .app import Daemon

log = logging.getLogger("streamer.reload")

# Key paths applied live; every other changed key needs a restart.
LIVE = (
    "symbols",
    "alerts.rules",
    "logging.level",
    # Upstox tokens expire daily (03:30 IST): a new one is handed to the running feed, which reconnects with it.
    "providers.upstox.access_token",
    "providers.upstox.access_token_file",
)


@dataclass
class ReloadResult:
    applied: list[str] = field(default_factory=list)  # live key paths that changed and were applied
    needs_restart: list[str] = field(default_factory=list)  # changed key paths not applied
    error: str | None = None  # why the new file was refused (the old configuration is kept)


def changed_keys(old: object, new: object, path: str = "") -> list[str]:
    """Dotted key paths whose values differ between two configurations (lists compare whole)."""
    if isinstance(old, dict) and isinstance(new, dict):
        out: list[str] = []
        for key in sorted(set(old) | set(new)):
            out += changed_keys(old.get(key), new.get(key), f"{path}.{key}" if path else str(key))
        return out
    return [] if old == new else [path]


def _plain(config: Config) -> dict[str, object]:
    # Secrets are compared by value: a changed password is a change (never logged, only its key path).
    def reveal(node: Any) -> Any:
        if isinstance(node, dict):
            return {k: reveal(v) for k, v in node.items()}
        if isinstance(node, list):
            return [reveal(v) for v in node]
        return node.get_secret_value() if isinstance(node, SecretStr) else node

    plain: dict[str, object] = reveal(config.model_dump())
    return plain


def _live(key: str) -> bool:
    return any(key == k or key.startswith(k + ".") for k in LIVE)


class Reloader:
    """Holds the running configuration and applies a re-read file to the daemon's components."""

    def __init__(
        self,
        config: Config,
        path: Path | None,
        *,
        daemon: Daemon,
        prepare: Callable[[Config], Config] = lambda c: c,
        on_secrets: Callable[[Config], None] = lambda c: None,
    ) -> None:
        self.config = config
        self.path = path
        self.daemon = daemon
        self.prepare = prepare  # e.g. the --demo rewrite, so a reload sees what the start saw
        self.on_secrets = on_secrets  # told about the new file's secrets before anything is logged

    def reload(self) -> ReloadResult:
        source = str(self.path) if self.path else "built-in defaults"
        try:
            new = self.prepare(load_config(self.path))
            self.on_secrets(new)
            securities = self._securities(new) if new.symbols != self.config.symbols else None
        except (ConfigError, ValueError, OSError) as e:
            problem = " ".join(str(e).split())
            log.error("reload.invalid file=%s kept the running configuration: %s", source, problem)
            return ReloadResult(error=problem)
        changed = changed_keys(_plain(self.config), _plain(new))
        result = ReloadResult(
            applied=[k for k in changed if _live(k)], needs_restart=[k for k in changed if not _live(k)]
        )
        self._apply(new, securities)
        if result.needs_restart:
            log.warning(
                "reload.needs_restart keys=%s changed but only apply after a restart", ",".join(result.needs_restart)
            )
        log.info(
            "reload.done file=%s applied=%s symbols=%d alert_rules=%d level=%s",
            source,
            ",".join(result.applied) or "-",
            len(self.daemon.followed.symbols),
            len(self.config.alerts.rules),
            self.config.logging.level,
        )
        return result

    def _apply(self, new: Config, securities: list[Security] | None) -> None:
        old, daemon = self.config, self.daemon
        if securities is not None:
            # Watched symbols stay followed on top of the new configured set (streamer/universe.py).
            followed = daemon.followed
            followed.max_watched = new.symbols.max_watched
            followed.grace = timedelta(seconds=new.symbols.watch_grace_period)
            change = followed.replace_configured(securities, daemon.clock.now())
            log.info(
                "reload.symbols count=%d added=%s removed=%s",
                len(followed.symbols),
                ",".join(sorted(change.added)) or "-",
                ",".join(sorted(change.removed)) or "-",
            )
        if new.alerts.rules != old.alerts.rules and daemon.alerts is not None:
            daemon.alerts.replace_rules(new.alerts.rules)
        if new.logging.level != old.logging.level:
            set_level(new.logging.level)
            log.info("reload.log_level level=%s previous=%s", new.logging.level, old.logging.level)
        old_up, new_up = old.providers.upstox, new.providers.upstox
        token = new_up.access_token
        if token is not None and token != old_up.access_token and daemon.push is not None:
            daemon.push.upstox.update_token(token)
            log.info("reload.upstox_token the Upstox feed uses the new access token (at once if the old was refused)")
        # The running configuration: the old one with the live sections replaced, so keys that need a restart
        # are reported again on the next reload until the daemon is restarted.
        self.config = old.model_copy(
            update={
                "symbols": new.symbols,
                "alerts": old.alerts.model_copy(update={"rules": new.alerts.rules}),
                "logging": old.logging.model_copy(update={"level": new.logging.level}),
                "providers": old.providers.model_copy(
                    update={
                        "upstox": old_up.model_copy(
                            update={"access_token": token, "access_token_file": new_up.access_token_file}
                        )
                    }
                ),
            }
        )

    def _securities(self, config: Config) -> list[Security]:
        return configured_securities(config.symbols, self.daemon.followed.catalog)
