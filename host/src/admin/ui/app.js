// The dashboard: polls the admin API once a second, follows the event stream,
// and renders the selected view. Every write goes through the admin API.

import { get, setToken, token } from "./api.js";
import * as views from "./views.js";
import { renderServices } from "./services.js";

const state = {
  status: null,
  services: null,
  versions: null,
  plugins: null,
  ratelimits: null,
  demo: null,
  events: [],
  rates: new Map(), // node key -> {t, requests, errors, rps, errPct}
  view: "overview",
  error: null,
};

const POLL_MS = 1000;
const MAX_EVENTS = 500;

window.__gatehouse = { state };

function currentView() {
  const v = (location.hash || "#overview").slice(1);
  return document.getElementById("view-" + v) ? v : "overview";
}

function showView() {
  state.view = currentView();
  for (const s of document.querySelectorAll("main > section")) s.hidden = s.dataset.view !== state.view;
  for (const a of document.querySelectorAll("#tabs a")) a.classList.toggle("active", a.dataset.view === state.view);
  render();
}

function updateRates(services) {
  const now = performance.now();
  for (const svc of services.services || []) {
    for (const n of svc.nodes) {
      const key = svc.service + "|" + n.host + ":" + n.port;
      const prev = state.rates.get(key);
      const cur = { t: now, requests: n.requests, errors: n.errors || 0, rps: 0, errPct: 0 };
      if (prev && now > prev.t) {
        const dt = (now - prev.t) / 1000;
        const dr = Math.max(0, n.requests - prev.requests);
        const de = Math.max(0, cur.errors - prev.errors);
        // Smooth a little so one-second samples do not flicker.
        cur.rps = prev.rps ? 0.5 * prev.rps + 0.5 * (dr / dt) : dr / dt;
        cur.errPct = dr > 0 ? (100 * de) / dr : prev.errPct * 0.5;
      }
      state.rates.set(key, cur);
    }
  }
}

async function poll() {
  const wanted = { status: "/admin/v1/status", services: "/admin/v1/services" };
  if (state.view === "services") wanted.versions = "/admin/v1/versions";
  if (state.view === "plugins" || state.view === "overview") wanted.plugins = "/admin/v1/plugins";
  if (state.view === "ratelimits") wanted.ratelimits = "/admin/v1/ratelimits";
  try {
    const entries = await Promise.all(Object.entries(wanted).map(async ([k, p]) => [k, await get(p)]));
    for (const [k, v] of entries) state[k] = v;
    if (state.status && state.status.demo) state.demo = (await get("/admin/v1/demo/nodes")).nodes;
    updateRates(state.services);
    state.error = null;
  } catch (e) {
    state.error = e.message;
  }
  render();
}

function render() {
  const banner = document.getElementById("banner");
  banner.hidden = !state.error;
  banner.textContent = state.error || "";
  views.renderHeader(state);
  const el = document.getElementById("view-" + state.view);
  switch (state.view) {
    case "overview": views.renderOverview(el, state); break;
    case "traffic": views.renderTraffic(el, state, refresh); break;
    case "services": renderServices(el, state, refresh); break;
    case "plugins": views.renderPlugins(el, state); break;
    case "ratelimits": views.renderRateLimits(el, state); break;
    case "events": views.renderEvents(el, state); break;
  }
}

/** Polls now (after an action), instead of waiting for the next tick. */
async function refresh() {
  if (state.view === "services") state.versions = null;
  await poll();
}

function follow() {
  const live = document.getElementById("live");
  const es = new EventSource("/admin/v1/events");
  es.onopen = () => live.classList.add("on");
  es.onerror = () => live.classList.remove("on");
  es.onmessage = (m) => {
    let ev;
    try { ev = JSON.parse(m.data); } catch (_) { return; }
    if (state.events.some((e) => e.seq === ev.seq)) return;
    state.events.unshift(ev);
    if (state.events.length > MAX_EVENTS) state.events.length = MAX_EVENTS;
    if (state.view === "events" || state.view === "overview") render();
    if (ev.type !== "config" || ev.ok) void poll();
  };
}

function setupToken() {
  const form = document.getElementById("token-form");
  const input = document.getElementById("token-input");
  input.value = token();
  form.addEventListener("submit", (e) => {
    e.preventDefault();
    setToken(input.value.trim());
    render();
  });
  document.getElementById("token-clear").addEventListener("click", () => {
    input.value = "";
    setToken("");
    render();
  });
}

window.addEventListener("hashchange", showView);
setupToken();
showView();
follow();
void poll();
setInterval(() => void poll(), POLL_MS);
