// agents.js: every agent with its tools, models, limits and placement, its
// running tasks, and its kill switch (admins turn it on and off, with a
// reason).
import { h, show, v1, query, pretty, badge, table, errorBox, say, time } from '../dom.js';

export function agents(root, params, me) {
  const list = h('div');
  const global = h('div');
  show(root, h('h1', {}, 'Agents'), global, list);
  async function load() {
    try {
      const [res, kills] = await Promise.all([v1('GET', '/resources/agents'), v1('GET', '/killswitches')]);
      const switches = kills.items || [];
      const all = switches.find((s) => s.all);
      show(global, all
        ? h('p', { class: 'error', role: 'alert' }, 'Every agent is stopped by the global kill switch: ', all.reason || 'no reason given', ' (', all.by, ', ', time(all.at), ')',
          me.role === 'admin' ? h('button', { type: 'button', onclick: () => unkill('/killswitches/all') }, 'Turn the global switch off') : null)
        : null);
      let items = res.items || [];
      if (params.agent) items = items.filter((a) => a.metadata.name === params.agent);
      if (!items.length) return show(list, h('p', { class: 'empty' }, 'No agents are declared.'));
      show(list, h('ul', { class: 'agents' }, items.map((a) => agent(a, switches.find((s) => s.agent === a.metadata.name), me))));
    } catch (err) {
      show(list, errorBox(err));
    }
  }
  async function unkill(path) {
    try { await v1('DELETE', path); say('Kill switch off.'); } catch (err) { say('Not done: ' + err.message); }
    load();
  }
  function agent(a, sw, me) {
    const name = a.metadata.name;
    const spec = a.spec || {};
    const running = h('div', {}, 'loading…');
    v1('GET', '/tasks' + query({ agent: name, state: 'working', limit: 20 })).then((r) => show(running,
      table('Running tasks of ' + name, [
        ['Task', (t) => h('a', { href: '#/tasks/' + encodeURIComponent(t.id) }, t.id)],
        ['State', (t) => badge(t.state)],
        ['Started', (t) => time(t.started || t.created)],
      ], r.items || [], 'No running tasks.'))).catch((err) => show(running, errorBox(err)));
    const reason = h('input', { name: 'reason', 'aria-label': 'Reason to stop ' + name, placeholder: 'reason', maxlength: 1000 });
    const controls = me.role !== 'admin' ? null : sw
      ? h('button', { type: 'button', onclick: () => unkill('/killswitches/agent/' + encodeURIComponent(name)) }, 'Unkill ' + name)
      : h('form', { class: 'inline', onsubmit: async (e) => {
        e.preventDefault();
        try {
          await v1('POST', '/killswitches', { agent: name, reason: reason.value });
          say(name + ' is stopped.');
        } catch (err) { say('Not done: ' + err.message); }
        load();
      } }, reason, h('button', { type: 'submit', class: 'danger' }, 'Kill ' + name));
    return h('li', { class: 'agent', 'data-agent': name },
      h('h2', {}, name, ' ', sw ? badge('killed') : badge(spec.model ? 'hosted' : 'external')),
      spec.description ? h('p', {}, spec.description) : null,
      sw ? h('p', { class: 'error' }, 'Stopped: ', sw.reason || 'no reason given', ' (', sw.by, ', ', time(sw.at), ')') : null,
      h('dl', { class: 'facts' },
        h('dt', {}, 'Tools'), h('dd', {}, (spec.tools || []).join(', ') || 'none'),
        h('dt', {}, 'Models'), h('dd', {}, [spec.model].concat(spec.models || []).filter(Boolean).filter((m, i, l) => l.indexOf(m) === i).join(', ') || 'none'),
        spec.limits ? [h('dt', {}, 'Limits'), h('dd', {}, h('pre', {}, pretty(spec.limits)))] : null,
        spec.placement ? [h('dt', {}, 'Placement'), h('dd', {}, pretty(spec.placement))] : null,
        spec.owners ? [h('dt', {}, 'Owners'), h('dd', {}, spec.owners.join(', '))] : null),
      h('h3', {}, 'Running tasks'), running, controls);
  }
  load();
  // Refresh unless someone is typing a reason: a redraw would lose it.
  const timer = setInterval(() => { if (!root.contains(document.activeElement) || document.activeElement.tagName !== 'INPUT') load(); }, 10000);
  return () => clearInterval(timer);
}
