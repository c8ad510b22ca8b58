// Queues: depth, in flight, delayed, dead-lettered per queue (every partition, from
// its leader), its dead-letter queue; purge (type the name) and redrive of a
// dead-letter queue.

import { el, fill, table, message, num } from './dom.js';
import * as api from './api.js';

const DESCRIBED_MAX = 50;

export default function queues(root, _arg, ctx) {
  const list = el('div');
  const result = el('div');
  fill(root, el('h1', {}, 'Queues'), result, list);

  async function purge(name) {
    const ok = await ctx.confirm('Purge queue',
      `Drop every message of queue "${name}" not yet done, leased ones included?`, name);
    if (!ok) return;
    try {
      const r = await api.post(api.path('v1', 'queues', name, 'purge'), {});
      fill(result, message('success', `Purged ${num(r.purged)} messages from ${name}.`));
      ctx.refreshNow();
    } catch (e) {
      fill(result, message('error', `Could not purge: ${e.message}`));
    }
  }

  async function redrive(name) {
    const ok = await ctx.confirm('Redrive dead letters',
      `Move the dead letters of "${name}" back to the queues they came from (header neo-dlq-source)?`);
    if (!ok) return;
    try {
      const r = await api.post(api.path('v1', 'queues', name, 'redrive'), {});
      fill(result, message('success', `Moved ${num(r.moved)}, skipped ${num(r.skipped)}, failed ${num(r.failed)}.`));
      ctx.refreshNow();
    } catch (e) {
      fill(result, message('error', `Could not redrive: ${e.message}`));
    }
  }

  return {
    async refresh() {
      const data = await api.get('/v1/queues');
      const dlqs = new Set(data.queues.map((q) => q.dead_letter).filter(Boolean));
      const shown = data.queues.slice(0, DESCRIBED_MAX);
      const reports = await Promise.all(shown.map((q) =>
        api.get(api.path('v1', 'queues', q.name)).catch((e) => ({ error: e.message }))));
      const rows = shown.map((q, i) => {
        const r = reports[i];
        const t = r.totals || {};
        return [
          el('span', {}, q.name, dlqs.has(q.name) ? el('span', { class: 'tag' }, 'DLQ') : null),
          { text: q.partitions, class: 'num' },
          r.error ? { text: r.error, class: 'bad' } : { text: num(t.available), class: 'num' },
          { text: num(t.in_flight), class: 'num' },
          { text: num(t.delayed), class: 'num' },
          { text: num(t.dead_lettered), class: 'num' },
          { text: t.oldest_age_ms ? `${(t.oldest_age_ms / 1000).toFixed(1)} s` : '–', class: 'num' },
          q.dead_letter || '–',
          el('span', {},
            el('button', { type: 'button', class: 'danger', onclick: () => purge(q.name) }, 'Purge'), ' ',
            dlqs.has(q.name) ? el('button', { type: 'button', onclick: () => redrive(q.name) }, 'Redrive') : null),
        ];
      });
      const t = table([['Queue'], ['Partitions', 'num'], ['Depth (available)', 'num'], ['In flight', 'num'],
        ['Delayed', 'num'], ['Dead-lettered', 'num'], ['Oldest', 'num'], ['Dead-letter queue'], ['']],
      rows, 'No queues yet.');
      t.id = 'queues-table';
      fill(list, t, data.queues.length > DESCRIBED_MAX ? el('p', { class: 'muted' }, 'Only the first queues are shown.') : null);
    },
  };
}
