// What every console section shares: the admin key (sessionStorage: gone with the tab), admin
// API calls, and errors shown as the API gives them.

import { $, ApiError, callJson } from "./lib.js";

const ADMIN_STORE = "gateway.console.admin";

export const session = {
  key: sessionStorage.getItem(ADMIN_STORE) || "",
  set(key) {
    this.key = key;
    if (key) sessionStorage.setItem(ADMIN_STORE, key);
    else sessionStorage.removeItem(ADMIN_STORE);
  },
};

/** An admin API call with the session's key; throws ApiError as the API answered. */
export const admin = (path, options = {}) => callJson(`/admin${path}`, { key: session.key, ...options });

export function showError(error) {
  const box = $("#error");
  box.textContent = error ? (error instanceof ApiError ? error.message : `Error: ${error.message || error}`) : "";
  box.hidden = !error;
}

/** Run an admin call from a button: errors shown as the API gives them; undefined on failure. */
export async function attempt(action) {
  try {
    const result = await action();
    showError(null);
    return result;
  } catch (error) {
    showError(error);
    return undefined;
  }
}

/** The whole number typed in the field, or undefined when it is empty. */
export function number(selector) {
  const raw = $(selector).value.trim();
  return raw ? Number.parseInt(raw, 10) : undefined;
}

/** A destructive button's first press arms it (its text asks to confirm); true on the second. */
export function confirmed(button, question) {
  if (button.dataset.armed === "1") return true;
  const label = button.textContent;
  button.dataset.armed = "1";
  button.textContent = question;
  setTimeout(() => {
    button.dataset.armed = "";
    button.textContent = label;
  }, 4000);
  return false;
}
