// The search bar: asks GET /api/v1/securities?q= (the whole GPW catalog) as the user types and lists the
// matches, each marked followed or not by the server and, when signed in, with a watchlist button. Clicking a
// match selects it (chart); the button adds or removes it.

const DEBOUNCE_MS = 150;

export class SearchBox {
  /**
   * `isWatched(symbol)` -> true/false, or null when signed out (no buttons); `onToggle(symbol, match)`;
   * `isFollowed(symbol)` -> whether the server follows it now; `onMatches(matches)` sees each answer.
   */
  constructor(input, list, { onSelect, onToggle, isWatched, isFollowed, onMatches }) {
    this.input = input;
    this.list = list;
    this.onSelect = onSelect;
    this.onToggle = onToggle;
    this.isWatched = isWatched;
    this.isFollowed = isFollowed;
    this.onMatches = onMatches;
    this.timer = null;
    this.asked = 0;
    this.matches = [];
    input.addEventListener("input", () => {
      clearTimeout(this.timer);
      this.timer = setTimeout(() => this.run(), DEBOUNCE_MS);
    });
    input.addEventListener("keydown", (event) => {
      if (event.key === "Escape") this.close();
      if (event.key === "Enter" && this.matches.length) this.onSelect(this.matches[0].symbol);
    });
  }

  close() {
    this.list.hidden = true;
    this.list.replaceChildren();
    this.matches = [];
  }

  async run() {
    const q = this.input.value.trim();
    const ticket = ++this.asked;
    if (!q) {
      this.close();
      return;
    }
    const response = await fetch(`/api/v1/securities?q=${encodeURIComponent(q)}&limit=10`, { cache: "no-store" });
    const body = await response.json();
    if (ticket !== this.asked) return; // a newer query is under way
    this.matches = response.ok ? body.data : [];
    if (response.ok) this.onMatches(this.matches);
    this.render(response.ok ? null : body.error.message);
  }

  render(problem = null) {
    this.list.replaceChildren();
    if (problem || !this.matches.length) {
      const li = document.createElement("li");
      li.className = "none";
      li.textContent = problem || `No stock matches “${this.input.value.trim()}”`;
      this.list.append(li);
    }
    for (const match of this.matches) {
      const li = document.createElement("li");
      li.dataset.symbol = match.symbol;
      const pick = document.createElement("button");
      pick.type = "button";
      pick.className = "pick";
      const sym = document.createElement("strong");
      sym.textContent = match.symbol;
      const name = document.createElement("span");
      name.textContent = match.name;
      const isFollowed = this.isFollowed(match.symbol);
      const followed = document.createElement("em");
      followed.className = "followed";
      followed.textContent = isFollowed ? "followed" : "not followed";
      followed.title = isFollowed ? "The server follows it: quotes are live"
        : "The server does not follow it: adding it to your watchlist makes it do so";
      pick.append(sym, name, followed);
      pick.addEventListener("click", () => this.onSelect(match.symbol));
      li.dataset.followed = isFollowed ? "true" : "false";
      li.append(pick);
      const watched = this.isWatched(match.symbol);
      if (watched !== null) {
        const toggle = document.createElement("button");
        toggle.type = "button";
        toggle.className = watched ? "remove" : "add";
        toggle.textContent = watched ? "Remove" : "Add";
        toggle.title = `${watched ? "Remove" : "Add"} ${match.symbol} ${watched ? "from" : "to"} the watchlist`;
        toggle.addEventListener("click", () => this.onToggle(match.symbol, match));
        li.append(toggle);
      }
      this.list.append(li);
    }
    this.list.hidden = false;
  }
}
