// Overview: nodes (alive, Raft leaders of each), controller, and live charts of this
// node's produce/fetch throughput and latency (from /v1/stats, one sample per poll).

import { el, fill, table, num } from './dom.js';
import * as api from './api.js';
import { LineChart, rates, quantileMs } from './charts.js';

// Kept across visits of the page: the charts' history.
const throughput = new LineChart('Throughput (this node)', ['produced', 'fetched'],
  (v) => `${v < 10 ? v.toFixed(1) : Math.round(v)} rec/s`);
const latency = new LineChart('Latency (this node, per interval)',
  ['produce p50', 'produce p99', 'fetch p99'], (v) => `${v < 10 ? v.toFixed(2) : Math.round(v)} ms`);
let lastStats = null;

export default function overview(root) {
  const cards = el('div', { class: 'cards' });
  const nodes = el('div');
  const partitions = el('div');
  fill(root, el('h1', {}, 'Cluster overview'), cards,
    el('h2', {}, 'Nodes'), nodes,
    el('h2', {}, 'Live'), el('div', { class: 'charts' }, throughput.element, latency.element),
    el('h2', {}, 'Partitions (first 200)'), partitions);
  throughput.draw();
  latency.draw();
  return {
    async refresh() {
      const [cluster, stats, topics] = await Promise.all(
        [api.get('/v1/cluster'), api.get('/v1/stats'), api.get('/v1/topics')]);
      // Leaders as the leaders report them (the node's own view knows only its replicas).
      const all = topics.topics.flatMap((t) => t.partitions.map((p) => ({ topic: t.name, ...p })));
      fill(document.getElementById('node-label'), `node ${cluster.node_id}`);
      const leaders = new Map();
      let leaderless = 0;
      for (const p of all) {
        if (p.leader === null || p.leader === undefined) leaderless += 1;
        else leaders.set(p.leader, (leaders.get(p.leader) || 0) + 1);
      }
      const alive = cluster.nodes.filter((n) => n.alive).length;
      const card = (id, value, label, cls) => el('div', { class: 'card' },
        el('div', { class: `value ${cls || ''}`, id }, value), el('div', { class: 'label' }, label));
      fill(cards,
        card('nodes-count', `${cluster.nodes.length} nodes`, 'in the cluster'),
        card('nodes-alive', `${alive} alive`, 'heartbeats seen', alive === cluster.nodes.length ? 'ok' : 'bad'),
        card('controller', cluster.controller === null ? 'none' : `node ${cluster.controller}`, 'controller (metadata leader)'),
        card('partitions-count', num(all.length), 'partitions'),
        card('leaderless', num(leaderless), 'partitions without leader', leaderless ? 'bad' : 'ok'));
      fill(nodes, table(
        [['Node', 'num'], ['Client address'], ['Cluster address'], ['State'], ['Raft leaders', 'num'], ['Role']],
        cluster.nodes.map((n) => [
          { text: n.id, class: 'num' }, n.client_addr, n.cluster_addr,
          { text: n.alive ? 'alive' : 'down', class: n.alive ? 'ok' : 'bad' },
          { text: num(leaders.get(n.id) || 0), class: 'num' },
          n.id === cluster.controller ? 'controller' : ''])));
      fill(partitions, table(
        [['Topic'], ['Partition', 'num'], ['Leader', 'num'], ['Replicas'], ['In sync']],
        all.slice(0, 200).map((p) => [p.topic, { text: p.partition, class: 'num' },
          { text: p.leader === null ? 'none' : p.leader, class: p.leader === null ? 'bad num' : 'num' },
          p.replicas.join(', '),
          { text: p.in_sync.length ? p.in_sync.join(', ') : 'unknown', class: p.in_sync.length === 0 ? 'muted' : p.in_sync.length < p.replicas.length ? 'warn' : 'ok' }]),
        'No topics yet.'));
      if (lastStats && stats.time_ms > lastStats.time_ms) {
        throughput.push(stats.time_ms, rates(lastStats, stats, ['produce_records', 'fetch_records']));
        latency.push(stats.time_ms, [
          quantileMs(lastStats.produce_latency, stats.produce_latency, 0.5),
          quantileMs(lastStats.produce_latency, stats.produce_latency, 0.99),
          quantileMs(lastStats.fetch_latency, stats.fetch_latency, 0.99)]);
      }
      lastStats = stats;
      throughput.draw();
      latency.draw();
    },
  };
}
