// Number and time formatting for the dashboard: fixed decimals, explicit signs, the market's time zone.

const price = new Intl.NumberFormat("en-GB", { minimumFractionDigits: 2, maximumFractionDigits: 2 });
const smallPrice = new Intl.NumberFormat("en-GB", { minimumFractionDigits: 4, maximumFractionDigits: 4 });
const signed = new Intl.NumberFormat("en-GB", {
  minimumFractionDigits: 2, maximumFractionDigits: 2, signDisplay: "exceptZero",
});
const integer = new Intl.NumberFormat("en-GB", { maximumFractionDigits: 0 });

const DASH = "–";

export function formatPrice(value) {
  if (value == null) return DASH;
  return (Math.abs(value) < 1 && value !== 0 ? smallPrice : price).format(value);
}

export function formatChange(value) {
  return value == null ? DASH : signed.format(value);
}

export function formatPercent(value) {
  return value == null ? DASH : `${signed.format(value)}%`;
}

export function formatVolume(value) {
  return value == null ? DASH : integer.format(value);
}

const timeFormats = new Map();

function formatter(timeZone, options) {
  const key = `${timeZone}|${JSON.stringify(options)}`;
  if (!timeFormats.has(key)) timeFormats.set(key, new Intl.DateTimeFormat("en-GB", { timeZone, ...options }));
  return timeFormats.get(key);
}

export function formatTime(iso, timeZone) {
  if (!iso) return DASH;
  return formatter(timeZone, { hour: "2-digit", minute: "2-digit", second: "2-digit", hourCycle: "h23" })
    .format(new Date(iso));
}

export function formatWhen(iso, timeZone) {
  if (!iso) return "";
  return formatter(timeZone, {
    weekday: "short", day: "numeric", month: "short", hour: "2-digit", minute: "2-digit", hourCycle: "h23",
  }).format(new Date(iso));
}

export function direction(change) {
  if (change == null || change === 0) return "flat";
  return change > 0 ? "up" : "down";
}

export const STATUS_LABELS = {
  pre_market: "pre-market", open: "open", after_hours: "after hours", closed: "closed",
  weekend: "weekend", holiday: "holiday",
};
