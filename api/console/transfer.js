// Downloads with a visible progress bar per transfer, announced politely to screen
// readers; a failure is said in words in the same place.
import {el, humanBytes, status} from './dom.js';
import {download} from './net.js';

// (A button is never disabled while its download runs: that would drop the keyboard
// focus to the top of the page.)
export function saveWithProgress(box, path, opts, filename) {
  const bar = el('progress', {max: '1', value: '0'});
  const text = el('span', {class: 'progress-text'}, 'Starting…');
  const item = el('div', {class: 'transfer', role: 'status'}, el('span', {class: 'fname'}, filename), ' ', bar, ' ', text);
  box.prepend(item);
  let last = 0;
  const t0 = Date.now();
  download(path, opts, filename, (n, total) => {
    const now = Date.now();
    if (n !== 0 && n !== total && now - last < 100) return;
    last = now;
    if (total) { bar.max = total; bar.value = n; text.textContent = humanBytes(n) + ' of ' + humanBytes(total); }
    else { bar.removeAttribute('value'); text.textContent = humanBytes(n) + ' received'; }
  }).then((n) => {
    bar.max = 1; bar.value = 1;
    text.textContent = 'Saved, ' + humanBytes(n) + ' in ' + ((Date.now() - t0) / 1000).toFixed(1) + ' s';
    item.classList.add('done');
    item.dataset.bytes = String(n);
    status('Downloaded ' + filename);
  }, (e) => {
    item.classList.add('failed');
    text.textContent = e.message;
    status(e.message, 'error');
  });
}
