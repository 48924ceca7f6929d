// Read-only views: header, overview, traffic by zone, plugins, rate limits, events.

import { token } from "./api.js";
import { nodeForms, nodeButtons, demoButton } from "./actions.js";

/** Builds an element: h("div", {class: "x"}, "text", child, ...). No innerHTML anywhere. */
export function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else if (k === "class") el.className = v;
    else el.setAttribute(k, v === true ? "" : String(v));
  }
  for (const c of children.flat(Infinity)) {
    if (c === undefined || c === null || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

const badge = (text, cls) => h("span", { class: "badge " + (cls || text) }, text);
const fmt = (n, d = 1) => (Number.isFinite(n) ? n.toFixed(d) : "–");

function duration(s) {
  if (s < 60) return s + " s";
  if (s < 3600) return Math.floor(s / 60) + " min " + (s % 60) + " s";
  const hours = Math.floor(s / 3600);
  return hours + " h " + Math.floor((s % 3600) / 60) + " min";
}

function kv(pairs) {
  return h("dl", { class: "kv" }, pairs.map(([k, v]) => [h("dt", {}, k), h("dd", {}, v ?? "–")]));
}

export function renderHeader(state) {
  const s = state.status;
  const id = document.getElementById("identity");
  id.textContent = s
    ? `group ${s.group} · zone ${s.zone} · region ${s.region} · generation ${s.generation}${s.demo ? " · demo" : ""}`
    : "connecting…";
  const access = document.getElementById("access");
  const canWrite = s && (!s.token_required || token());
  access.textContent = !s ? "…" : canWrite ? (s.token_required ? "token set" : "writes open (loopback)") : "read-only";
  access.className = "badge " + (canWrite ? "ok" : "readonly");
}

export function renderOverview(el, state) {
  const s = state.status;
  if (!s) return;
  let nodes = 0, healthy = 0, panic = 0;
  for (const svc of state.services?.services || []) {
    if (svc.panic) panic++;
    for (const n of svc.nodes) {
      nodes++;
      if (n.state === "healthy" && n.weight > 0) healthy++;
    }
  }
  const plugins = state.plugins?.plugins || [];
  el.replaceChildren(
    h("div", { class: "grid" },
      h("div", { class: "panel", id: "ov-identity" }, h("h3", {}, "Unit"),
        kv([["group", s.group], ["zone", s.zone], ["region", s.region], ["version", s.version],
            ["uptime", duration(s.uptime_s)], ["ready", s.ready ? "yes" : "no"]])),
      h("div", { class: "panel", id: "ov-config" }, h("h3", {}, "Config"),
        kv([["generation", s.generation], ["source", s.source || "built-in (memory)"],
            ["persistence", s.persistence], ["in sync", s.in_sync ? "yes" : "no"],
            ["loaded", (s.loaded_at || "–") + " by " + (s.loaded_by || "–")],
            ["last error", s.last_error ? `${s.last_error.at}: ${s.last_error.errors?.[0]?.message || s.last_error.message || JSON.stringify(s.last_error)}` : "none"]])),
      h("div", { class: "panel", id: "ov-listeners" }, h("h3", {}, "Listeners"),
        kv((s.listeners || []).map((l) => [l.name, l.address]).concat([["admin token", s.token_required ? "required for writes" : "not configured (loopback only)"]]))),
      h("div", { class: "panel", id: "ov-health" }, h("h3", {}, "Health"),
        kv([["services", (state.services?.services || []).length], ["healthy nodes", `${healthy} of ${nodes}`],
            ["in panic", panic], ["plugins", plugins.length]])),
    ),
    h("div", { class: "panel", id: "ov-events" }, h("h3", {}, "Recent events"),
      h("ul", { class: "events" }, state.events.length === 0 ? h("li", { class: "muted" }, "No events yet.") :
        state.events.slice(0, 8).map((e) => h("li", {}, h("span", { class: "muted mono" }, new Date(e.at_ms).toISOString().slice(11, 19) + " "), eventText(e))))),
  );
}

/** The badges of a node: health state, drained, slow start, breaker. */
function nodeState(n) {
  const out = [];
  if (n.state === "ejected") out.push(badge(`ejected ${Math.ceil((n.ejected_remaining_ms || 0) / 1000)} s left`, "ejected"));
  else if (n.state === "breaker_open") out.push(badge(`breaker open ${Math.ceil((n.breaker_remaining_ms || 0) / 1000)} s`, "breaker_open"));
  else if (n.state === "half_open") out.push(badge("half-open", "half_open"));
  else out.push(badge(n.state, n.state));
  if (n.weight === 0) out.push(badge("drained", "drained"));
  else if (n.effective_weight < n.weight) out.push(badge(`slow start ${Math.round((100 * n.effective_weight) / n.weight)}%`, "slow_start"));
  return out;
}

function nodeRow(svc, n, state, refresh) {
  const addr = `${n.host}:${n.port}`;
  const r = state.rates.get(svc.service + "|" + addr) || {};
  const demo = (state.demo || []).find((d) => d.address === addr);
  return h("tr", { "data-node": addr, "data-state": n.state, "data-weight": n.weight },
    h("td", { class: "mono" }, addr, demo ? h("span", { class: "muted" }, " " + demo.name) : null),
    h("td", { class: "state" }, nodeState(n)),
    h("td", { class: "num" }, n.weight === n.effective_weight ? n.weight : `${n.effective_weight}/${n.weight}`),
    h("td", { class: "num" }, n.inflight),
    h("td", { class: "num" }, fmt(n.ewma_ms)),
    h("td", { class: "num rps" }, fmt(r.rps)),
    h("td", { class: "num" }, fmt(r.errPct) + "%"),
    h("td", {}, n.tier === 0 ? badge("serving", "active") : n.tier == null ? badge("out", "off") : badge("standby " + n.tier, "off")),
    h("td", {}, nodeButtons(state, svc, n, refresh), demo ? demoButton(demo, refresh) : null),
  );
}

const NODE_HEAD = ["node", "state", "weight", "in flight", "EWMA ms", "req/s", "errors", "tier", ""];

function zoneCard(svc, zone, nodes, state, refresh) {
  const local = zone === state.status?.zone;
  const byPriority = new Map();
  for (const n of nodes) {
    if (!byPriority.has(n.priority)) byPriority.set(n.priority, []);
    byPriority.get(n.priority).push(n);
  }
  const prios = [...byPriority.keys()].sort((a, b) => b - a);
  return h("div", { class: "zone" + (local ? " local" : ""), "data-zone": zone },
    h("h4", {}, zone, local ? h("span", { class: "muted" }, " (local)") : null),
    prios.map((p) => [
      h("div", { class: "tier" }, `priority ${p}`),
      h("table", {}, h("thead", {}, h("tr", {}, NODE_HEAD.map((c) => h("th", {}, c)))),
        h("tbody", {}, byPriority.get(p).map((n) => nodeRow(svc, n, state, refresh)))),
    ]),
  );
}

function serviceTraffic(svc, state, refresh) {
  const regions = new Map();
  for (const n of svc.nodes) {
    if (!regions.has(n.region)) regions.set(n.region, new Map());
    const zones = regions.get(n.region);
    if (!zones.has(n.zone)) zones.set(n.zone, []);
    zones.get(n.zone).push(n);
  }
  const total = svc.nodes.reduce((a, n) => a + ((state.rates.get(svc.service + "|" + n.host + ":" + n.port) || {}).rps || 0), 0);
  return h("div", { class: "live" },
    h("div", { class: "row" },
      h("span", {}, `version ${svc.version} · ${svc.balancer} · ${fmt(total)} req/s · healthy weight ${svc.healthy_weight_percent}%`),
      svc.panic ? badge("PANIC (" + svc.on_panic + ")", "panic") : null,
      h("span", { class: "muted plan" }, svc.plan)),
    [...regions.entries()].sort().map(([region, zones]) =>
      h("div", { class: "region", "data-region": region }, h("h3", {}, "region " + region),
        h("div", { class: "zones" }, [...zones.entries()].sort().map(([z, nodes]) => zoneCard(svc, z, nodes, state, refresh))))),
  );
}

export function renderTraffic(el, state, refresh) {
  const services = state.services?.services || [];
  const seen = new Set();
  for (const svc of services) {
    seen.add(svc.service);
    let box = el.querySelector(`:scope > [data-service="${CSS.escape(svc.service)}"]`);
    if (!box) {
      box = h("div", { class: "panel", "data-service": svc.service }, h("h2", {}, svc.service), h("div", { class: "live" }),
        nodeForms(state, svc.service, refresh));
      el.append(box);
    }
    box.querySelector(":scope > .live").replaceWith(serviceTraffic(svc, state, refresh));
    box.querySelector(":scope > .forms").dispatchEvent(new CustomEvent("nodes", { detail: svc }));
  }
  for (const box of el.querySelectorAll(":scope > [data-service]")) if (!seen.has(box.dataset.service)) box.remove();
}

export function renderPlugins(el, state) {
  const p = state.plugins;
  if (!p) return;
  if (!p.enabled) {
    el.replaceChildren(h("div", { class: "panel" }, "The plugin runtime is not running; built-in policies serve."));
    return;
  }
  const head = ["plugin", "kind", "state", "sha256", "calls", "traps", "fallbacks", "loaded at", "last error", "used by"];
  el.replaceChildren(h("div", { class: "panel" },
    h("div", { class: "muted" }, "directory " + p.dir),
    p.plugins.length === 0 ? h("p", {}, "No plugins loaded.") :
      h("table", { id: "plugins" }, h("thead", {}, h("tr", {}, head.map((c) => h("th", {}, c)))),
        h("tbody", {}, p.plugins.map((x) => {
          const traps = Object.values(x.faults || {}).reduce((a, b) => a + b, 0);
          return h("tr", { "data-plugin": x.name },
            h("td", {}, x.name), h("td", {}, x.kind || "–"), h("td", {}, badge(x.state)),
            h("td", { class: "mono" }, (x.sha256 || "–").slice(0, 16)),
            h("td", { class: "num" }, x.calls), h("td", { class: "num" }, traps), h("td", { class: "num" }, x.fallbacks),
            h("td", {}, x.loaded_at || "–"),
            h("td", {}, x.last_error ? `${x.last_error.at}: ${x.last_error.message}` : (x.rejected ? x.rejected.message : "–")),
            h("td", {}, (x.used_by || []).map((u) => `${u.service} (${u.as})`).join(", ")));
        })))));
}

export function renderRateLimits(el, state) {
  const r = state.ratelimits;
  if (!r) return;
  const redis = r.redis.configured
    ? h("span", {}, "Redis: ", badge(r.redis.state), ` ${r.redis.live_units} live unit(s), prefix ${r.redis.prefix}`)
    : h("span", { class: "muted" }, "Redis: not configured (local counting only)");
  el.replaceChildren(h("div", { class: "panel", id: "redis" }, redis),
    r.services.map((s) => h("div", { class: "panel", "data-service": s.service }, h("h2", {}, `${s.service} ${s.version}`),
      s.rules.length === 0 && !s.quota ? h("p", { class: "muted" }, "No rate limits.") : null,
      s.rules.map((rule) => h("div", { class: "rule", "data-rule": rule.name },
        h("h3", {}, rule.name, " ", h("span", { class: "muted" },
          `key ${rule.key} · ${rule.algorithm || ""} ${rule.rate ? "rate " + rule.rate : ""} ${rule.burst ? "burst " + rule.burst : ""} ${rule.count ? "count " + rule.count : ""} ${rule.window ? "window " + rule.window : ""} · ${rule.policy || "local"}${rule.shadow ? " · shadow" : ""}`)),
        !rule.usage ? h("p", { class: "muted" }, "no requests counted yet") :
          h("div", {},
            rule.usage.shared ? h("p", { class: "muted" }, "counted in Redis, shared by the group: used as of this unit's last sync") : null,
            h("table", {}, h("thead", {}, h("tr", {}, ["key", "used", "limit"].map((c) => h("th", {}, c)))),
              h("tbody", {}, rule.usage.busiest.map((k) => h("tr", {}, h("td", { class: "mono" }, k.key),
                h("td", { class: "num" }, k.used), h("td", { class: "num" }, k.limit)))))),
      )),
      s.quota ? h("p", {}, "quota: ", h("span", { class: "mono" }, JSON.stringify(s.quota))) : null)));
}

function eventText(e) {
  switch (e.type) {
    case "health": return [badge(e.to, e.to), ` ${e.service} ${e.node}: ${e.from} → ${e.to} (${e.reason})`];
    case "config": return [badge(e.ok ? "applied" : "refused", e.ok ? "ok" : "bad"), ` config generation ${e.generation} from ${e.source}${e.error ? ": " + e.error : ""}`];
    case "plugin": return [badge(e.state), ` plugin ${e.name}${e.error ? ": " + e.error : ""}`];
    default: return [JSON.stringify(e)];
  }
}

export function renderEvents(el, state) {
  let form = el.querySelector("form");
  if (!form) {
    form = h("form", { class: "inline", id: "event-filter" },
      h("label", {}, "service", h("input", { name: "service", placeholder: "any" })),
      h("label", {}, "node", h("input", { name: "node", placeholder: "any (host:port)" })),
      h("label", {}, "type", h("select", { name: "type" }, ["", "health", "config", "plugin"].map((t) => h("option", { value: t }, t || "any")))));
    form.addEventListener("input", () => renderEvents(el, state));
    form.addEventListener("submit", (e) => e.preventDefault());
    el.replaceChildren(form, h("ul", { class: "events panel" }));
  }
  const f = Object.fromEntries(new FormData(form));
  const list = state.events.filter((e) =>
    (!f.type || e.type === f.type) &&
    (!f.service || (e.service || "").includes(f.service)) &&
    (!f.node || (e.node || "").includes(f.node)));
  el.querySelector("ul").replaceChildren(...(list.length ? list.map((e) =>
    h("li", { "data-type": e.type, "data-seq": e.seq }, h("span", { class: "muted mono" }, new Date(e.at_ms).toISOString().slice(11, 19) + " "), eventText(e)))
    : [h("li", { class: "muted" }, "No events yet.")]));
}
