// The quote table: one row per shown symbol, updated in place; a changed price flashes green (up) or red (down).

import { direction, formatChange, formatPercent, formatPrice, formatTime, formatVolume } from "./format.js";

const FLASH = { up: "flash-up", down: "flash-down" };

function cell(row, className, text = "") {
  const td = row.insertCell();
  td.className = className;
  td.textContent = text;
  return td;
}

export class QuoteTable {
  /** `onSelect(symbol)` when a row is clicked; `onToggle(symbol)` when its watchlist button is. */
  constructor(tbody, { names, timeZone, onSelect, onToggle }) {
    this.tbody = tbody;
    this.names = names;
    this.timeZone = timeZone;
    this.onSelect = onSelect;
    this.onToggle = onToggle;
    this.latest = new Map(); // symbol -> newest quote seen, shown or not
    this.rows = new Map(); // symbol -> <tr>
    this.watching = null; // Set of watched symbols when signed in, else null
    this.selected = null;
    this.liveSources = new Set(); // providers that push quotes as they trade; any other source is delayed
  }

  /** The push feeds (their quotes are live); a row shows whether its quote came from one. */
  setLiveSources(providers) {
    this.liveSources = new Set(providers);
    this.tbody.closest("table").dataset.liveFeed = String(this.liveSources.size > 0);
    for (const [symbol, row] of this.rows) {
      const quote = this.latest.get(symbol);
      if (quote) this.markSource(row, quote);
    }
  }

  markSource(row, quote) {
    const delivery = this.liveSources.has(quote.data_source) ? "live" : "delayed";
    row.dataset.source = quote.data_source;
    row.dataset.delivery = delivery;
    row.cells[6].title = `${quote.data_source} (${delivery})`;
  }

  /** Show exactly these symbols, in this order. */
  show(symbols, watching) {
    this.watching = watching;
    this.tbody.replaceChildren();
    this.rows.clear();
    for (const symbol of symbols) {
      const row = this.makeRow(symbol);
      this.rows.set(symbol, row);
      this.tbody.append(row);
      const quote = this.latest.get(symbol);
      if (quote) this.fill(row, quote, false);
    }
    this.select(this.selected);
  }

  makeRow(symbol) {
    const row = document.createElement("tr");
    row.dataset.symbol = symbol;
    row.tabIndex = 0;
    cell(row, "sym", symbol);
    cell(row, "name", this.names.get(symbol) || symbol);
    for (const name of ["num price", "num change", "num pct", "num vol", "num time"]) cell(row, name, "–");
    const action = cell(row, "act");
    if (this.watching) {
      const button = document.createElement("button");
      button.type = "button";
      button.className = "remove";
      button.textContent = "Remove";
      button.title = `Remove ${symbol} from the watchlist`;
      button.addEventListener("click", (event) => {
        event.stopPropagation();
        this.onToggle(symbol);
      });
      action.append(button);
    }
    row.addEventListener("click", () => this.onSelect(symbol));
    row.addEventListener("keydown", (event) => {
      if (event.key === "Enter") this.onSelect(symbol);
    });
    return row;
  }

  /** Rows of watched stocks the server does not follow (yet): no quotes until it does. */
  markPending(symbols) {
    for (const symbol of symbols) {
      const row = this.rows.get(symbol);
      if (!row) continue;
      row.dataset.pending = "true";
      row.title = `${symbol}: waiting for the server to follow it`;
      row.cells[6].textContent = "waiting";
    }
  }

  select(symbol) {
    this.selected = symbol;
    for (const [s, row] of this.rows) row.classList.toggle("selected", s === symbol);
  }

  update(quotes) {
    for (const quote of quotes) {
      const previous = this.latest.get(quote.symbol);
      if (previous && Date.parse(previous.timestamp) > Date.parse(quote.timestamp)) continue; // stale
      this.latest.set(quote.symbol, quote);
      const row = this.rows.get(quote.symbol);
      if (row) this.fill(row, quote, previous ? quote.price - previous.price : 0);
    }
  }

  fill(row, quote, moved) {
    const [, , priceCell, changeCell, pctCell, volCell, timeCell] = row.cells;
    priceCell.textContent = formatPrice(quote.price);
    changeCell.textContent = formatChange(quote.change);
    pctCell.textContent = formatPercent(quote.change_percent);
    volCell.textContent = formatVolume(quote.volume);
    timeCell.textContent = formatTime(quote.timestamp, this.timeZone);
    this.markSource(row, quote);
    const trend = direction(quote.change);
    for (const td of [changeCell, pctCell]) td.dataset.trend = trend;
    if (moved) {
      const flash = FLASH[moved > 0 ? "up" : "down"];
      priceCell.classList.remove(FLASH.up, FLASH.down);
      void priceCell.offsetWidth; // restart the animation when the same direction repeats
      priceCell.classList.add(flash);
    }
  }
}
