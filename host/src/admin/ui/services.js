// Services: versions and their policy, which one this group serves, a diff of
// two versions, a new version made from the published one, publish and roll back.

import { post, put } from "./api.js";
import { h } from "./views.js";
import { showError, showOk } from "./actions.js";

const pretty = (v) => JSON.stringify(v, null, 2);

function checksSummary(up) {
  const c = up.checks || {};
  const out = [];
  if (c.active) out.push(`active ${c.active.type || "http"}${(c.active.type || "http") !== "tcp" ? " " + (c.active.http_path || "/") : ""}`);
  if (c.passive) out.push(`passive ${c.passive.type || "http"}`);
  return out.join(", ") || "none";
}

/** A line diff (longest common subsequence) of two texts. */
function diffLines(a, b) {
  const x = a.split("\n"), y = b.split("\n");
  const n = x.length, m = y.length;
  const dp = Array.from({ length: n + 1 }, () => new Array(m + 1).fill(0));
  for (let i = n - 1; i >= 0; i--)
    for (let j = m - 1; j >= 0; j--)
      dp[i][j] = x[i] === y[j] ? dp[i + 1][j + 1] + 1 : Math.max(dp[i + 1][j], dp[i][j + 1]);
  const out = [];
  let i = 0, j = 0;
  while (i < n || j < m) {
    if (i < n && j < m && x[i] === y[j]) { out.push(["  ", x[i]]); i++; j++; }
    else if (j < m && (i >= n || dp[i][j + 1] >= dp[i + 1][j])) { out.push(["+ ", y[j]]); j++; }
    else { out.push(["- ", x[i]]); i++; }
  }
  return out;
}

function nextLabel(version, taken) {
  const m = /^(.*?)(\d+)$/.exec(version);
  let label = m ? m[1] + (Number(m[2]) + 1) : version + "-1";
  while (taken.includes(label)) {
    const k = /^(.*?)(\d+)$/.exec(label);
    label = k[1] + (Number(k[2]) + 1);
  }
  return label;
}

async function publish(state, service, version, form, refresh) {
  try {
    const r = await post(`/admin/v1/groups/${encodeURIComponent(state.status.group)}/publish`, { service, version });
    showOk(form, `published ${service} ${version}` + (r.previous ? ` (was ${r.previous})` : ""));
    await refresh();
  } catch (err) {
    showError(form, err);
  }
}

function versionsTable(state, svc, refresh) {
  const form = h("form", { class: "inline publish-status" });
  const rows = svc.versions.map((v) => {
    const up = v.config.upstream || {};
    return h("tr", { "data-version": v.version },
      h("td", { class: "mono" }, v.version),
      h("td", {}, v.published_here ? h("span", { class: "badge active" }, "published here") : ""),
      h("td", {}, v.published_in.join(", ") || "–"),
      h("td", {}, (v.config.routes || []).map((r) => (r.methods?.length ? r.methods.join(",") + " " : "") + r.uri).join("; ")),
      h("td", {}, up.type || "roundrobin", up.type === "chash" ? ` (${up.hash_on || "vars"} ${up.key || "remote_addr"})` : ""),
      h("td", {}, checksSummary(up)),
      h("td", { class: "num" }, up.retries ?? "–"),
      h("td", {}, (v.config.limits || []).length + " limit(s)", v.config.plugins ? ", plugins" : ""),
      h("td", {}, v.published_here ? h("span", { class: "muted" }, "read-only")
        : h("button", { type: "button", class: "publish", onclick: () => publish(state, svc.service, v.version, form, refresh) },
          "Publish"))); // publishing an older version is the roll back
  });
  const head = ["version", "", "groups", "routes", "balancer", "checks", "retries", "limits", ""];
  return [h("table", { class: "versions" }, h("thead", {}, h("tr", {}, head.map((c) => h("th", {}, c)))), h("tbody", {}, rows)), form];
}

function diffPanel(svc) {
  const opts = () => svc.versions.map((v) => h("option", { value: v.version }, v.version));
  const a = h("select", { name: "a" }, opts());
  const b = h("select", { name: "b" }, opts());
  if (svc.versions.length > 1) b.value = svc.versions[svc.versions.length - 1].version;
  const out = h("pre", { class: "diff" });
  const show = () => {
    const va = svc.versions.find((v) => v.version === a.value);
    const vb = svc.versions.find((v) => v.version === b.value);
    out.replaceChildren(...diffLines(pretty(va.config), pretty(vb.config)).map(([op, line]) =>
      h("span", { class: op === "+ " ? "add" : op === "- " ? "del" : "" }, op + line + "\n")));
  };
  a.addEventListener("change", show);
  b.addEventListener("change", show);
  show();
  return h("div", { class: "diff-panel" }, h("h3", {}, "Diff"), h("div", { class: "row" }, a, "→", b), out);
}

const sel = (name, values, value) =>
  h("select", { name }, values.map((v) => h("option", { value: v, selected: v === value }, v)));
const field = (label, input) => h("label", {}, label, input);
const txt = (name, value, size) => h("input", { name, value: value ?? "", size: size || 6 });

/** The form that makes a new version from the published one. */
function editor(state, svc, refresh) {
  const published = svc.versions.find((v) => v.published_here) || svc.versions[svc.versions.length - 1];
  const base = published.config;
  const up = base.upstream || {};
  const c = up.checks || {};
  const t = up.timeout || {};
  const form = h("form", { class: "new-version", "data-action": "new-version" },
    h("h3", {}, `New version from ${published.version}`),
    h("div", { class: "row" },
      field("version", txt("version", nextLabel(published.version, svc.versions.map((v) => v.version)), 8)),
      field("balancer", sel("upstream.type", ["roundrobin", "chash", "ewma", "least_conn"], up.type || "roundrobin")),
      field("hash on", sel("upstream.hash_on", ["vars", "header", "cookie"], up.hash_on || "vars")),
      field("hash key", txt("upstream.key", up.key, 12)),
      field("retries", txt("upstream.retries", up.retries, 3)),
      field("connect timeout", txt("upstream.timeout.connect", t.connect, 4)),
      field("send timeout", txt("upstream.timeout.send", t.send, 4)),
      field("read timeout", txt("upstream.timeout.read", t.read, 4))),
    h("div", { class: "row" },
      h("fieldset", {}, h("legend", {}, "active check"),
        field("enabled", h("input", { type: "checkbox", name: "active", checked: !!c.active })),
        field("protocol", sel("upstream.checks.active.type", ["http", "https", "tcp"], c.active?.type || "http")),
        field("probe path", txt("upstream.checks.active.http_path", c.active?.http_path || "/health", 12))),
      h("fieldset", {}, h("legend", {}, "passive check"),
        field("enabled", h("input", { type: "checkbox", name: "passive", checked: !!c.passive })),
        field("protocol", sel("upstream.checks.passive.type", ["http", "https", "tcp"], c.passive?.type || "http"))),
      h("button", { type: "submit", class: "primary" }, "Create version"),
      h("button", { type: "button", class: "create-publish" }, "Create and publish")));
  const num = (v) => (/^\d+(\.\d+)?$/.test(v.trim()) ? Number(v) : v.trim());
  const build = () => {
    const f = Object.fromEntries(new FormData(form));
    const body = structuredClone(base);
    delete body.version;
    const u = (body.upstream = body.upstream || {});
    u.type = f["upstream.type"];
    if (u.type === "chash") {
      u.hash_on = f["upstream.hash_on"];
      if (f["upstream.key"].trim()) u.key = f["upstream.key"].trim(); else delete u.key;
    } else {
      delete u.hash_on;
      delete u.key;
    }
    if (f["upstream.retries"].trim()) u.retries = num(f["upstream.retries"]); else delete u.retries;
    const timeout = {};
    for (const k of ["connect", "send", "read"]) if (f["upstream.timeout." + k].trim()) timeout[k] = num(f["upstream.timeout." + k]);
    if (Object.keys(timeout).length) u.timeout = timeout; else delete u.timeout;
    const checks = u.checks || {};
    if (f.active) {
      const a = { ...(checks.active || {}), type: f["upstream.checks.active.type"] };
      if (a.type === "tcp") delete a.http_path; else a.http_path = f["upstream.checks.active.http_path"].trim();
      checks.active = a;
    } else delete checks.active;
    if (f.passive) checks.passive = { ...(checks.passive || {}), type: f["upstream.checks.passive.type"] };
    else delete checks.passive;
    if (Object.keys(checks).length) u.checks = checks; else delete u.checks;
    return [f.version.trim(), body];
  };
  const create = async (andPublish) => {
    const [version, body] = build();
    try {
      await put(`/admin/v1/services/${encodeURIComponent(svc.service)}/versions/${encodeURIComponent(version)}`, body);
      showOk(form, `created ${svc.service} ${version}`);
      if (andPublish) await publish(state, svc.service, version, form, refresh);
      else await refresh();
    } catch (err) {
      if (err.path === null && err.code === "not_found") err.path = "version";
      showError(form, err);
    }
  };
  form.addEventListener("submit", (e) => { e.preventDefault(); void create(false); });
  form.querySelector(".create-publish").addEventListener("click", () => void create(true));
  return form;
}

export function renderServices(el, state, refresh) {
  const data = state.versions;
  if (!data) return;
  const served = new Set((state.services?.services || []).map((s) => s.service));
  for (const svc of data.services) {
    const sig = JSON.stringify(svc);
    let box = el.querySelector(`:scope > [data-service="${CSS.escape(svc.service)}"]`);
    if (box && box.dataset.sig === sig) continue;
    const fresh = h("div", { class: "panel", "data-service": svc.service },
      h("h2", {}, svc.service, served.has(svc.service) ? "" : h("span", { class: "muted" }, " (not served by this group)")),
      versionsTable(state, svc, refresh), diffPanel(svc));
    fresh.dataset.sig = sig;
    // The editor keeps what was typed across refreshes; it is rebuilt only when the
    // published version changed.
    const pub = (svc.versions.find((v) => v.published_here) || {}).version || "";
    const old = box && box.querySelector("form.new-version");
    fresh.append(old && box.dataset.pub === pub ? old : editor(state, svc, refresh));
    fresh.dataset.pub = pub;
    if (box) box.replaceWith(fresh); else el.append(fresh);
  }
}
