// The flame graph: the querier API's levels laid out once into flat arrays, drawn on a canvas
// (a DOM node per frame would not stay fast at 16,384 nodes), hit-tested by binary search per
// row. Also the top table's figures, the diff colours and the SVG export, all from one layout.

const ROW = 18;
const FONT = '12px ui-monospace, SFMono-Regular, Menlo, Consolas, monospace';

// Pyroscope's look: warm pastel colours chosen by the frame's package, so one library keeps one
// colour across views; red and green for a diff; grey for what search leaves out.
const PALETTE = [
  '#e8a87c', '#f2c57c', '#d5a6bd', '#9ccfd8', '#a8d5a2', '#f0b37e', '#c9b3e6', '#f7a7a6',
  '#b5d6a7', '#f5cf87', '#8fc1e3', '#e3b5a4', '#d4e09b', '#f6bd60', '#c3aed6', '#a3c4bc',
];
const FADED = '#e6e6e6';
const DIFF_SAME = '#bdbdbd';

/// The package of a frame name: what comes before its last `.`, `/` or `::` (Go, Java, Python,
/// Rust and C++ names), or the name itself.
function packageOf(name) {
  const m = name.match(/^(.*?)(::|\.|\/)[^.:/]*$/);
  return m ? m[1] : name;
}

function hash(text) {
  let h = 2166136261;
  for (let i = 0; i < text.length; i++) {
    h ^= text.charCodeAt(i);
    h = Math.imul(h, 16777619);
  }
  return h >>> 0;
}

function colorOf(name) {
  return PALETTE[hash(packageOf(name)) % PALETTE.length];
}

/// Colour of a diff node: its share of each side's total, compared. Red when the comparison
/// (right) spends more, green when less, more saturated the larger the change; grey when equal.
function diffColor(leftShare, rightShare) {
  if (leftShare === rightShare) return DIFF_SAME;
  const base = Math.max(leftShare, 1e-9);
  const change = Math.max(-1, Math.min(1, (rightShare - leftShare) / base));
  const strength = 0.25 + 0.75 * Math.min(1, Math.abs(change));
  const light = Math.round(85 - 40 * strength);
  return change > 0 ? `hsl(0, 85%, ${light}%)` : `hsl(120, 55%, ${light}%)`;
}

/// Lays out a flame graph (`width` 4) or a diff (`width` 7) from the API's levels: one entry per
/// node with its absolute position. For a diff the width of a node is left + right.
function layout(flamegraph, diff) {
  const names = flamegraph.names || [];
  const levels = (flamegraph.levels || []).map((l) => (l.values || []).map(Number));
  const width = diff ? 7 : 4;
  const rows = [];
  for (const level of levels) {
    const row = [];
    let end = 0;
    for (let i = 0; i + width <= level.length; i += width) {
      let node;
      if (diff) {
        const [lo, lt, ls, ro, rt, rs, n] = level.slice(i, i + 7);
        const x = end + lo + ro;
        node = { x, w: lt + rt, total: lt + rt, self: ls + rs, left: lt, leftSelf: ls, right: rt, rightSelf: rs, name: names[n] };
      } else {
        const [o, t, s, n] = level.slice(i, i + 4);
        node = { x: end + o, w: t, total: t, self: s, name: names[n] };
      }
      end = node.x + node.w;
      row.push(node);
    }
    rows.push(row);
  }
  // Parents, for the top table's totals (a recursive function counts once per stack) and for
  // keyboard moves.
  for (let d = 1; d < rows.length; d++) {
    const parents = rows[d - 1];
    let p = 0;
    for (const node of rows[d]) {
      while (p < parents.length && parents[p].x + parents[p].w <= node.x) p++;
      node.parent = parents[p];
    }
  }
  return rows;
}

/// Self and total per function name, as the top table shows them: the root left out, and a
/// function's total counted once per stack however often it recurses in it.
export function functionTotals(rows) {
  const byName = new Map();
  for (let depth = 1; depth < rows.length; depth++) {
    for (const node of rows[depth]) {
      let entry = byName.get(node.name);
      if (!entry) byName.set(node.name, (entry = { name: node.name, self: 0, total: 0 }));
      entry.self += node.self;
      let nested = false;
      for (let a = node.parent; a && a.parent; a = a.parent) {
        if (a.name === node.name) { nested = true; break; }
      }
      if (!nested) entry.total += node.total;
    }
  }
  return [...byName.values()];
}

export function formatValue(value, unit) {
  if (value === 0) return '0';
  if (unit === 'nanoseconds') {
    const s = value / 1e9;
    if (s >= 3600) return `${(s / 3600).toFixed(2)} h`;
    if (s >= 60) return `${(s / 60).toFixed(2)} min`;
    if (s >= 1) return `${s.toFixed(2)} s`;
    if (s >= 1e-3) return `${(s * 1e3).toFixed(2)} ms`;
    return `${(s * 1e6).toFixed(0)} µs`;
  }
  if (unit === 'bytes') {
    const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
    let v = value;
    let i = 0;
    while (v >= 1024 && i < units.length - 1) { v /= 1024; i++; }
    return `${v.toFixed(i ? 2 : 0)} ${units[i]}`;
  }
  return Number(value).toLocaleString('en-US');
}

export class FlameGraph {
  constructor(canvas, tooltip, { diff = false, onFocus = () => {}, onZoom = () => {} } = {}) {
    this.canvas = canvas;
    this.tooltip = tooltip;
    this.diff = diff;
    this.onFocus = onFocus;
    this.onZoom = onZoom;
    this.rows = [];
    this.unit = '';
    this.search = '';
    this.zoom = null;
    this.focus = null;
    this.leftTicks = 0;
    this.rightTicks = 0;
    // What the last draw put on the canvas, for hit tests and for tests reading the page.
    this.drawn = [];
    canvas.addEventListener('mousemove', (e) => this.hover(e));
    canvas.addEventListener('mouseleave', () => { this.tooltip.hidden = true; });
    canvas.addEventListener('click', (e) => {
      const node = this.nodeAt(e);
      if (node) this.zoomTo(node);
    });
    canvas.addEventListener('keydown', (e) => this.key(e));
    // The keyboard's frame is outlined only while the canvas has the focus.
    canvas.addEventListener('focus', () => this.draw());
    canvas.addEventListener('blur', () => this.draw());
    new ResizeObserver(() => this.draw()).observe(canvas);
  }

  setData(flamegraph, unit) {
    this.source = flamegraph;
    this.rows = layout(flamegraph, this.diff);
    this.unit = unit;
    this.zoom = null;
    this.focus = this.rows[0] && this.rows[0][0] ? { depth: 0, node: this.rows[0][0] } : null;
    if (this.diff) {
      this.leftTicks = Number(flamegraph.leftTicks || 0);
      this.rightTicks = Number(flamegraph.rightTicks || 0);
    }
    this.draw();
  }

  setSearch(text) {
    this.search = text.toLowerCase();
    this.draw();
  }

  zoomTo(node) {
    const root = this.rows[0] && this.rows[0][0];
    this.zoom = node === root ? null : node;
    this.focus = { depth: this.depthOf(node), node };
    // What was under the pointer has moved.
    this.tooltip.hidden = true;
    this.draw();
    this.onZoom(this.zoom ? this.pathOf(this.zoom) : '');
  }

  resetZoom() {
    this.zoom = null;
    this.draw();
    this.onZoom('');
  }

  /// A frame's names from below the root down to it, `;`-joined: how a link names a zoom.
  pathOf(node) {
    const names = [];
    for (let n = node; n && n.parent; n = n.parent) names.unshift(n.name);
    return names.join(';');
  }

  /// The frame `path` names (the widest where names repeat), or null.
  findPath(path) {
    let node = this.rows[0] && this.rows[0][0];
    const names = path ? path.split(';') : [];
    names.forEach((name, i) => {
      if (!node) return;
      const candidates = (this.rows[i + 1] || []).filter((c) => c.parent === node && c.name === name);
      node = candidates.sort((a, b) => b.w - a.w)[0] || null;
    });
    return node;
  }

  depthOf(node) {
    let d = 0;
    for (let n = node.parent; n; n = n.parent) d++;
    return d;
  }

  /// The visible range of x: the zoomed node's, or the root's.
  range() {
    const root = this.rows[0] && this.rows[0][0];
    const z = this.zoom || root;
    return z ? [z.x, z.x + z.w] : [0, 1];
  }

  color(node) {
    if (this.search && !node.name.toLowerCase().includes(this.search)) return FADED;
    if (this.diff) {
      const l = this.leftTicks ? node.left / this.leftTicks : 0;
      const r = this.rightTicks ? node.right / this.rightTicks : 0;
      return diffColor(l, r);
    }
    return colorOf(node.name);
  }

  draw() {
    const canvas = this.canvas;
    const ratio = window.devicePixelRatio || 1;
    const cssWidth = canvas.clientWidth || 800;
    const height = Math.max(1, this.rows.length) * ROW;
    canvas.style.height = `${height}px`;
    if (canvas.width !== Math.round(cssWidth * ratio) || canvas.height !== Math.round(height * ratio)) {
      canvas.width = Math.round(cssWidth * ratio);
      canvas.height = Math.round(height * ratio);
    }
    const ctx = canvas.getContext('2d');
    ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
    ctx.clearRect(0, 0, cssWidth, height);
    ctx.font = FONT;
    ctx.textBaseline = 'middle';
    const [x0, x1] = this.range();
    const scale = cssWidth / Math.max(1, x1 - x0);
    const zoomDepth = this.zoom ? this.depthOf(this.zoom) : 0;
    this.drawn = [];
    const outlined = document.activeElement === canvas && this.focus ? this.focus.node : null;
    this.rows.forEach((row, depth) => {
      for (const node of row) {
        let left;
        let right;
        if (depth < zoomDepth) {
          // Ancestors of the zoomed node span the width.
          if (node.x > x0 || node.x + node.w < x1) continue;
          left = 0;
          right = cssWidth;
        } else {
          if (node.x + node.w <= x0 || node.x >= x1) continue;
          left = (Math.max(node.x, x0) - x0) * scale;
          right = (Math.min(node.x + node.w, x1) - x0) * scale;
        }
        const w = right - left;
        if (w < 0.5) continue;
        const y = depth * ROW;
        const fill = this.color(node);
        ctx.fillStyle = fill;
        ctx.fillRect(left, y, Math.max(w - 0.5, 0.5), ROW - 1);
        if (outlined === node) {
          ctx.strokeStyle = '#1a1a1a';
          ctx.lineWidth = 2;
          ctx.strokeRect(left + 1, y + 1, Math.max(w - 2, 1), ROW - 3);
        }
        if (w > 24) {
          ctx.fillStyle = '#1b1b1b';
          ctx.fillText(fit(ctx, node.name, w - 6), left + 3, y + ROW / 2);
        }
        this.drawn.push({ name: node.name, depth, x: left, width: w, color: fill, total: node.total, self: node.self, node });
      }
    });
    this.canvasWidth = cssWidth;
  }

  nodeAt(event) {
    const rect = this.canvas.getBoundingClientRect();
    const x = event.clientX - rect.left;
    const depth = Math.floor((event.clientY - rect.top) / ROW);
    // Drawn entries are in row order, then x order: a binary search over the row's span.
    let lo = 0;
    let hi = this.drawn.length;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      const d = this.drawn[mid];
      if (d.depth < depth || (d.depth === depth && d.x + d.width <= x)) lo = mid + 1;
      else hi = mid;
    }
    const d = this.drawn[lo];
    return d && d.depth === depth && d.x <= x ? d.node : null;
  }

  describe(node) {
    const root = this.rows[0][0];
    const pct = (v, of) => (of ? ((100 * v) / of).toFixed(2) : '0.00');
    if (this.diff) {
      return `${node.name}\nbaseline: ${formatValue(node.left, this.unit)} (${pct(node.left, this.leftTicks)}%)` +
        `\ncomparison: ${formatValue(node.right, this.unit)} (${pct(node.right, this.rightTicks)}%)`;
    }
    return `${node.name}\ntotal: ${formatValue(node.total, this.unit)} (${pct(node.total, root.total)}%)` +
      `\nself: ${formatValue(node.self, this.unit)} (${pct(node.self, root.total)}%)`;
  }

  hover(event) {
    const node = this.nodeAt(event);
    if (!node) { this.tooltip.hidden = true; return; }
    this.tooltip.textContent = this.describe(node);
    this.tooltip.hidden = false;
    const box = this.canvas.parentElement.getBoundingClientRect();
    this.tooltip.style.left = `${Math.min(event.clientX - box.left + 12, box.width - 260)}px`;
    this.tooltip.style.top = `${event.clientY - box.top + 14}px`;
  }

  /// Arrow keys walk the tree (up: parent, down: widest child, left/right: neighbours in the
  /// row), Enter zooms, Escape resets; the focused frame is announced.
  key(event) {
    if (!this.focus) return;
    const { depth, node } = this.focus;
    const row = this.rows[depth];
    const index = row.indexOf(node);
    let next = null;
    switch (event.key) {
      case 'ArrowUp': next = node.parent ? { depth: depth - 1, node: node.parent } : null; break;
      case 'ArrowDown': {
        const children = (this.rows[depth + 1] || []).filter((c) => c.parent === node);
        const widest = children.sort((a, b) => b.w - a.w)[0];
        next = widest ? { depth: depth + 1, node: widest } : null;
        break;
      }
      case 'ArrowLeft': next = index > 0 ? { depth, node: row[index - 1] } : null; break;
      case 'ArrowRight': next = index + 1 < row.length ? { depth, node: row[index + 1] } : null; break;
      case 'Enter': this.zoomTo(node); event.preventDefault(); return;
      case 'Escape': this.resetZoom(); event.preventDefault(); return;
      default: return;
    }
    event.preventDefault();
    if (next) {
      this.focus = next;
      this.draw();
      this.onFocus(this.describe(next.node).replace(/\n/g, ', '));
    }
  }

  /// The visible flame graph as a standalone SVG document.
  toSVG() {
    const width = this.canvasWidth || 800;
    const height = this.rows.length * ROW;
    const esc = (s) => s.replace(/[<>&"]/g, (c) => ({ '<': '&lt;', '>': '&gt;', '&': '&amp;', '"': '&quot;' })[c]);
    const parts = [`<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" font-family="monospace" font-size="12">`];
    for (const d of this.drawn) {
      const y = d.depth * ROW;
      parts.push(`<g><title>${esc(this.describe(d.node))}</title><rect x="${d.x.toFixed(2)}" y="${y}" width="${Math.max(d.width - 0.5, 0.5).toFixed(2)}" height="${ROW - 1}" fill="${d.color}"/>`);
      if (d.width > 24) parts.push(`<text x="${(d.x + 3).toFixed(2)}" y="${y + 13}" textLength="${Math.min(d.width - 6, d.name.length * 7.2).toFixed(1)}" lengthAdjust="spacingAndGlyphs">${esc(d.name)}</text>`);
      parts.push('</g>');
    }
    parts.push('</svg>');
    return parts.join('');
  }
}

/// `text` cut with an ellipsis to fit `width` pixels.
function fit(ctx, text, width) {
  if (ctx.measureText(text).width <= width) return text;
  const charWidth = ctx.measureText('m').width || 7;
  const keep = Math.max(0, Math.floor(width / charWidth) - 1);
  return keep > 0 ? `${text.slice(0, keep)}…` : '';
}
