// Console › Accounts: the pool's state, refresh from a cURL copy / HAR / cookies / token,
// the worker-run check, add, disable, delete (the admin API's /admin/accounts).

import { $, clock, el } from "./lib.js";
import { admin, attempt, confirmed, number, showError } from "./admin.js";

const pending = { refreshing: null }; // the account the refresh form is open for (null: adding one)

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

export async function loadAccounts() {
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
    if (!confirmed(remove, "Confirm delete")) return;
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
  pending.refreshing = id;
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
  const id = pending.refreshing;
  $("#account-form").hidden = true;
  pending.refreshing = null;
  const back = id && $(`#account-table tr[data-id="${CSS.escape(id)}"] button.refresh`);
  (back || $("#add-account")).focus();
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
  if (!pending.refreshing) {
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
  const id = pending.refreshing;
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

function dropHar(event) {
  event.preventDefault();
  const file = event.dataTransfer.files[0];
  if (!file) return;
  file.text().then((text) => {
    $("#account-paste").value = text;
    document.querySelector('input[name="source"][value="har"]').checked = true;
  });
}

export function initAccounts() {
  $("#account-form").addEventListener("submit", submitAccount);
  $("#account-cancel").addEventListener("click", closeAccountForm);
  $("#add-account").addEventListener("click", () => openAccountForm(null, ""));
  $("#account-paste").addEventListener("dragover", (event) => event.preventDefault());
  $("#account-paste").addEventListener("drop", dropHar);
  document.addEventListener("keydown", (event) => {
    if (event.key === "Escape" && !$("#account-form").hidden) closeAccountForm();
  });
}
