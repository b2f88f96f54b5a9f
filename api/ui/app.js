// Profusion's web UI: a client of the public APIs only (the querier API over Connect JSON,
// `/pyroscope/render` and `/api/v1/sql`), so what it shows is what any client gets. The whole
// view lives in the URL, so a link reproduces it. With access control on, the browser's Basic
// credentials (asked for by the server's 401) go with every call; with multi-tenancy on and
// no token, the tenant field is sent as X-Scope-OrgID.

import { FlameGraph, functionTotals, formatValue } from './flamegraph.js';
import { Timeline, seriesColor } from './timeline.js';

const $ = (id) => document.getElementById(id);
const MAX_NODES = 16384;
const TABLE_ROWS = 1000;

// ---- state and the URL ---------------------------------------------------------------------

const defaults = {
  view: 'single', query: '', from: 'now-1h', until: 'now', search: '',
  leftQuery: '', leftFrom: '', leftUntil: '', rightQuery: '', rightFrom: '', rightUntil: '',
  label: '', sql: '', sort: 'self', tenant: '', zoom: '',
};
const state = { ...defaults };

function readURL() {
  const params = new URLSearchParams(window.location.search);
  for (const key of Object.keys(defaults)) {
    if (params.has(key)) state[key] = params.get(key);
  }
  if (!state.tenant) state.tenant = localStorage.getItem('profusion.tenant') || '';
}

function writeURL() {
  const params = new URLSearchParams();
  for (const [key, value] of Object.entries(state)) {
    if (value && value !== defaults[key]) params.set(key, value);
  }
  history.replaceState(null, '', `${window.location.pathname}?${params}`);
}

/// `profile_type{matchers}` split in its profile type, its service and its other matchers.
function splitQuery(query) {
  const brace = query.indexOf('{');
  const profileType = brace < 0 ? query : query.slice(0, brace);
  let matchers = brace < 0 ? '' : query.slice(brace + 1, query.lastIndexOf('}'));
  let service = '';
  matchers = matchers.replace(/(^|,)\s*service_name\s*=\s*"((?:[^"\\]|\\.)*)"\s*/, (_, sep, value) => {
    service = value;
    return sep;
  }).replace(/^\s*,|,\s*$/g, '').trim();
  return { profileType, service, matchers };
}

function selectorOf(service, matchers) {
  const parts = [];
  if (service) parts.push(`service_name="${service}"`);
  const extra = matchers.trim().replace(/^\{|\}$/g, '').trim();
  if (extra) parts.push(extra);
  return `{${parts.join(', ')}}`;
}

function currentSelector() {
  return selectorOf($('service').value, $('selector').value);
}

function unitOf(profileType) {
  return (profileType.split(':')[2] || '').toLowerCase();
}

/// `now`, `now-15m`, Unix seconds or milliseconds, or a date: milliseconds.
function parseTime(text, now = Date.now()) {
  const t = String(text).trim();
  const rel = t.match(/^now(?:-(\d+(?:\.\d+)?)([smhdw]))?$/);
  if (rel) {
    const unit = { s: 1e3, m: 6e4, h: 36e5, d: 864e5, w: 6048e5 }[rel[2]] || 0;
    return Math.round(now - (rel[1] ? Number(rel[1]) * unit : 0));
  }
  if (/^\d+$/.test(t)) return t.length <= 10 ? Number(t) * 1000 : Number(t);
  const parsed = Date.parse(t);
  if (Number.isNaN(parsed)) throw new Error(`not a time: ${JSON.stringify(t)} (try now-1h, Unix seconds or a date)`);
  return parsed;
}

function range(fromText, untilText) {
  const now = Date.now();
  const from = parseTime(fromText, now);
  const until = parseTime(untilText, now);
  if (until <= from) throw new Error('the range ends before it starts');
  return [from, until];
}

// ---- the API ---------------------------------------------------------------------------------

function headers(extra = {}) {
  const h = { ...extra };
  if (state.tenant) h['X-Scope-OrgID'] = state.tenant;
  return h;
}

async function failure(response) {
  const text = await response.text();
  try {
    const body = JSON.parse(text);
    if (body.message) return new Error(`${body.code || response.status}: ${body.message}`);
  } catch (_) { /* not JSON */ }
  return new Error(`${response.status}: ${text.trim()}`);
}

async function rpc(method, body, service = 'querier.v1.QuerierService') {
  const response = await fetch(`${service}/${method}`, {
    method: 'POST',
    headers: headers({ 'Content-Type': 'application/json' }),
    body: JSON.stringify(body),
    credentials: 'same-origin',
  });
  if (!response.ok) throw await failure(response);
  return response.json();
}

async function sql(query) {
  const response = await fetch('api/v1/sql', {
    method: 'POST',
    headers: headers({ 'Content-Type': 'text/plain', Accept: 'application/json' }),
    body: query,
    credentials: 'same-origin',
  });
  if (!response.ok) throw await failure(response);
  return response.json();
}

/// Protobuf of a SelectMergeProfileRequest, for the pprof export (the answer is the pprof
/// itself, so the request is the only message built here).
function selectMergeProfileProto(profileType, selector, start, end) {
  const out = [];
  const varint = (n) => {
    let v = BigInt(n);
    do {
      let byte = Number(v & 0x7fn);
      v >>= 7n;
      if (v) byte |= 0x80;
      out.push(byte);
    } while (v);
  };
  const string = (field, text) => {
    const bytes = new TextEncoder().encode(text);
    out.push((field << 3) | 2);
    varint(bytes.length);
    out.push(...bytes);
  };
  string(1, profileType);
  string(2, selector);
  out.push(3 << 3);
  varint(start);
  out.push(4 << 3);
  varint(end);
  out.push(5 << 3);
  varint(MAX_NODES);
  return new Uint8Array(out);
}

// ---- status ----------------------------------------------------------------------------------

function busy(promise) {
  document.body.dataset.state = 'loading';
  $('error').hidden = true;
  return promise.then(
    (v) => { document.body.dataset.state = 'ready'; return v; },
    (e) => {
      $('error').textContent = e.message;
      $('error').hidden = false;
      document.body.dataset.state = 'error';
    },
  );
}

function download(blob, name) {
  const a = document.createElement('a');
  a.href = URL.createObjectURL(blob);
  a.download = name;
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(a.href), 10_000);
}

// ---- pickers ---------------------------------------------------------------------------------

function fill(select, values, chosen, label = (v) => v) {
  select.replaceChildren(...values.map((v) => {
    const option = document.createElement('option');
    option.value = v;
    option.textContent = label(v);
    return option;
  }));
  if (values.includes(chosen)) select.value = chosen;
}

async function loadPickers() {
  const [start, end] = range(state.from, state.until);
  const { profileType, service } = splitQuery(state.query);
  const types = (await rpc('ProfileTypes', { start, end })).profileTypes || [];
  const ids = types.map((t) => t.ID).sort();
  fill($('profile-type'), ids, profileType || ids.find((id) => id.startsWith('process_cpu:cpu')) || ids[0]);
  const services = (await rpc('LabelValues', { name: 'service_name', start, end })).names || [];
  fill($('service'), ['', ...services], service || services[0] || '', (v) => v || '(all)');
}

const labelCache = new Map();

async function labelNames() {
  const [start, end] = range(state.from, state.until);
  const key = `names ${start}`;
  if (!labelCache.has(key)) {
    labelCache.set(key, rpc('LabelNames', { start, end }).then((r) => (r.names || []).filter((n) => !n.startsWith('__'))));
  }
  return labelCache.get(key);
}

async function labelValues(name) {
  const [start, end] = range(state.from, state.until);
  const key = `values ${name} ${start}`;
  if (!labelCache.has(key)) {
    labelCache.set(key, rpc('LabelValues', { name, start, end }).then((r) => r.names || []));
  }
  return labelCache.get(key);
}

/// Suggestions for the label input: label names, then the values of the label being typed,
/// each as the whole input completed.
async function suggest(input) {
  const text = input.value;
  const done = text.slice(0, Math.max(text.lastIndexOf(','), -1) + 1);
  const current = text.slice(done.length).replace(/^[\s{]+/, '');
  const sep = done ? `${done} ` : '';
  const m = current.match(/^([A-Za-z_][\w.]*)\s*(=~|!=|!~|=)\s*"?([^"]*)$/);
  let options;
  try {
    if (m) {
      const values = await labelValues(m[1]);
      options = values.map((v) => `${sep}${m[1]}${m[2]}"${v}"`);
    } else {
      const names = await labelNames();
      options = names.map((n) => `${sep}${n}="`);
    }
  } catch (_) {
    options = [];
  }
  $('selector-suggestions').replaceChildren(...options.slice(0, 200).map((v) => {
    const o = document.createElement('option');
    o.value = v;
    return o;
  }));
}

// ---- the flame-graph view ----------------------------------------------------------------------

let flamegraph;
let diffGraph;
let timeline;
let tagTimeline;
let totals = [];

function renderTable() {
  const filter = $('table-filter').value.toLowerCase();
  const key = state.sort;
  const rows = totals
    .filter((t) => !filter || t.name.toLowerCase().includes(filter))
    .sort((a, b) => (key === 'name' ? a.name.localeCompare(b.name) : b[key] - a[key] || a.name.localeCompare(b.name)));
  const unit = unitOf($('profile-type').value);
  const body = $('top-table').tBodies[0];
  body.replaceChildren(...rows.slice(0, TABLE_ROWS).map((t) => {
    const tr = document.createElement('tr');
    tr.tabIndex = 0;
    tr.dataset.name = t.name;
    const name = document.createElement('th');
    name.scope = 'row';
    name.textContent = t.name;
    tr.append(name);
    for (const field of ['self', 'total']) {
      const td = document.createElement('td');
      td.dataset.value = String(t[field]);
      td.textContent = formatValue(t[field], unit);
      tr.append(td);
    }
    const pick = () => { $('search').value = t.name; onSearch(); };
    tr.addEventListener('click', pick);
    tr.addEventListener('keydown', (e) => { if (e.key === 'Enter') pick(); });
    return tr;
  }));
  for (const th of $('top-table').tHead.rows[0].cells) {
    const field = th.querySelector('button').dataset.sort;
    th.setAttribute('aria-sort', field === key ? (key === 'name' ? 'ascending' : 'descending') : 'none');
  }
}

function onSearch() {
  state.search = $('search').value;
  flamegraph.setSearch(state.search);
  writeURL();
}

async function renderSingle() {
  const [start, end] = range(state.from, state.until);
  const profileType = $('profile-type').value;
  if (!profileType) throw new Error('no profiles in this range');
  const selector = currentSelector();
  state.query = `${profileType}${selector}`;
  writeURL();
  const step = Math.max(1, (end - start) / 1000 / 240);
  const [series, merged] = await Promise.all([
    rpc('SelectSeries', { profileTypeID: profileType, labelSelector: selector, start, end, step }),
    rpc('SelectMergeStacktraces', { profileTypeID: profileType, labelSelector: selector, start, end, maxNodes: MAX_NODES }),
  ]);
  const points = (series.series || []).flatMap((s) => s.points || []).map((p) => [Number(p.timestamp), Number(p.value)]);
  timeline.setData([{ label: 'total', points }], [start, end]);
  const unit = unitOf(profileType);
  const fg = merged.flamegraph || { names: [], levels: [] };
  flamegraph.setData(fg, unit);
  flamegraph.setSearch(state.search);
  const zoomed = state.zoom && flamegraph.findPath(state.zoom);
  if (zoomed) flamegraph.zoomTo(zoomed);
  $('timeline-caption').textContent = `${selector} · total ${formatValue(Number(fg.total || 0), unit)}`;
  totals = functionTotals(flamegraph.rows);
  renderTable();
}

// ---- comparison ----------------------------------------------------------------------------------

function defaultHalves() {
  const [start, end] = range(state.from, state.until);
  const mid = Math.round((start + end) / 2);
  return { left: [String(start), String(mid)], right: [String(mid), String(end)] };
}

async function renderDiff() {
  const profileType = $('profile-type').value;
  const halves = defaultHalves();
  const side = (prefix, fallback) => {
    const selector = $(`${prefix}-selector`).value || currentSelector();
    $(`${prefix}-selector`).value = selector;
    const from = $(`${prefix}-from`).value || fallback[0];
    const until = $(`${prefix}-until`).value || fallback[1];
    $(`${prefix}-from`).value = from;
    $(`${prefix}-until`).value = until;
    const [start, end] = range(from, until);
    return { selector, from, until, request: { profileTypeID: profileType, labelSelector: selector, start, end, maxNodes: MAX_NODES } };
  };
  const left = side('left', halves.left);
  const right = side('right', halves.right);
  Object.assign(state, {
    leftQuery: left.selector, leftFrom: left.from, leftUntil: left.until,
    rightQuery: right.selector, rightFrom: right.from, rightUntil: right.until,
  });
  writeURL();
  const diff = await rpc('Diff', { left: left.request, right: right.request });
  diffGraph.setData(diff.flamegraph || { names: [], levels: [] }, unitOf(profileType));
}

// ---- tag explorer ----------------------------------------------------------------------------------

async function renderTags() {
  const [start, end] = range(state.from, state.until);
  const names = await labelNames();
  fill($('tag-label'), names, state.label || (names.includes('env') ? 'env' : names[0]));
  const label = $('tag-label').value;
  state.label = label;
  writeURL();
  if (!label) throw new Error('no labels to break down by in this range');
  const profileType = $('profile-type').value;
  const unit = unitOf(profileType);
  const step = Math.max(1, (end - start) / 1000 / 240);
  const response = await rpc('SelectSeries', {
    profileTypeID: profileType, labelSelector: currentSelector(), start, end, step, groupBy: [label],
  });
  const groups = (response.series || []).map((s) => {
    const pair = (s.labels || []).find((l) => l.name === label);
    const points = (s.points || []).map((p) => [Number(p.timestamp), Number(p.value)]);
    return { value: pair ? pair.value : '', points, total: points.reduce((sum, [, v]) => sum + v, 0) };
  }).sort((a, b) => b.total - a.total || a.value.localeCompare(b.value));
  const all = groups.reduce((sum, g) => sum + g.total, 0);
  tagTimeline.setData(groups.map((g) => ({ label: g.value, points: g.points })), [start, end]);
  $('tag-table').tBodies[0].replaceChildren(...groups.map((g, i) => {
    const tr = document.createElement('tr');
    tr.tabIndex = 0;
    const th = document.createElement('th');
    th.scope = 'row';
    const swatch = document.createElement('span');
    swatch.className = 'swatch';
    swatch.style.background = seriesColor(i);
    th.append(swatch, g.value || '(none)');
    const total = document.createElement('td');
    total.dataset.value = String(g.total);
    total.textContent = formatValue(g.total, unit);
    const share = document.createElement('td');
    share.textContent = `${all ? ((100 * g.total) / all).toFixed(1) : '0.0'}%`;
    tr.append(th, total, share);
    const open = () => {
      const extra = $('selector').value.trim().replace(/^\{|\}$/g, '');
      $('selector').value = [extra, `${label}="${g.value}"`].filter(Boolean).join(', ');
      show('single');
    };
    tr.addEventListener('click', open);
    tr.addEventListener('keydown', (e) => { if (e.key === 'Enter') open(); });
    return tr;
  }));
}

// ---- SQL ----------------------------------------------------------------------------------------

async function renderSQL() {
  const query = $('sql-query').value;
  state.sql = query;
  writeURL();
  $('sql-status').textContent = 'running…';
  const rows = await sql(query);
  const columns = rows.length ? Object.keys(rows[0]) : [];
  const head = document.createElement('tr');
  head.append(...columns.map((c) => {
    const th = document.createElement('th');
    th.scope = 'col';
    th.textContent = c;
    return th;
  }));
  $('sql-table').tHead.replaceChildren(head);
  $('sql-table').tBodies[0].replaceChildren(...rows.map((row) => {
    const tr = document.createElement('tr');
    tr.append(...columns.map((c) => {
      const td = document.createElement('td');
      const v = row[c];
      td.textContent = v === null ? 'NULL' : typeof v === 'object' ? JSON.stringify(v) : String(v);
      return td;
    }));
    return tr;
  }));
  $('sql-status').textContent = `${rows.length} row${rows.length === 1 ? '' : 's'}`;
}

// ---- wiring ----------------------------------------------------------------------------------------

const renderers = { single: renderSingle, diff: renderDiff, tags: renderTags, sql: renderSQL };

function show(view) {
  state.view = view;
  for (const name of Object.keys(renderers)) $(`view-${name}`).hidden = name !== view;
  for (const tab of document.querySelectorAll('nav .tab')) {
    if (tab.dataset.view === view) tab.setAttribute('aria-current', 'page');
    else tab.removeAttribute('aria-current');
  }
  $('query-bar').hidden = view === 'sql';
  return run();
}

function run() {
  state.from = $('from').value || state.from;
  state.until = $('until').value || state.until;
  state.tenant = $('tenant').value.trim();
  localStorage.setItem('profusion.tenant', state.tenant);
  return busy(renderers[state.view]());
}

function setRange(from, until) {
  $('from').value = String(from);
  $('until').value = String(until);
  $('range-preset').value = 'custom';
  return run();
}

async function start() {
  readURL();
  flamegraph = new FlameGraph($('flamegraph'), $('flame-tooltip'), {
    onFocus: (text) => { $('flame-focus').textContent = text; },
    onZoom: (path) => { state.zoom = path; writeURL(); },
  });
  diffGraph = new FlameGraph($('diff-flamegraph'), $('diff-tooltip'), { diff: true });
  timeline = new Timeline($('timeline'), { onSelect: setRange });
  tagTimeline = new Timeline($('tag-timeline'), { onSelect: setRange });
  $('from').value = state.from;
  $('until').value = state.until;
  $('range-preset').value = state.until === 'now' && [...$('range-preset').options].some((o) => o.value === state.from) ? state.from : 'custom';
  $('tenant').value = state.tenant;
  $('search').value = state.search;
  $('sql-query').value = state.sql || $('sql-query').value;
  const { matchers } = splitQuery(state.query);
  $('selector').value = matchers;
  for (const [prefix, query, from, until] of [['left', state.leftQuery, state.leftFrom, state.leftUntil], ['right', state.rightQuery, state.rightFrom, state.rightUntil]]) {
    $(`${prefix}-selector`).value = query;
    $(`${prefix}-from`).value = from;
    $(`${prefix}-until`).value = until;
  }

  for (const tab of document.querySelectorAll('nav .tab')) {
    tab.addEventListener('click', (e) => { e.preventDefault(); show(tab.dataset.view); });
  }
  $('range-preset').addEventListener('change', () => {
    const preset = $('range-preset').value;
    if (preset === 'custom') return;
    $('from').value = preset;
    $('until').value = 'now';
    labelCache.clear();
    busy(loadPickers().then(run));
  });
  $('run').addEventListener('click', () => run());
  for (const id of ['from', 'until', 'selector', 'left-selector', 'left-from', 'left-until', 'right-selector', 'right-from', 'right-until']) {
    $(id).addEventListener('keydown', (e) => { if (e.key === 'Enter') run(); });
  }
  for (const id of ['profile-type', 'service', 'tag-label']) $(id).addEventListener('change', () => {
    if (id === 'tag-label') state.label = $('tag-label').value;
    run();
  });
  $('selector').addEventListener('input', () => suggest($('selector')));
  $('selector').addEventListener('focus', () => suggest($('selector')));
  $('search').addEventListener('input', onSearch);
  $('reset-zoom').addEventListener('click', () => flamegraph.resetZoom());
  $('table-filter').addEventListener('input', renderTable);
  for (const button of $('top-table').querySelectorAll('thead button')) {
    button.addEventListener('click', () => { state.sort = button.dataset.sort; writeURL(); renderTable(); });
  }
  $('copy-link').addEventListener('click', async () => {
    writeURL();
    try { await navigator.clipboard.writeText(window.location.href); } catch (_) { /* no clipboard */ }
    $('copy-link').textContent = 'Link copied';
    setTimeout(() => { $('copy-link').textContent = 'Copy link'; }, 1500);
  });
  $('export').addEventListener('change', () => {
    const format = $('export').value;
    $('export').value = '';
    busy(exportAs(format));
  });
  $('sql-run').addEventListener('click', () => busy(renderSQL()));
  $('tenant').addEventListener('change', () => { labelCache.clear(); busy(loadPickers().then(run)); });

  window.profusionUI = { state, flamegraph, diffGraph, timeline };
  await busy(loadPickers());
  if (document.body.dataset.state !== 'error') await show(state.view);
}

async function exportAs(format) {
  const profileType = $('profile-type').value;
  const selector = currentSelector();
  const [start, end] = range(state.from, state.until);
  const base = `${profileType.split(':')[0] || 'profile'}`;
  if (format === 'png') {
    const blob = await new Promise((resolve) => $('flamegraph').toBlob(resolve, 'image/png'));
    download(blob, `${base}.png`);
  } else if (format === 'svg') {
    download(new Blob([flamegraph.toSVG()], { type: 'image/svg+xml' }), `${base}.svg`);
  } else if (format === 'json') {
    const query = encodeURIComponent(`${profileType}${selector}`);
    const response = await fetch(`pyroscope/render?query=${query}&from=${start}&until=${end}&max-nodes=${MAX_NODES}`, {
      headers: headers(), credentials: 'same-origin',
    });
    if (!response.ok) throw await failure(response);
    download(await response.blob(), `${base}.json`);
  } else if (format === 'pprof') {
    const response = await fetch('querier.v1.QuerierService/SelectMergeProfile', {
      method: 'POST',
      headers: headers({ 'Content-Type': 'application/proto' }),
      body: selectMergeProfileProto(profileType, selector, start, end),
      credentials: 'same-origin',
    });
    if (!response.ok) throw await failure(response);
    download(new Blob([await response.arrayBuffer()], { type: 'application/octet-stream' }), `${base}.pb`);
  }
}

start();
