"""Fallback chain: what the primary provider could not deliver is asked from the next one, and so on."""

from __future__ import annotations

import logging
from collections.abc import Sequence

from streamer.model import StockUpdate

from .base import FetchResult, Provider, ProviderHealth

log = logging.getLogger("providers.chain")


class FallbackChain:
    """A `Provider` made of providers in priority order; the first to deliver a symbol wins.

    A member is asked only for the symbols the members before it reported `missing`: a symbol reported
    neither delivered nor missing (e.g. a throttled member whose turn has not come) is not passed on."""

    name = "chain"

    def __init__(self, providers: Sequence[Provider]) -> None:
        if not providers:
            raise ValueError("a fallback chain needs at least one provider")
        self._members = tuple(providers)
        self.health = ProviderHealth()

    @property
    def members(self) -> tuple[Provider, ...]:
        """The providers in priority order; each keeps its own `health` (published per provider)."""
        return self._members

    async def fetch(self, symbols: Sequence[str]) -> FetchResult:
        wanted = list(dict.fromkeys(symbols))
        delivered: dict[str, StockUpdate] = {}
        problems: list[str] = []
        ask = wanted
        for member in self._members:
            if not ask:
                break
            result = await self._fetch_from(member, ask)
            asked = set(ask)
            for update in result.updates:
                if update.symbol in asked and update.symbol not in delivered:
                    delivered[update.symbol] = update
            problems.extend(result.problems)
            ask = [s for s in ask if s in result.missing and s not in delivered]
        missing = frozenset(ask)  # what the last member asked could not deliver either
        self._settle(delivered, missing)
        updates = tuple(delivered[s] for s in wanted if s in delivered)
        return FetchResult(self.name, updates, missing, tuple(problems))

    async def close(self) -> None:
        for member in self._members:
            try:
                await member.close()
            except Exception:  # one member failing to close must not keep the others open
                log.exception(
                    "chain.close_failed provider=%s closing raised; the other providers are closed", member.name
                )

    @staticmethod
    async def _fetch_from(member: Provider, symbols: list[str]) -> FetchResult:
        try:
            return await member.fetch(symbols)
        except Exception as e:  # a bug in the member: contain it so the next member still gets asked
            detail = f"{member.name}: internal error {type(e).__name__}: {e}"
            log.error(
                "chain.provider_error provider=%s symbols=%d fetch raised %s; its symbols go to the next provider",
                member.name,
                len(symbols),
                type(e).__name__,
                exc_info=True,
            )
            member.health.down("internal_error", detail)
            return FetchResult(member.name, (), frozenset(symbols), (detail,))

    def _settle(self, delivered: dict[str, StockUpdate], missing: frozenset[str]) -> None:
        if not missing:
            self.health.ok()
        elif delivered:
            self.health.degraded("missing", f"{len(missing)} symbol(s) from no provider: {', '.join(sorted(missing))}")
        else:
            self.health.down("missing", f"no provider delivered any of {len(missing)} symbol(s)")
