// Node actions (runtime config of this gateway's group) and the demo's node switch.
// Every change is one admin API call; its error is shown next to the field it names.

import { post, put } from "./api.js";
import { h } from "./views.js";

const DRAINED_KEY = "gatehouse.drained.";

/** Shows an API error next to the field its `path` names (else under the form). */
export function showError(form, err) {
  clearErrors(form);
  const parts = (err.path || "").replace(/\[\d+\]/g, "").split(".").filter(Boolean);
  let field = null;
  for (let i = 0; i < parts.length && !field; i++) {
    field = form.querySelector(`[name="${CSS.escape(parts.slice(i).join("."))}"]`);
  }
  const msg = h("span", { class: field ? "field-error" : "form-error", role: "alert" }, err.message);
  if (field) field.after(msg);
  else form.append(msg);
}

export function clearErrors(form) {
  for (const e of form.querySelectorAll(".field-error, .form-error, .form-ok")) e.remove();
}

export function showOk(form, text) {
  clearErrors(form);
  form.append(h("span", { class: "form-ok", role: "status" }, text));
}

/** The node list as the API takes it, from `GET /admin/v1/services`. */
function rawNodes(svc) {
  return svc.nodes.map((n) => {
    const node = { host: n.host, port: n.port, weight: n.weight, zone: n.zone, region: n.region, priority: n.priority };
    if (n.tags && n.tags.length) node.tags = n.tags;
    return node;
  });
}

async function putNodes(state, service, nodes) {
  const group = state.status.group;
  return put(`/admin/v1/groups/${encodeURIComponent(group)}/services/${encodeURIComponent(service)}/nodes`, { nodes });
}

function number(value) {
  const t = String(value).trim();
  return t !== "" && /^-?\d+(\.\d+)?$/.test(t) ? Number(t) : t;
}

/** The add-node and change-weight forms of one service, kept across refreshes. */
export function nodeForms(state, service, refresh) {
  let svc = null;
  const add = h("form", { class: "inline add-node", "data-action": "add-node" },
    h("strong", {}, "Add node"),
    h("label", {}, "host", h("input", { name: "host", value: "127.0.0.1", required: true })),
    h("label", {}, "port", h("input", { name: "port", type: "text", inputmode: "numeric", size: 6 })),
    h("label", {}, "weight", h("input", { name: "weight", type: "text", value: "100", size: 5 })),
    h("label", {}, "zone", h("input", { name: "zone", value: state.status?.zone || "" , size: 8 })),
    h("label", {}, "priority", h("input", { name: "priority", type: "text", value: "0", size: 3 })),
    h("button", { type: "submit", class: "primary" }, "Add"));
  add.addEventListener("submit", async (e) => {
    e.preventDefault();
    if (!svc) return;
    const f = Object.fromEntries(new FormData(add));
    const node = { host: f.host.trim(), port: number(f.port), weight: number(f.weight), zone: f.zone.trim(), priority: number(f.priority) };
    if (!node.zone) delete node.zone;
    try {
      await putNodes(state, service, [...rawNodes(svc), node]);
      showOk(add, `added ${node.host}:${node.port}`);
      await refresh();
    } catch (err) {
      if (err.path) err.path = err.path.replace(/^nodes\[\d+\]\./, "");
      showError(add, err);
    }
  });

  const select = h("select", { name: "node" });
  const weight = h("form", { class: "inline set-weight", "data-action": "set-weight" },
    h("strong", {}, "Change weight"),
    h("label", {}, "node", select),
    h("label", {}, "weight", h("input", { name: "weight", type: "text", size: 5 })),
    h("button", { type: "submit" }, "Set weight"));
  weight.addEventListener("submit", async (e) => {
    e.preventDefault();
    if (!svc) return;
    const f = Object.fromEntries(new FormData(weight));
    const nodes = rawNodes(svc);
    const i = nodes.findIndex((n) => `${n.host}:${n.port}` === f.node);
    if (i < 0) return showError(weight, { message: "no such node", path: "node" });
    nodes[i].weight = number(f.weight);
    try {
      await putNodes(state, service, nodes);
      showOk(weight, `weight of ${f.node} is ${f.weight}`);
      await refresh();
    } catch (err) {
      showError(weight, err);
    }
  });

  const status = h("form", { class: "inline node-actions", "data-action": "node-actions" });
  const box = h("div", { class: "forms" }, add, weight, status);
  box.addEventListener("nodes", (ev) => {
    svc = ev.detail;
    const addrs = svc.nodes.map((n) => `${n.host}:${n.port}`);
    const have = [...select.options].map((o) => o.value);
    if (addrs.join() !== have.join() && document.activeElement !== select) {
      const chosen = select.value;
      select.replaceChildren(...addrs.map((a) => h("option", { value: a }, a)));
      if (addrs.includes(chosen)) select.value = chosen;
    }
  });
  return box;
}

/** Drain / undrain and remove buttons of one node row. */
export function nodeButtons(state, svc, n, refresh) {
  const addr = `${n.host}:${n.port}`;
  const key = DRAINED_KEY + svc.service + "|" + addr;
  const form = () => document.querySelector(`[data-service="${CSS.escape(svc.service)}"] form.node-actions`);
  const act = async (nodes, ok) => {
    const f = form();
    try {
      await putNodes(state, svc.service, nodes);
      if (f) showOk(f, ok);
      await refresh();
      return true;
    } catch (err) {
      if (f) showError(f, err);
      return false;
    }
  };
  const drain = async () => {
    const nodes = rawNodes(svc);
    const node = nodes.find((x) => `${x.host}:${x.port}` === addr);
    const before = node.weight;
    node.weight = 0;
    if (await act(nodes, `${addr} drained`)) sessionStorage.setItem(key, String(before));
  };
  const undrain = async () => {
    const nodes = rawNodes(svc);
    nodes.find((x) => `${x.host}:${x.port}` === addr).weight = Number(sessionStorage.getItem(key)) || 100;
    if (await act(nodes, `${addr} undrained`)) sessionStorage.removeItem(key);
  };
  const remove = async () => {
    const nodes = rawNodes(svc).filter((x) => `${x.host}:${x.port}` !== addr);
    await act(nodes, `${addr} removed`);
  };
  return [
    n.weight === 0
      ? h("button", { type: "button", class: "undrain", onclick: undrain }, "Undrain")
      : h("button", { type: "button", class: "drain", onclick: drain }, "Drain"),
    " ",
    h("button", { type: "button", class: "remove", onclick: remove }, "Remove"),
  ];
}

/** The demo's stop/start switch of the process behind a node. */
export function demoButton(demo, refresh) {
  const go = async () => {
    try {
      await post(`/admin/v1/demo/nodes/${encodeURIComponent(demo.name)}/${demo.up ? "stop" : "start"}`);
    } catch (err) {
      document.getElementById("banner").hidden = false;
      document.getElementById("banner").textContent = err.message;
    }
    await refresh();
  };
  return [" ", h("button", { type: "button", class: demo.up ? "demo-stop" : "demo-start", onclick: go }, demo.up ? "Stop process" : "Start process")];
}
