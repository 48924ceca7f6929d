// The admin API as the dashboard uses it. The bearer token lives in this tab's
// sessionStorage and is sent as a header; no cookies are used, so there is no
// CSRF surface.

const TOKEN_KEY = "gatehouse.admin.token";

export function token() {
  return sessionStorage.getItem(TOKEN_KEY) || "";
}

export function setToken(value) {
  if (value) sessionStorage.setItem(TOKEN_KEY, value);
  else sessionStorage.removeItem(TOKEN_KEY);
}

/** An error answer of the admin API: `{error: {code, message, path}}`. */
export class ApiError extends Error {
  constructor(status, code, message, path) {
    super(message);
    this.status = status;
    this.code = code;
    this.path = path || null;
  }
}

async function request(method, path, body) {
  const headers = { Accept: "application/json" };
  const t = token();
  if (t) headers.Authorization = "Bearer " + t;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  let resp;
  try {
    resp = await fetch(path, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      credentials: "omit",
      cache: "no-store",
    });
  } catch (e) {
    throw new ApiError(0, "unreachable", "the gateway's admin API cannot be reached: " + e.message, null);
  }
  const text = await resp.text();
  let value = null;
  try {
    value = text ? JSON.parse(text) : null;
  } catch (_) {
    value = null;
  }
  if (!resp.ok) {
    const err = (value && value.error) || {};
    let message = err.message || resp.statusText || "request failed";
    if (resp.status === 401 || resp.status === 403) {
      message = "refused (" + (err.code || resp.status) + "): " + message + " — enter the admin token above";
    }
    throw new ApiError(resp.status, err.code || String(resp.status), message, err.path);
  }
  return value;
}

export const get = (path) => request("GET", path);
export const put = (path, body) => request("PUT", path, body);
export const post = (path, body) => request("POST", path, body);
