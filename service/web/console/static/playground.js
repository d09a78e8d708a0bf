// The chat playground: a client of the gateway's public API like any other (Bearer key,
// /v1/models, streamed /v1/chat/completions, the Conversations API). The key lives in
// localStorage. This module sends and streams; conversations.js keeps the sidebar,
// transcript.js draws the conversation.

import { $, ApiError, call, callJson, el, sse } from "./lib.js";
import { KEY_STORE, actions, setStatus, showError, state, submitOnEnter } from "./chat-state.js";
import { loadSidebar, newChat, openConversation, remember } from "./conversations.js";
import { decorate, render } from "./transcript.js";

const MODEL_STORE = "gateway.playground.model";

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
      const unsent = history[history.length - 1];
      if (!before.includes(unsent) && !$("#prompt").value) $("#prompt").value = unsent.content; // to retry
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
    if (chunk.error) throw new ApiError(null, chunk); // the stream's own error, after its 200
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

function start() {
  Object.assign(actions, { send, open: openConversation, newChat });
  if (matchMedia("(max-width: 720px)").matches) $("#conversation-list").open = false; // phones: the chat first
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
