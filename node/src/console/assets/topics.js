// Topics: create (form + confirmation), delete (type the name), and per topic its
// partitions, leaders, in-sync replicas, end offsets, bytes here and message rate
// (from the growth of the end offsets over the last seconds).

import { el, fill, table, link, message, num, bytes, rate } from './dom.js';
import * as api from './api.js';

const RATE_WINDOW_MS = 10000;
// Topic name -> [[time_ms, sum of end offsets]], kept across visits.
const history = new Map();

/** The message rate of a topic over the window, from its end offsets. */
export function observe(topic, now) {
  const ends = topic.partitions.map((p) => p.end_offset);
  if (ends.some((e) => e === null || e === undefined)) return null;
  const sum = ends.reduce((a, b) => a + b, 0);
  const h = history.get(topic.name) || [];
  h.push([now, sum]);
  while (h.length > 2 && now - h[1][0] >= RATE_WINDOW_MS) h.shift();
  history.set(topic.name, h);
  if (h.length < 2) return null;
  const [t0, s0] = h[0];
  const dt = (now - t0) / 1000;
  return dt > 0 && sum >= s0 ? (sum - s0) / dt : null;
}

export default function topics(root, _arg, ctx) {
  const result = el('div');
  const list = el('div');
  const name = el('input', { id: 'topic-name', name: 'name', required: true, maxlength: 249, placeholder: 'orders' });
  const partitions = el('input', { id: 'topic-partitions', class: 'num', type: 'number', min: 1, max: 1024, value: 3 });
  const rf = el('input', { id: 'topic-rf', class: 'num', type: 'number', min: 1, max: 7, value: 3 });
  const create = el('button', { id: 'topic-create', class: 'primary', type: 'submit' }, 'Create topic');
  const form = el('form', { class: 'inline', id: 'create-topic' },
    el('label', {}, 'Name', name), el('label', {}, 'Partitions', partitions),
    el('label', {}, 'Replication factor', rf), create);
  form.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    const body = { name: name.value, partitions: Number(partitions.value), replication_factor: Number(rf.value) };
    const ok = await ctx.confirm('Create topic',
      `Create topic "${body.name}" with ${body.partitions} partitions, ${body.replication_factor} replicas each?`);
    if (!ok) return;
    create.disabled = true;
    fill(result, message('success', `Creating ${body.name}…`));
    try {
      await api.post('/v1/topics', body);
      fill(result, message('success', `Topic ${body.name} created.`));
      name.value = '';
      ctx.refreshNow();
    } catch (e) {
      fill(result, message('error', `Could not create topic "${body.name}": ${e.message}`));
      if (e.status === 401 || e.status === 403) ctx.showError(e);
    } finally {
      create.disabled = false;
    }
  });
  fill(root, el('h1', {}, 'Topics'), form, result, list);

  async function remove(topicName) {
    const ok = await ctx.confirm('Delete topic',
      `Delete topic "${topicName}" and all its data? This cannot be undone.`, topicName);
    if (!ok) return;
    try {
      await api.post(api.path('v1', 'topics', topicName, 'delete'), {});
      fill(result, message('success', `Topic ${topicName} deleted.`));
      ctx.refreshNow();
    } catch (e) {
      fill(result, message('error', `Could not delete topic: ${e.message}`));
    }
  }

  return {
    async refresh() {
      const data = await api.get('/v1/topics');
      const now = Date.now();
      const rows = data.topics.map((t) => {
        const ends = t.partitions.map((p) => p.end_offset);
        const total = ends.every((e) => e !== null) ? ends.reduce((a, b) => a + b, 0) : null;
        const underReplicated = t.partitions.filter((p) => p.in_sync.length > 0 && p.in_sync.length < p.replicas.length).length;
        const unknown = t.partitions.filter((p) => p.in_sync.length === 0).length;
        const leaderless = t.partitions.filter((p) => p.leader === null).length;
        const here = t.partitions.map((p) => p.bytes_here).filter((b) => b !== null);
        const r = observe(t, now);
        return [
          el('span', {}, link(t.name, 'topics', t.name), t.queue ? el('span', { class: 'tag' }, 'queue') : null),
          { text: t.partitions.length, class: 'num' },
          t.partitions.map((p) => `${p.partition}→${p.leader === null ? 'none' : p.leader}`).join(' '),
          t.partitions.length ? `${t.partitions[0].replicas.length}` : '–',
          underReplicated ? { text: `${underReplicated} under-replicated`, class: 'warn' }
            : unknown ? { text: `${unknown} unknown`, class: 'muted' } : { text: 'all in sync', class: 'ok' },
          { text: num(total), class: 'num end-offsets' },
          { text: here.length ? bytes(here.reduce((a, b) => a + b, 0)) : '–', class: 'num' },
          { text: rate(r), class: 'num rate' },
          leaderless ? { text: `${leaderless} leaderless`, class: 'bad' } : '',
          el('button', { type: 'button', class: 'danger', 'data-topic': t.name, onclick: () => remove(t.name) }, 'Delete'),
        ];
      });
      const t = table([['Topic'], ['Partitions', 'num'], ['Leaders (partition→node)'], ['Replicas', 'num'],
        ['In sync'], ['End offsets (sum)', 'num'], ['Size here', 'num'], ['Rate', 'num'], [''], ['']],
      rows, 'No topics yet: create one above.');
      t.id = 'topics-table';
      fill(list, t, data.truncated ? el('p', { class: 'muted' }, 'Only the first topics are listed.') : null);
    },
  };
}
