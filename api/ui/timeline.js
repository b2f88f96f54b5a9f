// The timeline: series of (time in ms, value) points on a canvas; a drag across it picks a new
// range (also from the keyboard: `[` and `]` halve the range around its left or right half).

const COLORS = ['#3b7dd8', '#e8743b', '#19a979', '#ed4a7b', '#945ecf', '#13a4b4', '#525df4', '#bf399e'];

export class Timeline {
  constructor(canvas, { onSelect = () => {} } = {}) {
    this.canvas = canvas;
    this.onSelect = onSelect;
    this.series = [];
    this.range = [0, 1];
    this.drag = null;
    // Drawing sets the backing store's size; the element keeps the height its markup gives.
    this.height = Number(canvas.getAttribute('height')) || 90;
    canvas.style.height = `${this.height}px`;
    canvas.addEventListener('mousedown', (e) => { this.drag = { start: this.timeAt(e), end: this.timeAt(e) }; });
    canvas.addEventListener('mousemove', (e) => {
      if (!this.drag) return;
      this.drag.end = this.timeAt(e);
      this.draw();
    });
    window.addEventListener('mouseup', () => {
      if (!this.drag) return;
      const [a, b] = [this.drag.start, this.drag.end].sort((x, y) => x - y);
      this.drag = null;
      this.draw();
      if (b - a >= 1000) this.onSelect(Math.round(a), Math.round(b));
    });
    canvas.addEventListener('keydown', (e) => {
      const [from, until] = this.range;
      const mid = (from + until) / 2;
      if (e.key === '[') this.onSelect(from, Math.round(mid));
      if (e.key === ']') this.onSelect(Math.round(mid), until);
    });
    new ResizeObserver(() => this.draw()).observe(canvas);
  }

  /// `series`: [{ label, points: [[ms, value], …] }]; `range`: [from, until] in ms.
  setData(series, range) {
    this.series = series;
    this.range = range;
    this.draw();
  }

  timeAt(event) {
    const rect = this.canvas.getBoundingClientRect();
    const [from, until] = this.range;
    const f = Math.min(1, Math.max(0, (event.clientX - rect.left) / rect.width));
    return from + f * (until - from);
  }

  draw() {
    const canvas = this.canvas;
    const ratio = window.devicePixelRatio || 1;
    const width = canvas.clientWidth || 800;
    const height = this.height;
    canvas.width = Math.round(width * ratio);
    canvas.height = Math.round(height * ratio);
    const ctx = canvas.getContext('2d');
    ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
    ctx.clearRect(0, 0, width, height);
    const [from, until] = this.range;
    const span = Math.max(1, until - from);
    let max = 0;
    for (const s of this.series) for (const [, v] of s.points) max = Math.max(max, v);
    const axis = 16;
    const x = (t) => ((t - from) / span) * width;
    const y = (v) => height - axis - (max ? (v / max) * (height - axis - 8) : 0);
    ctx.strokeStyle = '#ddd';
    ctx.fillStyle = '#5f6368';
    ctx.font = '11px system-ui, sans-serif';
    ctx.textBaseline = 'bottom';
    ctx.beginPath();
    ctx.moveTo(0, height - axis + 0.5);
    ctx.lineTo(width, height - axis + 0.5);
    for (let i = 0; i <= 4; i++) {
      const t = from + (span * i) / 4;
      const label = new Date(t).toLocaleString([], span > 2 * 864e5
        ? { month: 'short', day: 'numeric', hour: '2-digit', minute: '2-digit' }
        : { hour: '2-digit', minute: '2-digit' });
      ctx.textAlign = i === 0 ? 'left' : i === 4 ? 'right' : 'center';
      ctx.fillText(label, x(t), height - 1);
    }
    ctx.stroke();
    this.series.forEach((s, i) => {
      const color = COLORS[i % COLORS.length];
      if (!s.points.length) return;
      ctx.beginPath();
      ctx.moveTo(x(s.points[0][0]), height - axis);
      for (const [t, v] of s.points) ctx.lineTo(x(t), y(v));
      ctx.lineTo(x(s.points[s.points.length - 1][0]), height - axis);
      ctx.closePath();
      ctx.globalAlpha = this.series.length > 1 ? 0.15 : 0.3;
      ctx.fillStyle = color;
      ctx.fill();
      ctx.globalAlpha = 1;
      ctx.strokeStyle = color;
      ctx.lineWidth = 1.5;
      ctx.beginPath();
      s.points.forEach(([t, v], j) => (j ? ctx.lineTo(x(t), y(v)) : ctx.moveTo(x(t), y(v))));
      ctx.stroke();
      // Sparse series show their points, or a lone point would not show at all.
      if (s.points.length < 60) {
        ctx.fillStyle = color;
        for (const [t, v] of s.points) {
          ctx.beginPath();
          ctx.arc(x(t), y(v), 2.5, 0, 2 * Math.PI);
          ctx.fill();
        }
      }
    });
    if (this.drag) {
      const [a, b] = [this.drag.start, this.drag.end].sort((p, q) => p - q);
      ctx.fillStyle = 'rgba(59, 125, 216, 0.2)';
      ctx.fillRect(x(a), 0, x(b) - x(a), height);
    }
  }
}

export function seriesColor(i) {
  return COLORS[i % COLORS.length];
}
