// Calls of the node's JSON endpoints (same origin). With security on, the token the
// user gave is kept in sessionStorage (this tab only) and sent as a bearer token.
// Actions are POSTs with a JSON body and the X-Neo-Console header (the server's CSRF
// guard).

const TOKEN_KEY = 'neo-console-token';

export class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

export function token() {
  return sessionStorage.getItem(TOKEN_KEY);
}

export function setToken(t) {
  if (t) sessionStorage.setItem(TOKEN_KEY, t);
  else sessionStorage.removeItem(TOKEN_KEY);
}

async function request(method, path, body) {
  const headers = { Accept: 'application/json' };
  const t = token();
  if (t) headers.Authorization = `Bearer ${t}`;
  const init = { method, headers, cache: 'no-store', credentials: 'omit' };
  if (method !== 'GET') {
    headers['Content-Type'] = 'application/json';
    headers['X-Neo-Console'] = '1';
    init.body = JSON.stringify(body || {});
  }
  let resp;
  try {
    resp = await fetch(path, init);
  } catch (e) {
    throw new ApiError(0, `the node did not answer (${e.message})`);
  }
  const text = await resp.text();
  let data;
  try {
    data = JSON.parse(text);
  } catch {
    data = { error: text.trim() };
  }
  if (!resp.ok) {
    throw new ApiError(resp.status, (data && data.error) || `HTTP ${resp.status}`);
  }
  return data;
}

/** `/a/b/c` with every segment encoded. */
export function path(...segments) {
  return '/' + segments.map((s) => encodeURIComponent(String(s))).join('/');
}

export const get = (p) => request('GET', p);
export const post = (p, body) => request('POST', p, body);
