// One topic: its partitions (leader, replicas, in sync, offsets, bytes here) and a
// browser of its records by partition and offset; keys, values and headers shown as
// text (when UTF-8) or hex, always as text nodes.

import { el, fill, table, link, message, num, bytes } from './dom.js';
import * as api from './api.js';

function field(v, mode) {
  if (v === null || v === undefined) return el('span', { class: 'muted' }, 'null');
  const useHex = mode === 'hex' || v.text === null;
  const shown = useHex ? v.hex : v.text;
  return el('span', {}, shown,
    v.text === null && mode !== 'hex' ? el('span', { class: 'tag' }, 'binary, hex') : null,
    v.truncated ? el('span', { class: 'muted' }, ` … (${num(v.length)} bytes)`) : null);
}

export default function messages(root, topic) {
  const parts = el('div');
  const records = el('div', { id: 'records' });
  const partition = el('select', { id: 'msg-partition' });
  const offset = el('input', { id: 'msg-offset', class: 'num', type: 'number', min: 0, placeholder: 'latest' });
  const limit = el('select', { id: 'msg-limit' }, [20, 50, 100].map((n) => el('option', { value: n }, n)));
  const mode = el('select', { id: 'msg-mode' }, el('option', { value: 'text' }, 'text'), el('option', { value: 'hex' }, 'hex'));
  const load = el('button', { id: 'msg-load', type: 'submit', class: 'primary' }, 'Load');
  const next = el('button', { id: 'msg-next', type: 'button' }, 'Next page');
  const form = el('form', { class: 'inline' },
    el('label', {}, 'Partition', partition), el('label', {}, 'From offset', offset),
    el('label', {}, 'Records', limit), el('label', {}, 'Show as', mode), load, next);
  let page = null;
  let known = -1;

  function render() {
    if (!page) return;
    const rows = page.records.map((r) => [
      { text: r.offset, class: 'num' },
      new Date(r.timestamp_ms).toISOString(),
      el('span', { class: 'key' }, field(r.key, mode.value)),
      el('span', { class: 'value' }, field(r.value, mode.value)),
      el('span', { class: 'headers' }, r.headers.map((h) => el('span', { class: 'hdr' },
        el('span', { class: 'name' }, `${h.name}: `), field(h.value, mode.value)))),
    ]);
    const t = table([['Offset', 'num'], ['Time'], ['Key', 'data'], ['Value', 'data'], ['Headers', 'data']],
      rows, 'No records in this range.');
    t.id = 'records-table';
    fill(records, el('p', { class: 'muted' },
      `Partition ${page.partition}: offsets ${num(page.start_offset)} to ${num(page.end_offset)} (end, exclusive); `
      + `showing ${page.records.length} from ${num(page.offset)}.`), t);
  }

  async function fetchPage(from) {
    const q = new URLSearchParams({ partition: partition.value || '0', limit: limit.value });
    if (from !== '' && from !== null && from !== undefined) q.set('offset', from);
    try {
      page = await api.get(`${api.path('v1', 'topics', topic, 'messages')}?${q}`);
      render();
    } catch (e) {
      fill(records, message('error', `Could not read records: ${e.message}`));
    }
  }

  form.addEventListener('submit', (ev) => { ev.preventDefault(); fetchPage(offset.value); });
  next.addEventListener('click', () => { if (page) { offset.value = page.next_offset; fetchPage(page.next_offset); } });
  mode.addEventListener('change', render);
  fill(root, el('p', {}, link('← Topics', 'topics')), el('h1', {}, 'Topic ', el('code', { id: 'topic-title' }, topic)),
    el('h2', {}, 'Partitions'), parts, el('h2', {}, 'Messages'), form, records);

  return {
    async refresh() {
      const data = await api.get('/v1/topics');
      const t = data.topics.find((x) => x.name === topic);
      if (!t) {
        fill(parts, message('error', `No topic ${topic} (or not visible to you).`));
        return;
      }
      fill(parts, table([['Partition', 'num'], ['Leader', 'num'], ['Replicas'], ['In sync'],
        ['Start offset', 'num'], ['End offset', 'num'], ['Bytes here', 'num']],
      t.partitions.map((p) => [{ text: p.partition, class: 'num' },
        { text: p.leader === null ? 'none' : p.leader, class: p.leader === null ? 'bad num' : 'num' },
        p.replicas.join(', '),
        { text: p.in_sync.length ? p.in_sync.join(', ') : 'unknown', class: p.in_sync.length === 0 ? 'muted' : p.in_sync.length < p.replicas.length ? 'warn' : 'ok' },
        { text: num(p.start_offset), class: 'num' }, { text: num(p.end_offset), class: 'num' },
        { text: bytes(p.bytes_here), class: 'num' }])));
      if (known !== t.partitions.length) {
        known = t.partitions.length;
        const was = partition.value;
        fill(partition, t.partitions.map((p) => el('option', { value: p.partition }, p.partition)));
        if (was) partition.value = was;
        if (!page) await fetchPage(offset.value);
      }
    },
  };
}
