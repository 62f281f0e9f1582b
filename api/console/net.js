// Talking to the API. The token lives in this tab's sessionStorage only and goes out in
// the Authorization header: never in a URL, so it is in no server log, history or
// Referer. A share token (from a share link's #fragment, which browsers never send to
// the server) is kept the same way, under its own key.

const KEY = 'cairn.token', ROLE = 'cairn.role', SHARE = 'cairn.share';

export const session = {
  token: () => sessionStorage.getItem(KEY),
  role: () => sessionStorage.getItem(ROLE) || '',
  share: () => sessionStorage.getItem(SHARE),
  signIn(token, role) { sessionStorage.setItem(KEY, token); sessionStorage.setItem(ROLE, role); },
  setShare(token) { sessionStorage.setItem(SHARE, token); },
  signOut() { sessionStorage.removeItem(KEY); sessionStorage.removeItem(ROLE); sessionStorage.removeItem(SHARE); },
};

export class ApiError extends Error {
  constructor(status, code, serverMessage) {
    super(words(status, code, serverMessage));
    this.status = status;
    this.code = code || '';
    this.serverMessage = serverMessage || '';
  }
}

// What a support engineer should read, for each way a call can fail.
function words(status, code, msg) {
  const c = (code || '').toLowerCase();
  if (status === 0) return 'The Cairn server could not be reached. Check that it is running and try again.';
  if (status === 401) {
    if (c.includes('expire')) return 'Your token has expired. Sign in again with a current token.';
    return 'The token was refused: it is wrong, expired or revoked. Sign in again.';
  }
  if (c.includes('secret')) return 'This file is a secret: it is not shown or downloaded unless an admin opens it with a reason, which is audited.';
  if (status === 410 || c.includes('reclaimed'))
    return 'This sandbox was reclaimed: only its important files (artifacts, uploads, project files) remain. It can be rebuilt, not woken.';
  if (status === 403) return 'Your token is not allowed to do this' + (msg ? ': ' + msg : '.');
  if (status === 404) return 'Not found' + (msg ? ': ' + msg : '.') + ' (or not visible to your token)';
  if (status === 429) return 'The server is busy; try again in a moment.';
  if (status === 413) return 'The request is too large.';
  if (status >= 500) return 'The server failed' + (msg ? ': ' + msg : '.');
  return (msg || 'The request failed') + ' (HTTP ' + status + ')';
}

function headers(opts) {
  const h = {};
  const t = opts.share ? session.share() : (opts.token || session.token());
  if (t) h['Authorization'] = 'Bearer ' + t;
  if (opts.body !== undefined) h['Content-Type'] = 'application/json';
  return h;
}

export function url(path, query) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(query || {})) if (v !== undefined && v !== null && v !== '') q.set(k, v);
  const s = q.toString();
  return '/v1' + path + (s ? '?' + s : '');
}

async function send(path, opts) {
  let r;
  try {
    r = await fetch(url(path, opts.query), {
      method: opts.method || 'GET', headers: headers(opts), cache: 'no-store',
      credentials: 'omit', referrerPolicy: 'no-referrer',
      body: opts.body === undefined ? undefined : JSON.stringify(opts.body),
    });
  } catch (e) {
    throw new ApiError(0, 'network', String(e));
  }
  if (!r.ok) {
    let code = '', msg = '';
    try {
      const j = await r.json();
      if (j && j.error) { code = j.error.code || ''; msg = j.error.message || ''; }
    } catch (e) { /* a body that is not JSON: the status says enough */ }
    if (r.status === 401 && !opts.share && !opts.token) signedOut(new ApiError(401, code, msg));
    throw new ApiError(r.status, code, msg);
  }
  return r;
}

// A 401 in the middle of work means the token stopped being valid: drop it and ask again.
let onSignedOut = () => {};
export function whenSignedOut(fn) { onSignedOut = fn; }
function signedOut(err) { sessionStorage.removeItem(KEY); sessionStorage.removeItem(ROLE); onSignedOut(err); }

export async function api(path, opts = {}) {
  const r = await send(path, opts);
  if (r.status === 204) return null;
  return r.json();
}

// Reads at most `limit` bytes of a body (a preview must not pull a 5 GiB file).
export async function readSome(path, opts, limit) {
  const r = await send(path, opts);
  const reader = r.body.getReader();
  const parts = [];
  let n = 0, truncated = false;
  for (;;) {
    const {done, value} = await reader.read();
    if (done) break;
    parts.push(value); n += value.length;
    if (n >= limit) { truncated = true; await reader.cancel(); break; }
  }
  const all = new Uint8Array(Math.min(n, limit));
  let off = 0;
  for (const p of parts) {
    const take = Math.min(p.length, all.length - off);
    all.set(p.subarray(0, take), off); off += take;
    if (off === all.length) break;
  }
  return {bytes: all, truncated, type: r.headers.get('Content-Type') || ''};
}

// Downloads a body to a file the browser saves, reporting progress as it comes:
// onProgress(received, total) with total 0 when the length is not known (a tar of a
// folder). The server streams files without a Content-Length, so the caller passes the
// size the listing gave (opts.size): a body that ends short of it is an error, never a
// file saved with bytes missing.
export async function download(path, opts, filename, onProgress) {
  const r = await send(path, opts);
  const total = Number(r.headers.get('Content-Length')) || opts.size || 0;
  const reader = r.body.getReader();
  const parts = [];
  let n = 0;
  onProgress(0, total);
  for (;;) {
    const {done, value} = await reader.read();
    if (done) break;
    parts.push(value); n += value.length;
    onProgress(n, total);
  }
  if (total && n !== total) throw new ApiError(500, 'short', `the download stopped at ${n} of ${total} bytes`);
  const blob = new Blob(parts, {type: 'application/octet-stream'});
  const href = URL.createObjectURL(blob);
  const a = document.createElement('a');
  a.href = href; a.download = filename; a.rel = 'noopener';
  document.body.append(a); a.click(); a.remove();
  setTimeout(() => URL.revokeObjectURL(href), 60000);
  return n;
}
