// tasks.js: the task list (filtered and paged on the server) and one task:
// its tree of agents (over Parent), and the timeline of its steps.
import { h, show, v1, query, stream, time, pretty, field, table, badge, errorBox, say } from '../dom.js';

const states = ['', 'submitted', 'working', 'input-required', 'completed', 'failed', 'canceled', 'rejected'];
const live = new Set(['submitted', 'working', 'input-required']);

export function tasks(root, params) {
  const agent = h('input', { name: 'agent', value: params.agent || '', autocomplete: 'off' });
  const state = h('select', { name: 'state' }, states.map((s) =>
    h('option', { value: s, selected: s === (params.state || '') }, s || 'any')));
  const since = h('select', { name: 'since' }, [['', 'any time'], ['1h', 'last hour'], ['24h', 'last day'], ['168h', 'last week']]
    .map(([v, l]) => h('option', { value: v, selected: v === (params.since || '') }, l)));
  const text = h('input', { name: 'text', type: 'search', value: params.text || '', autocomplete: 'off' });
  const list = h('div', { 'aria-live': 'polite' });
  const form = h('form', { class: 'filters', role: 'search', onsubmit: (e) => {
    e.preventDefault();
    location.hash = '#/tasks' + query({ agent: agent.value.trim(), state: state.value, since: since.value, text: text.value.trim() });
  } }, field('Agent', agent), field('State', state), field('Since', since), field('Text (this page)', text),
  h('button', { type: 'submit' }, 'Filter'));
  show(root, h('h1', {}, 'Tasks'), form, list);

  let after = params.after || '';
  async function load() {
    try {
      const r = await v1('GET', '/tasks' + query({ agent: params.agent, state: params.state, since: params.since, after, limit: 50 }));
      let items = r.items || [];
      const needle = (params.text || '').toLowerCase();
      if (needle) items = items.filter((t) => JSON.stringify([t.id, t.agent, t.input, t.result, t.detail]).toLowerCase().includes(needle));
      show(list, table('Tasks, newest first', [
        ['Task', (t) => h('a', { href: '#/tasks/' + encodeURIComponent(t.id) }, t.id)],
        ['Agent', (t) => t.agent],
        ['State', (t) => [badge(t.state), t.reason ? ' ' + t.reason : '']],
        ['Input', (t) => h('span', { class: 'clip' }, pretty(t.input))],
        ['Parent', (t) => (t.parent ? h('a', { href: '#/tasks/' + encodeURIComponent(t.parent) }, t.parent) : '')],
        ['Created', (t) => time(t.created)],
      ], items, 'No tasks match.'),
      r.next ? h('button', { type: 'button', onclick: () => { after = r.next; load(); } }, 'Next page') : null,
      after ? h('button', { type: 'button', class: 'link', onclick: () => { after = ''; load(); } }, 'First page') : null);
    } catch (err) {
      show(list, errorBox(err));
    }
  }
  load();
  const timer = setInterval(() => { if (!after) load(); }, 5000);
  return () => clearInterval(timer);
}

// task shows one task: the tree it belongs to, its details and timeline.
export function task(root, id, me) {
  const head = h('div');
  const tree = h('nav', { class: 'tree', 'aria-label': 'Task tree' });
  const timeline = h('ol', { class: 'timeline', 'aria-label': 'Timeline' });
  show(root, h('p', {}, h('a', { href: '#/tasks' }, '← Tasks')), head,
    h('h2', {}, 'Tree of agents'), tree, h('h2', {}, 'Timeline'), timeline);
  let stopEvents = () => {};
  let stopped = false;
  const answers = {}; // call id → the arguments the model gave

  async function refresh() {
    try {
      const t = await v1('GET', '/tasks/' + encodeURIComponent(id));
      show(head, header(t, me, refresh));
      show(tree, await treeOf(t));
      return t;
    } catch (err) {
      show(head, errorBox(err));
      return null;
    }
  }
  refresh().then((t) => {
    if (!t || stopped) return;
    const seen = new Set(); // a reconnected stream may send an event again
    const onEvent = (ev) => {
      if (ev.seq && seen.has(ev.seq)) return;
      seen.add(ev.seq);
      timeline.append(step(ev, answers));
      // The stream ends with the task; a browser would reconnect to it.
      if (ev.type === 'state' && !live.has(ev.state)) stopEvents();
      if (ev.type === 'state' || ev.type === 'started' || ev.type === 'extended') refresh();
    };
    const types = ['state', 'started', 'model.call', 'model.answer', 'tool.call', 'tool.result', 'message', 'call', 'extended', 'waiting'];
    stopEvents = stream('/tasks/' + encodeURIComponent(id) + '/events', Object.fromEntries(types.map((ty) => [ty, onEvent])));
  });
  return () => { stopped = true; stopEvents(); };
}

function header(t, me, refresh) {
  const u = t.usage || {};
  const reason = h('input', { name: 'reason', 'aria-label': 'Reason to cancel', placeholder: 'reason', maxlength: 1000 });
  const cancel = me.role === 'admin' && live.has(t.state)
    ? h('form', { class: 'inline', onsubmit: async (e) => {
      e.preventDefault();
      try {
        await v1('POST', '/tasks/' + encodeURIComponent(t.id) + '/cancel', { reason: reason.value });
        say('Task canceled.');
        refresh();
      } catch (err) { say('Cancel failed: ' + err.message); }
    } }, reason, h('button', { type: 'submit', class: 'danger' }, 'Cancel task')) : null;
  let approvalLink = null;
  if (t.reason === 'awaiting_approval' && t.detail) {
    const m = /^approval ([A-Za-z0-9_-]+)/.exec(t.detail);
    if (m) approvalLink = h('a', { href: '#/approvals/' + encodeURIComponent(m[1]) }, 'the approval it waits for');
  }
  return [
    h('h1', {}, 'Task ', h('code', {}, t.id)),
    h('dl', { class: 'facts' },
      h('dt', {}, 'Agent'), h('dd', {}, h('a', { href: '#/agents?agent=' + encodeURIComponent(t.agent) }, t.agent), t.hosted ? ' (hosted)' : ' (external)'),
      h('dt', {}, 'State'), h('dd', { 'data-testid': 'task-state' }, badge(t.state), t.reason ? ' ' + t.reason : ''),
      t.detail ? [h('dt', {}, 'Detail'), h('dd', {}, t.detail, approvalLink ? [' — ', approvalLink] : '')] : null,
      h('dt', {}, 'Input'), h('dd', {}, h('pre', {}, pretty(t.input))),
      t.result ? [h('dt', {}, 'Result'), h('dd', {}, h('pre', { 'data-testid': 'task-result' }, pretty(t.result)))] : null,
      h('dt', {}, 'Use'), h('dd', {}, `${u.model_calls || 0} model calls, ${u.tool_calls || 0} tool calls, ${u.input_tokens || 0} in / ${u.output_tokens || 0} out tokens, cost ${u.cost || 0}`),
      h('dt', {}, 'Created'), h('dd', {}, time(t.created), ' by ', t.created_by || ''),
      t.principal ? [h('dt', {}, 'For'), h('dd', {}, pretty(t.principal))] : null,
      // Every model and tool call of the task's tree is in this trace.
      /^[0-9a-f]{32}$/.test(t.trace_id || '') ? [h('dt', {}, 'Trace'), h('dd', {},
        h('a', { href: '#/traces' + query({ id: t.trace_id }), 'data-testid': 'task-trace' }, h('code', {}, t.trace_id)),
        ' (the whole tree of agents; ', h('code', {}, 'corral trace ' + t.trace_id), ')')] : null,
      t.worker ? [h('dt', {}, 'Worker'), h('dd', {}, t.worker, t.attempts ? ` (attempt ${t.attempts})` : '')] : null),
    cancel,
  ];
}

// treeOf draws the task among its relatives: the chain of parents up to
// the root, and the root's descendants found among the tasks created
// since it (one page of 1000; the tree says when it is cut short).
async function treeOf(t) {
  let rootTask = t;
  const seen = new Set([t.id]);
  while (rootTask.parent && !seen.has(rootTask.parent) && seen.size < 20) {
    seen.add(rootTask.parent);
    try { rootTask = await v1('GET', '/tasks/' + encodeURIComponent(rootTask.parent)); } catch { break; }
  }
  let all = [rootTask];
  let cut = false;
  try {
    const r = await v1('GET', '/tasks' + query({ since: rootTask.created, limit: 1000 }));
    all = all.concat((r.items || []).filter((x) => x.id !== rootTask.id));
    cut = !!r.next;
  } catch { /* the root alone */ }
  const kids = {};
  for (const x of all) if (x.parent) (kids[x.parent] = kids[x.parent] || []).push(x);
  const node = (x, depth) => h('li', {},
    h('a', { href: '#/tasks/' + encodeURIComponent(x.id), 'aria-current': x.id === t.id ? 'page' : null },
      x.agent), ' ', badge(x.state), ' ', h('code', {}, x.id),
    depth < 12 && kids[x.id] ? h('ul', {}, kids[x.id].map((k) => node(k, depth + 1))) : null);
  return [h('ul', {}, node(rootTask, 0)), cut ? h('p', { class: 'note' }, 'More than 1000 tasks since the root: some children may be missing.') : null];
}

// step renders one journal event. Model text, tool arguments and answers
// are untrusted: they are text in <pre>, never markup.
function step(ev, answers) {
  const parts = [];
  const label = {
    'state': 'State', 'started': 'Started', 'model.call': 'Model call', 'model.answer': 'Model answer',
    'tool.call': 'Tool call', 'tool.result': 'Tool result', 'message': 'Message', 'call': 'External call',
    'extended': 'Extended', 'waiting': 'Waiting',
  }[ev.type] || ev.type;
  if (ev.type === 'state') {
    parts.push(badge(ev.state), ev.reason ? ' ' + ev.reason : '', ev.detail ? ': ' + ev.detail : '');
    const m = ev.reason === 'awaiting_approval' && /^approval ([A-Za-z0-9_-]+)/.exec(ev.detail || '');
    if (m) parts.push(' ', h('a', { href: '#/approvals/' + encodeURIComponent(m[1]) }, 'Open the approval'));
  }
  if (ev.type === 'started') parts.push('worker ', ev.worker || '');
  if (ev.model) parts.push(h('span', { class: 'tag' }, ev.model));
  if (ev.tool) parts.push(h('span', { class: 'tag' }, ev.tool));
  if (ev.type === 'model.answer' && ev.message) {
    const m = ev.message;
    const content = typeof m.content === 'string' ? m.content
      : Array.isArray(m.content) ? m.content.map((c) => c.text || '').join('') : '';
    if (m.reasoning || m.reasoning_content) parts.push(h('pre', { class: 'thought' }, String(m.reasoning || m.reasoning_content)));
    if (content) parts.push(h('pre', { class: 'answer' }, content));
    for (const c of m.tool_calls || []) {
      const fn = c.function || {};
      answers[c.id] = fn.arguments;
      parts.push(h('div', { class: 'call' }, 'asks for ', h('span', { class: 'tag' }, fn.name || ''), h('pre', {}, pretty(tryJSON(fn.arguments)))));
    }
  }
  if (ev.type === 'tool.call' && answers[ev.call_id] !== undefined) parts.push(h('pre', {}, pretty(tryJSON(answers[ev.call_id]))));
  if (ev.type === 'tool.result') {
    if (ev.is_error) parts.push(badge('error'));
    if (ev.code) parts.push(' ', ev.code);
    if (ev.content) parts.push(h('pre', {}, ev.content));
    if (ev.ref) parts.push(h('p', { class: 'note' }, 'Large result stored as ', ev.ref));
  }
  if (ev.type === 'message' && ev.message) parts.push(h('pre', {}, pretty(ev.message)));
  if (ev.type !== 'state' && ev.detail && ev.type !== 'tool.call') parts.push(h('p', {}, ev.detail));
  if (ev.usage) parts.push(h('p', { class: 'note' }, `${ev.usage.input_tokens || 0} in / ${ev.usage.output_tokens || 0} out tokens`));
  if (ev.audit_id) parts.push(h('p', { class: 'note' }, 'audit ', h('a', { href: '#/audit?id=' + encodeURIComponent(ev.audit_id) }, ev.audit_id)));
  return h('li', { class: 'ev ev-' + ev.type.replace('.', '-') },
    h('div', { class: 'ev-head' }, h('strong', {}, label), ev.step ? ` step ${ev.step}` : '', ' ', time(ev.time)), parts);
}

function tryJSON(s) {
  if (typeof s !== 'string') return s;
  try { return JSON.parse(s); } catch { return s; }
}
