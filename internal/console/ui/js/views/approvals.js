// approvals.js: the queue (live, over the approvals event stream) and one
// approval with the exact action, its arguments, the policy's reasons,
// who has decided, and the buttons to decide it.
import { h, show, v1, stream, time, pretty, field, badge, errorBox, say } from '../dom.js';

// mayDecide: approvals are decided by people (a human's key or a trusted
// Issuer's token), never by the admin token, and never by viewers.
const mayDecide = (me) => me.role !== 'viewer' && me.kind !== 'admin-token';

// inGroups: the approval names no approver groups, or one of the person's.
const inGroups = (a, me) => !(a.approvers || []).length || a.approvers.some((g) => (me.groups || []).includes(g));

export function approvals(root, params, me) {
  const order = h('select', { name: 'order' },
    h('option', { value: 'newest', selected: params.order !== 'expiring' }, 'newest first'),
    h('option', { value: 'expiring', selected: params.order === 'expiring' }, 'expiring soon first'));
  const mine = h('input', { type: 'checkbox', name: 'mine', checked: params.mine === '1' });
  const list = h('div', { 'aria-live': 'polite' });
  const recent = h('div');
  show(root, h('h1', {}, 'Approvals'), h('div', { class: 'filters' }, field('Order', order),
    mayDecide(me) ? h('label', { class: 'check' }, mine, ' Only those I can decide') : null),
  h('h2', {}, 'Pending'), list, h('h2', {}, 'Decided lately'), recent);
  const pending = new Map();
  const draw = () => {
    const items = [...pending.values()].filter((a) => !mine.checked || inGroups(a, me)).sort(order.value === 'expiring'
      ? (a, b) => new Date(a.expires) - new Date(b.expires)
      : (a, b) => new Date(b.created) - new Date(a.created));
    show(list, items.length ? h('ul', { class: 'queue' }, items.map((a) => item(a, me))) : h('p', { class: 'empty' }, 'No approval is pending.'));
  };
  order.addEventListener('change', draw);
  mine.addEventListener('change', draw);
  draw();
  const loadRecent = () => v1('GET', '/approvals?limit=20').then((r) =>
    show(recent, h('ul', { class: 'queue' }, (r.items || []).filter((a) => a.state !== 'pending').map((a) => item(a, me)))))
    .catch((err) => show(recent, errorBox(err)));
  loadRecent();
  // The stream sends every pending approval first, then every change.
  return stream('/approvals/events', { approval: (a) => {
    if (a.state === 'pending') pending.set(a.id, a);
    else if (pending.delete(a.id)) loadRecent();
    draw();
  } });
}

function item(a, me) {
  const act = a.action || {};
  const yes = (a.decisions || []).filter((d) => d.decision === 'approve').length;
  return h('li', { class: 'card-row' },
    h('a', { href: '#/approvals/' + encodeURIComponent(a.id), class: 'row-title' }, act.kind === 'agent' ? 'call agent ' + act.target : act.target || a.id),
    ' ', badge(a.state),
    a.state === 'pending' && mayDecide(me) && inGroups(a, me) ? [' ', badge('yours to decide')] : null,
    h('div', { class: 'row-meta' }, 'agent ', act.agent || '', ' · ', yes, ' of ', a.quorum || 1, ' approvals · expires ', time(a.expires)),
    (a.reasons || []).length ? h('div', { class: 'row-meta' }, a.reasons.join('; ')) : null);
}

export function approvalView(root, id, me) {
  const body = h('div');
  show(root, h('p', {}, h('a', { href: '#/approvals' }, '← Approvals')), body);
  async function load() {
    try {
      draw(await v1('GET', '/approvals/' + encodeURIComponent(id)));
    } catch (err) {
      show(body, errorBox(err));
    }
  }
  function draw(a) {
    const act = a.action || {};
    const decisions = a.decisions || [];
    const yes = decisions.filter((d) => d.decision === 'approve').length;
    const comment = h('textarea', { name: 'comment', rows: 2, maxlength: 1000 });
    const decide = (verdict) => async () => {
      try {
        draw(await v1('POST', '/approvals/' + encodeURIComponent(a.id) + '/' + verdict, { comment: comment.value }));
        say(verdict === 'approve' ? 'Approved.' : 'Denied.');
      } catch (err) {
        say('Not decided: ' + err.message);
      }
    };
    show(body,
      h('h1', {}, 'Approval ', h('code', {}, a.id)),
      h('p', {}, badge(a.state), ' ', h('span', { 'data-testid': 'quorum' }, `${yes} of ${a.quorum || 1} approvals`),
        h('progress', { max: a.quorum || 1, value: yes, 'aria-label': 'Quorum progress' })),
      h('dl', { class: 'facts' },
        h('dt', {}, 'Action'), h('dd', {}, act.kind || '', ' ', h('code', {}, act.target || '')),
        h('dt', {}, 'Agent'), h('dd', {}, act.agent || ''),
        act.task ? [h('dt', {}, 'Task'), h('dd', {}, h('a', { href: '#/tasks/' + encodeURIComponent(act.task) }, act.task))] : null,
        act.principal ? [h('dt', {}, 'On behalf of'), h('dd', {}, act.principal)] : null,
        h('dt', {}, 'Arguments (redacted)'), h('dd', {}, h('pre', { 'data-testid': 'arguments' }, pretty(act.arguments))),
        h('dt', {}, 'Policy reasons'), h('dd', {}, h('ul', {}, (a.reasons || []).map((r) => h('li', {}, r)))),
        h('dt', {}, 'Approvers'), h('dd', {}, (a.approvers || []).join(', ') || 'any person'),
        h('dt', {}, 'Requested'), h('dd', {}, time(a.created), ' by ', a.requester || ''),
        h('dt', {}, 'Expires'), h('dd', {}, time(a.expires))),
      h('h2', {}, 'Decisions'),
      decisions.length ? h('ul', {}, decisions.map((d) => h('li', {}, d.name || d.by, ' ', badge(d.decision), ' ', time(d.at),
        d.comment ? [': ', h('q', {}, d.comment)] : '', d.via ? ` (via ${d.via})` : ''))) : h('p', { class: 'empty' }, 'Nobody has decided yet.'),
      a.state === 'pending' && mayDecide(me) && inGroups(a, me) ? h('form', { class: 'decide', onsubmit: (e) => e.preventDefault() },
        field('Comment (optional)', comment),
        h('div', { class: 'buttons' },
          h('button', { type: 'button', class: 'approve', onclick: decide('approve') }, 'Approve'),
          h('button', { type: 'button', class: 'danger', onclick: decide('deny') }, 'Deny'))) : null,
      a.state === 'pending' && !(mayDecide(me) && inGroups(a, me)) ? h('p', { class: 'note' }, me.role === 'viewer'
        ? 'Viewers read approvals; they do not decide them.'
        : !mayDecide(me) ? 'Approvals are decided by people: sign in with your own key to decide.'
          : 'Only people in ' + a.approvers.join(', ') + ' decide this approval.') : null);
  }
  load();
  return stream('/approvals/events', { approval: (a) => { if (a.id === id) draw(a); } });
}
