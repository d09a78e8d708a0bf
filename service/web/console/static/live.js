// Console › Live: workers, queue, accounts now, and the last hour per minute (GET /admin/stats).

import { $, barChart, clock, el } from "./lib.js";
import { admin } from "./admin.js";

export async function loadLive() {
  const stats = await admin("/stats");
  const tiles = [
    ["Workers alive", `${stats.workers.live} of ${stats.workers.registered}`],
    ["Queue depth", stats.queue.depth],
    ["Oldest waiting", stats.queue.oldest_wait_seconds == null ? "—" : `${stats.queue.oldest_wait_seconds.toFixed(1)} s`],
    ["Accounts ready", `${stats.accounts.ready} of ${stats.accounts.total}`],
    ["Needs attention", stats.accounts.needs_attention],
    ["Turns in flight", stats.accounts.in_flight],
    ["Turns last minute", stats.accounts.turns_last_minute],
  ];
  $("#live-tiles").replaceChildren(...tiles.flatMap(([name, value]) => [el("div", {}, el("dt", {}, name), el("dd", {}, String(value)))]));
  const minutes = stats.minutes;
  const names = minutes.map((m) => clock(m.start).slice(0, 5));
  const outcomes = [...new Set(minutes.flatMap((m) => Object.keys(m.turns)))].sort();
  const classes = [...new Set(minutes.flatMap((m) => Object.keys(m.errors)))].sort();
  const hourErrors = classes.map((c) => [c, minutes.reduce((sum, m) => sum + (m.errors[c] || 0), 0)]);
  $("#live-charts").replaceChildren(
    barChart("Turns a minute (last hour)", names, outcomes.length ? outcomes.map((o) => ({ label: o, values: minutes.map((m) => m.turns[o] || 0) })) : [{ label: "turns", values: [] }]),
    barChart("Errors by class a minute", names, classes.length ? classes.map((c) => ({ label: c, values: minutes.map((m) => m.errors[c] || 0) })) : [{ label: "errors", values: [] }]),
    barChart("Added time to first token (mean)", names, [{ label: "added", values: minutes.map((m) => m.added_first_token_ms) }], { unit: " ms" }),
    barChart("Queue wait (mean)", names, [{ label: "wait", values: minutes.map((m) => m.queue_wait_ms) }], { unit: " ms" }),
    el("table", { class: "error-table" }, el("caption", {}, "Errors in the last hour, by class"),
      el("tbody", {}, hourErrors.length ? hourErrors.map(([c, n]) => el("tr", {}, el("th", { scope: "row" }, c), el("td", { class: "num" }, n))) : el("tr", {}, el("td", {}, "none")))),
  );
}
