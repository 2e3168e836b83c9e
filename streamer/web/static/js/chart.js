// Intraday price chart of one symbol: today's history from /api/v1/stocks/{symbol}/history, extended live.
// Drawn by uPlot (vendored; the global `uPlot` comes from its script tag in index.html).

export class IntradayChart {
  constructor(box, { timeZone }) {
    this.box = box;
    this.timeZone = timeZone;
    this.symbol = null;
    this.plot = null;
    this.times = [];
    this.prices = [];
    new ResizeObserver(() => this.resize()).observe(box);
  }

  size() {
    const width = Math.max(this.box.clientWidth, 200);
    return { width, height: Math.round(Math.min(320, Math.max(180, width * 0.4))) };
  }

  resize() {
    if (this.plot) this.plot.setSize(this.size());
  }

  /** Load `symbol`'s quotes since local midnight of `day` (YYYY-MM-DD, market time); returns how many.
   *  Without `history` (no QuestDB) the chart starts empty and draws the live quotes only. */
  async show(symbol, day, history = true) {
    this.symbol = symbol;
    if (!history) {
      this.times = [];
      this.prices = [];
      this.draw();
      return 0;
    }
    const url = `/api/v1/stocks/${encodeURIComponent(symbol)}/history?from=${day}&limit=10000`;
    const response = await fetch(url, { cache: "no-store" });
    if (symbol !== this.symbol) return 0; // another symbol was chosen meanwhile
    const body = await response.json();
    if (!response.ok) throw new Error(body.error ? body.error.message : `history: HTTP ${response.status}`);
    this.times = body.data.map((q) => Date.parse(q.timestamp) / 1000);
    this.prices = body.data.map((q) => q.price);
    this.draw();
    return body.count;
  }

  draw() {
    if (this.plot) this.plot.destroy();
    const timeZone = this.timeZone;
    const options = {
      ...this.size(),
      tzDate: (ts) => uPlot.tzDate(new Date(ts * 1000), timeZone),
      legend: { show: false },
      cursor: { drag: { x: false, y: false } },
      scales: { x: { time: true } },
      series: [{}, { label: this.symbol, stroke: "#2563eb", width: 2, fill: "rgba(37, 99, 235, 0.08)" }],
      axes: [{ stroke: "#475569" }, { stroke: "#475569", size: 60 }],
    };
    this.plot = new uPlot(options, [this.times, this.prices], this.box);
  }

  /** Append live quotes of the shown symbol. */
  update(quotes) {
    if (!this.plot) return;
    let added = false;
    for (const q of quotes) {
      if (q.symbol !== this.symbol) continue;
      const t = Date.parse(q.timestamp) / 1000;
      if (this.times.length && t <= this.times[this.times.length - 1]) continue;
      this.times.push(t);
      this.prices.push(q.price);
      added = true;
    }
    if (added) this.plot.setData([this.times, this.prices]);
  }
}
