// The agent API over fetch: bearer token from sessionStorage, JSON in and out, one error
// type the UI can show. The server clock offset (from the Date header) times offers.

const TOKEN = "omnihub.token";

export class ApiFailure extends Error {
  constructor(status, code, message, field) {
    super(message);
    this.status = status; // 0 = the network, not the server
    this.code = code;
    this.field = field;
  }
  get network() {
    return this.status === 0;
  }
}

export const session = {
  get token() {
    return sessionStorage.getItem(TOKEN);
  },
  set token(value) {
    if (value) sessionStorage.setItem(TOKEN, value);
    else sessionStorage.removeItem(TOKEN);
  },
};

export const clock = {
  offset: 0, // server time - local time, ms
  now() {
    return Date.now() + this.offset;
  },
};

let onUnauthorized = () => {};
export function whenUnauthorized(fn) {
  onUnauthorized = fn;
}

export async function call(method, path, body) {
  const headers = { Accept: "application/json" };
  if (session.token) headers.Authorization = `Bearer ${session.token}`;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  let response;
  try {
    response = await fetch(path, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      cache: "no-store",
      credentials: "omit",
    });
  } catch (err) {
    throw new ApiFailure(0, "network", String(err && err.message ? err.message : err));
  }
  const date = Date.parse(response.headers.get("Date") || "");
  if (!Number.isNaN(date)) clock.offset = date - Date.now();
  const data = await response.json().catch(() => null);
  if (!response.ok) {
    const err = (data && data.error) || {};
    const failure = new ApiFailure(
      response.status,
      err.code || "http_" + response.status,
      err.message || response.statusText,
      err.field,
    );
    if (response.status === 401 && path !== "/api/v1/agents/login") onUnauthorized(failure);
    throw failure;
  }
  return data;
}

export const get = (path) => call("GET", path);
export const post = (path, body) => call("POST", path, body ?? {});

/** An attachment as a file download (a link cannot carry the bearer token). */
export async function download(path, name) {
  let response;
  try {
    response = await fetch(path, { headers: { Authorization: `Bearer ${session.token}` } });
  } catch (err) {
    throw new ApiFailure(0, "network", String(err));
  }
  if (!response.ok) {
    const data = await response.json().catch(() => null);
    const err = (data && data.error) || {};
    throw new ApiFailure(response.status, err.code, err.message || response.statusText);
  }
  const url = URL.createObjectURL(await response.blob());
  const a = document.createElement("a");
  a.href = url;
  a.download = name || "attachment";
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10_000);
}
