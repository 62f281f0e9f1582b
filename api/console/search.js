import {el, show, status, toDate, fmtTime, humanBytes} from './dom.js';
import {api, ApiError} from './net.js';

// One box finds both: the text is tried as a sandbox id and as a tenant, since support
// is usually handed one or the other and should not have to say which.
async function find(q) {
  const [one, many] = await Promise.allSettled([
    api('/sandboxes/' + encodeURIComponent(q)),
    api('/sandboxes', {query: {tenant: q}}),
  ]);
  for (const r of [one, many])
    if (r.status === 'rejected' && !(r.reason instanceof ApiError && r.reason.status === 404)) throw r.reason;
  const seen = new Map();
  if (one.status === 'fulfilled' && one.value) seen.set(one.value.sandbox || q, one.value);
  if (many.status === 'fulfilled' && many.value)
    for (const s of many.value.sandboxes || []) if (!seen.has(s.sandbox)) seen.set(s.sandbox, s);
  return [...seen.values()];
}

export function sandboxRow(s) {
  const n = Array.isArray(s.snapshots) ? s.snapshots.length : s.snapshots;
  return el('tr', {},
    el('td', {}, el('a', {href: '#/sandbox/' + encodeURIComponent(s.sandbox)}, s.sandbox)),
    el('td', {}, s.tenant), el('td', {}, s.tier),
    el('td', {}, el('span', {class: 'state state-' + s.state}, s.state)),
    el('td', {}, fmtTime(toDate(s.last_activity_ms, 'ms') || toDate(s.last_activity))),
    el('td', {class: 'num'}, n === undefined ? '' : String(n)),
    el('td', {class: 'num'}, humanBytes(s.bytes)));
}

export function searchView(q) {
  const input = el('input', {id: 'q', name: 'q', type: 'search', value: q, required: true,
                             placeholder: 'tenant or sandbox id', autocomplete: 'off', spellcheck: 'false'});
  const results = el('div', {id: 'results', 'aria-live': 'polite'});
  const form = el('form', {id: 'search', role: 'search', onsubmit: (ev) => {
    ev.preventDefault();
    const v = input.value.trim();
    if (v) location.hash = '#/search?q=' + encodeURIComponent(v);
  }}, el('label', {for: 'q'}, 'Tenant or sandbox id'), input, el('button', {type: 'submit'}, 'Search'));
  show(el('h1', {}, 'Find a sandbox'), form, results);
  if (!q) { input.focus(); return; }
  status('Searching…');
  find(q).then((list) => {
    status('');
    if (!list.length) {
      results.replaceChildren(el('p', {class: 'empty'}, 'No sandbox and no tenant named “', q, '”.'));
      return;
    }
    results.replaceChildren(
      el('p', {}, list.length === 1 ? '1 sandbox' : list.length + ' sandboxes'),
      el('table', {class: 'list', id: 'sandboxes'},
        el('thead', {}, el('tr', {}, ...['Sandbox', 'Tenant', 'Tier', 'State', 'Last activity', 'Snapshots', 'Stored']
          .map((h) => el('th', {scope: 'col'}, h)))),
        el('tbody', {}, list.map(sandboxRow))));
  }, (e) => { status(''); results.replaceChildren(el('p', {class: 'error', role: 'alert'}, e.message)); });
}
