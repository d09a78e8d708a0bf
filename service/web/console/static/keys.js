// Console › Keys: managed keys with limits and today's usage; create (the secret shown once),
// edit limits, usage charts, revoke (the admin API's /admin/keys).

import { $, barChart, el } from "./lib.js";
import { admin, attempt, confirmed, number, showError } from "./admin.js";

const USAGE_DAYS = 14;
const pending = { editing: null }; // the key whose limits the form edits (null: creating one)

function limitsText(limits) {
  const parts = [];
  if (limits.rpm) parts.push(`${limits.rpm}/min`);
  if (limits.max_concurrent) parts.push(`${limits.max_concurrent} at once`);
  if (limits.tokens_per_day) parts.push(`${limits.tokens_per_day} tokens/day`);
  if (limits.models) parts.push(`models: ${limits.models.join(", ")}`);
  return parts.join(" · ") || "defaults";
}

export async function loadKeys() {
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
  pending.editing = key.id;
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
  pending.editing = null;
  $("#key-form").reset();
  $("#key-form-title").textContent = "Create a key";
  $("#key-submit").textContent = "Create key";
  $("#key-cancel").hidden = true;
}

async function submitKey(event) {
  event.preventDefault();
  const body = keyBody();
  const editing = pending.editing;
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
  if (!confirmed(button, "Confirm revoke")) return;
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

export function initKeys() {
  $("#key-form").addEventListener("submit", submitKey);
  $("#key-cancel").addEventListener("click", resetKeyForm);
  $("#copy-secret").addEventListener("click", copySecret);
  $("#secret-done").addEventListener("click", hideSecret);
}
