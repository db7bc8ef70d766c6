// app.js: sign-in, the navigation and the router. Each view is a function
// (root, params, me) that fills root and returns a function that stops
// whatever it left running (streams, timers).
import { h, show, api, setCSRF, say, field } from './dom.js';
import { overview } from './views/overview.js';
import { tasks, task } from './views/tasks.js';
import { approvals, approvalView } from './views/approvals.js';
import { agents } from './views/agents.js';
import { budgets, audit, traces, tools, deadLetters } from './views/ops.js';

const views = [
  ['overview', 'Overview', overview],
  ['tasks', 'Tasks', tasks],
  ['approvals', 'Approvals', approvals],
  ['agents', 'Agents', agents],
  ['budgets', 'Budgets', budgets],
  ['audit', 'Audit', audit],
  ['traces', 'Traces', traces],
  ['tools', 'Tools', tools],
  ['dlq', 'Dead letters', deadLetters],
];

let me = null;
let stop = () => {};

function nav() {
  const current = (location.hash.replace(/^#\/?/, '').split(/[/?]/)[0]) || 'overview';
  show(document.getElementById('nav'), h('ul', {}, views.map(([id, label]) =>
    h('li', {}, h('a', { href: '#/' + id, 'aria-current': id === current ? 'page' : null }, label)))));
}

function route() {
  stop();
  stop = () => {};
  document.getElementById('status').textContent = ''; // messages belong to the view they came from
  const main = document.getElementById('main');
  if (!me) return signIn(main);
  nav();
  const [path, qs] = location.hash.replace(/^#\/?/, '').split('?');
  const parts = path.split('/').filter(Boolean).map(decodeURIComponent);
  const params = Object.fromEntries(new URLSearchParams(qs || ''));
  let view = overview;
  if (parts[0] === 'tasks' && parts[1]) view = (root) => task(root, parts[1], me);
  else if (parts[0] === 'approvals' && parts[1]) view = (root) => approvalView(root, parts[1], me);
  else {
    const found = views.find(([id]) => id === parts[0]);
    if (found) view = found[2];
  }
  const root = show(main);
  document.title = 'corral · ' + ((views.find(([id]) => id === parts[0]) || views[0])[1]);
  const s = view(root, params, me);
  if (typeof s === 'function') stop = s;
}

function who() {
  const el = document.getElementById('who');
  if (!me) return show(el);
  show(el, h('span', { class: 'me' }, me.name, ' · ', h('span', { class: 'role' }, me.role)),
    h('button', { type: 'button', class: 'link', onclick: signOut }, 'Sign out'));
}

async function signOut() {
  try { await api('DELETE', '/session'); } catch { /* ended already */ }
  me = null;
  setCSRF('');
  document.getElementById('nav').hidden = true;
  who();
  route();
}

function signIn(main) {
  document.getElementById('nav').hidden = true;
  document.title = 'corral · Sign in';
  const cred = h('input', { type: 'password', name: 'credential', autocomplete: 'current-password', required: true });
  const err = h('p', { class: 'error', role: 'alert', hidden: true });
  const form = h('form', { class: 'signin', onsubmit: async (e) => {
    e.preventDefault();
    err.hidden = true;
    try {
      signedIn(await api('POST', '/session', { credential: cred.value }));
    } catch (ex) {
      err.textContent = ex.message;
      err.hidden = false;
    }
  } },
  h('h1', {}, 'Sign in to corral'),
  h('p', {}, 'Paste the admin token, your corral human key (corral humans create), or a token from a trusted Issuer. ',
    'It stays on the server; your browser keeps only a session cookie.'),
  field('Credential', cred), err,
  h('button', { type: 'submit' }, 'Sign in'));
  show(main, form);
  cred.focus();
  api('GET', '/oidc').then((o) => {
    if (o && o.enabled) {
      form.append(h('p', { class: 'or' }, 'or'),
        h('a', { class: 'button', href: '/ui/api/oidc/start' }, 'Sign in with your identity provider (', o.issuer, ')'));
    }
  }).catch(() => {});
}

function signedIn(session) {
  me = session;
  setCSRF(session.csrf);
  document.getElementById('nav').hidden = false;
  who();
  route();
  say('Signed in as ' + me.name + ' (' + me.role + ')');
}

window.addEventListener('hashchange', route);
window.addEventListener('corral:signed-out', () => {
  if (!me) return;
  me = null;
  who();
  route();
  say('Your session ended; sign in again.');
});

(async () => {
  try {
    signedIn(await api('GET', '/session'));
  } catch {
    me = null;
    route();
  }
})();
