// ops.js: budgets, the audit (search and verify), a trace's waterfall, the
// tool catalogue and its drift, and the dead letters.
import { h, show, v1, query, pretty, field, table, badge, errorBox, say, time } from '../dom.js';
import { spendList } from './overview.js';

export function budgets(root) {
  const body = h('div');
  show(root, h('h1', {}, 'Budgets'), body);
  const load = () => v1('GET', '/budgets').then((r) => show(body, spendList(r.items || []),
    table('Budgets and their windows', [
      ['Budget', (s) => s.budget], ['Scope', (s) => pretty(s.scope)], ['Window', (s) => s.window],
      ['Key', (s) => s.key || ''], ['Used', (s) => pretty(s.used || {})], ['Limit', (s) => pretty(s.limit)],
      ['Resets', (s) => time(s.resets_at)],
    ], r.items || [], 'No budgets are declared.'))).catch((err) => show(body, errorBox(err)));
  load();
  const timer = setInterval(load, 10000);
  return () => clearInterval(timer);
}

export function audit(root, params) {
  const agent = h('input', { name: 'agent', value: params.agent || '', autocomplete: 'off' });
  const tool = h('input', { name: 'tool', value: params.tool || '', autocomplete: 'off' });
  const since = h('select', { name: 'since' }, [['1h', 'last hour'], ['24h', 'last day'], ['168h', 'last week'], ['', 'any time']]
    .map(([v, l]) => h('option', { value: v, selected: v === (params.since ?? '24h') }, l)));
  const results = h('div', { 'aria-live': 'polite' });
  const verdict = h('div', { 'aria-live': 'polite' });
  show(root, h('h1', {}, 'Audit'),
    h('form', { class: 'filters', role: 'search', onsubmit: (e) => {
      e.preventDefault();
      location.hash = '#/audit' + query({ agent: agent.value.trim(), tool: tool.value.trim(), since: since.value || '0s' });
    } }, field('Agent', agent), field('Tool', tool), field('Since', since), h('button', { type: 'submit' }, 'Search')),
    h('p', {}, h('button', { type: 'button', onclick: async () => {
      show(verdict, 'Verifying the chain…');
      try {
        const rep = await v1('GET', '/audit/verify' + query({ since: since.value }));
        show(verdict, h('p', { class: rep.ok ? 'ok' : 'error', role: 'status', 'data-testid': 'verify' },
          rep.ok ? 'The audit chain verifies: ' : 'The audit chain is broken: ', `${rep.records} records, ${rep.checkpoints} checkpoints`),
        (rep.problems || []).length ? h('ul', {}, rep.problems.map((p) => h('li', {}, pretty(p)))) : null,
        (rep.notes || []).length ? h('ul', {}, rep.notes.map((n) => h('li', {}, n))) : null);
      } catch (err) { show(verdict, errorBox(err)); }
    } }, 'Verify the chain')), verdict, results);
  const s = params.since === '0s' ? '' : (params.since ?? '24h');
  v1('GET', '/audit' + query({ agent: params.agent, tool: params.tool, since: s, limit: 200 })).then((r) => {
    let recs = (r.records || []).slice().reverse();
    if (params.id) recs = recs.filter((x) => x.id === params.id);
    show(results, table('Audit records, newest first (200 at most)', [
      ['Time', (x) => time(x.time)], ['Agent', (x) => x.agent || ''], ['Target', (x) => h('code', {}, x.target || '')],
      ['Edge', (x) => x.edge], ['Decision', (x) => badge(x.decision || '')], ['Status', (x) => [x.status || '', x.code ? ' ' + x.code : '']],
      ['Reason', (x) => x.reason || ''], ['Arguments', (x) => h('pre', { class: 'clip' }, pretty(x.arguments || x.arguments_prefix || ''))],
    ], recs, 'No records match.'));
  }).catch((err) => show(results, errorBox(err)));
}

export function traces(root, params) {
  const id = h('input', { name: 'trace', value: params.id || '', autocomplete: 'off', pattern: '[0-9a-f]{32}' });
  const body = h('div');
  show(root, h('h1', {}, 'Traces'),
    h('form', { class: 'filters', onsubmit: (e) => { e.preventDefault(); location.hash = '#/traces' + query({ id: id.value.trim() }); } },
      field('Trace id (32 hex digits: from a response\'s traceresponse header, or the logs)', id), h('button', { type: 'submit' }, 'Show')),
    body);
  if (!params.id) return;
  v1('GET', '/traces/' + encodeURIComponent(params.id)).then((r) => show(body, waterfall(r.spans || [])))
    .catch((err) => show(body, errorBox(err)));
}

// waterfall draws spans as bars on one time axis, children under parents.
function waterfall(spans) {
  if (!spans.length) return h('p', { class: 'empty' }, 'The trace has no spans.');
  const t0 = Math.min(...spans.map((s) => new Date(s.start)));
  const t1 = Math.max(...spans.map((s) => new Date(s.end)));
  const total = Math.max(t1 - t0, 1);
  const kids = {};
  const ids = new Set(spans.map((s) => s.span_id));
  for (const s of spans) {
    const p = ids.has(s.parent_span_id) ? s.parent_span_id : '';
    (kids[p] = kids[p] || []).push(s);
  }
  const rows = [];
  const walk = (p, depth) => (kids[p] || []).sort((a, b) => new Date(a.start) - new Date(b.start)).forEach((s) => {
    rows.push([s, depth]);
    if (depth < 30) walk(s.span_id, depth + 1);
  });
  walk('', 0);
  return h('ol', { class: 'waterfall', 'aria-label': 'Spans' }, rows.map(([s, depth]) => {
    const left = (100 * (new Date(s.start) - t0)) / total;
    const width = Math.max((100 * (new Date(s.end) - new Date(s.start))) / total, 0.5);
    const bar = h('span', { class: 'bar' + (s.status && s.status.code === 'error' ? ' bar-error' : '') });
    bar.style.marginLeft = left + '%'; // CSSOM, not an inline style attribute: the CSP allows it
    bar.style.width = width + '%';
    const name = h('span', { class: 'span-name' }, s.name, ' ', h('span', { class: 'note' }, `${(s.duration_ms || 0).toFixed(1)} ms`));
    name.style.paddingLeft = depth + 'em';
    return h('li', {}, name, h('span', { class: 'track' }, bar));
  }));
}

export function tools(root, params, me) {
  const drift = h('div');
  const list = h('div');
  show(root, h('h1', {}, 'Tools'), h('h2', {}, 'Drift held back'), drift, h('h2', {}, 'Catalogue'), list);
  const load = () => {
    v1('GET', '/tools/drift').then((r) => show(drift, table('Tool sources whose tools changed', [
      ['Source', (d) => d.source], ['Detected', (d) => time(d.detected)],
      ['Changes', (d) => h('ul', {}, (d.changes || []).map((c) => h('li', {}, pretty(c))))],
      ['', (d) => (me.role === 'admin' ? h('button', { type: 'button', onclick: async () => {
        try { await v1('POST', '/tools/drift/' + encodeURIComponent(d.source) + '/accept'); say('Drift accepted.'); } catch (err) { say('Not done: ' + err.message); }
        load();
      } }, 'Accept ' + d.source) : '')],
    ], r.drift || [], 'No drift is held back.'))).catch((err) => show(drift, errorBox(err)));
    v1('GET', '/tools').then((r) => show(list, (r.sources || []).length ? table('Tool sources', [
      ['Source', (x) => x.name], ['State', (x) => badge(x.state)], ['Tools', (x) => x.tools],
      ['Since', (x) => time(x.since)], ['Error', (x) => x.error || ''],
    ], r.sources) : null, table('Tools', [
      ['Tool', (t) => h('code', {}, t.name)], ['Source', (t) => t.source], ['Title', (t) => t.title || ''],
      ['Description', (t) => h('span', { class: 'clip' }, t.description || '')],
    ], r.tools || [], 'No tools yet.'))).catch((err) => show(list, errorBox(err)));
  };
  load();
}

// deadLetters lists /v1/dlq when this corral has it; an older one answers
// 404, and the view says so instead of failing.
export function deadLetters(root, params, me) {
  const body = h('div');
  show(root, h('h1', {}, 'Dead letters'), body);
  let after = '';
  const load = () => v1('GET', '/dlq' + query({ after, limit: 50 })).then((r) => {
    const items = r.items || [];
    show(body, table('Dead letters', [
      ['Id', (d) => h('code', {}, d.id)], ['Source', (d) => [d.source, d.name].filter(Boolean).join(' ')],
      ['Step', (d) => d.step || ''], ['Error', (d) => [d.code, d.reason].filter(Boolean).join(': ')], ['Attempts', (d) => d.attempts ?? ''], ['When', (d) => time(d.time || d.created)],
      ['', (d) => (me.role === 'admin' ? h('span', { class: 'buttons' },
        h('button', { type: 'button', onclick: () => act(d.id, 'retry') }, 'Retry'),
        h('button', { type: 'button', class: 'danger', onclick: () => act(d.id, 'discard') }, 'Discard')) : '')],
    ], items, 'No dead letters.'), r.next ? h('button', { type: 'button', onclick: () => { after = r.next; load(); } }, 'Next page') : null);
  }).catch((err) => show(body, err.status === 404
    ? h('p', { class: 'empty', 'data-testid': 'dlq-unavailable' }, 'Dead letters are not available on this corral (no /v1/dlq).')
    : errorBox(err)));
  // Retry is POST /v1/dlq/{id}/retry (resumes the run at the failed
  // step); discard is DELETE /v1/dlq/{id} (docs/workflows.md).
  async function act(id, verb) {
    const p = '/dlq/' + encodeURIComponent(id);
    try {
      await (verb === 'retry' ? v1('POST', p + '/retry') : v1('DELETE', p));
      say(verb === 'retry' ? 'Retried.' : 'Discarded.');
    } catch (err) { say('Not done: ' + err.message); }
    load();
  }
  load();
}
