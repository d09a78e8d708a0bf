// The conversation on screen: messages with their citations, images, tool calls and
// progress notes; Edit and Regenerate send an edited history (`actions.send`), which the
// gateway answers in a branch.

import { $, el, safeUrl } from "./lib.js";
import { actions, state, submitOnEnter } from "./chat-state.js";

export function setTitle(title) {
  $("#chat-title").textContent = title || "New chat";
  if (state.conversation) state.conversation.title = title;
}

export function render() {
  const conversation = state.conversation;
  setTitle(conversation ? conversation.title : "");
  const note = $("#branch-note");
  note.hidden = !(conversation && conversation.branchOf);
  if (!note.hidden) {
    note.replaceChildren(
      "A branch of ",
      el("button", { type: "button", class: "link", onclick: () => actions.open(conversation.branchOf) }, "the original conversation"),
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
export function decorate(item, message) {
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
      actions.send([...state.messages.slice(0, index), { ...original, content: text }]);
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
  actions.send(state.messages.slice(0, index));
}
