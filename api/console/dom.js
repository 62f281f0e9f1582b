// DOM helpers. Every name the console shows comes from a tenant's disk or a caller's
// request, so text only ever goes in as text nodes: nothing here touches innerHTML.

// el('a', {href: '#/x', class: 'c', onclick: fn}, 'text', child, ...)
export function el(tag, attrs, ...children) {
  const n = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith('on')) n.addEventListener(k.slice(2), v);
    else if (k === 'class') n.className = v;
    else if (k === 'text') n.textContent = v;
    else n.setAttribute(k, v === true ? '' : String(v));
  }
  for (const c of children.flat()) {
    if (c === undefined || c === null || c === false) continue;
    n.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return n;
}

export function clear(n) { n.replaceChildren(); return n; }

// Replaces the page's main content and moves focus to its heading, so a keyboard or
// screen-reader user lands on the new page rather than at the top of the document.
export function show(...children) {
  const main = document.getElementById('main');
  main.replaceChildren(...children);
  const h = main.querySelector('h1');
  if (h) { h.setAttribute('tabindex', '-1'); h.focus(); }
}

export function humanBytes(n) {
  if (typeof n !== 'number' || !isFinite(n)) return '';
  const u = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let i = 0;
  while (n >= 1024 && i < u.length - 1) { n /= 1024; i++; }
  return (i === 0 ? String(n) : n.toFixed(n < 10 ? 1 : 0)) + ' ' + u[i];
}

// seconds (float) or milliseconds or an RFC 3339 string -> Date
export function toDate(v, unit) {
  if (v === undefined || v === null || v === '') return null;
  if (typeof v === 'number') return new Date(unit === 'ms' ? v : v * 1000);
  const d = new Date(v);
  return isNaN(d) ? null : d;
}

export function fmtTime(d) {
  if (!d) return '';
  return d.toISOString().replace('T', ' ').replace(/\.\d+Z$/, 'Z');
}

// 0o644 -> "rw-r--r--", with setuid/setgid/sticky as ls shows them
export function fmtMode(mode, type) {
  if (typeof mode !== 'number') return '';
  const t = {dir: 'd', symlink: 'l', fifo: 'p', chardev: 'c', blockdev: 'b', socket: 's'}[type] || '-';
  const r = [];
  for (let i = 2; i >= 0; i--) {
    const b = (mode >> (i * 3)) & 7;
    r.push(b & 4 ? 'r' : '-', b & 2 ? 'w' : '-', b & 1 ? 'x' : '-');
  }
  if (mode & 0o4000) r[2] = r[2] === 'x' ? 's' : 'S';
  if (mode & 0o2000) r[5] = r[5] === 'x' ? 's' : 'S';
  if (mode & 0o1000) r[8] = r[8] === 'x' ? 't' : 'T';
  return t + r.join('');
}

export function baseName(p) {
  if (p === '/' || p === '') return '/';
  const s = p.replace(/\/+$/, '');
  return s.slice(s.lastIndexOf('/') + 1);
}

// The status line: polite announcements for progress, and errors said in words.
export function status(msg, kind) {
  const s = document.getElementById('status');
  s.className = kind || '';
  s.textContent = msg || '';
}
