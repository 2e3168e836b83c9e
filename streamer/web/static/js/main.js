// The dashboard page: wires the feed, the quote table, search, sign-in/watchlist and the chart together.

import { Account } from "./account.js";
import { IntradayChart } from "./chart.js";
import { Feed } from "./feed.js";
import { formatWhen, STATUS_LABELS } from "./format.js";
import { QuoteTable } from "./quotes.js";
import { SearchBox } from "./search.js";

const $ = (id) => document.getElementById(id);
const MARKET_REFRESH_MS = 15000;
// While a watched stock is not followed yet, ask the server again: often just after adding one (it takes it on
// within a cycle), then every few seconds (it may be waiting for a free watched slot).
const FOLLOWED_FAST_MS = 250;
const FOLLOWED_FAST_FOR_MS = 10000;
const FOLLOWED_SLOW_MS = 3000;
const CONNECTION_TEXT = { connecting: "connecting", live: "live", reconnecting: "reconnecting", delayed: "delayed" };

async function getJson(url) {
  const response = await fetch(url, { cache: "no-store" });
  if (!response.ok) throw new Error(`${url}: HTTP ${response.status}`);
  return response.json();
}

class Dashboard {
  constructor(config) {
    this.config = config;
    this.timeZone = config.timezone;
    this.names = new Map(config.securities.map((s) => [s.symbol, s.name]));
    this.followed = new Set(config.securities.map((s) => s.symbol)); // what the server follows now
    this.followedTimer = null;
    this.followedFastUntil = 0;
    // The default (signed-out) view: the indices, then every followed stock by ticker.
    const byKind = (kind) => config.securities.filter((s) => s.kind === kind).map((s) => s.symbol).sort();
    this.indexView = [...byKind("index"), ...byKind("stock")];
    this.marketDay = null; // YYYY-MM-DD in market time: the chart starts there
    this.watchlist = null; // the user's symbols when signed in
    this.saving = Promise.resolve();
    this.account = config.pocketbase ? new Account(config.pocketbase.url) : null;

    this.table = new QuoteTable($("quote-rows"), {
      names: this.names, timeZone: this.timeZone,
      onSelect: (symbol) => this.select(symbol), onToggle: (symbol) => this.toggle(symbol),
    });
    this.search = new SearchBox($("search"), $("results"), {
      onSelect: (symbol) => this.select(symbol), onToggle: (symbol, match) => this.toggle(symbol, match),
      isWatched: (symbol) => (this.watchlist ? this.watchlist.includes(symbol) : null),
      isFollowed: (symbol) => this.followed.has(symbol),
      onMatches: (matches) => {
        for (const m of matches) {
          if (m.followed) this.followed.add(m.symbol);
          else this.followed.delete(m.symbol);
        }
      },
    });
    this.chart = new IntradayChart($("chart"), { timeZone: this.timeZone });
    const ws = config.websocket;
    this.feed = new Feed({ wsUrl: ws && ws.url, authRequired: ws && ws.auth_required,
      pollInterval: config.poll_interval });
    this.feed.addEventListener("quotes", (event) => {
      this.table.update(event.detail);
      this.chart.update(event.detail);
    });
    this.feed.addEventListener("state", (event) => this.showConnection(event.detail));
    this.feed.addEventListener("feeds", (event) => this.showFeeds(event.detail));
    this.feed.addEventListener("market", (event) => {
      const m = event.detail;
      this.showMarket(m.status, m.next_status, m.next_change);
    });
  }

  async start() {
    this.showConnection("connecting");
    await this.refreshMarket();
    setInterval(() => this.refreshMarket().catch(() => {}), MARKET_REFRESH_MS);
    if (this.account) {
      this.bindAccount();
      if (await this.account.restore()) await this.loadWatchlist();
    }
    this.render();
    this.feed.start();
  }

  // --- market status and connection ------------------------------------------------------------

  async refreshMarket() {
    const m = await getJson("/api/v1/market");
    this.marketDay = m.local_time.slice(0, 10);
    this.showMarket(m.status, m.next.status, m.next.at);
  }

  showMarket(status, nextStatus, nextAt) {
    const badge = $("market-status");
    badge.dataset.status = status;
    badge.textContent = `market ${STATUS_LABELS[status] || status}`;
    $("market-next").textContent = nextAt
      ? `${STATUS_LABELS[nextStatus] || nextStatus} at ${formatWhen(nextAt, this.timeZone)}` : "";
  }

  /** Where the server's quotes come from: `live` while a push feed delivers, `delayed` when polling does. */
  showFeeds({ delivery, feeds }) {
    const box = $("feed");
    box.dataset.delivery = delivery;
    const live = feeds.filter((f) => f.delivery === "live");
    const shown = (delivery === "live" ? live : feeds.filter((f) => f.delivery !== "live" && f.state !== "down"))[0];
    $("feed-text").textContent = `feed ${delivery}${shown ? ` · ${shown.provider}` : ""}`;
    box.title = feeds.map((f) => `${f.provider}: ${f.delivery}, ${f.state}`).join("\n");
    this.table.setLiveSources(live.map((f) => f.provider));
  }

  showConnection(state) {
    $("conn").dataset.state = state;
    $("conn-text").textContent = CONNECTION_TEXT[state] || state;
    $("conn").title = state === "delayed"
      ? `WebSocket unavailable: refreshing every ${this.config.poll_interval} s` : "";
  }

  // --- views -------------------------------------------------------------------------------------

  render() {
    const signedIn = this.watchlist !== null;
    if (this.account) {
      $("signin").hidden = signedIn;
      $("signedin").hidden = !signedIn;
      $("user-email").textContent = signedIn ? this.account.user.email : "";
    }
    if (signedIn) {
      const followed = this.watchlist.filter((s) => this.followed.has(s)); // the server has quotes for these
      const pending = this.watchlist.filter((s) => !this.followed.has(s));
      $("view-title").textContent = "Your watchlist";
      $("empty").hidden = this.watchlist.length > 0;
      this.table.show(this.watchlist, new Set(this.watchlist));
      this.table.markPending(pending);
      this.feed.follow(followed, this.account.token);
      this.watchFollowed(pending.length > 0);
    } else {
      $("view-title").textContent = "All followed stocks";
      $("empty").hidden = true;
      this.table.show(this.indexView, null);
      this.feed.follow(null, null);
      this.watchFollowed(false);
      this.showWatchNote(null);
    }
    if (!$("results").hidden) this.search.render();
  }

  async select(symbol) {
    this.table.select(symbol);
    $("chart-panel").hidden = false;
    $("chart-title").textContent = `${symbol} · ${this.names.get(symbol) || symbol} · today`;
    const note = $("chart-note");
    note.hidden = true;
    try {
      const count = await this.chart.show(symbol, this.marketDay, this.config.history);
      if (count === 0 && this.chart.symbol === symbol) {
        note.textContent = this.config.history ? "No quotes yet today."
          : "No history (it needs the QuestDB sink): showing live quotes from now on.";
        note.hidden = false;
      }
    } catch (error) {
      note.textContent = `History unavailable: ${error.message}`;
      note.hidden = false;
    }
  }

  // --- account and watchlist -------------------------------------------------------------------

  bindAccount() {
    $("signin").addEventListener("submit", async (event) => {
      event.preventDefault();
      const button = $("signin-button");
      button.disabled = true;
      try {
        await this.account.signIn($("email").value.trim(), $("password").value);
        $("password").value = "";
        await this.loadWatchlist();
        this.showAccountError(null);
        this.render();
      } catch (error) {
        this.showAccountError(error.message);
      } finally {
        button.disabled = false;
      }
    });
    $("signout").addEventListener("click", () => {
      this.account.signOut();
      this.watchlist = null;
      this.render();
    });
  }

  async loadWatchlist() {
    try {
      this.watchlist = await this.account.loadWatchlist();
    } catch (error) {
      this.account.signOut();
      this.watchlist = null;
      this.showAccountError(`Could not load your watchlist: ${error.message}`);
    }
  }

  showAccountError(message) {
    $("account-error").hidden = !message;
    $("account-error").textContent = message || "";
  }

  // --- following: a stock added to a watchlist is followed by the server (docs/dashboard.md) -------------

  async refreshFollowed() {
    const f = await getJson("/api/v1/followed");
    const before = this.followed;
    this.followed = new Set(f.symbols);
    for (const w of f.watched) this.names.set(w.symbol, w.name);
    const changed = before.size !== this.followed.size || [...before].some((s) => !this.followed.has(s));
    return { info: f, changed };
  }

  /** While some watched stock is not followed yet, ask the server again (see FOLLOWED_*); re-render on a change. */
  watchFollowed(on) {
    if (!on) {
      clearTimeout(this.followedTimer);
      this.followedTimer = null;
      return;
    }
    if (this.followedTimer !== null) return;
    const tick = async () => {
      try {
        const { info, changed } = await this.refreshFollowed();
        if (this.watchlist !== null) {
          const refused = this.watchlist.filter((s) => info.refused.includes(s));
          if (refused.length) this.showWatchNote(refusedText(refused, info));
        }
        if (changed) this.render();
      } catch {
        // the server is away: the connection indicator says so; ask again on the next tick
      }
      if (this.followedTimer === null) return; // stopped meanwhile
      const delay = Date.now() < this.followedFastUntil ? FOLLOWED_FAST_MS : FOLLOWED_SLOW_MS;
      this.followedTimer = setTimeout(tick, delay);
    };
    this.followedTimer = setTimeout(tick, FOLLOWED_FAST_MS);
  }

  showWatchNote(message) {
    $("watch-note").hidden = !message;
    $("watch-note").textContent = message || "";
  }

  /** May `symbol` be added? A stock the server does not follow takes one of its watched slots. */
  async canFollow(symbol) {
    if (this.followed.has(symbol)) return true;
    const { info } = await this.refreshFollowed();
    if (this.followed.has(symbol)) return true;
    if (!info.watching) {
      this.showWatchNote(`Not added: ${symbol} is not followed by this server, and it follows only its own list.`);
      return false;
    }
    if (info.available <= 0) {
      this.showWatchNote(`Not added: this server already follows its maximum of ${info.max_watched} watched `
        + `stocks beyond its list, so it cannot follow ${symbol} now (symbols.max_watched).`);
      return false;
    }
    return true;
  }

  toggle(symbol, match = null) {
    // One change at a time, each on top of the list the previous one stored.
    this.saving = this.saving.then(async () => {
      if (this.watchlist === null) return;
      const adding = !this.watchlist.includes(symbol);
      try {
        if (adding && !(await this.canFollow(symbol))) {
          this.render();
          return;
        }
      } catch (error) {
        this.showWatchNote(`Not added: the server did not answer (${error.message})`);
        return;
      }
      if (match) this.names.set(symbol, match.name);
      if (adding) this.followedFastUntil = Date.now() + FOLLOWED_FAST_FOR_MS;
      const next = adding ? [...this.watchlist, symbol] : this.watchlist.filter((s) => s !== symbol);
      try {
        this.watchlist = await this.account.saveWatchlist(next);
        this.showAccountError(null);
        this.showWatchNote(null);
      } catch (error) {
        this.showAccountError(`Watchlist not saved: ${error.message}`);
      }
      this.render();
    });
    return this.saving;
  }
}

function refusedText(symbols, info) {
  return `Not followed: ${symbols.join(", ")} — this server already follows its maximum of ${info.max_watched} `
    + "watched stocks beyond its list (symbols.max_watched); it will once a slot frees.";
}

const config = await getJson("/api/v1/dashboard");
await new Dashboard(config).start();
