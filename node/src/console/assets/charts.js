// Line charts drawn on a <canvas> (no library): a fixed window of the latest points,
// one line per series, y axis from 0 to the largest value shown.

const COLORS = ['#1f6feb', '#cf222e', '#1a7f37', '#9a6700'];
import { el, fill } from './dom.js';

export class LineChart {
  /** `series`: labels; `format`: value -> text for the axis and legend. */
  constructor(title, series, format, points = 90) {
    this.series = series;
    this.format = format;
    this.points = points;
    this.data = []; // [time_ms, [values]]
    this.canvas = el('canvas', { width: 560, height: 200 });
    this.legend = el('div', { class: 'legend' });
    this.element = el('div', { class: 'chart' }, el('div', {}, el('strong', {}, title)),
      this.canvas, this.legend);
  }

  push(time, values) {
    this.data.push([time, values]);
    if (this.data.length > this.points) this.data.shift();
  }

  draw() {
    const ctx = this.canvas.getContext('2d');
    const w = this.canvas.width;
    const h = this.canvas.height;
    const left = 64;
    const bottom = 20;
    ctx.clearRect(0, 0, w, h);
    ctx.font = '11px system-ui, sans-serif';
    let max = 0;
    for (const [, vs] of this.data) for (const v of vs) if (v !== null && isFinite(v)) max = Math.max(max, v);
    if (max === 0) max = 1;
    ctx.strokeStyle = '#d0d7de';
    ctx.fillStyle = '#656d76';
    ctx.lineWidth = 1;
    for (let i = 0; i <= 4; i += 1) {
      const y = 6 + ((h - bottom - 6) * i) / 4;
      ctx.beginPath();
      ctx.moveTo(left, y);
      ctx.lineTo(w, y);
      ctx.stroke();
      ctx.fillText(this.format(max * (1 - i / 4)), 2, y + 4);
    }
    if (this.data.length > 0) {
      const t0 = this.data[0][0];
      const t1 = Math.max(this.data[this.data.length - 1][0], t0 + 1);
      ctx.fillText(`${Math.round((t1 - t0) / 1000)} s`, left, h - 4);
      this.series.forEach((_, s) => {
        ctx.strokeStyle = COLORS[s % COLORS.length];
        ctx.lineWidth = 2;
        ctx.beginPath();
        let started = false;
        for (const [t, vs] of this.data) {
          const v = vs[s];
          if (v === null || v === undefined || !isFinite(v)) { started = false; continue; }
          const x = left + ((w - left) * (t - t0)) / (t1 - t0);
          const y = 6 + (h - bottom - 6) * (1 - v / max);
          if (started) ctx.lineTo(x, y); else ctx.moveTo(x, y);
          started = true;
        }
        ctx.stroke();
      });
    }
    const last = this.data.length ? this.data[this.data.length - 1][1] : [];
    fill(this.legend, this.series.map((label, s) => el('span', {},
      el('span', { class: `swatch c${s % COLORS.length}` }),
      `${label}: `, el('strong', { class: 'chart-value' }, last[s] === null || last[s] === undefined ? '–' : this.format(last[s])))));
  }
}

/** Rate per second of each counter between two samples (null when unknown or reset). */
export function rates(prev, cur, fields) {
  const dt = (cur.time_ms - prev.time_ms) / 1000;
  return fields.map((f) => {
    if (dt <= 0 || cur[f] === null || prev[f] === null || cur[f] === undefined) return null;
    const d = cur[f] - prev[f];
    return d < 0 ? null : d / dt;
  });
}

/** Quantile `q` (0..1) in milliseconds of the observations made between two samples of
 *  a histogram ({buckets: [[le, cumulative count]]}); null when none were made. */
export function quantileMs(prev, cur, q) {
  if (!cur || !cur.buckets) return null;
  const before = new Map(((prev && prev.buckets) || []).map(([le, c]) => [le, c]));
  const delta = cur.buckets.map(([le, c]) => [le === '+Inf' ? Infinity : Number(le), c - (before.get(le) || 0)]);
  const total = delta.length ? delta[delta.length - 1][1] : 0;
  if (total <= 0) return null;
  const rank = q * total;
  let lower = 0;
  let below = 0;
  for (const [le, c] of delta) {
    if (c >= rank) {
      if (!isFinite(le)) return lower * 1000;
      const inBucket = c - below;
      const frac = inBucket > 0 ? (rank - below) / inBucket : 1;
      return (lower + (le - lower) * frac) * 1000;
    }
    lower = isFinite(le) ? le : lower;
    below = c;
  }
  return lower * 1000;
}
