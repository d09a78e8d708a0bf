// The operator console: accounts, keys and live numbers through the admin API only
// (Bearer ADMIN_KEY, kept in sessionStorage: gone when the tab closes).

import { $, ApiError, barChart, callJson, clock, el } from "./lib.js";

const ADMIN_STORE = "gateway.console.admin";
const POLL_MS = 3000;
const USAGE_DAYS = 14;
const SECTIONS = ["accounts", "keys", "live"];

const state = { key: sessionStorage.getItem(ADMIN_STORE) || "", section: "accounts", timer: null, editing: null, refreshing: null };

const admin = (path, options = {}) => callJson(`/admin${path}`, { key: state.key, ...options });

function showError(error) {
  const box = $("#error");
  box.textContent = error ? (error instanceof ApiError ? error.message : `Error: ${error.message || error}`) : "";
  box.hidden = !error;
}

/** Run an admin call from a button: errors shown as the API gives them. */
async function attempt(action) {
  try {
    const result = await action();
    showError(null);
    return result;
  } catch (error) {
    showError(error);
    return undefined;
  }
}

// --- accounts -------------------------------------------------------------------------------

function identityText(account) {
  const parts = [];
  if (account.impersonate) parts.push(`profile ${account.impersonate}`);
  if (account.user_agent) parts.push(account.user_agent);
  if (account.has_proxy !== undefined) parts.push(account.has_proxy ? "proxy: yes" : "proxy: no");
  return parts.join(" · ") || "—";
}

function nextAvailable(account) {
  if (!account.next_available_at) return account.state === "ready" ? "now" : "—";
  const seconds = Math.max(0, Math.round(account.next_available_at - Date.now() / 1000));
  return `${clock(account.next_available_at)} (in ${seconds} s)`;
}

const STATE_LABELS = { ready: "ready", cooling: "cooling", needs_attention: "needs attention", disabled: "disabled" };

async function loadAccounts() {
  const list = await admin("/accounts");
  const body = $("#account-table tbody");
  const seen = new Set();
  for (const account of list.data) {
    seen.add(account.id);
    let row = body.querySelector(`tr[data-id="${CSS.escape(account.id)}"]`);
    if (!row) {
      row = accountRow(account);
      body.append(row);
    }
    // Update cells in place, so a focused button keeps its focus across refreshes.
    const cells = row.cells;
    cells[0].querySelector(".label").textContent = account.label || account.id;
    cells[0].querySelector(".id").textContent = account.label ? account.id : "";
    const badge = cells[1].querySelector(".badge");
    badge.textContent = STATE_LABELS[account.state] || account.state;
    badge.className = `badge ${account.state}`;
    cells[2].textContent = account.in_flight;
    cells[3].textContent = account.turns_last_minute;
    cells[4].textContent = nextAvailable(account);
    cells[5].textContent = account.last_error ? account.last_error.message || account.last_error.code : "";
    cells[6].textContent = identityText(account);
    const toggle = row.querySelector("button.toggle");
    toggle.textContent = account.enabled ? "Disable" : "Enable";
    toggle.setAttribute("aria-label", `${toggle.textContent} account ${account.label || account.id}`);
    toggle.dataset.enabled = account.enabled ? "1" : "0";
  }
  for (const row of [...body.rows]) if (!seen.has(row.dataset.id)) row.remove();
}

function accountRow(account) {
  const id = account.id;
  const name = () => account.label || id;
  const toggle = el("button", { type: "button", class: "small toggle", onclick: async () => {
    const enabled = toggle.dataset.enabled !== "1";
    await attempt(() => admin(`/accounts/${encodeURIComponent(id)}`, { method: "PATCH", body: { enabled } }));
    loadAccounts().catch(showError);
  } });
  const remove = el("button", { type: "button", class: "small danger", "aria-label": `Delete account ${name()}`, onclick: async () => {
    if (remove.dataset.armed !== "1") {
      remove.dataset.armed = "1";
      remove.textContent = "Confirm delete";
      setTimeout(() => { remove.dataset.armed = ""; remove.textContent = "Delete"; }, 4000);
      return;
    }
    await attempt(() => admin(`/accounts/${encodeURIComponent(id)}`, { method: "DELETE" }));
    loadAccounts().catch(showError);
  } }, "Delete");
  return el(
    "tr",
    { "data-id": id },
    el("th", { scope: "row" }, el("span", { class: "label" }), el("br"), el("small", { class: "id note" })),
    el("td", { "data-label": "State" }, el("span", { class: "badge" })),
    el("td", { class: "num", "data-label": "In flight" }),
    el("td", { class: "num", "data-label": "Turns/min" }),
    el("td", { "data-label": "Next available" }),
    el("td", { class: "operator-message", "data-label": "Message" }),
    el("td", { "data-label": "Identity" }),
    el("td", { class: "actions" },
      el("button", { type: "button", class: "small refresh", "aria-label": `Refresh account ${name()}`, onclick: () => openAccountForm(id, name()) }, "Refresh"),
      el("button", { type: "button", class: "small check", "aria-label": `Check account ${name()}`, onclick: () => checkAccount(id, name()) }, "Check"),
      toggle,
      remove),
  );
}

function openAccountForm(id, name) {
  state.refreshing = id;
  const form = $("#account-form");
  form.hidden = false;
  form.classList.toggle("adding", !id);
  $("#account-form-title").textContent = id ? `Refresh ${name}` : "Add an account";
  $("#account-submit").textContent = id ? "Refresh" : "Add";
  $("#account-paste").value = "";
  $("#account-file").value = "";
  $("#account-proxy").value = "";
  $("#account-result").hidden = true;
  $("#account-paste").focus();
}

function closeAccountForm() {
  const id = state.refreshing;
  $("#account-form").hidden = true;
  state.refreshing = null;
  const back = id && $(`#account-table tr[data-id="${CSS.escape(id)}"] button.refresh`);
  (back || $("#add-account")).focus();
}

function number(selector) {
  const raw = $(selector).value.trim();
  return raw ? Number.parseInt(raw, 10) : undefined;
}

async function accountBody() {
  const source = document.querySelector('input[name="source"]:checked').value;
  const file = $("#account-file").files[0];
  const text = file ? await file.text() : $("#account-paste").value.trim();
  if (!text) throw new Error("Paste a request copied as cURL, a HAR file, or cookies first.");
  const body = {};
  if (source === "har" || (file && source !== "cookies")) body.har = text;
  else if (source === "curl") body.curl = text;
  else if (source === "access_token") body.access_token = text.replace(/^(authorization:\s*)?bearer\s+/i, "");
  else body.cookies = text.replace(/\r?\n/g, " ").replace(/^cookie:\s*/i, "");
  const proxy = $("#account-proxy").value.trim();
  if (proxy) body.proxy = proxy;
  if (!state.refreshing) {
    const label = $("#account-label").value.trim();
    if (label) body.label = label;
    const concurrent = number("#account-concurrent");
    const rpm = number("#account-rpm");
    if (concurrent) body.max_concurrent = concurrent;
    if (rpm) body.rpm = rpm;
  }
  return body;
}

async function submitAccount(event) {
  event.preventDefault();
  let body;
  try {
    body = await accountBody();
  } catch (error) {
    return showError(error);
  }
  const id = state.refreshing;
  const account = await attempt(() =>
    id ? admin(`/accounts/${encodeURIComponent(id)}`, { method: "PATCH", body }) : admin("/accounts", { method: "POST", body }),
  );
  if (!account) return;
  const result = $("#account-result");
  result.replaceChildren(el("div", {},
    el("h3", {}, `${account.label || account.id}: ${STATE_LABELS[account.state] || account.state}`),
    el("p", {}, `Identity: ${identityText(account)}`),
    account.client_hints && account.client_hints.length ? el("p", {}, `Client hints: ${account.client_hints.join(", ")}`) : null,
    account.warnings && account.warnings.length ? el("ul", { class: "warnings" }, account.warnings.map((w) => el("li", {}, w))) : null,
  ));
  result.hidden = false;
  await loadAccounts().catch(showError);
  closeAccountForm();
}

async function checkAccount(id, name) {
  const result = $("#account-result");
  result.hidden = false;
  result.replaceChildren(el("h3", {}, `Checking ${name}…`));
  const report = await attempt(() => admin(`/accounts/${encodeURIComponent(id)}/check`, { method: "POST", body: {} }));
  if (!report) {
    result.replaceChildren(el("h3", {}, `Check of ${name} failed`), el("p", {}, $("#error").textContent));
    return;
  }
  const steps = Array.isArray(report.steps) ? report.steps : [];
  const details = (step) => Object.entries(step).filter(([k]) => k !== "step").map(([k, v]) => `${k} ${v}`).join(", ");
  const error = report.error || {};
  result.replaceChildren(el("div", {},
    el("h3", {}, `Check of ${name}: ${report.ok ? "passed" : "failed"}`),
    el("p", {}, `Transport ${report.transport || "?"}, TLS profile ${report.tls_profile || "?"}, user agent ${report.user_agent || "?"}, `
      + `proxy ${report.proxy ? "yes" : "no"}, cf_clearance age ${report.clearance_age || "?"}`),
    el("ol", { class: "steps" }, steps.map((step) => el("li", { class: step.status >= 400 || (step.cloudflare && step.cloudflare !== "pass") ? "bad" : "good" },
      el("strong", {}, `${step.step}: `), details(step)))),
    report.ok ? null : el("p", { class: "bad" }, `${error.code || "error"}: ${error.message || ""}`),
  ));
  loadAccounts().catch(showError);
}

// --- keys -----------------------------------------------------------------------------------

function limitsText(limits) {
  const parts = [];
  if (limits.rpm) parts.push(`${limits.rpm}/min`);
  if (limits.max_concurrent) parts.push(`${limits.max_concurrent} at once`);
  if (limits.tokens_per_day) parts.push(`${limits.tokens_per_day} tokens/day`);
  if (limits.models) parts.push(`models: ${limits.models.join(", ")}`);
  return parts.join(" · ") || "defaults";
}

async function loadKeys() {
  const list = await admin("/keys");
  const usage = await Promise.all(list.data.map((key) => admin(`/keys/${encodeURIComponent(key.id)}/usage?days=1`).catch(() => null)));
  $("#key-table tbody").replaceChildren(...list.data.map((key, i) => keyRow(key, usage[i] && usage[i].data[0])));
}

function keyRow(key, today) {
  const name = key.label || key.prefix;
  const actions = key.managed
    ? [
        el("button", { type: "button", class: "small", "aria-label": `Edit limits of ${name}`, onclick: () => editKey(key) }, "Edit limits"),
        el("button", { type: "button", class: "small", "aria-label": `Usage of ${name}`, onclick: () => showUsage(key) }, "Usage"),
        el("button", { type: "button", class: "small danger revoke", "aria-label": `Revoke ${name}`, onclick: (event) => revokeKey(key, event.currentTarget) }, "Revoke"),
      ]
    : [el("span", { class: "note" }, "from API_KEYS (read-only)")];
  return el(
    "tr",
    { "data-id": key.id },
    el("th", { scope: "row" }, el("span", {}, key.label || "(no label)"), el("br"), el("code", {}, `${key.prefix}…`)),
    el("td", { "data-label": "Limits" }, limitsText(key.limits)),
    el("td", { "data-label": "Today" }, today ? `${today.requests} requests, ${today.input_tokens + today.output_tokens} tokens, ${today.errors} errors` : "—"),
    el("td", { "data-label": "Last used" }, key.last_used ? new Date(key.last_used * 1000).toLocaleString() : "never"),
    el("td", { class: "actions" }, actions),
  );
}

function keyBody() {
  const body = { label: $("#key-label").value.trim() };
  for (const [field, selector] of [["rpm", "#key-rpm"], ["max_concurrent", "#key-concurrent"], ["tokens_per_day", "#key-tokens"]]) {
    body[field] = number(selector) ?? null;
  }
  const models = $("#key-models").value.split(",").map((m) => m.trim()).filter(Boolean);
  body.models = models.length ? models : null;
  return body;
}

function editKey(key) {
  state.editing = key.id;
  $("#key-form-title").textContent = `Edit limits of ${key.label || key.prefix}`;
  $("#key-submit").textContent = "Save limits";
  $("#key-cancel").hidden = false;
  $("#key-label").value = key.label || "";
  $("#key-rpm").value = key.limits.rpm ?? "";
  $("#key-concurrent").value = key.limits.max_concurrent ?? "";
  $("#key-tokens").value = key.limits.tokens_per_day ?? "";
  $("#key-models").value = (key.limits.models || []).join(", ");
  $("#key-label").focus();
}

function resetKeyForm() {
  state.editing = null;
  $("#key-form").reset();
  $("#key-form-title").textContent = "Create a key";
  $("#key-submit").textContent = "Create key";
  $("#key-cancel").hidden = true;
}

async function submitKey(event) {
  event.preventDefault();
  const body = keyBody();
  const editing = state.editing;
  const key = await attempt(() =>
    editing ? admin(`/keys/${encodeURIComponent(editing)}`, { method: "PATCH", body }) : admin("/keys", { method: "POST", body }),
  );
  if (!key) return;
  resetKeyForm();
  if (key.key) {
    $("#secret").value = key.key; // shown once: cleared by Done and never stored
    $("#secret-box").hidden = false;
    $("#secret").focus();
    $("#secret").select();
  }
  await loadKeys().catch(showError);
}

async function copySecret() {
  const secret = $("#secret");
  try {
    await navigator.clipboard.writeText(secret.value);
    $("#copy-secret").textContent = "Copied";
  } catch {
    secret.select(); // no clipboard permission (plain http): leave it selected for Ctrl+C
    $("#copy-secret").textContent = "Press Ctrl+C";
  }
}

function hideSecret() {
  $("#secret").value = "";
  $("#secret-box").hidden = true;
  $("#copy-secret").textContent = "Copy";
  $("#key-label").focus();
}

async function revokeKey(key, button) {
  if (button.dataset.armed !== "1") {
    button.dataset.armed = "1";
    button.textContent = "Confirm revoke";
    setTimeout(() => { button.dataset.armed = ""; button.textContent = "Revoke"; }, 4000);
    return;
  }
  await attempt(() => admin(`/keys/${encodeURIComponent(key.id)}`, { method: "DELETE" }));
  await loadKeys().catch(showError);
  $("#key-label").focus();
}

async function showUsage(key) {
  const usage = await attempt(() => admin(`/keys/${encodeURIComponent(key.id)}/usage?days=${USAGE_DAYS}`));
  if (!usage) return;
  const days = [...usage.data].reverse(); // oldest first
  const names = days.map((d) => d.date);
  const box = $("#usage-box");
  box.replaceChildren(
    el("h3", { tabindex: "-1" }, `Usage of ${key.label || key.prefix}, last ${USAGE_DAYS} days`),
    barChart("Requests a day", names, [{ label: "requests", values: days.map((d) => d.requests) }]),
    barChart("Tokens a day", names, [
      { label: "in", values: days.map((d) => d.input_tokens) },
      { label: "out", values: days.map((d) => d.output_tokens) },
    ]),
    barChart("Errors and refusals a day", names, [
      { label: "errors", values: days.map((d) => d.errors) },
      { label: "rejected", values: days.map((d) => d.rejected) },
    ]),
  );
  box.hidden = false;
  box.querySelector("h3").focus();
}

// --- live -------------------------------------------------------------------------------------

async function loadLive() {
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

// --- navigation and start ---------------------------------------------------------------------

const LOADERS = { accounts: loadAccounts, keys: loadKeys, live: loadLive };

function show(section) {
  state.section = SECTIONS.includes(section) ? section : "accounts";
  for (const name of SECTIONS) {
    $(`#${name}`).hidden = name !== state.section;
    const tab = $(`#tab-${name}`);
    if (name === state.section) tab.setAttribute("aria-current", "page");
    else tab.removeAttribute("aria-current");
  }
  refresh();
}

async function refresh() {
  clearTimeout(state.timer);
  if (!state.key) return;
  try {
    await LOADERS[state.section]();
  } catch (error) {
    showError(error);
    if (error instanceof ApiError && error.status === 401) return; // no point polling with a wrong key
  }
  if (state.section !== "keys") state.timer = setTimeout(refresh, POLL_MS);
}

function unlock(event) {
  event.preventDefault();
  state.key = $("#admin-key").value.trim();
  $("#admin-key").value = "";
  if (state.key) sessionStorage.setItem(ADMIN_STORE, state.key);
  $("#admin-key").placeholder = state.key ? "unlocked" : "";
  showError(null);
  refresh();
}

function lock() {
  sessionStorage.removeItem(ADMIN_STORE);
  state.key = "";
  $("#admin-key").placeholder = "";
  $("#account-table tbody").replaceChildren();
  $("#key-table tbody").replaceChildren();
  $("#admin-key").focus();
}

function dropHar(event) {
  event.preventDefault();
  const file = event.dataTransfer.files[0];
  if (!file) return;
  file.text().then((text) => {
    $("#account-paste").value = text;
    document.querySelector('input[name="source"][value="har"]').checked = true;
  });
}

function start() {
  $("#admin-form").addEventListener("submit", unlock);
  $("#lock").addEventListener("click", lock);
  $("#account-form").addEventListener("submit", submitAccount);
  $("#account-cancel").addEventListener("click", closeAccountForm);
  $("#add-account").addEventListener("click", () => openAccountForm(null, ""));
  $("#account-paste").addEventListener("dragover", (event) => event.preventDefault());
  $("#account-paste").addEventListener("drop", dropHar);
  $("#key-form").addEventListener("submit", submitKey);
  $("#key-cancel").addEventListener("click", resetKeyForm);
  $("#copy-secret").addEventListener("click", copySecret);
  $("#secret-done").addEventListener("click", hideSecret);
  window.addEventListener("hashchange", () => show(location.hash.slice(1)));
  document.addEventListener("keydown", (event) => {
    if (event.key === "Escape" && !$("#account-form").hidden) closeAccountForm();
  });
  if (state.key) $("#admin-key").placeholder = "unlocked";
  else $("#admin-key").focus();
  show(location.hash.slice(1));
}

start();
