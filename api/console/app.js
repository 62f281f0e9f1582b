// The console's router: the page is chosen by the #fragment, so every view has an
// address a support engineer can go back to, and none of them carries a token.
import {el, show, status} from './dom.js';
import {session, whenSignedOut} from './net.js';
import {signInView} from './signin.js';
import {searchView} from './search.js';
import {sandboxView} from './sandbox.js';
import {browseView} from './browse.js';
import {auditView} from './audit.js';
import {shareView} from './share.js';

function parse() {
  const h = location.hash.replace(/^#/, '') || '/';
  const i = h.indexOf('?');
  const path = i < 0 ? h : h.slice(0, i);
  let parts;
  try { parts = path.split('/').filter(Boolean).map(decodeURIComponent); } catch (e) { parts = ['?']; }
  return {parts, q: new URLSearchParams(i < 0 ? '' : h.slice(i + 1))};
}

function nav() {
  const n = document.getElementById('nav');
  const who = document.getElementById('who');
  if (!session.token()) { n.replaceChildren(); who.textContent = ''; return; }
  const links = [el('a', {href: '#/'}, 'Find a sandbox')];
  if (session.role() === 'admin') links.push(el('a', {href: '#/audit'}, 'Audit log'));
  links.push(el('button', {type: 'button', id: 'signout', onclick: () => {
    session.signOut(); location.hash = '#/'; route();
  }}, 'Sign out'));
  n.replaceChildren(...links);
  who.textContent = 'Signed in (' + (session.role() || 'support') + ')';
}

export async function route() {
  status('');
  const {parts, q} = parse();
  if (parts[0] === 'share') {
    if (parts[1]) {
      // A share link carries its token in the fragment: move it out of the address bar
      // (and so out of history) at once.
      session.setShare(parts[1]);
      history.replaceState(null, '', '#/share');
    }
    nav();
    return shareView();
  }
  nav();
  if (!session.token()) { const w = why; why = ''; return signInView(route, w); }
  switch (parts[0]) {
    case undefined: case 'search': return searchView(q.get('q') || '');
    case 'sandbox': return sandboxView(parts[1] || '');
    case 'snapshot': return browseView(parts[1] || '', q.get('path') || '/');
    case 'audit': return auditView(q);
    default:
      return show(el('h1', {}, 'No such page'), el('p', {}, el('a', {href: '#/'}, 'Find a sandbox')));
  }
}

// The sign-in page says why the user is there again; the view that made the refused call
// may still be finishing, so the message is handed to the page rather than the status line.
let why = '';
whenSignedOut((err) => { why = err.message; route(); });
window.addEventListener('hashchange', () => { route(); });
route();
