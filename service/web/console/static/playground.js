// The chat playground: a client of the gateway's public API like any other (Bearer key,
// /v1/models, streamed /v1/chat/completions, the Conversations API). The key lives in
// localStorage; conversation ids this browser started are remembered per key, since the
// Conversations API has no listing.

import { $, ApiError, call, callJson, clock, el, safeUrl, sse } from "./lib.js";

const KEY_STORE = "gateway.playground.key";
const MODEL_STORE = "gateway.playground.model";
const TITLE_LENGTH = 60;

const state = {
  key: localStorage.getItem(KEY_STORE) || "",
  conversation: null, // {id, title, branchOf}
  messages: [], // {role, content, image?, citations?, images?, toolCalls?, progress?}
  controller: null,
  countdown: null,
  attachment: null, // data URI of the image to send with the next message
};

// --- small utilities ---------------------------------------------------------------------

function fnv(text) {
  let hash = 0x811c9dc5;
  for (let i = 0; i < text.length; i++) hash = Math.imul(hash ^ text.charCodeAt(i), 0x01000193) >>> 0;
  return hash.toString(16);
}

const listKey = () => `gateway.playground.conversations.${fnv(state.key)}`;
const storedIds = () => JSON.parse(localStorage.getItem(listKey()) || "[]");
const storeIds = (ids) => localStorage.setItem(listKey(), JSON.stringify([...new Set(ids)].slice(0, 200)));

function setStatus(text) {
  $("#status").textContent = text;
}

function showError(error) {
  const box = $("#error");
  box.textContent = error ? (error instanceof ApiError ? error.message : `Error: ${error.message || error}`) : "";
  box.hidden = !error;
  if (error instanceof ApiError && error.retryAfter) startCountdown(error.retryAfter);
}

function startCountdown(seconds) {
  clearInterval(state.countdown);
  let left = seconds;
  const tick = () => {
    if (left <= 0) {
      clearInterval(state.countdown);
      setStatus("You can retry now.");
      return;
    }
    setStatus(`Rate limited: retry in ${left} s`);
    left -= 1;
  };
  tick();
  state.countdown = setInterval(tick, 1000);
}

// --- key and models ----------------------------------------------------------------------

async function loadModels() {
  const select = $("#model");
  try {
    const models = await callJson("/v1/models", { key: state.key });
    const saved = localStorage.getItem(MODEL_STORE);
    select.replaceChildren(...models.data.map((m) => el("option", { value: m.id, selected: m.id === saved }, m.id)));
    showError(null);
  } catch (error) {
    select.replaceChildren(el("option", { value: "" }, "(no models)"));
    showError(error);
  }
}

function saveKey(event) {
  event.preventDefault();
  const input = $("#api-key");
  state.key = input.value.trim();
  input.value = "";
  input.placeholder = state.key ? "key saved" : "sk-…";
  if (state.key) localStorage.setItem(KEY_STORE, state.key);
  else localStorage.removeItem(KEY_STORE);
  newChat();
  loadModels();
  loadSidebar();
  $("#prompt").focus();
}

function forgetKey() {
  localStorage.removeItem(KEY_STORE);
  state.key = "";
  $("#api-key").placeholder = "sk-…";
  $("#conversations").replaceChildren();
  newChat();
  $("#api-key").focus();
}

// --- sidebar: this key's conversations ---------------------------------------------------

async function loadSidebar() {
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

async function openConversation(id) {
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

function setTitle(title) {
  $("#chat-title").textContent = title || "New chat";
  if (state.conversation) state.conversation.title = title;
}

function newChat() {
  state.conversation = null;
  state.messages = [];
  showError(null);
  setStatus("");
  render();
  markCurrent();
}

// --- transcript ---------------------------------------------------------------------------

function render() {
  const conversation = state.conversation;
  setTitle(conversation ? conversation.title : "");
  const note = $("#branch-note");
  note.hidden = !(conversation && conversation.branchOf);
  if (!note.hidden) {
    note.replaceChildren(
      "A branch of ",
      el("button", { type: "button", class: "link", onclick: () => openConversation(conversation.branchOf) }, "the original conversation"),
      " (an earlier turn was edited or regenerated).",
    );
  }
  $("#transcript").replaceChildren(...state.messages.map((message, index) => messageItem(message, index)));
}

function messageItem(message, index) {
  const item = el("li", { class: `message ${message.role}`, "data-index": index, "data-state": message.state || "done" });
  const body = el("div", { class: "content" }, message.content || "");
  item.append(el("h3", { class: "role" }, message.role === "user" ? "You" : message.role === "assistant" ? "Assistant" : message.role));
  if (message.image) item.append(el("img", { class: "attached", src: message.image, alt: "Attached image" }));
  item.append(body);
  decorate(item, message);
  if (message.role === "user") {
    item.append(el("button", { type: "button", class: "small", "aria-label": `Edit message ${index + 1}`, onclick: () => editForm(item, index) }, "Edit"));
  } else if (message.role === "assistant") {
    item.append(el("button", { type: "button", class: "small", "aria-label": `Regenerate answer ${index + 1}`, onclick: () => regenerate(index) }, "Regenerate"));
  }
  return item;
}

/** Citations as links, generated images inline, tool calls, progress notes. */
function decorate(item, message) {
  if (message.progress && message.progress.length) {
    item.append(el("ul", { class: "progress plain" }, message.progress.map((p) => el("li", {}, p))));
  }
  const images = (message.images || []).filter((image) => safeUrl(image.url, { images: true }));
  if (images.length) {
    item.append(el("div", { class: "images" }, images.map((image) =>
      el("a", { href: safeUrl(image.url, { images: true }), target: "_blank", rel: "noopener noreferrer" },
        el("img", { src: safeUrl(image.thumbnail_url, { images: true }) || safeUrl(image.url, { images: true }), alt: image.prompt || "Generated image" })))));
  }
  if (message.toolCalls && message.toolCalls.length) {
    item.append(el("div", { class: "tool-calls" }, el("h4", {}, "Tool calls"), message.toolCalls.map((call) =>
      el("pre", {}, `${call.function.name}(${call.function.arguments})`))));
  }
  if (message.citations && message.citations.some((c) => safeUrl(c.url))) {
    const seen = new Map();
    for (const c of message.citations) if (safeUrl(c.url) && !seen.has(c.url)) seen.set(c.url, c.title || c.url);
    item.append(el("div", { class: "citations" }, el("h4", {}, "Sources"), el("ol", {}, [...seen].map(([url, title]) =>
      el("li", {}, el("a", { href: url, target: "_blank", rel: "noopener noreferrer" }, title))))));
  }
}

function editForm(item, index) {
  const original = state.messages[index];
  const area = el("textarea", { id: `edit-${index}`, rows: 3 });
  area.value = original.content;
  const form = el(
    "form",
    { class: "edit", onsubmit: (event) => {
      event.preventDefault();
      const text = area.value.trim();
      if (!text) return;
      send([...state.messages.slice(0, index), { ...original, content: text }]);
    } },
    el("label", { for: area.id }, "Edit your message (the answer will branch the conversation)"),
    area,
    el("div", { class: "row" }, el("button", { type: "submit" }, "Send edit"), el("button", { type: "button", onclick: render }, "Cancel")),
  );
  area.addEventListener("keydown", (event) => submitOnEnter(event, form));
  item.querySelector(".content").replaceWith(form);
  item.querySelector("button.small")?.remove();
  area.focus();
}

function regenerate(index) {
  send(state.messages.slice(0, index));
}

// --- sending ------------------------------------------------------------------------------

function wire(message) {
  if (message.role === "user" && message.image) {
    return { role: "user", content: [{ type: "text", text: message.content }, { type: "image_url", image_url: { url: message.image } }] };
  }
  return { role: message.role, content: message.content || "" };
}

function toolsOfPanel() {
  const text = $("#tools").value.trim();
  if (!text) return {};
  let tools;
  try {
    tools = JSON.parse(text);
  } catch (error) {
    throw new Error(`The tools panel is not valid JSON: ${error.message}`);
  }
  return { tools: Array.isArray(tools) ? tools : [tools], tool_choice: $("#tool-choice").value };
}

/** Send `history` (ending with a user message) and stream the answer into the transcript. */
async function send(history) {
  if (state.controller) return;
  showError(null);
  let extra;
  try {
    extra = toolsOfPanel();
  } catch (error) {
    return showError(error);
  }
  const previous = state.conversation;
  const before = state.messages;
  const answer = { role: "assistant", content: "", state: "streaming", progress: [], citations: [], images: [], toolCalls: [] };
  state.messages = [...history, answer];
  render();
  const item = $("#transcript").lastElementChild;
  const text = document.createTextNode("");
  item.querySelector(".content").replaceChildren(text);
  item.querySelector("button.small")?.remove();
  const body = {
    model: $("#model").value,
    messages: history.map(wire),
    stream: true,
    stream_options: { include_usage: true },
    ...extra,
  };
  // Continue by id; with an edited or regenerated history the gateway branches. An edited first
  // turn has no history to compare, so it starts afresh (the id alone would mean "continue").
  if (previous && history.length > 1) body.conversation_id = previous.id;
  state.controller = new AbortController();
  $("#stop").hidden = false;
  $("#send").disabled = true;
  setStatus("Sending…");
  try {
    const response = await call("/v1/chat/completions", { key: state.key, method: "POST", body, signal: state.controller.signal });
    const id = response.headers.get("X-Conversation-Id");
    await readStream(response, answer, text, item);
    setStatus("");
    await remember(id, previous, history);
    answer.state = "done";
  } catch (error) {
    answer.state = "stopped";
    if (error.name === "AbortError") {
      setStatus("Stopped.");
    } else {
      state.messages = before;
      render();
      setStatus("");
      showError(error);
    }
  } finally {
    state.controller = null;
    $("#stop").hidden = true;
    $("#send").disabled = false;
  }
  render();
}

async function readStream(response, answer, text, item) {
  const calls = [];
  for await (const event of sse(response)) {
    if (event.comment !== undefined) {
      if (!event.comment || event.comment === "keep-alive") continue;
      const queued = /^queued, position (\d+)/.exec(event.comment);
      if (queued) {
        setStatus(`Queued, position ${queued[1]}`);
      } else {
        answer.progress.push(event.comment);
        setStatus(event.comment);
      }
      continue;
    }
    if (event.data === "[DONE]") break;
    const chunk = JSON.parse(event.data);
    if (chunk.error) throw new ApiError(response.status, chunk);
    const choice = chunk.choices && chunk.choices[0];
    if (!choice) continue;
    const delta = choice.delta || {};
    if (delta.content) {
      if (!answer.content) setStatus("");
      answer.content += delta.content;
      text.appendData(delta.content);
    }
    for (const annotation of delta.annotations || []) if (annotation.url_citation) answer.citations.push(annotation.url_citation);
    for (const image of delta.images || []) answer.images.push(image);
    for (const call of delta.tool_calls || []) {
      const slot = (calls[call.index] ||= { id: call.id, function: { name: "", arguments: "" } });
      if (call.function?.name) slot.function.name = call.function.name;
      if (call.function?.arguments) slot.function.arguments += call.function.arguments;
    }
    if (delta.images || delta.annotations || delta.tool_calls) {
      answer.toolCalls = calls.filter(Boolean);
      for (const node of item.querySelectorAll(".images, .citations, .tool-calls, .progress")) node.remove();
      decorate(item, answer);
    }
  }
  answer.toolCalls = calls.filter(Boolean);
}

/** Keep the conversation in the sidebar; a new id for a known conversation is a branch. */
async function remember(id, previous, history) {
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

function submitOnEnter(event, form) {
  if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
    event.preventDefault();
    form.requestSubmit();
  }
}

function onCompose(event) {
  event.preventDefault();
  const prompt = $("#prompt");
  const content = prompt.value.trim();
  if (!content || state.controller) return;
  const message = { role: "user", content };
  if (state.attachment) message.image = state.attachment;
  prompt.value = "";
  clearAttachment();
  send([...state.messages, message]);
  prompt.focus();
}

function attach() {
  const file = $("#attach").files[0];
  if (!file) return;
  const reader = new FileReader();
  reader.onload = () => {
    state.attachment = reader.result;
    $("#attachment").textContent = `${file.name} (${Math.round(file.size / 1024)} KB) will be sent with your message.`;
    $("#clear-attachment").hidden = false;
  };
  reader.readAsDataURL(file);
}

function clearAttachment() {
  state.attachment = null;
  $("#attach").value = "";
  $("#attachment").textContent = "";
  $("#clear-attachment").hidden = true;
}

// --- start --------------------------------------------------------------------------------

function start() {
  $("#key-form").addEventListener("submit", saveKey);
  $("#forget-key").addEventListener("click", forgetKey);
  $("#model").addEventListener("change", () => localStorage.setItem(MODEL_STORE, $("#model").value));
  $("#new-chat").addEventListener("click", () => { newChat(); $("#prompt").focus(); });
  $("#composer").addEventListener("submit", onCompose);
  $("#prompt").addEventListener("keydown", (event) => submitOnEnter(event, $("#composer")));
  $("#stop").addEventListener("click", () => state.controller?.abort());
  $("#attach").addEventListener("change", attach);
  $("#clear-attachment").addEventListener("click", clearAttachment);
  render();
  if (state.key) {
    $("#api-key").placeholder = "key saved";
    loadModels();
    loadSidebar();
  } else {
    // A gateway without keys answers anyway; a keyed one asks for the key first.
    callJson("/v1/models")
      .then(() => { loadModels(); loadSidebar(); })
      .catch(() => setStatus("Enter an API key to start."));
    $("#api-key").focus();
  }
}

start();
