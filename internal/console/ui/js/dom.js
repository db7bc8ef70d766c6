// dom.js: building the page without HTML strings. Everything an agent, a
// model or a person wrote reaches the page through text nodes and
// attribute values only, never through HTML parsing, so it cannot become
// markup or script.

// h builds an element: h('a', {href: '#/x', class: 'c'}, 'text', child).
// Attributes named on... are event listeners; a null or false attribute
// is left out; children are nodes or strings (text nodes).
export function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k.startsWith('on') && typeof v === 'function') {
      el.addEventListener(k.slice(2), v);
    } else if (k === 'href' && !/^(#|\/ui\/)/.test(String(v))) {
      continue; // links stay inside the console: no javascript: URLs
    } else {
      el.setAttribute(k, v === true ? '' : String(v));
    }
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const c of children.flat(Infinity)) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
}

// show replaces el's children.
export function show(el, ...children) {
  el.replaceChildren();
  append(el, children);
  return el;
}

// say puts a short message in the live status region.
export function say(msg) {
  const s = document.getElementById('status');
  s.textContent = msg;
  clearTimeout(say.timer);
  say.timer = setTimeout(() => { s.textContent = ''; }, 6000);
}

// ApiError is an answer that was not 2xx: status and the problem's code.
export class ApiError extends Error {
  constructor(status, problem) {
    super((problem && (problem.detail || problem.title)) || 'HTTP ' + status);
    this.status = status;
    this.code = problem && problem.code;
  }
}

let csrf = '';
export function setCSRF(token) { csrf = token; }

// api calls the console's API (/ui/api/...). A change carries the CSRF
// token; the session cookie goes by itself (same origin, SameSite=Strict).
export async function api(method, path, body) {
  const init = { method, headers: { Accept: 'application/json' }, credentials: 'same-origin' };
  if (method !== 'GET') init.headers['X-Corral-CSRF'] = csrf;
  if (body !== undefined) {
    init.headers['Content-Type'] = 'application/json';
    init.body = JSON.stringify(body);
  }
  const resp = await fetch('/ui/api' + path, init);
  if (resp.status === 204) return null;
  let data = null;
  try { data = await resp.json(); } catch { /* not JSON */ }
  if (!resp.ok) {
    if (resp.status === 401 && !(method === 'POST' && path === '/session')) window.dispatchEvent(new Event('corral:signed-out'));
    throw new ApiError(resp.status, data);
  }
  return data;
}

// v1 is api over the control-plane API, /ui/api/v1/...
export const v1 = (method, path, body) => api(method, '/v1' + path, body);

// query builds ?a=b&c=d from the non-empty values of o.
export function query(o) {
  const p = new URLSearchParams();
  for (const [k, v] of Object.entries(o)) if (v !== '' && v !== undefined && v !== null) p.set(k, v);
  const s = p.toString();
  return s ? '?' + s : '';
}

// stream follows a server-sent event stream of the console's API until
// stop() is called (the router calls it when the view changes).
export function stream(path, handlers) {
  const es = new EventSource('/ui/api/v1' + path);
  for (const [type, fn] of Object.entries(handlers)) {
    es.addEventListener(type, (e) => {
      let data = null;
      try { data = JSON.parse(e.data); } catch { return; }
      fn(data, e);
    });
  }
  // A stream refused (401) or cut when the session ended is closed for
  // good: asking for the session then signs the page out if it has ended.
  es.addEventListener('error', () => {
    if (es.readyState === EventSource.CLOSED) api('GET', '/session').catch(() => {});
  });
  return () => es.close();
}

// time renders an RFC 3339 time as local time, in a <time> element.
export function time(s) {
  if (!s) return '';
  const d = new Date(s);
  if (isNaN(d)) return String(s);
  return h('time', { datetime: d.toISOString(), title: d.toISOString() }, d.toLocaleString());
}

// pretty renders a JSON value for reading: strings as they are, other
// values indented.
export function pretty(v) {
  if (v === undefined || v === null) return '';
  if (typeof v === 'string') return v;
  return JSON.stringify(v, null, 2);
}

// field is a labelled form control.
export function field(label, control) {
  const id = control.id || ('f-' + Math.random().toString(36).slice(2));
  control.id = id;
  return h('div', { class: 'field' }, h('label', { for: id }, label), control);
}

// table renders rows as a table with a caption; cols are [header, fn(row)].
export function table(caption, cols, rows, empty) {
  if (!rows.length) return h('p', { class: 'empty' }, empty || 'Nothing here.');
  return h('div', { class: 'scroll' }, h('table', {},
    h('caption', {}, caption),
    h('thead', {}, h('tr', {}, cols.map(([name]) => h('th', { scope: 'col' }, name)))),
    h('tbody', {}, rows.map((r) => h('tr', {}, cols.map(([, fn]) => h('td', {}, fn(r))))))));
}

// badge is a small label for a state.
export const badge = (s) => h('span', { class: 'badge b-' + String(s).replace(/[^a-z-]/g, '') }, String(s));

// errorBox says what went wrong loading a view.
export const errorBox = (err) => h('p', { class: 'error', role: 'alert' }, 'Could not load: ' + err.message);
