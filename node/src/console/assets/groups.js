// Consumer groups: the list, and one group's members, assignment, committed offsets,
// lag (and its history while the page is open), and resetting its offsets.

import { el, fill, table, link, message, num } from './dom.js';
import * as api from './api.js';
import { LineChart } from './charts.js';

export function groups(root) {
  const list = el('div');
  fill(root, el('h1', {}, 'Consumer groups'), list);
  return {
    async refresh() {
      const data = await api.get('/v1/groups');
      const t = table([['Group'], ['State'], ['Members', 'num'], ['Epoch', 'num']],
        data.groups.map((g) => [link(g.name, 'groups', g.name), g.state,
          { text: g.members, class: 'num' }, { text: g.group_epoch, class: 'num' }]),
        'No consumer groups yet.');
      t.id = 'groups-table';
      fill(list, t);
    },
  };
}

// Group name -> lag chart, kept across visits.
const charts = new Map();

export function group(root, name, ctx) {
  if (!charts.has(name)) {
    charts.set(name, new LineChart('Total lag', ['lag'], (v) => `${Math.round(v)}`));
  }
  const chart = charts.get(name);
  const summary = el('p');
  const members = el('div');
  const offsets = el('div');
  const result = el('div');
  const topic = el('select', { id: 'reset-topic' });
  const to = el('select', { id: 'reset-to' }, ['earliest', 'latest', 'offset'].map((v) => el('option', { value: v }, v)));
  const offset = el('input', { id: 'reset-offset', class: 'num', type: 'number', min: 0, placeholder: 'offset' });
  const form = el('form', { class: 'inline' }, el('label', {}, 'Topic', topic), el('label', {}, 'Reset to', to),
    el('label', {}, 'Offset', offset), el('button', { type: 'submit', class: 'danger' }, 'Reset offsets'));
  form.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    const body = { topic: topic.value, to: to.value };
    if (to.value === 'offset') body.offset = Number(offset.value);
    const where = to.value === 'offset' ? `offset ${offset.value}` : to.value;
    const ok = await ctx.confirm('Reset offsets',
      `Move the committed offsets of group "${name}" on every partition of "${body.topic}" to ${where}? `
      + 'The group must have no members.', name);
    if (!ok) return;
    try {
      const r = await api.post(api.path('v1', 'groups', name, 'reset-offsets'), body);
      fill(result, message('success', `Offsets moved: ${r.offsets.map((o) => `${o.partition}→${o.offset}`).join(', ')}`));
      ctx.refreshNow();
    } catch (e) {
      fill(result, message('error', `Could not reset offsets: ${e.message}`));
    }
  });
  fill(root, el('p', {}, link('← Consumer groups', 'groups')), el('h1', {}, 'Group ', el('code', {}, name)),
    summary, el('h2', {}, 'Members and assignment'), members, el('h2', {}, 'Offsets and lag'),
    el('div', { class: 'charts' }, chart.element), offsets, el('h2', {}, 'Reset offsets'), form, result);
  chart.draw();
  let topicsShown = '';
  return {
    async refresh() {
      const g = await api.get(api.path('v1', 'groups', name));
      fill(summary, `State ${g.state}, epoch ${g.group_epoch}, coordinator node ${g.coordinator}.`);
      fill(members, table([['Member'], ['Client'], ['Host'], ['Epoch', 'num'], ['Assignment']],
        g.members.map((m) => [m.member_id, m.client_id, m.host, { text: m.member_epoch, class: 'num' },
          m.assignment.map((a) => `${a.topic}/${a.partition}`).join(', ')]), 'No members.'));
      fill(offsets, table([['Topic'], ['Partition', 'num'], ['Committed', 'num'], ['Log end', 'num'], ['Lag', 'num']],
        g.offsets.map((o) => [o.topic, { text: o.partition, class: 'num' }, { text: num(o.committed_offset), class: 'num' },
          { text: num(o.log_end_offset), class: 'num' }, { text: num(o.lag), class: 'num' }]), 'No offsets.'));
      const lag = g.offsets.reduce((a, o) => a + (o.lag || 0), 0);
      chart.push(Date.now(), [lag]);
      chart.draw();
      const names = [...new Set(g.offsets.map((o) => o.topic))];
      if (names.join('\n') !== topicsShown) {
        topicsShown = names.join('\n');
        fill(topic, names.map((t) => el('option', { value: t }, t)));
      }
    },
  };
}
