// This key's conversations (the sidebar): the Conversations API has no listing, so the ids
// this browser started are remembered per key and read back; open, rename (metadata),
// delete, and the record of a new conversation or branch once its first answer is in.

import { $, ApiError, call, callJson, clock, el } from "./lib.js";
import { setStatus, showError, state } from "./chat-state.js";
import { render, setTitle } from "./transcript.js";

const TITLE_LENGTH = 60;

function fnv(text) {
  let hash = 0x811c9dc5;
  for (let i = 0; i < text.length; i++) hash = Math.imul(hash ^ text.charCodeAt(i), 0x01000193) >>> 0;
  return hash.toString(16);
}

const listKey = () => `gateway.playground.conversations.${fnv(state.key)}`;
const storedIds = () => JSON.parse(localStorage.getItem(listKey()) || "[]");
const storeIds = (ids) => localStorage.setItem(listKey(), JSON.stringify([...new Set(ids)].slice(0, 200)));

export async function loadSidebar() {
  const ids = storedIds();
  const found = await Promise.all(
    ids.map((id) =>
      callJson(`/v1/conversations/${encodeURIComponent(id)}`, { key: state.key }).catch((error) =>
        error instanceof ApiError && error.status === 404 ? null : { id, metadata: {}, unreachable: true },
      ),
    ),
  );
  storeIds(found.filter(Boolean).map((c) => c.id));
  $("#conversations").replaceChildren(...found.filter(Boolean).map(sidebarItem));
}

function sidebarItem(conversation) {
  const meta = conversation.metadata || {};
  const title = meta.title || conversation.id;
  const current = state.conversation && state.conversation.id === conversation.id;
  const item = el("li", { "data-id": conversation.id, class: meta.branch_of ? "branch" : null });
  const open = el("button", { type: "button", class: "link", "aria-current": current ? "true" : null, onclick: () => openConversation(conversation.id) }, title);
  const rename = el("button", { type: "button", class: "small", "aria-label": `Rename ${title}`, onclick: () => renameForm(item, conversation) }, "Rename");
  const remove = el("button", { type: "button", class: "small danger", "aria-label": `Delete ${title}`, onclick: () => deleteConversation(conversation.id, remove) }, "Delete");
  const note = meta.branch_of && !/\bbranch\b/i.test(title) ? el("span", { class: "note" }, " (branch)") : null;
  item.append(...[open, note, el("span", { class: "actions" }, rename, remove)].filter(Boolean));
  return item;
}

function renameForm(item, conversation) {
  const meta = conversation.metadata || {};
  const input = el("input", { type: "text", id: `rename-${conversation.id}`, value: meta.title || "", maxlength: 512 });
  const form = el(
    "form",
    { class: "rename", onsubmit: async (event) => {
      event.preventDefault();
      try {
        const updated = await callJson(`/v1/conversations/${conversation.id}`, {
          key: state.key, method: "POST", body: { metadata: { ...meta, title: input.value.trim().slice(0, 512) } },
        });
        if (state.conversation && state.conversation.id === updated.id) setTitle(updated.metadata.title);
        item.replaceWith(sidebarItem(updated));
        $(`#conversations li[data-id="${updated.id}"] button.link`).focus();
      } catch (error) {
        showError(error);
      }
    } },
    el("label", { for: input.id }, "New name"),
    input,
    el("button", { type: "submit" }, "Save"),
    el("button", { type: "button", onclick: () => { item.replaceWith(sidebarItem(conversation)); } }, "Cancel"),
  );
  item.replaceChildren(form);
  input.focus();
  input.select();
}

async function deleteConversation(id, button) {
  if (button.dataset.armed !== "1") {
    button.dataset.armed = "1";
    button.textContent = "Confirm delete";
    setTimeout(() => { button.dataset.armed = ""; button.textContent = "Delete"; }, 4000);
    return;
  }
  try {
    await call(`/v1/conversations/${encodeURIComponent(id)}`, { key: state.key, method: "DELETE" });
  } catch (error) {
    if (!(error instanceof ApiError && error.status === 404)) return showError(error);
  }
  storeIds(storedIds().filter((other) => other !== id));
  $(`#conversations li[data-id="${id}"]`)?.remove();
  setStatus("Conversation deleted.");
  if (state.conversation && state.conversation.id === id) newChat();
  $("#new-chat").focus();
}

export async function openConversation(id) {
  try {
    const [conversation, items] = await Promise.all([
      callJson(`/v1/conversations/${encodeURIComponent(id)}`, { key: state.key }),
      callJson(`/v1/conversations/${encodeURIComponent(id)}/items?order=asc&limit=100`, { key: state.key }),
    ]);
    const meta = conversation.metadata || {};
    state.conversation = { id, title: meta.title || id, branchOf: meta.branch_of || null };
    state.messages = items.data
      .filter((item) => item.type === "message")
      .map((item) => ({ role: item.role, content: item.content.map((part) => part.text || "").join("") }));
    showError(null);
    render();
    markCurrent();
    $("#prompt").focus();
  } catch (error) {
    showError(error);
  }
}

function markCurrent() {
  for (const button of document.querySelectorAll("#conversations button.link")) {
    const li = button.closest("li");
    if (state.conversation && li.dataset.id === state.conversation.id) button.setAttribute("aria-current", "true");
    else button.removeAttribute("aria-current");
  }
}

export function newChat() {
  state.conversation = null;
  state.messages = [];
  showError(null);
  setStatus("");
  render();
  markCurrent();
}

export async function remember(id, previous, history) {
  if (!id) return;
  if (previous && previous.id === id) return;
  const firstUser = history.find((m) => m.role === "user");
  const title = previous
    ? `${previous.title}`.replace(/ \(branch\)$/, "").slice(0, TITLE_LENGTH - 9) + " (branch)"
    : (firstUser ? firstUser.content : "Chat").replace(/\s+/g, " ").slice(0, TITLE_LENGTH);
  const metadata = previous ? { title, branch_of: previous.id } : { title };
  state.conversation = { id, title, branchOf: metadata.branch_of || null };
  storeIds([id, ...storedIds()]);
  try {
    const conversation = await callJson(`/v1/conversations/${encodeURIComponent(id)}`, { key: state.key, method: "POST", body: { metadata } });
    $("#conversations").prepend(sidebarItem(conversation));
  } catch (error) {
    showError(error);
  }
  markCurrent();
  if (previous) setStatus(`Branched: a new conversation (started ${clock(Date.now() / 1000)}); the original is unchanged.`);
}
