import {el, show, status} from './dom.js';
import {api, session, ApiError} from './net.js';

// Which role a token has is learnt by asking: the audit log answers only admins, and a
// listing answers any token the server knows. A refused token is never stored.
async function roleOf(token) {
  try {
    await api('/audit', {token, query: {limit: 1}});
    return 'admin';
  } catch (e) {
    if (!(e instanceof ApiError) || e.status === 401 || e.status === 0) throw e;
  }
  try {
    await api('/sandboxes', {token, query: {tenant: ''}});
  } catch (e) {
    if (!(e instanceof ApiError) || e.status === 401 || e.status === 0) throw e;
  }
  return 'support';
}

export function signInView(done, message) {
  const input = el('input', {id: 'token', name: 'token', type: 'password', autocomplete: 'off',
                             required: true, spellcheck: 'false'});
  const err = el('p', {id: 'signin-error', class: 'error', role: 'alert'}, message || '');
  const form = el('form', {id: 'signin', onsubmit: async (ev) => {
    ev.preventDefault();
    err.textContent = '';
    const token = input.value.trim();
    if (!token) { err.textContent = 'Paste a support or admin token.'; return; }
    status('Checking the token…');
    try {
      const role = await roleOf(token);
      session.signIn(token, role);
      input.value = '';
      status('');
      done();   // back to the page the user asked for
    } catch (e) {
      status('');
      err.textContent = e.message;
      input.focus();
    }
  }},
    el('label', {for: 'token'}, 'Support or admin token'),
    input,
    el('button', {type: 'submit'}, 'Sign in'),
    err);
  show(el('h1', {}, 'Sign in'),
       el('p', {}, 'The token stays in this browser tab only and is forgotten when the tab closes.'),
       form);
  input.focus();
}
