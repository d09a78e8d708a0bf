// Shared helpers of the playground and the console: DOM building (never innerHTML, so
// nothing an API returns can become markup), API calls with the API's own errors, the
// SSE reader, and small SVG charts. Plain ES module; no dependencies.

const SVG = "http://www.w3.org/2000/svg";

/** An element with attributes (`on*` functions become listeners) and children (strings are text). */
export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (name.startsWith("on") && typeof value === "function") node.addEventListener(name.slice(2), value);
    else if (name === "text") node.textContent = value;
    else node.setAttribute(name, value === true ? "" : String(value));
  }
  for (const child of children.flat()) {
    if (child === undefined || child === null || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

export const $ = (selector, root = document) => root.querySelector(selector);

/** `url` if it is a web address (or, with `images`, a data: image), else null: no javascript: links. */
export function safeUrl(url, { images = false } = {}) {
  const text = String(url || "");
  if (/^https?:\/\//i.test(text)) return text;
  if (images && /^data:image\/(png|jpeg|gif|webp);base64,/i.test(text)) return text;
  return null;
}

/**
 * The error an API gave, as it gave it: "HTTP 401 · invalid_api_key: Incorrect API key …"
 * (no status for an error a stream sent after its 200).
 */
export class ApiError extends Error {
  constructor(status, body, retryAfter = null) {
    const error = (body && body.error) || {};
    const message = typeof error === "string" ? error : error.message || JSON.stringify(body);
    const code = error.code || error.type || "";
    const where = [status ? `HTTP ${status}` : "", code].filter(Boolean).join(" · ");
    super(where ? `${where}: ${message}` : message);
    this.status = status;
    this.body = body;
    this.retryAfter = retryAfter;
  }
}

/** Read a failed response's body (JSON if it is JSON) into an ApiError. */
export async function errorOf(response) {
  const text = await response.text();
  let body;
  try {
    body = JSON.parse(text);
  } catch {
    body = { error: { message: text.slice(0, 500) || response.statusText } };
  }
  const retry = Number.parseInt(response.headers.get("Retry-After") || "", 10);
  return new ApiError(response.status, body, Number.isFinite(retry) ? retry : null);
}

/** fetch() with a Bearer key and a JSON body; throws ApiError unless the answer is 2xx. */
export async function call(path, { key, method = "GET", body, signal, headers = {} } = {}) {
  const init = { method, signal, headers: { ...headers }, cache: "no-store", referrerPolicy: "no-referrer" };
  if (key) init.headers.Authorization = `Bearer ${key}`;
  if (body !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  const response = await fetch(path, init);
  if (!response.ok) throw await errorOf(response);
  return response;
}

export async function callJson(path, options) {
  return (await call(path, options)).json();
}

/**
 * Server-sent events of a fetch() response, as they arrive: yields {comment} for `: …`
 * lines and {event, data} for each event (data is the joined `data:` lines, unparsed).
 */
export async function* sse(response) {
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  let data = [];
  let event = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffer += value;
    let cut;
    while ((cut = buffer.search(/\r\n|\r|\n/)) >= 0) {
      const line = buffer.slice(0, cut);
      buffer = buffer.slice(cut + (buffer.startsWith("\r\n", cut) ? 2 : 1));
      if (line === "") {
        if (data.length) yield { event, data: data.join("\n") };
        data = [];
        event = "";
      } else if (line.startsWith(":")) {
        yield { comment: line.slice(1).trim() };
      } else {
        const colon = line.indexOf(":");
        const field = colon < 0 ? line : line.slice(0, colon);
        const raw = colon < 0 ? "" : line.slice(colon + 1).replace(/^ /, "");
        if (field === "data") data.push(raw);
        else if (field === "event") event = raw;
      }
    }
  }
  if (data.length) yield { event, data: data.join("\n") };
}

/** "12:03:04" for an epoch-seconds time, "" for none. */
export function clock(epochSeconds) {
  if (!epochSeconds) return "";
  return new Date(epochSeconds * 1000).toLocaleTimeString([], { hour12: false });
}

/**
 * A small bar chart as an SVG figure. `series` is [{label, values: [n|null, …]}] drawn
 * stacked; `names` labels each bar (its tooltip). The caption says the total and peak,
 * so the numbers are there for screen readers too.
 */
export function barChart(title, names, series, { unit = "" } = {}) {
  const width = 300;
  const height = 80;
  const count = names.length;
  const totals = names.map((_, i) => series.reduce((sum, s) => sum + (s.values[i] || 0), 0));
  const peak = Math.max(0, ...totals);
  const svg = document.createElementNS(SVG, "svg");
  svg.setAttribute("viewBox", `0 0 ${width} ${height}`);
  svg.setAttribute("class", "chart");
  svg.setAttribute("aria-hidden", "true");
  const barWidth = width / Math.max(1, count);
  names.forEach((name, i) => {
    let y = height;
    series.forEach((s, k) => {
      const value = s.values[i] || 0;
      if (!value) return;
      const h = peak ? Math.max(1, (value / peak) * (height - 4)) : 0;
      y -= h;
      const rect = document.createElementNS(SVG, "rect");
      rect.setAttribute("x", (i * barWidth + 0.5).toFixed(1));
      rect.setAttribute("y", y.toFixed(1));
      rect.setAttribute("width", Math.max(1, barWidth - 1).toFixed(1));
      rect.setAttribute("height", h.toFixed(1));
      rect.setAttribute("class", `series-${k % 6}`);
      const tip = document.createElementNS(SVG, "title");
      tip.textContent = `${name}: ${s.label} ${value}${unit}`;
      rect.append(tip);
      svg.append(rect);
    });
  });
  const total = totals.reduce((a, b) => a + b, 0);
  const legend = series.length > 1 ? ` (${series.map((s, k) => `${s.label}`).join(", ")})` : "";
  const summary = unit
    ? `peak ${Math.round(peak)}${unit}`
    : `total ${total}, peak ${peak}`;
  return el(
    "figure",
    { class: "chart-figure" },
    el("figcaption", {}, el("strong", {}, title), ` — ${summary}${legend}`),
    svg,
    series.length > 1
      ? el("ul", { class: "legend plain" }, series.map((s, k) => el("li", { class: `key-${k % 6}` }, s.label)))
      : null,
  );
}
