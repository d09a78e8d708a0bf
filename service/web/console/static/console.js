// The operator console: accounts, keys and live numbers through the admin API only
// (Bearer ADMIN_KEY, kept in sessionStorage: gone when the tab closes). Each section is a
// module; this one unlocks, switches sections (the URL's #fragment) and polls.

import { $, ApiError } from "./lib.js";
import { session, showError } from "./admin.js";
import { initAccounts, loadAccounts } from "./accounts.js";
import { initKeys, loadKeys } from "./keys.js";
import { loadLive } from "./live.js";

const POLL_MS = 3000;
const LOADERS = { accounts: loadAccounts, keys: loadKeys, live: loadLive };
const SECTIONS = Object.keys(LOADERS);
const view = { section: "accounts", timer: null };

function show(section) {
  view.section = SECTIONS.includes(section) ? section : "accounts";
  for (const name of SECTIONS) {
    $(`#${name}`).hidden = name !== view.section;
    const tab = $(`#tab-${name}`);
    if (name === view.section) tab.setAttribute("aria-current", "page");
    else tab.removeAttribute("aria-current");
  }
  refresh();
}

/** Load the open section; accounts and live keep refreshing (keys only on demand). */
async function refresh() {
  clearTimeout(view.timer);
  if (!session.key) return;
  try {
    await LOADERS[view.section]();
  } catch (error) {
    showError(error);
    if (error instanceof ApiError && error.status === 401) return; // no point polling with a wrong key
  }
  if (view.section !== "keys") view.timer = setTimeout(refresh, POLL_MS);
}

function unlock(event) {
  event.preventDefault();
  session.set($("#admin-key").value.trim());
  $("#admin-key").value = "";
  $("#admin-key").placeholder = session.key ? "unlocked" : "";
  showError(null);
  refresh();
}

function lock() {
  session.set("");
  clearTimeout(view.timer);
  $("#admin-key").placeholder = "";
  $("#account-table tbody").replaceChildren();
  $("#key-table tbody").replaceChildren();
  $("#admin-key").focus();
}

function start() {
  $("#admin-form").addEventListener("submit", unlock);
  $("#lock").addEventListener("click", lock);
  initAccounts();
  initKeys();
  window.addEventListener("hashchange", () => show(location.hash.slice(1)));
  if (session.key) $("#admin-key").placeholder = "unlocked";
  else $("#admin-key").focus();
  show(location.hash.slice(1));
}

start();
