// The quote feed: the WebSocket API (docs/websocket-api.md) while it is reachable, else polling
// /api/v1/stocks with If-None-Match. Emits "quotes" (an array of quotes), "state" (live | reconnecting |
// delayed: this page's connection), "market" (a market_status payload) and "feeds" ({delivery, feeds}: where
// the server's quotes come from, live push or delayed polling).

const RECONNECT_MIN_MS = 500;
const RECONNECT_MAX_MS = 5000;

export class Feed extends EventTarget {
  constructor({ wsUrl, authRequired, pollInterval }) {
    super();
    this.wsUrl = wsUrl;
    this.authRequired = authRequired;
    this.pollMs = pollInterval * 1000;
    this.symbols = null; // null = every symbol; [] = none
    this.token = null;
    this.ws = null;
    this.live = false;
    this.retryMs = RECONNECT_MIN_MS;
    this.retryTimer = null;
    this.pollTimer = null;
    this.etag = null;
    this.state = null;
  }

  start() {
    if (this.wsUrl) this.connect();
    else this.startPolling();
  }

  /** Follow `symbols` (null = everything); `token` authenticates when the server requires it. */
  follow(symbols, token = null) {
    const tokenChanged = token !== this.token;
    this.symbols = symbols;
    this.token = token;
    this.etag = null;
    if (this.live && tokenChanged && this.authRequired) {
      this.ws.close(1000, "token changed"); // reconnects with the new token
    } else if (this.live) {
      this.subscribe();
    } else if (this.pollTimer !== null) {
      this.poll();
    }
  }

  setState(state) {
    if (state === this.state) return;
    this.state = state;
    this.dispatchEvent(new CustomEvent("state", { detail: state }));
  }

  emitFeeds(detail) {
    this.dispatchEvent(new CustomEvent("feeds", { detail }));
  }

  emitQuotes(quotes) {
    if (quotes.length) this.dispatchEvent(new CustomEvent("quotes", { detail: quotes }));
  }

  // --- WebSocket ---------------------------------------------------------------------------------

  connect() {
    const ws = new WebSocket(this.wsUrl);
    this.ws = ws;
    ws.addEventListener("open", () => {
      if (this.authRequired && this.token) ws.send(JSON.stringify({ type: "auth", token: this.token }));
    });
    ws.addEventListener("message", (event) => this.onMessage(event.data));
    ws.addEventListener("close", () => this.onClose(ws));
  }

  onMessage(text) {
    let msg;
    try {
      msg = JSON.parse(text);
    } catch {
      return;
    }
    switch (msg.type) {
      case "connection":
        this.live = true;
        this.retryMs = RECONNECT_MIN_MS;
        this.stopPolling();
        this.setState("live");
        if (msg.delivery) this.emitFeeds({ delivery: msg.delivery, feeds: msg.feeds || [] });
        this.subscribe();
        break;
      case "feed_status":
        this.emitFeeds(msg.data);
        break;
      case "subscription_confirmed":
      case "resync":
        this.emitQuotes(msg.snapshot || []);
        break;
      case "stock_updates":
        this.emitQuotes(msg.data || []);
        break;
      case "market_status":
        this.dispatchEvent(new CustomEvent("market", { detail: msg.data }));
        break;
      case "error":
        console.warn(`stock-streamer: ${msg.code}: ${msg.message}`);
        break;
      default:
        break;
    }
  }

  subscribe() {
    const send = (msg) => this.ws.send(JSON.stringify(msg));
    send({ type: "unsubscribe" }); // `subscribe` adds to what is there: start from nothing
    if (this.symbols === null) send({ type: "subscribe" });
    else if (this.symbols.length) send({ type: "subscribe", symbols: this.symbols });
  }

  onClose(ws) {
    if (ws !== this.ws) return;
    this.ws = null;
    this.live = false;
    if (this.state !== "delayed") this.setState("reconnecting");
    this.startPolling();
    clearTimeout(this.retryTimer);
    this.retryTimer = setTimeout(() => this.connect(), this.retryMs);
    this.retryMs = Math.min(this.retryMs * 2, RECONNECT_MAX_MS);
  }

  // --- polling fallback --------------------------------------------------------------------------

  startPolling() {
    if (this.pollTimer !== null) return;
    this.pollTimer = setInterval(() => this.poll(), this.pollMs);
    this.poll();
  }

  stopPolling() {
    clearInterval(this.pollTimer);
    this.pollTimer = null;
    this.etag = null;
  }

  async poll() {
    if (this.symbols !== null && this.symbols.length === 0) {
      this.setState("delayed");
      return;
    }
    const url = this.symbols === null ? "/api/v1/stocks"
      : `/api/v1/stocks?symbols=${encodeURIComponent(this.symbols.join(","))}`;
    const asked = this.symbols;
    try {
      // no-store: the page handles the ETag itself, so a 304 is seen (and costs nothing) instead of
      // being turned into a cached 200 by the browser.
      const response = await fetch(url, {
        cache: "no-store", headers: this.etag ? { "If-None-Match": this.etag } : {},
      });
      if (this.pollTimer === null || asked !== this.symbols) return; // live again, or the list changed
      if (response.status === 200) {
        this.etag = response.headers.get("ETag");
        this.emitQuotes((await response.json()).data);
      }
      if (response.status === 200 || response.status === 304) this.setState("delayed");
    } catch {
      if (this.pollTimer !== null) this.setState("reconnecting");
    }
  }
}
