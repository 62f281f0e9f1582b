// The audit log, for admins: every support read (who, what, which sandbox, and the
// reason given for opening a secret), filtered by actor, sandbox and time.
import {el, show, status, toDate, fmtTime} from './dom.js';
import {api} from './net.js';

// A datetime-local value, read as UTC (the log and the page show UTC).
function utc(v) { return v ? toDate(v + (v.length === 16 ? ':00Z' : 'Z')) : null; }

function matches(x, f) {
  const has = (v, want) => !want || String(v || '').toLowerCase().includes(want.toLowerCase());
  if (!has(x.actor, f.actor) || !has(x.sandbox, f.sandbox)) return false;
  const t = toDate(x.time_ms, 'ms') || toDate(x.time);
  if (f.from && (!t || t < f.from)) return false;
  if (f.to && (!t || t > f.to)) return false;
  return true;
}

export function auditView(q) {
  const field = (id, label, type, value) => [el('label', {for: id}, label),
    el('input', {id, name: id, type, value: value || '', autocomplete: 'off'})];
  const form = el('form', {id: 'audit-filter', onsubmit: (ev) => {
    ev.preventDefault();
    const p = new URLSearchParams();
    for (const k of ['actor', 'sandbox', 'from', 'to']) { const v = form.elements[k].value.trim(); if (v) p.set(k, v); }
    location.hash = '#/audit?' + p.toString();
  }},
    el('div', {class: 'filters'},
      field('actor', 'Actor', 'text', q.get('actor')), field('sandbox', 'Sandbox', 'text', q.get('sandbox')),
      field('from', 'From (UTC)', 'datetime-local', q.get('from')), field('to', 'To (UTC)', 'datetime-local', q.get('to'))),
    el('button', {type: 'submit'}, 'Filter'));
  const out = el('div', {id: 'audit-results', 'aria-live': 'polite'}, el('p', {}, 'Loading…'));
  show(el('h1', {}, 'Audit log'), form, out);
  const f = {actor: q.get('actor') || '', sandbox: q.get('sandbox') || '', from: utc(q.get('from')), to: utc(q.get('to'))};
  api('/audit', {query: {actor: f.actor, sandbox: f.sandbox}}).then((j) => {
    const all = j.entries || [];
    const list = all.filter((x) => matches(x, f)).reverse();
    if (!list.length) { out.replaceChildren(el('p', {class: 'empty'}, 'No audit entries match.')); return; }
    out.replaceChildren(
      el('p', {}, list.length + ' of ' + all.length + ' entries, newest first'),
      el('table', {class: 'list', id: 'audit'},
        el('thead', {}, el('tr', {}, ...['Time', 'Actor', 'Action', 'Tenant', 'Sandbox', 'Snapshot', 'Paths', 'Reason']
          .map((h) => el('th', {scope: 'col'}, h)))),
        el('tbody', {}, list.map((x) => el('tr', {class: x.include_secrets ? 'secret-read' : ''},
          el('td', {}, fmtTime(toDate(x.time_ms, 'ms') || toDate(x.time))),
          el('td', {}, x.actor), el('td', {}, x.command || x.route || ''),
          el('td', {}, x.tenant),
          el('td', {}, x.sandbox ? el('a', {href: '#/sandbox/' + encodeURIComponent(x.sandbox)}, x.sandbox) : ''),
          el('td', {}, el('code', {}, x.snapshot || '')),
          el('td', {}, (x.paths || []).join('\n')),
          el('td', {class: 'reason'}, x.reason || '', x.include_secrets ? el('span', {class: 'badge class-secret'}, 'secret read') : ''))))));
  }, (e) => { out.replaceChildren(el('p', {class: 'error', role: 'alert'}, e.message)); status(''); });
}
