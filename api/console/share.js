// What a share token's holder sees: the artifacts of the shared sandbox's latest
// snapshot, each with a download, and nothing else (the server decides what is listed).
import {el, show, humanBytes, toDate, fmtTime} from './dom.js';
import {api, session} from './net.js';
import {saveWithProgress} from './transfer.js';

function askToken() {
  const input = el('input', {id: 'share-token', type: 'password', required: true, autocomplete: 'off'});
  show(el('h1', {}, 'Shared files'),
       el('form', {id: 'share-form', onsubmit: (ev) => {
         ev.preventDefault();
         if (input.value.trim()) { session.setShare(input.value.trim()); input.value = ''; shareView(); }
       }}, el('label', {for: 'share-token'}, 'Share token'), input, el('button', {type: 'submit'}, 'Open')));
  input.focus();
}

export function shareView() {
  if (!session.share()) return askToken();
  const transfers = el('section', {id: 'transfers', 'aria-label': 'Downloads'});
  const list = el('div', {id: 'shared', 'aria-live': 'polite'}, el('p', {}, 'Loading…'));
  show(el('h1', {}, 'Shared files'),
       el('p', {}, 'The outputs of a task that was shared with you.'), list, transfers);
  api('/shared/files', {share: true}).then((j) => {
    const files = (j.entries || []).filter((e) => e.type === 'file' || e.type === 'hardlink');
    if (!files.length) { list.replaceChildren(el('p', {class: 'empty'}, 'Nothing was shared yet.')); return; }
    list.replaceChildren(el('table', {class: 'list', id: 'shared-files'},
      el('thead', {}, el('tr', {}, ...['File', 'Size', 'Modified', ''].map((h) => el('th', {scope: 'col'}, h)))),
      el('tbody', {}, files.map((e) => {
        const name = e.path.slice(e.path.lastIndexOf('/') + 1);
        return el('tr', {},
          el('td', {class: 'fname'}, e.path),
          el('td', {class: 'num'}, humanBytes(e.size)),
          el('td', {}, fmtTime(toDate(e.mtime))),
          el('td', {}, el('button', {type: 'button', class: 'dl', 'aria-label': 'Download ' + name, onclick: () => saveWithProgress(
            transfers, '/shared/content', {share: true, query: {path: e.path}, size: e.type === 'file' ? e.size : 0}, name)}, 'Download')));
      }))));
  }, (e) => {
    list.replaceChildren(el('p', {class: 'error', role: 'alert'}, e.status === 401
      ? 'This share link is not valid: it is wrong, has expired or was revoked.' : e.message),
      el('p', {}, el('button', {type: 'button', onclick: () => { sessionStorage.removeItem('cairn.share'); askToken(); }},
                     'Enter another share token')));
  });
}
