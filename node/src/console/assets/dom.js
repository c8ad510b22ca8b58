// DOM helpers. Every value is put in the page as text (createElement / textContent),
// never parsed as HTML: topic names, keys, values and headers are the writers' data.

/** An element with attributes (`class`, `on<event>` handlers, others as attributes)
 *  and children (nodes, or anything else as a text node). */
export function el(tag, attrs = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k === 'class') e.className = v;
    else if (k.startsWith('on') && typeof v === 'function') e.addEventListener(k.slice(2), v);
    else e.setAttribute(k, v === true ? '' : String(v));
  }
  append(e, children);
  return e;
}

function append(e, children) {
  for (const c of children.flat(Infinity)) {
    if (c === null || c === undefined || c === false) continue;
    e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
}

/** Replace the children of `e`. */
export function fill(e, ...children) {
  e.replaceChildren();
  append(e, children);
  return e;
}

/** A table: `columns` are [label, className?]; `rows` arrays of cells (nodes or text;
 *  a cell may be {text, class}). */
export function table(columns, rows, empty = 'Nothing yet.') {
  const head = el('tr', {}, columns.map(([label, cls]) => el('th', { class: cls }, label)));
  const body = rows.map((cells) =>
    el('tr', {}, cells.map((c, i) => {
      const cls = columns[i] && columns[i][1];
      if (c && typeof c === 'object' && !(c instanceof Node) && 'text' in c) {
        return el('td', { class: [cls, c.class].filter(Boolean).join(' ') }, c.text);
      }
      return el('td', { class: cls }, c);
    })));
  if (rows.length === 0) {
    body.push(el('tr', {}, el('td', { colspan: columns.length, class: 'muted' }, empty)));
  }
  return el('table', {}, el('thead', {}, head), el('tbody', {}, body));
}

/** A link inside the console (`#/a/b`), each segment encoded. */
export function link(text, ...segments) {
  return el('a', { href: '#/' + segments.map(encodeURIComponent).join('/') }, text);
}

/** A message box (kind: 'error' | 'success'). */
export function message(kind, text) {
  return el('div', { class: `message ${kind}`, role: kind === 'error' ? 'alert' : 'status' }, text);
}

export function num(n) {
  if (n === null || n === undefined) return '–';
  return Number(n).toLocaleString('en-US');
}

export function bytes(n) {
  if (n === null || n === undefined) return '–';
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let v = Number(n);
  let i = 0;
  while (v >= 1024 && i < units.length - 1) { v /= 1024; i += 1; }
  return `${i === 0 ? v : v.toFixed(1)} ${units[i]}`;
}

export function rate(n) {
  if (n === null || n === undefined || !isFinite(n)) return '–';
  return `${n < 10 ? n.toFixed(1) : Math.round(n).toLocaleString('en-US')} msg/s`;
}
