// Sign-in with a PocketBase user and that user's watchlist (the `watchlists` collection, one record per user;
// PocketBase's API rules let a user read and change only their own). See docs/dashboard.md.

const STORAGE_KEY = "stock-streamer.auth";
const WATCHLISTS = "/api/collections/watchlists/records";

export class AccountError extends Error {}

export class Account {
  constructor(pocketbaseUrl) {
    this.base = pocketbaseUrl;
    this.token = null;
    this.user = null; // {id, email}
    this.record = null; // the watchlist record, once it exists
  }

  get signedIn() {
    return this.user !== null;
  }

  async request(method, path, body) {
    const headers = { "Content-Type": "application/json" };
    if (this.token) headers.Authorization = this.token;
    let response;
    try {
      response = await fetch(this.base + path, {
        method, headers, body: body === undefined ? undefined : JSON.stringify(body), cache: "no-store",
      });
    } catch {
      throw new AccountError("PocketBase cannot be reached; try again later");
    }
    const data = await response.json().catch(() => ({}));
    if (!response.ok) {
      const error = new AccountError(data.message || `PocketBase answered ${response.status}`);
      error.status = response.status;
      throw error;
    }
    return data;
  }

  remember(auth) {
    this.token = auth.token;
    this.user = { id: auth.record.id, email: auth.record.email };
    localStorage.setItem(STORAGE_KEY, JSON.stringify({ token: this.token, user: this.user }));
  }

  /** Resume a session kept from an earlier visit; renews the token (false when it is no longer valid). */
  async restore() {
    let saved;
    try {
      saved = JSON.parse(localStorage.getItem(STORAGE_KEY) || "null");
    } catch {
      saved = null;
    }
    if (!saved || !saved.token) return false;
    this.token = saved.token;
    try {
      this.remember(await this.request("POST", "/api/collections/users/auth-refresh"));
      return true;
    } catch (error) {
      if (error.status === 401 || error.status === 403 || error.status === 404) this.signOut();
      else {
        this.user = saved.user; // PocketBase is down: keep the session, the watchlist load will say so
        return true;
      }
      return false;
    }
  }

  async signIn(email, password) {
    this.token = null;
    try {
      this.remember(await this.request("POST", "/api/collections/users/auth-with-password",
        { identity: email, password }));
    } catch (error) {
      if (error.status === 400) throw new AccountError("Wrong e-mail or password");
      throw error;
    }
  }

  signOut() {
    this.token = null;
    this.user = null;
    this.record = null;
    localStorage.removeItem(STORAGE_KEY);
  }

  /** The user's watchlist symbols (empty when they have none yet). */
  async loadWatchlist() {
    const page = await this.request("GET", `${WATCHLISTS}?perPage=1&skipTotal=1`);
    this.record = page.items[0] || null;
    return this.record && Array.isArray(this.record.symbols) ? this.record.symbols : [];
  }

  /** Store the whole list; the record is created on first use. */
  async saveWatchlist(symbols) {
    if (this.record) {
      this.record = await this.request("PATCH", `${WATCHLISTS}/${this.record.id}`, { symbols });
    } else {
      this.record = await this.request("POST", WATCHLISTS, { owner: this.user.id, name: "default", symbols });
    }
    return this.record.symbols;
  }
}
