// The playground's shared state and feedback (status line, error box, 429 countdown). The
// modules that draw the page call back into the sending code through `actions`, which
// playground.js fills, so no two modules import each other.

import { $, ApiError } from "./lib.js";

export const KEY_STORE = "gateway.playground.key";

export const state = {
  key: localStorage.getItem(KEY_STORE) || "",
  conversation: null, // {id, title, branchOf}
  messages: [], // {role, content, image?, citations?, images?, toolCalls?, progress?}
  controller: null,
  countdown: null,
  attachment: null, // data URI of the image to send with the next message
};

/** Filled by playground.js: send(history), open(id), newChat(). */
export const actions = {};

export function setStatus(text) {
  $("#status").textContent = text;
}

export function showError(error) {
  const box = $("#error");
  box.textContent = error ? (error instanceof ApiError ? error.message : `Error: ${error.message || error}`) : "";
  box.hidden = !error;
  if (error instanceof ApiError && error.retryAfter) startCountdown(error.retryAfter);
}

export function startCountdown(seconds) {
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

/** Enter submits `form`; Shift+Enter (or an IME composition) keeps typing. */
export function submitOnEnter(event, form) {
  if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
    event.preventDefault();
    form.requestSubmit();
  }
}
