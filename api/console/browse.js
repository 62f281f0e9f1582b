// A snapshot's files as a tree: folders open in place (their listing is fetched when
// first opened), every entry with its class badge, size, mode and time; text and images
// previewed, files and folders (tar) downloaded with progress. Secrets stay locked: only
// an admin may open one, after giving a reason that the server writes to the audit log.
import {el, show, status, toDate, fmtTime, fmtMode, humanBytes, baseName} from './dom.js';
import {api, readSome, session} from './net.js';
import {saveWithProgress} from './transfer.js';

const TEXT_LIMIT = 1 << 20, IMAGE_LIMIT = 20 << 20;
const IMAGE_TYPES = {png: 'image/png', jpg: 'image/jpeg', jpeg: 'image/jpeg', gif: 'image/gif',
                     webp: 'image/webp', bmp: 'image/bmp', svg: 'image/svg+xml', ico: 'image/x-icon'};

function ext(p) { const b = baseName(p); const i = b.lastIndexOf('.'); return i > 0 ? b.slice(i + 1).toLowerCase() : ''; }
function isFile(e) { return e.type === 'file' || e.type === 'hardlink'; }
function isSecret(e) { return e.class === 'secret'; }

export function badge(cls) {
  return el('span', {class: 'badge class-' + (cls || 'runtime')}, cls || 'runtime');
}

// Shows bytes as text or an image; anything else is offered as a download.
export function renderPreview(box, name, got, note) {
  const close = el('button', {type: 'button', class: 'close', onclick: () => {
    const back = box._returnFocus; box.replaceChildren(); box.hidden = true; if (back) back.focus();
  }}, 'Close preview');
  const h = el('h2', {tabindex: '-1'}, 'Preview of ', el('code', {}, name));
  const parts = [h];
  if (note) parts.push(el('p', {class: 'warning', role: 'note'}, note));
  const t = IMAGE_TYPES[ext(name)] || (got.type.startsWith('image/') ? got.type.split(';')[0] : '');
  if (t && !got.truncated) {
    const href = URL.createObjectURL(new Blob([got.bytes], {type: t}));
    const img = el('img', {src: href, alt: 'Image ' + name, class: 'preview-image'});
    img.addEventListener('load', () => URL.revokeObjectURL(href), {once: true});
    img.addEventListener('error', () => URL.revokeObjectURL(href), {once: true});
    parts.push(img);
  } else if (got.bytes.subarray(0, 8192).includes(0)) {
    parts.push(el('p', {class: 'empty'}, 'A binary file: download it to look inside.'));
  } else {
    const text = new TextDecoder('utf-8', {fatal: false}).decode(got.bytes);
    parts.push(el('pre', {class: 'preview-text', tabindex: '0'}, text));
    if (got.truncated) parts.push(el('p', {class: 'empty'}, 'Only the first ' + humanBytes(got.bytes.length) + ' are shown.'));
  }
  parts.push(close);
  box.replaceChildren(...parts);
  box.hidden = false;
  h.focus();
}

export function browseView(snap, start) {
  const base = '/snapshots/' + encodeURIComponent(snap);
  const preview = el('section', {id: 'preview', hidden: true, 'aria-label': 'Preview'});
  const transfers = el('section', {id: 'transfers', 'aria-label': 'Downloads'});
  const tree = el('ul', {class: 'tree', id: 'tree'});
  const back = el('p', {id: 'crumbs'});
  show(el('h1', {}, 'Files of snapshot ', el('code', {}, snap)), back,
       el('p', {class: 'hint'}, 'Folders open in place. Secrets are locked',
          session.role() === 'admin' ? ': as an admin you may open one with a reason, which is audited.' : '.'),
       el('div', {class: 'tree-head', 'aria-hidden': 'true'},
          ...['Name', 'Class', 'Size', 'Mode', 'Modified', ''].map((x) => el('span', {}, x))),
       tree, transfers, preview);

  api(base).then((rec) => {
    const sb = rec.sandbox;
    const links = [];
    if (sb) links.push(el('a', {href: '#/sandbox/' + encodeURIComponent(sb)}, 'Sandbox ', sb), ' · ');
    links.push('Taken ' + fmtTime(toDate(rec.time_ms, 'ms') || toDate(rec.time)) + ' · ' + (rec.kind || 'full'));
    back.replaceChildren(...links);
  }, (e) => back.replaceChildren(el('span', {class: 'error'}, e.message)));

  function row(e) {
    const name = baseName(e.path || e.path_hex || '?');
    const li = el('li', {class: 'entry type-' + e.type + (isSecret(e) ? ' secret' : '')});
    li.dataset.path = e.path || '';
    const cells = [];
    let kids = null;
    if (e.type === 'dir') {
      const t = el('button', {type: 'button', class: 'toggle', 'aria-expanded': 'false'},
                   name === '/' ? '/' : name + '/');
      t.addEventListener('click', () => {
        const open = t.getAttribute('aria-expanded') === 'true';
        if (open) { t.setAttribute('aria-expanded', 'false'); kids.hidden = true; return; }
        t.setAttribute('aria-expanded', 'true');
        if (!kids) { kids = el('ul', {class: 'tree'}); li.append(kids); load(e.path, kids); }
        kids.hidden = false;
      });
      cells.push(el('span', {class: 'name'}, t));
    } else {
      cells.push(el('span', {class: 'name'}, el('span', {class: 'fname'}, name),
                    e.target ? el('span', {class: 'target'}, (e.type === 'symlink' ? ' → ' : ' ⇒ ') + e.target) : null));
    }
    cells.push(el('span', {}, e.class ? badge(e.class) : ''),
               el('span', {class: 'num'}, e.type === 'dir' ? '' : humanBytes(e.size)),
               el('span', {class: 'mode'}, fmtMode(e.mode, e.type)),
               el('span', {}, fmtTime(toDate(e.mtime))));
    const acts = el('span', {class: 'actions'});
    if (e.type === 'dir') {
      acts.append(el('button', {type: 'button', class: 'dl', 'aria-label': 'Download ' + name + ' as tar', onclick: (ev) => saveWithProgress(
        transfers, base + '/archive', {query: {path: e.path}}, (name === '/' ? 'snapshot' : name) + '.tar')},
        'Download (tar)'));
    } else if (isFile(e) && isSecret(e)) {
      acts.append(el('span', {class: 'locked'}, 'Locked'));
      if (session.role() === 'admin')
        acts.append(el('button', {type: 'button', class: 'open-secret', 'aria-label': 'Open the secret ' + name + ' with a reason', onclick: (ev) => askReason(li, e, ev.currentTarget)},
                       'Open with a reason…'));
    } else if (isFile(e)) {
      acts.append(
        el('button', {type: 'button', class: 'preview', 'aria-label': 'Preview ' + name, onclick: (ev) => {
          preview._returnFocus = ev.currentTarget;
          status('Loading ' + name + '…');
          const lim = IMAGE_TYPES[ext(name)] ? IMAGE_LIMIT : TEXT_LIMIT;
          readSome(base + '/content', {query: {path: e.path}}, lim).then(
            (got) => { status(''); renderPreview(preview, name, got); },
            (err) => status(err.message, 'error'));
        }}, 'Preview'),
        el('button', {type: 'button', class: 'dl', onclick: (ev) => saveWithProgress(
          transfers, base + '/content', {query: {path: e.path}, size: e.type === 'file' ? e.size : 0}, name), 'aria-label': 'Download ' + name}, 'Download'));
    }
    cells.push(acts);
    li.append(el('div', {class: 'row'}, cells));
    return li;
  }

  // The reason goes to the server with the read, which records it in the audit log
  // before it answers; the console never sees a secret without that record.
  function askReason(li, e, opener) {
    if (li.querySelector('form.reason')) { li.querySelector('form.reason input').focus(); return; }
    const id = 'reason-' + Math.random().toString(36).slice(2);
    const input = el('input', {id, name: 'reason', type: 'text', required: true, minlength: '4', autocomplete: 'off'});
    const err = el('p', {class: 'error', role: 'alert'});
    const form = el('form', {class: 'reason', onsubmit: (ev) => {
      ev.preventDefault();
      const reason = input.value.trim();
      if (reason.length < 4) { err.textContent = 'Say why you need this secret (it goes into the audit log).'; return; }
      preview._returnFocus = opener;
      readSome(base + '/content', {query: {path: e.path, reason}}, TEXT_LIMIT).then((got) => {
        form.remove();
        renderPreview(preview, baseName(e.path), got, 'Secret opened: your reason was recorded in the audit log.');
      }, (x) => { err.textContent = x.message; });
    }},
      el('label', {for: id}, 'Why do you need to open this secret? (recorded in the audit log)'),
      input, el('button', {type: 'submit'}, 'Open secret'),
      el('button', {type: 'button', onclick: () => { form.remove(); opener.focus(); }}, 'Cancel'), err);
    li.append(form);
    input.focus();
  }

  function load(path, into) {
    into.replaceChildren(el('li', {class: 'loading'}, 'Loading…'));
    api(base + '/files', {query: {path}}).then((j) => {
      const list = (j.entries || []).filter((x) => x.path !== path);
      list.sort((a, b) => (a.type === 'dir') !== (b.type === 'dir') ? (a.type === 'dir' ? -1 : 1)
                                                                  : (a.path < b.path ? -1 : a.path > b.path ? 1 : 0));
      into.replaceChildren(...(list.length ? list.map(row) : [el('li', {class: 'empty'}, 'Empty folder')]));
    }, (e) => into.replaceChildren(el('li', {class: 'error', role: 'alert'}, e.message)));
  }

  // The starting folder is a row of its own, open, so it can be downloaded as a tar too.
  const top = row({path: start, type: 'dir', class: '', mode: undefined});
  tree.append(top);
  top.querySelector('button.toggle').click();
}
