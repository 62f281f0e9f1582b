import {el, show, status, toDate, fmtTime, humanBytes} from './dom.js';
import {api} from './net.js';

const DAY = 86400000;
// Retention windows by tier (docs/gc.md): idle days counted from the last activity.
const WINDOW_DAYS = {free: 7, pro: 21};

function plural(n, w) { return n + ' ' + w + (n === 1 ? '' : 's'); }

// "reclaimed in 3 days": when the next gc run after the window may reclaim it.
export function retention(s, now) {
  if (s.state === 'reclaimed') return 'Reclaimed: only its important files are kept.';
  if (s.state === 'deleted') return 'Deleted.';
  let at = toDate(s.reclaim_at_ms, 'ms') || toDate(s.reclaim_at);
  const last = toDate(s.last_activity_ms, 'ms') || toDate(s.last_activity);
  if (!at && last && WINDOW_DAYS[s.tier]) at = new Date(last.getTime() + WINDOW_DAYS[s.tier] * DAY);
  if (!at) return 'Unknown';
  const left = at.getTime() - now;
  if (left <= 0) return 'Due now: the next gc run reclaims it.';
  if (left < DAY) return 'Reclaimed in ' + plural(Math.max(1, Math.ceil(left / 3600000)), 'hour') + ' (' + fmtTime(at) + ')';
  return 'Reclaimed in ' + plural(Math.floor(left / DAY), 'day') + ' (' + fmtTime(at) + ')';
}

// GET /v1/sandboxes/{id} lists them as snapshot_list (snapshots is their count).
function snapsOf(s) {
  if (Array.isArray(s.snapshot_list)) return s.snapshot_list;
  return Array.isArray(s.snapshots) ? s.snapshots : [];
}

// A full snapshot (memory, vmstate and disk) wakes the VM where it was; once
// reclaimed only the important files are left and the sandbox can only be rebuilt.
export function wakeOrRebuild(s) {
  const full = snapsOf(s).some((x) => (x.kind || 'full') === 'full' && x.state !== 'reclaimed');
  if (s.state === 'reclaimed' || (snapsOf(s).length && !full))
    return {can: 'rebuild', text: 'Can only be rebuilt: a fresh VM from its template plus its important files.'};
  if (s.state === 'deleted') return {can: 'none', text: 'Neither: it was deleted.'};
  return {can: 'wake', text: 'Can be woken: a full snapshot restores the VM where it was.'};
}

export function sandboxView(id) {
  show(el('h1', {}, 'Sandbox ', el('code', {}, id)), el('p', {}, 'Loading…'));
  api('/sandboxes/' + encodeURIComponent(id)).then((s) => {
    const w = wakeOrRebuild(s);
    const facts = [
      ['Tenant', s.tenant], ['Tier', s.tier],
      ['State', el('span', {class: 'state state-' + s.state, id: 'state'}, s.state)],
      ['Template', s.template || '(none)'],
      ['Last activity', fmtTime(toDate(s.last_activity_ms, 'ms') || toDate(s.last_activity))],
      ['Retention', el('span', {id: 'retention'}, retention(s, Date.now()))],
      ['Wake', el('span', {id: 'wake', class: 'wake-' + w.can}, w.text)],
    ];
    const snaps = snapsOf(s);
    const rows = snaps.map((x) => {
      const sid = x.snapshot || x.id;
      return el('tr', {},
        el('td', {}, el('a', {href: '#/snapshot/' + encodeURIComponent(sid)}, el('code', {}, sid))),
        el('td', {}, fmtTime(toDate(x.time_ms, 'ms') || toDate(x.time))),
        el('td', {}, x.kind || 'full'),
        el('td', {}, x.pinned ? 'pinned' : ''),
        el('td', {class: 'num'}, humanBytes(x.logical_bytes)));
    });
    show(
      el('h1', {}, 'Sandbox ', el('code', {}, s.sandbox || id)),
      el('p', {}, el('a', {href: '#/search?q=' + encodeURIComponent(s.tenant || '')}, 'Other sandboxes of this tenant')),
      el('dl', {class: 'facts'}, facts.flatMap(([k, v]) => [el('dt', {}, k), el('dd', {}, v)])),
      el('h2', {}, 'Snapshots'),
      snaps.length
        ? el('table', {class: 'list', id: 'snapshots'},
            el('thead', {}, el('tr', {}, ...['Snapshot (browse its files)', 'Taken', 'Kind', 'Pin', 'Size']
              .map((h) => el('th', {scope: 'col'}, h)))),
            el('tbody', {}, rows))
        : el('p', {class: 'empty'}, 'No snapshots.'));
  }, (e) => {
    show(el('h1', {}, 'Sandbox ', el('code', {}, id)), el('p', {class: 'error', role: 'alert'}, e.message),
         el('p', {}, el('a', {href: '#/'}, 'Find a sandbox')));
    status('');
  });
}
