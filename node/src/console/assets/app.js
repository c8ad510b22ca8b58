// The console's shell: hash routes, a poll of the active page, the token dialog, the
// confirmation dialog and the error banner.

import { el, fill } from './dom.js';
import * as api from './api.js';
import overview from './overview.js';
import topics from './topics.js';
import messages from './messages.js';
import { groups, group } from './groups.js';
import queues from './queues.js';

const POLL_MS = 2000;
const main = document.getElementById('main');
const banner = document.getElementById('banner');
let current = null; // { page, timer, generation }
let generation = 0;
let tokenAsked = false; // the token dialog opens by itself once, on the first 401

function route() {
  const parts = location.hash.replace(/^#\/?/, '').split('/').filter((p) => p !== '')
    .map((p) => { try { return decodeURIComponent(p); } catch { return p; } });
  switch (parts[0]) {
    case 'topics': return parts.length > 1 ? ['topics', messages, parts[1]] : ['topics', topics];
    case 'groups': return parts.length > 1 ? ['groups', group, parts[1]] : ['groups', groups];
    case 'queues': return ['queues', queues];
    default: return ['overview', overview];
  }
}

/** Show an error from the API: 401 asks for a token, 403 says what was refused. */
export function showError(e) {
  if (e instanceof api.ApiError && e.status === 401) {
    fill(banner, `Authentication needed (401): ${e.message}. `,
      el('button', { type: 'button', onclick: askToken }, 'Enter a token'));
    if (!tokenAsked && !api.token()) {
      tokenAsked = true;
      askToken();
    }
  } else if (e instanceof api.ApiError && e.status === 403) {
    fill(banner, `Not allowed (403): ${e.message}`);
  } else {
    fill(banner, String(e.message || e));
  }
  banner.className = 'banner error';
  banner.hidden = false;
}

function clearError() {
  banner.hidden = true;
  banner.replaceChildren();
}

async function tick(gen) {
  if (!current || current.generation !== gen) return;
  try {
    await current.page.refresh();
    if (current && current.generation === gen) clearError();
  } catch (e) {
    if (current && current.generation === gen) showError(e);
  }
  if (current && current.generation === gen) {
    current.timer = setTimeout(() => tick(gen), POLL_MS);
  }
}

function navigate() {
  if (current) {
    clearTimeout(current.timer);
    if (current.page.unmount) current.page.unmount();
  }
  const [name, view, arg] = route();
  for (const a of document.querySelectorAll('header nav a')) {
    a.classList.toggle('active', a.dataset.route === name);
  }
  generation += 1;
  main.replaceChildren();
  const ctx = { confirm, showError, refreshNow: () => tick(generation) };
  current = { page: view(main, arg, ctx), timer: null, generation };
  clearTimeout(current.timer);
  tick(generation);
}

/** Ask for confirmation; with `typed`, the user must type that text. Resolves true/false. */
export function confirm(title, text, typed) {
  const dialog = document.getElementById('confirm');
  const input = document.getElementById('confirm-input');
  const ok = document.getElementById('confirm-ok');
  fill(document.getElementById('confirm-title'), title);
  fill(document.getElementById('confirm-text'), text);
  document.getElementById('confirm-type-label').hidden = !typed;
  fill(document.getElementById('confirm-expected'), typed || '');
  input.value = '';
  ok.disabled = Boolean(typed);
  input.oninput = () => { ok.disabled = typed ? input.value !== typed : false; };
  return new Promise((resolve) => {
    dialog.onclose = () => resolve(dialog.returnValue === 'ok' && (!typed || input.value === typed));
    dialog.returnValue = '';
    dialog.showModal();
    if (typed) input.focus(); else ok.focus();
  });
}

function askToken() {
  const dialog = document.getElementById('token-dialog');
  if (dialog.open) return;
  const input = document.getElementById('token-input');
  input.value = api.token() || '';
  dialog.onclose = () => {
    if (dialog.returnValue === 'save') api.setToken(input.value.trim());
    if (dialog.returnValue === 'clear') api.setToken(null);
    if (dialog.returnValue) navigate();
  };
  dialog.returnValue = '';
  dialog.showModal();
}

document.getElementById('token-button').addEventListener('click', askToken);
window.addEventListener('hashchange', navigate);
navigate();
