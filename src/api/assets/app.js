// RustSocks dashboard. Plain JavaScript, no build step. Every value that comes from
// the network is written with textContent, never parsed as HTML.
'use strict';

const REFRESH_MS = 2000;
const HISTORY_POINTS = 150; // 5 minutes of 2-second samples

// ---- small helpers ---------------------------------------------------------

function el(tag, props, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(props || {})) {
    if (k === 'text') e.textContent = v;
    else if (k === 'class') e.className = v;
    else if (k.startsWith('on')) e.addEventListener(k.slice(2), v);
    else e.setAttribute(k, v);
  }
  for (const c of children) e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  return e;
}

const fmtInt = (n) => (n == null ? '–' : Number(n).toLocaleString('en-US'));
function fmtBytes(n) {
  if (n == null) return '–';
  const units = ['B', 'KB', 'MB', 'GB', 'TB'];
  let i = 0;
  while (n >= 1000 && i < units.length - 1) { n /= 1000; i++; }
  return `${n.toFixed(i ? 1 : 0)} ${units[i]}`;
}
const fmtPct = (x) => (x == null ? '–' : `${(x * 100).toFixed(1)} %`);
function fmtDuration(ms) {
  if (ms == null) return '–';
  if (ms < 1000) return `${ms} ms`;
  const s = ms / 1000;
  return s < 60 ? `${s.toFixed(1)} s` : `${Math.floor(s / 60)} min ${Math.round(s % 60)} s`;
}
const fmtTime = (t) => (t ? new Date(t).toLocaleTimeString() : '–');

function card(label, value, unit, tip, id) {
  const v = el('span', { class: 'value', text: value });
  if (id) v.id = id;
  return el('div', { class: 'card', title: tip }, el('div', { class: 'label', text: label }), v, el('span', { class: 'unit', text: unit || '' }));
}

function table(columns, rows, opts = {}) {
  if (!rows.length) return el('div', { class: 'empty', text: opts.empty || 'Nothing to show yet.' });
  const head = el('tr');
  for (const c of columns) {
    const th = el('th', { class: (c.num ? 'num ' : '') + (opts.onSort ? 'sortable' : ''), title: c.tip || '', text: c.label });
    if (opts.onSort) th.addEventListener('click', () => opts.onSort(c.key));
    head.append(th);
  }
  const body = rows.map((r) => {
    const tr = el('tr');
    if (opts.rowId) tr.dataset.id = opts.rowId(r);
    for (const c of columns) {
      const v = c.render ? c.render(r) : r[c.key];
      tr.append(v instanceof Node ? el('td', { class: c.num ? 'num' : 'text' }, v) : el('td', { class: c.num ? 'num' : 'text', text: v == null ? '–' : String(v) }));
    }
    return tr;
  });
  return el('table', opts.id ? { id: opts.id } : {}, el('thead', {}, head), el('tbody', {}, ...body));
}

// ---- API access (the token stays in sessionStorage, out of URLs) -----------

let token = sessionStorage.getItem('rustsocks-token');
let asking = null;

function askToken() {
  if (asking) return asking;
  const form = document.getElementById('token-form');
  form.hidden = false;
  document.getElementById('token-input').focus();
  asking = new Promise((resolve) => {
    form.onsubmit = (ev) => {
      ev.preventDefault();
      token = document.getElementById('token-input').value;
      sessionStorage.setItem('rustsocks-token', token);
      form.hidden = true;
      asking = null;
      resolve();
    };
  });
  return asking;
}

async function api(path, options = {}) {
  for (let attempt = 0; attempt < 3; attempt++) {
    const headers = Object.assign({}, options.headers || {});
    if (token) headers.Authorization = `Bearer ${token}`;
    const res = await fetch(path, Object.assign({}, options, { headers }));
    if (res.status === 401) { await askToken(); continue; }
    const type = res.headers.get('content-type') || '';
    const body = type.includes('json') ? await res.json() : await res.text();
    if (!res.ok) throw new Error((body && body.message) || `${res.status} ${res.statusText}`);
    return body;
  }
  throw new Error('not authorised');
}

// Server-Sent Events read with fetch, so the token travels in a header.
async function stream(path, onEvent, signal) {
  const headers = token ? { Authorization: `Bearer ${token}` } : {};
  const res = await fetch(path, { headers, signal });
  if (res.status === 401) { await askToken(); return stream(path, onEvent, signal); }
  const reader = res.body.getReader();
  const decoder = new TextDecoder();
  let buf = '';
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buf += decoder.decode(value, { stream: true });
    let cut;
    while ((cut = buf.indexOf('\n\n')) >= 0) {
      const chunk = buf.slice(0, cut);
      buf = buf.slice(cut + 2);
      const data = chunk.split('\n').filter((l) => l.startsWith('data:')).map((l) => l.slice(5).trim()).join('\n');
      if (data) onEvent(JSON.parse(data));
    }
  }
}

// ---- metrics history for the charts ----------------------------------------

const samples = { t: [], conn: [], bytes: [] };
let lastCounters = null;

function metricValue(text, name) {
  let sum = 0;
  for (const line of text.split('\n')) {
    if (line.startsWith(name + ' ') || line.startsWith(name + '{')) sum += Number(line.slice(line.lastIndexOf(' ') + 1));
  }
  return sum;
}

async function sampleMetrics() {
  const text = await api('/metrics');
  const now = Date.now() / 1000;
  const c = { t: now, conn: metricValue(text, 'rustsocks_connections_accepted_total'), bytes: metricValue(text, 'rustsocks_relay_bytes_total') };
  if (lastCounters) {
    const dt = Math.max(now - lastCounters.t, 0.001);
    samples.t.push(now);
    samples.conn.push((c.conn - lastCounters.conn) / dt);
    samples.bytes.push((c.bytes - lastCounters.bytes) / dt);
    for (const k of ['t', 'conn', 'bytes']) if (samples[k].length > HISTORY_POINTS) samples[k].shift();
  }
  lastCounters = c;
}

function chart(title, series, unit) {
  const box = el('div', { class: 'card' }, el('div', { class: 'label', text: title }));
  const opts = {
    width: 540, height: 180, legend: { show: true },
    // Always the last five minutes, so a fresh page does not stretch one sample over years.
    scales: { x: { time: true, range: (u, min, max) => [max - HISTORY_POINTS * REFRESH_MS / 1000, max] } },
    series: [{}, { label: unit, stroke: '#2f6fde', width: 2 }], axes: [{}, { size: 70 }],
  };
  const plot = new uPlot(opts, [samples.t.slice(), series.slice()], box);
  return { box, update: () => plot.setData([samples.t.slice(), series.slice()]) };
}

// ---- pages ---------------------------------------------------------------------

const pages = {};
let refreshTimer = null;
let streamAbort = null;

pages.overview = async (main) => {
  const cards = el('div', { class: 'cards' });
  const charts = el('div', { class: 'charts' });
  const warnings = el('div');
  main.append(el('h2', { text: 'Now' }), cards, el('h2', { text: 'Last minutes' }), charts, el('h2', { text: 'Recent warnings' }), warnings);
  const c1 = chart('Connections accepted per second', samples.conn, 'conn/s');
  const c2 = chart('Bytes relayed per second (counted when a tunnel closes)', samples.bytes, 'bytes/s');
  charts.append(c1.box, c2.box);
  return async () => {
    await sampleMetrics();
    c1.update();
    c2.update();
    const [active, pool, events] = await Promise.all([
      api('/api/sessions/active?page_size=1').catch(() => null),
      api('/api/pool/stats'),
      api('/api/telemetry/events?severity=warning&limit=5'),
    ]);
    cards.replaceChildren(
      card('Active sessions', active ? fmtInt(active.total) : 'off', active ? 'tunnels' : '', 'Sessions relaying now (GET /api/sessions/active)', 'active-count'),
      pool.enabled
        ? card('Pool idle', `${fmtInt(pool.stats.total_idle)} / ${fmtInt(pool.config.max_total_idle)}`, 'connections', 'Idle pooled connections / server.pool.max_total_idle', 'pool-idle')
        : card('Pool', 'disabled', '', 'server.pool.enabled = false', 'pool-idle'),
      card('Pool reuse rate', pool.enabled ? fmtPct(pool.reuse_rate) : '–', '', 'reused / (reused + new): CONNECTs answered from the pool'),
      card('Pool hits', pool.enabled ? fmtInt(pool.stats.hits) : '–', '', 'Checkouts served by a pooled connection'),
      card('Pool misses', pool.enabled ? fmtInt(pool.stats.misses) : '–', '', 'Checkouts that had to dial'),
    );
    warnings.replaceChildren(table(
      [{ label: 'Time', render: (e) => fmtTime(e.timestamp) }, { label: 'Category', key: 'category' }, { label: 'Message', key: 'message' }],
      events.events,
      { empty: 'No warnings.' },
    ));
  };
};

let poolSort = 'destination';
pages.pool = async (main) => {
  const limits = el('div', { class: 'cards' });
  const holder = el('div');
  main.append(el('h2', { text: 'Limits and totals' }), limits, el('h2', { text: 'Per destination (click a column to sort)' }), holder);
  return async () => {
    const pool = await api('/api/pool/stats');
    const c = pool.config;
    limits.replaceChildren(
      card('Enabled', pool.enabled ? 'yes' : 'no', '', 'server.pool.enabled'),
      card('Max idle per destination', fmtInt(c.max_idle_per_dest), '', 'server.pool.max_idle_per_dest'),
      card('Max idle in total', fmtInt(c.max_total_idle), '', 'server.pool.max_total_idle'),
      card('Idle timeout', fmtInt(c.idle_timeout_secs), 's', 'server.pool.idle_timeout_secs'),
      card('Idle now', pool.enabled ? fmtInt(pool.stats.total_idle) : '–', 'connections', 'Idle pooled connections', 'pool-total-idle'),
    );
    if (!pool.enabled) { holder.replaceChildren(el('div', { class: 'empty', text: 'The pool is disabled (server.pool.enabled = false).' })); return; }
    const rows = pool.stats.per_destination.slice().sort((a, b) => (poolSort === 'destination' ? a.destination.localeCompare(b.destination) : (b[poolSort] || 0) - (a[poolSort] || 0)));
    const n = (key, label, tip) => ({ key, label, tip, num: true, render: (r) => fmtInt(r[key]) });
    holder.replaceChildren(table([
      { key: 'destination', label: 'Destination', tip: 'host:port as clients asked for it' },
      n('idle', 'Idle', 'Connections waiting for a client'), n('in_use', 'In use', 'Serving a client now'),
      n('created', 'Created', 'Connections dialled (by clients and refills)'), n('hits', 'Reused (hits)', 'CONNECTs answered from the pool'),
      n('misses', 'Misses', 'CONNECTs that had to dial'), n('dropped_full', 'Drops', 'Closed at max_idle_per_dest'),
      n('evicted', 'Evictions', 'Closed at max_total_idle (least recently used)'),
      { key: 'last_demand_secs_ago', label: 'Last activity', tip: 'Since the last CONNECT to it', num: true, render: (r) => (r.last_demand_secs_ago == null ? '–' : `${r.last_demand_secs_ago.toFixed(0)} s ago`) },
    ], rows, { id: 'pool-table', empty: 'No destination yet.', onSort: (k) => { poolSort = k; refresh(); } }));
  };
};

pages.telemetry = async (main) => {
  const sev = el('select', { id: 'sev' }, el('option', { value: '', text: 'any' }), ...['info', 'warning', 'error'].map((s) => el('option', { value: s, text: s })));
  const cat = el('select', { id: 'cat' }, el('option', { value: '', text: 'any' }), ...['connection_pool', 'upstream', 'auth', 'limits', 'config', 'sessions', 'access'].map((s) => el('option', { value: s, text: s })));
  const list = el('div');
  main.append(el('h2', { text: 'Events (live)' }), el('div', { class: 'filters' }, el('label', {}, 'Severity', sev), el('label', {}, 'Category', cat)), list);
  let events = [];
  const render = () => list.replaceChildren(table([
    { label: 'Time', render: (e) => fmtTime(e.timestamp) },
    { label: 'Severity', render: (e) => el('span', { class: `sev-${e.severity}`, text: e.severity }) },
    { label: 'Category', key: 'category' }, { label: 'Message', key: 'message' },
  ], events, { id: 'events-table', empty: 'No events match.' }));
  const restart = async () => {
    if (streamAbort) streamAbort.abort();
    streamAbort = new AbortController();
    const q = new URLSearchParams();
    if (sev.value) q.set('severity', sev.value);
    if (cat.value) q.set('category', cat.value);
    const initial = await api(`/api/telemetry/events?${q}&limit=100`);
    events = initial.events;
    render();
    stream(`/api/telemetry/stream?${q}`, (e) => { events.unshift(e); events = events.slice(0, 200); render(); }, streamAbort.signal).catch(() => {});
  };
  sev.addEventListener('change', restart);
  cat.addEventListener('change', restart);
  await restart();
  return null;
};

/** Buttons to the previous and next page and "page P of N (T noun)" for a paged
 *  list (`data` is the API's page); `go(n)` shows page n. */
function pager(holder, data, id, noun, [back, forward], go) {
  const last = Math.max(1, Math.ceil(data.total / data.page_size));
  holder.replaceChildren(
    el('button', { text: back, onclick: () => go(Math.max(1, data.page - 1)) }),
    el('span', { id, text: `page ${data.page} of ${last} (${fmtInt(data.total)} ${noun})` }),
    el('button', { text: forward, onclick: () => go(Math.min(last, data.page + 1)) }),
  );
  return last;
}

const PAGE_SIZE = 20;
let historyPage = 1;
let activePage = 1;
pages.sessions = async (main) => {
  const active = el('div');
  const activePager = el('div', { class: 'filters' });
  const f = { user: el('input', { id: 'f-user', placeholder: 'user' }), destination: el('input', { id: 'f-dest', placeholder: 'destination' }),
    status: el('select', { id: 'f-status' }, el('option', { value: '', text: 'any' }), ...['closed', 'failed', 'rejected', 'terminated'].map((s) => el('option', { value: s, text: s }))) };
  const history = el('div');
  const historyPager = el('div', { class: 'filters' });
  const apply = el('button', { text: 'Search', onclick: () => { historyPage = 1; refresh(); } });
  main.append(el('h2', { text: 'Active sessions' }), active, activePager, el('h2', { text: 'History' }),
    el('div', { class: 'filters' }, el('label', {}, 'User', f.user), el('label', {}, 'Destination', f.destination), el('label', {}, 'Status', f.status), apply), history, historyPager);
  // Ids are time-ordered (UUID v7): their start is the time, their end tells them apart.
  const link = (s) => el('a', { class: 'link', href: `#session/${s.id}`, title: s.id, text: s.id.slice(-12) });
  return async () => {
    const [act, hist] = await Promise.all([
      api(`/api/sessions/active?page=${activePage}&page_size=${PAGE_SIZE}`),
      api(`/api/sessions/history?${new URLSearchParams(Object.fromEntries(Object.entries({ user: f.user.value, destination: f.destination.value, status: f.status.value }).filter(([, v]) => v)))}&page=${historyPage}&page_size=${PAGE_SIZE}`),
    ]);
    active.replaceChildren(table([
      { label: 'Id', render: link }, { label: 'User', key: 'user' }, { label: 'Client', key: 'client' }, { label: 'Destination', key: 'destination' },
      { label: 'Command', key: 'command' }, { label: 'Duration', num: true, render: (s) => fmtDuration(s.duration_ms) },
      { label: 'Sent', tip: 'Bytes client → upstream', num: true, render: (s) => fmtBytes(s.bytes_client_to_upstream) },
      { label: 'Received', tip: 'Bytes upstream → client', num: true, render: (s) => fmtBytes(s.bytes_upstream_to_client) },
      { label: '', render: (s) => el('button', { class: 'danger', text: 'Terminate', onclick: async () => {
        if (!confirm(`Terminate session ${s.id} to ${s.destination}?`)) return;
        await api(`/api/sessions/${s.id}/terminate`, { method: 'POST' });
        refresh();
      } }) },
    ], act.sessions, { id: 'active-table', rowId: (s) => s.id, empty: act.total ? 'No active session on this page.' : 'No active session.' }));
    // Oldest first: later pages hold newer sessions. Sessions end while the page is
    // open; past the last page, the next refresh shows the last one.
    const lastActive = pager(activePager, act, 'active-page', 'active', ['‹ Older', 'Newer ›'], (n) => { activePage = n; refresh(); });
    activePage = Math.min(activePage, lastActive);
    history.replaceChildren(table([
      { label: 'Id', render: link }, { label: 'Started', render: (s) => fmtTime(s.started_at) }, { label: 'User', key: 'user' },
      { label: 'Client', key: 'client' }, { label: 'Destination', key: 'destination' }, { label: 'Status', key: 'status' },
      { label: 'Reason', key: 'close_reason' }, { label: 'Duration', num: true, render: (s) => fmtDuration(s.duration_ms) },
      { label: 'Bytes', tip: 'Both directions', num: true, render: (s) => fmtBytes(s.bytes_client_to_upstream + s.bytes_upstream_to_client) },
    ], hist.sessions, { id: 'history-table', rowId: (s) => s.id, empty: 'No recorded session matches.' }));
    pager(historyPager, hist, 'history-page', 'sessions', ['‹ Newer', 'Older ›'], (n) => { historyPage = n; refresh(); });
  };
};

// ---- access rules ------------------------------------------------------------

const ACL_COMMANDS = ['connect', 'bind', 'udp'];
const anyOf = (list) => (list == null ? 'any' : list.join(', '));
const actionCell = (action) => el('span', { class: `action-${action}`, text: action });

/** A definition list of [label, value] pairs; a value may be a Node. */
function details(id, pairs) {
  const dl = el('dl', { id });
  for (const [k, v] of pairs) dl.append(el('dt', { text: k }), v instanceof Node ? el('dd', {}, v) : el('dd', { text: v == null || v === '' ? '–' : String(v) }));
  return dl;
}

pages.acl = async (main) => {
  const summary = el('div', { class: 'cards' });
  const groups = el('div');
  const rules = el('div');

  // "Test a request": what the rules decide, without making the request.
  const t = {
    user: el('input', { id: 'acl-user', placeholder: 'none', autocomplete: 'off' }),
    client: el('input', { id: 'acl-client', value: '127.0.0.1', required: '', autocomplete: 'off' }),
    destination: el('input', { id: 'acl-destination', placeholder: 'host name or IP', required: '', autocomplete: 'off' }),
    port: el('input', { id: 'acl-port', type: 'number', min: '0', max: '65535', value: '443', required: '' }),
    command: el('select', { id: 'acl-command' }, ...ACL_COMMANDS.map((c) => el('option', { value: c, text: c }))),
  };
  const testResult = el('div', { id: 'acl-test-result' });
  const testForm = el('form', { id: 'acl-test-form', class: 'filters' },
    el('label', { title: 'The authenticated user; empty = no authentication' }, 'User', t.user),
    el('label', { title: "The client's IP address" }, 'Client', t.client),
    el('label', {}, 'Destination', t.destination),
    el('label', {}, 'Port', t.port),
    el('label', {}, 'Command', t.command),
    el('button', { type: 'submit', text: 'Test' }));
  testForm.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    const body = { client: t.client.value.trim(), destination: t.destination.value.trim(), port: Number(t.port.value), command: t.command.value };
    if (t.user.value) body.user = t.user.value;
    testResult.replaceChildren(el('p', { class: 'note', text: 'Testing…' }));
    try {
      const r = await api('/api/acl/test', { method: 'POST', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify(body) });
      testResult.replaceChildren(details('acl-test-details', [
        ['decision', el('span', { id: 'acl-decision', class: `action-${r.decision}`, text: r.decision })],
        ['by', r.by],
        ['rule', r.rule ? `${r.rule.origin}${r.rule.description ? ` (${r.rule.description})` : ''}` : null],
        ['reason', r.reason],
        ['addresses', r.addresses.length ? r.addresses.join(', ') : null],
        ['resolve error', r.resolve_error],
      ]));
    } catch (e) {
      testResult.replaceChildren(el('div', { class: 'error', id: 'acl-test-error', text: e.message }));
    }
  });

  // The tables are rebuilt only when the rules change (their load time), so that a
  // selection in them survives the refresh.
  let shown = null;

  // "Reload rules": as SIGHUP does; invalid rules change nothing.
  const reloadResult = el('div', { id: 'acl-reload-result' });
  const reloadButton = el('button', { id: 'acl-reload', text: 'Reload rules', title: 'POST /api/acl/reload: read [acl] and acl.file again' });
  reloadButton.addEventListener('click', async () => {
    reloadButton.disabled = true;
    try {
      const r = await api('/api/acl/reload', { method: 'POST' });
      reloadResult.replaceChildren(el('p', { class: 'ok', text: `Reloaded at ${fmtTime(r.loaded_at)}: ${fmtInt(r.rules)} rule(s), ${fmtInt(r.groups)} group(s)${r.file ? ` (with ${r.file})` : ''}; ${fmtInt(r.sessions_closed)} live session(s) now blocked were closed.` }));
      shown = null;
      await refresh();
    } catch (e) {
      reloadResult.replaceChildren(el('div', { class: 'error', text: `Not reloaded, the rules in force stay: ${e.message}` }));
    } finally {
      reloadButton.disabled = false;
    }
  });

  main.append(
    el('h2', { text: 'Access rules in force' }), summary,
    el('div', { class: 'filters actions' }, reloadButton), reloadResult,
    el('h2', { text: 'Rules (a matching block beats any allow; otherwise a matching allow; otherwise the default policy)' }), rules,
    el('h2', { text: 'Groups' }), groups,
    el('h2', { text: 'Test a request' }), testForm, testResult,
  );

  return async () => {
    const acl = await api('/api/acl');
    if (shown === acl.loaded_at) return;
    shown = acl.loaded_at;
    summary.replaceChildren(
      card('Default policy', acl.default_policy, '', 'acl.default_policy: what a request no rule matches gets', 'acl-default'),
      card('Private destinations', acl.block_private_destinations ? 'blocked' : 'allowed', acl.block_private_destinations_configured ? 'configured' : 'default',
        'acl.block_private_destinations (default: blocked unless the SOCKS listener is loopback-only)', 'acl-guard'),
      card('Rules', fmtInt(acl.rules.length), '', 'Main file first, then acl.file', 'acl-count'),
      card('Rules file', acl.file || 'none', '', 'acl.file', 'acl-file'),
      card('Loaded', fmtTime(acl.loaded_at), '', acl.loaded_at, 'acl-loaded'),
    );
    rules.replaceChildren(table([
      { label: '#', num: true, key: 'index' },
      { label: 'Origin', key: 'origin', tip: 'Where the rule is written' },
      { label: 'Action', render: (r) => actionCell(r.action) },
      { label: 'Users', render: (r) => anyOf(r.users) },
      { label: 'Groups', render: (r) => anyOf(r.groups) },
      { label: 'Clients', render: (r) => anyOf(r.clients) },
      { label: 'Destinations', render: (r) => anyOf(r.destinations) },
      { label: 'Ports', render: (r) => anyOf(r.ports) },
      { label: 'Commands', render: (r) => anyOf(r.commands) },
      { label: 'Description', key: 'description' },
    ], acl.rules, { id: 'acl-rules', rowId: (r) => r.index, empty: `No rules: every request gets the default policy (${acl.default_policy}).` }));
    groups.replaceChildren(table([
      { label: 'Name', key: 'name' },
      { label: 'Members', render: (g) => (g.members.length ? g.members.join(', ') : 'nobody') },
    ], acl.groups, { id: 'acl-groups', empty: 'No groups.' }));
  };
};

pages.session = async (main, id) => {
  const s = await api(`/api/sessions/${encodeURIComponent(id)}`);
  const dl = el('dl', { id: 'session-detail' });
  for (const [k, v] of Object.entries(s)) dl.append(el('dt', { text: k }), el('dd', { text: v == null ? '–' : String(v) }));
  main.append(el('h2', { text: `Session ${s.id}` }), dl, el('p', {}, el('a', { class: 'link', href: '#sessions', text: '← back to sessions' })));
  return null;
};

// ---- routing and refresh -----------------------------------------------------

let current = null;

async function refresh() {
  if (!current) return;
  try {
    await current();
    document.getElementById('status').textContent = `updated ${new Date().toLocaleTimeString()}`;
  } catch (e) {
    document.getElementById('status').textContent = `error: ${e.message}`;
  }
}

// The next refresh is scheduled when the last one has finished, never on a fixed
// clock: a slow answer (a large history) must not pile requests up on the server.
// The generation stops the loop of a page the user has left.
let refreshGeneration = 0;
function scheduleRefresh(gen) {
  refreshTimer = setTimeout(async () => {
    if (gen !== refreshGeneration) return;
    await refresh();
    if (gen === refreshGeneration) scheduleRefresh(gen);
  }, REFRESH_MS);
}

async function show() {
  const [name, arg] = (location.hash.slice(1) || 'overview').split('/');
  const page = pages[name] ? name : 'overview';
  for (const a of document.querySelectorAll('nav a')) a.classList.toggle('active', a.dataset.page === page || (page === 'session' && a.dataset.page === 'sessions'));
  refreshGeneration += 1;
  clearTimeout(refreshTimer);
  if (streamAbort) { streamAbort.abort(); streamAbort = null; }
  const main = document.getElementById('main');
  main.replaceChildren();
  main.dataset.page = page;
  try {
    current = await pages[page](main, arg);
    await refresh();
    if (current) scheduleRefresh(refreshGeneration);
    main.dataset.ready = 'yes';
  } catch (e) {
    main.append(el('div', { class: 'error', text: e.message }));
  }
}

window.addEventListener('hashchange', show);
// Ask for the token up front when the server needs one, instead of after a refused call.
fetch('/health')
  .then((r) => r.json())
  .then(async (h) => { if (h.auth_required && !token) await askToken(); })
  .catch(() => {})
  .then(show);
