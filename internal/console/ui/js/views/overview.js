// overview.js: live counts. Lists are asked for one page each (at most
// 200), so a count past a page shows as "200+": the view stays fast
// however many records there are. Refreshed every 10 s and on approval
// events (at most once a second).
import { h, show, v1, query, stream, errorBox } from '../dom.js';

const page = 200;

async function count(path, params) {
  const r = await v1('GET', path + query({ ...params, limit: page }));
  const items = r.items || [];
  return { n: items.length, more: !!r.next, items };
}

const shown = (c) => (c.more ? c.n + '+' : String(c.n));

function card(label, value, href, note) {
  return h('a', { class: 'card', href },
    h('span', { class: 'card-value' }, value), h('span', { class: 'card-label' }, label),
    note ? h('span', { class: 'card-note' }, note) : null);
}

export function overview(root) {
  const cards = h('div', { class: 'cards', 'aria-live': 'polite' });
  const spend = h('div');
  show(root, h('h1', {}, 'Overview'), cards, h('h2', {}, 'Spend against budgets'), spend);
  let busy = false;
  async function refresh() {
    if (busy) return;
    busy = true;
    try {
      const [running, waiting, failed, pending, kills, audit] = await Promise.all([
        count('/tasks', { state: 'working' }),
        count('/tasks', { state: 'input-required' }),
        count('/tasks', { state: 'failed', since: '24h' }),
        count('/approvals', { state: 'pending' }),
        v1('GET', '/killswitches').catch(() => ({ items: [] })),
        v1('GET', '/audit' + query({ since: '1h', limit: 500 })).catch(() => ({ records: [] })),
      ]);
      // Calls are the audit records with a status: ok, error or refused.
      const calls = (audit.records || []).filter((r) => r.status);
      const errors = calls.filter((r) => r.status === 'error').length;
      const refused = calls.filter((r) => r.status === 'refused').length;
      const rate = calls.length ? Math.round((100 * errors) / calls.length) + '%' : '—';
      show(cards,
        card('Running tasks', shown(running), '#/tasks?state=working'),
        card('Waiting tasks', shown(waiting), '#/tasks?state=input-required'),
        card('Failed tasks, 24 h', shown(failed), '#/tasks?state=failed'),
        card('Pending approvals', shown(pending), '#/approvals'),
        card('Error rate, 1 h', rate, '#/audit?since=1h', `${calls.length} calls, ${refused} refused`),
        card('Kill switches on', String((kills.items || []).length), '#/agents'));
      const b = await v1('GET', '/budgets').catch(() => ({ items: [] }));
      show(spend, spendList(b.items || []));
    } catch (err) {
      show(cards, errorBox(err));
    } finally {
      busy = false;
    }
  }
  refresh();
  const timer = setInterval(refresh, 10000);
  let soon = null;
  const stopEvents = stream('/approvals/events', { approval: () => {
    if (!soon) soon = setTimeout(() => { soon = null; refresh(); }, 1000);
  } });
  return () => { clearInterval(timer); clearTimeout(soon); stopEvents(); };
}

// spendList shows each budget's use against its limit as a meter.
export function spendList(items) {
  if (!items.length) return h('p', { class: 'empty' }, 'No budgets are declared.');
  return h('ul', { class: 'meters' }, items.map((s) => {
    const used = s.used || {};
    const lim = s.limit || {};
    const pairs = [['cost', used.cost || 0, lim.cost], ['tokens', used.tokens || 0, lim.tokens], ['calls', used.calls || 0, lim.calls]]
      .filter(([, , l]) => l !== undefined && l !== null);
    return h('li', {}, h('span', { class: 'meter-name' }, s.budget + (s.key ? ' · ' + s.key : ''), ' (', s.window, ')'),
      pairs.map(([what, u, l]) => h('span', { class: 'meter' },
        h('meter', { min: 0, max: l || 1, value: Math.min(u, l || 1), 'aria-label': s.budget + ' ' + what }),
        ' ', what, ' ', fmt(u), ' of ', fmt(l))));
  }));
}

const fmt = (n) => (typeof n === 'number' && !Number.isInteger(n) ? n.toFixed(2) : String(n));
