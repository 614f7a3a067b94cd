/**
 * The HTML report of `elmo finetune`: one self-contained file (inline CSS and SVG, no script,
 * nothing fetched when it is opened) with the training loss per step, the learning rate, the
 * eval metric per epoch, the final metrics, per-label precision / recall / F1 and, for
 * single-label classification, the confusion matrix as a heat-mapped table that scrolls with
 * sticky headers (readable at 77 labels, as BANKING77's).
 *
 * The charts are drawn here: a line chart is an SVG path over linear axes with "nice" ticks
 * (1, 2 or 5 times a power of ten), which is all a training curve needs.
 */
import type { EvalMetrics, FineTuneResult } from '../train/fine-tune';

/** What the report shows. */
export interface ReportData {
  result: FineTuneResult;
  /** The eval metric of `result.evalHistory[].metric` (the one early stopping watched). */
  metricName: string;
  recipe: Record<string, unknown>;
  machine: Record<string, unknown>;
  command: string;
  /** ISO date of the run's end. */
  createdAt: string;
}

/** The metrics worth a glance, per task, in the order shown. */
export function headlineMetrics(m: EvalMetrics): [string, number][] {
  switch (m.task) {
    case 'sequence':
      return [
        ['accuracy', m.accuracy],
        ['macroF1', m.macroF1],
        ['weightedF1', m.weightedF1],
      ];
    case 'multi-label':
      return [
        ['microF1', m.microF1],
        ['macroF1', m.macroF1],
        ['subsetAccuracy', m.subsetAccuracy],
      ];
    case 'regression':
      return [
        ['mse', m.mse],
        ['mae', m.mae],
        ['r2', m.r2],
        ['pearson', m.pearson],
      ];
    case 'token':
      return [
        ['f1', m.f1],
        ['precision', m.precision],
        ['recall', m.recall],
        ['tokenAccuracy', m.tokenAccuracy],
      ];
  }
}

/** Every scalar number of the metrics (counts included), in their field order. */
export function scalarMetrics(m: EvalMetrics): [string, number][] {
  return Object.entries(m).filter((e): e is [string, number] => typeof e[1] === 'number');
}

/** Per-label (or per-entity-type) scores, when the task has them. */
export function perLabelScores(
  m: EvalMetrics,
): { label: string; precision: number; recall: number; f1: number; support: number }[] {
  if (m.task === 'sequence' || m.task === 'multi-label') return m.perLabel;
  if (m.task === 'token') return m.perType.map((t) => ({ ...t, label: t.type }));
  return [];
}

/** Renders the report as one HTML document. */
export function renderReport(d: ReportData): string {
  const r = d.result;
  const final = r.evalMetrics;
  const parts: string[] = [];
  parts.push(`<h1>elmo fine-tuning report</h1>`);
  parts.push(`<pre class="cmd">${esc(d.command)}</pre>`);
  parts.push(
    keyValues([
      ['task', r.task],
      ['labels', String(r.labels.length)],
      ['epochs run', String(r.epochs)],
      ['optimizer steps', String(r.steps)],
      ['best epoch', String(r.bestEpoch)],
      ['stopped early', r.stoppedEarly ? 'yes' : 'no'],
      ['final training loss', fmt(r.trainLoss)],
      ['time', `${r.seconds.toFixed(1)} s`],
      [
        'training throughput',
        `${r.trainSequencesPerSecond.toFixed(1)} seq/s, ${r.trainTokensPerSecond.toFixed(0)} tok/s`,
      ],
      ['finished', d.createdAt],
    ]),
  );

  parts.push(`<h2>Training</h2>`);
  const loss = r.history.map((h): [number, number] => [h.step, h.loss]);
  const epochMarks = r.evalHistory.length > 0 ? r.evalHistory : epochEnds(r.history);
  parts.push(
    lineChart({
      title: 'Training loss per step',
      xLabel: 'step',
      yLabel: 'loss',
      series: [
        { name: 'loss', color: '#9ab8e6', width: 1, points: downsample(loss, 2000) },
        { name: 'smoothed', color: '#1f4e9c', width: 2, points: downsample(smooth(loss), 2000) },
      ],
      marks: epochMarks.map((e) => ({ x: e.step, label: `epoch ${String(e.epoch)}` })),
    }),
  );
  parts.push(
    lineChart({
      title: 'Learning rate',
      xLabel: 'step',
      yLabel: 'lr',
      height: 180,
      series: [
        {
          name: 'lr',
          color: '#6a3d9a',
          width: 1.5,
          points: downsample(
            r.history.map((h) => [h.step, h.lr]),
            2000,
          ),
        },
      ],
    }),
  );

  parts.push(`<h2>Evaluation</h2>`);
  if (r.evalHistory.length === 0 || final === undefined) {
    parts.push(`<p>No evaluation set (pass --eval FILE or --eval-split FRACTION).</p>`);
  } else {
    const series: ChartSeries[] = [
      {
        name: d.metricName,
        color: '#1b7837',
        width: 2,
        dots: true,
        points: r.evalHistory.map((h) => [h.epoch, h.metric]),
      },
    ];
    const second = headlineMetrics(final).find(([name]) => name !== d.metricName && name.endsWith('F1'));
    if (second !== undefined && r.task !== 'regression') {
      const name = second[0];
      series.push({
        name,
        color: '#d95f02',
        width: 1.5,
        dots: true,
        points: r.evalHistory.map((h) => [h.epoch, metricOf(h.metrics, name)]),
      });
    }
    parts.push(lineChart({ title: `Eval ${d.metricName} per epoch`, xLabel: 'epoch', yLabel: d.metricName, series }));
    parts.push(`<h3>Final metrics (epoch ${String(r.bestEpoch)})</h3>`);
    parts.push(metricsTable(final));
    const scores = perLabelScores(final);
    if (scores.length > 0) {
      parts.push(`<h3>${final.task === 'token' ? 'Per entity type' : 'Per label'}</h3>`);
      parts.push(labelTable(scores));
    }
    if (final.task === 'sequence') {
      parts.push(`<h3>Confusion matrix</h3>`);
      parts.push(
        `<p class="note">Rows: true label; columns: predicted label. Shade: share of the row (blue on the diagonal, red off it).</p>`,
      );
      parts.push(confusionTable(final.confusion, r.labels));
      parts.push(topConfusions(final.confusion, r.labels, 10));
    }
  }

  parts.push(`<h2>Recipe</h2>`);
  parts.push(`<pre>${esc(JSON.stringify(d.recipe, null, 2))}</pre>`);
  parts.push(`<h2>Machine</h2>`);
  parts.push(keyValues(Object.entries(d.machine).map(([k, v]) => [k, String(v)])));

  return `<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>elmo fine-tuning report</title>
<style>${CSS}</style>
</head>
<body>
${parts.join('\n')}
</body>
</html>
`;
}

const CSS = `
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; margin: 24px auto; max-width: 1100px;
  padding: 0 16px; color: #222; }
h1 { font-size: 22px; } h2 { font-size: 18px; margin-top: 32px; border-bottom: 1px solid #ddd; } h3 { font-size: 15px; }
pre { background: #f6f8fa; padding: 8px 12px; overflow-x: auto; font-size: 12px; }
pre.cmd { white-space: pre-wrap; word-break: break-all; }
table { border-collapse: collapse; font-variant-numeric: tabular-nums; }
th, td { padding: 3px 8px; text-align: right; border-bottom: 1px solid #eee; }
th:first-child, td:first-child { text-align: left; }
table.kv td:first-child { color: #555; padding-right: 16px; }
svg.chart { display: block; margin: 12px 0; max-width: 100%; height: auto; }
svg.chart text { font: 11px system-ui, sans-serif; fill: #444; }
.note { color: #666; font-size: 12px; }
.scroll { overflow: auto; max-height: 80vh; max-width: 100%; border: 1px solid #ddd; }
table.cm { font-size: 11px; }
table.cm th, table.cm td { border: 1px solid #f0f0f0; padding: 2px 4px; min-width: 18px; text-align: center; }
table.cm thead th { position: sticky; top: 0; background: #fff; z-index: 2; writing-mode: vertical-rl;
  transform: rotate(180deg); text-align: left; vertical-align: bottom; max-height: 160px; font-weight: normal; }
table.cm tbody th { position: sticky; left: 0; background: #fff; z-index: 1; text-align: left; white-space: nowrap;
  font-weight: normal; }
table.cm thead th.corner { left: 0; z-index: 3; writing-mode: horizontal-tb; transform: none; }
`;

// ---- tables --------------------------------------------------------------------------------------

function keyValues(rows: [string, string][]): string {
  const body = rows.map(([k, v]) => `<tr><td>${esc(k)}</td><td>${esc(v)}</td></tr>`).join('');
  return `<table class="kv">${body}</table>`;
}

function metricsTable(m: EvalMetrics): string {
  const rows = scalarMetrics(m)
    .map(([k, v]) => `<tr><td>${esc(k)}</td><td>${k === 'count' ? String(v) : fmt(v)}</td></tr>`)
    .join('');
  return `<table class="kv">${rows}</table>`;
}

function labelTable(rows: { label: string; precision: number; recall: number; f1: number; support: number }[]): string {
  const body = rows
    .map((s) => {
      const pct = Math.round(Math.max(0, Math.min(1, s.f1)) * 100);
      const bar = `background: linear-gradient(to right, #cfe3c6 ${String(pct)}%, transparent ${String(pct)}%)`;
      return (
        `<tr><td>${esc(s.label)}</td><td>${fmt(s.precision)}</td><td>${fmt(s.recall)}</td>` +
        `<td style="${bar}">${fmt(s.f1)}</td><td>${String(s.support)}</td></tr>`
      );
    })
    .join('\n');
  return (
    `<div class="scroll"><table><thead><tr><th>label</th><th>precision</th><th>recall</th><th>F1</th>` +
    `<th>support</th></tr></thead><tbody>\n${body}\n</tbody></table></div>`
  );
}

function confusionTable(confusion: readonly (readonly number[])[], labels: readonly string[]): string {
  const short = (l: string): string => (l.length > 28 ? `${l.slice(0, 27)}…` : l);
  const head = labels.map((l) => `<th title="${esc(l)}">${esc(short(l))}</th>`).join('');
  const rows = confusion.map((row, t) => {
    const total = row.reduce((a, b) => a + b, 0);
    const trueLabel = labels[t] ?? String(t);
    const cells = row.map((n, p) => {
      if (n === 0) return '<td></td>';
      const share = total > 0 ? n / total : 0;
      const alpha = (0.12 + 0.88 * share).toFixed(3);
      const color = t === p ? `rgba(33, 102, 172, ${alpha})` : `rgba(202, 0, 32, ${alpha})`;
      const ink = share > 0.55 ? '#fff' : '#222';
      const title = `true ${trueLabel} → predicted ${labels[p] ?? String(p)}: ${String(n)} (${(share * 100).toFixed(1)}% of the row)`;
      return `<td style="background:${color};color:${ink}" title="${esc(title)}">${String(n)}</td>`;
    });
    return `<tr><th title="${esc(trueLabel)}">${esc(short(trueLabel))}</th>${cells.join('')}</tr>`;
  });
  return (
    `<div class="scroll"><table class="cm"><thead><tr><th class="corner">true \\ predicted</th>${head}</tr></thead>` +
    `<tbody>\n${rows.join('\n')}\n</tbody></table></div>`
  );
}

function topConfusions(confusion: readonly (readonly number[])[], labels: readonly string[], k: number): string {
  const pairs: { t: number; p: number; n: number }[] = [];
  confusion.forEach((row, t) =>
    row.forEach((n, p) => {
      if (t !== p && n > 0) pairs.push({ t, p, n });
    }),
  );
  if (pairs.length === 0) return '<p class="note">No confusions.</p>';
  pairs.sort((a, b) => b.n - a.n || a.t - b.t || a.p - b.p);
  const rows = pairs
    .slice(0, k)
    .map(
      ({ t, p, n }) =>
        `<tr><td>${esc(labels[t] ?? String(t))}</td><td style="text-align:left">${esc(labels[p] ?? String(p))}</td><td>${String(n)}</td></tr>`,
    )
    .join('');
  return `<h3>Most frequent confusions</h3><table><thead><tr><th>true</th><th style="text-align:left">predicted</th><th>count</th></tr></thead><tbody>${rows}</tbody></table>`;
}

// ---- charts --------------------------------------------------------------------------------------

interface ChartSeries {
  name: string;
  color: string;
  width: number;
  points: [number, number][];
  dots?: boolean;
}

interface ChartOptions {
  title: string;
  xLabel: string;
  yLabel: string;
  series: ChartSeries[];
  /** Vertical dashed lines (epoch ends). */
  marks?: { x: number; label: string }[];
  width?: number;
  height?: number;
}

/** An SVG line chart with linear axes; non-finite points are left out. */
export function lineChart(o: ChartOptions): string {
  const W = o.width ?? 760;
  const H = o.height ?? 280;
  const m = { left: 64, right: 16, top: 28, bottom: 40 };
  const pw = W - m.left - m.right;
  const ph = H - m.top - m.bottom;
  const series = o.series.map((s) => ({
    ...s,
    points: s.points.filter(([x, y]) => Number.isFinite(x) && Number.isFinite(y)),
  }));
  const xs = series.flatMap((s) => s.points.map((p) => p[0]));
  const ys = series.flatMap((s) => s.points.map((p) => p[1]));
  const out: string[] = [];
  out.push(
    `<svg class="chart" xmlns="http://www.w3.org/2000/svg" viewBox="0 0 ${String(W)} ${String(H)}" width="${String(W)}" height="${String(H)}" role="img" aria-label="${esc(o.title)}">`,
  );
  out.push(`<text x="${String(m.left)}" y="16" style="font-weight:600">${esc(o.title)}</text>`);
  if (xs.length === 0) {
    out.push(`<text x="${String(m.left)}" y="${String(m.top + ph / 2)}">no data</text></svg>`);
    return out.join('\n');
  }
  const xt = niceTicks(Math.min(...xs), Math.max(...xs), 8, true);
  const yt = niceTicks(Math.min(...ys), Math.max(...ys), 5, false);
  const sx = (x: number): number => m.left + ((x - xt.min) / (xt.max - xt.min)) * pw;
  const sy = (y: number): number => m.top + ph - ((y - yt.min) / (yt.max - yt.min)) * ph;
  // grid and axes
  for (const v of yt.ticks) {
    const y = sy(v).toFixed(1);
    out.push(`<line x1="${String(m.left)}" x2="${String(m.left + pw)}" y1="${y}" y2="${y}" stroke="#eee"/>`);
    out.push(
      `<text x="${String(m.left - 6)}" y="${y}" text-anchor="end" dominant-baseline="middle">${tickLabel(v, yt.step)}</text>`,
    );
  }
  for (const v of xt.ticks) {
    const x = sx(v).toFixed(1);
    out.push(`<line x1="${x}" x2="${x}" y1="${String(m.top + ph)}" y2="${String(m.top + ph + 4)}" stroke="#888"/>`);
    out.push(`<text x="${x}" y="${String(m.top + ph + 16)}" text-anchor="middle">${tickLabel(v, xt.step)}</text>`);
  }
  out.push(
    `<rect x="${String(m.left)}" y="${String(m.top)}" width="${String(pw)}" height="${String(ph)}" fill="none" stroke="#bbb"/>`,
  );
  out.push(`<text x="${String(m.left + pw / 2)}" y="${String(H - 6)}" text-anchor="middle">${esc(o.xLabel)}</text>`);
  out.push(
    `<text transform="translate(14 ${String(m.top + ph / 2)}) rotate(-90)" text-anchor="middle">${esc(o.yLabel)}</text>`,
  );
  for (const mark of o.marks ?? []) {
    if (mark.x < xt.min || mark.x > xt.max) continue;
    const x = sx(mark.x).toFixed(1);
    out.push(
      `<line x1="${x}" x2="${x}" y1="${String(m.top)}" y2="${String(m.top + ph)}" stroke="#aaa" stroke-dasharray="3 3"><title>${esc(mark.label)}</title></line>`,
    );
  }
  // series
  for (const s of series) {
    if (s.points.length === 0) continue;
    const d = s.points.map(([x, y], i) => `${i === 0 ? 'M' : 'L'}${sx(x).toFixed(1)} ${sy(y).toFixed(1)}`).join('');
    out.push(
      `<path d="${d}" fill="none" stroke="${s.color}" stroke-width="${String(s.width)}" stroke-linejoin="round"/>`,
    );
    if (s.dots === true || s.points.length === 1) {
      for (const [x, y] of s.points) {
        out.push(
          `<circle cx="${sx(x).toFixed(1)}" cy="${sy(y).toFixed(1)}" r="3" fill="${s.color}"><title>${esc(s.name)} at ${esc(o.xLabel)} ${String(x)}: ${fmt(y)}</title></circle>`,
        );
      }
    }
  }
  // legend
  let lx = m.left + pw;
  for (const s of [...series].reverse()) {
    const w = 26 + s.name.length * 6.5;
    lx -= w;
    out.push(
      `<line x1="${lx.toFixed(0)}" x2="${(lx + 16).toFixed(0)}" y1="12" y2="12" stroke="${s.color}" stroke-width="2"/>`,
    );
    out.push(`<text x="${(lx + 20).toFixed(0)}" y="12" dominant-baseline="middle">${esc(s.name)}</text>`);
  }
  out.push('</svg>');
  return out.join('\n');
}

/** Ticks at 1, 2 or 5 times a power of ten covering [lo, hi]; whole numbers only where `integer`. */
function niceTicks(
  lo: number,
  hi: number,
  count: number,
  integer: boolean,
): { min: number; max: number; step: number; ticks: number[] } {
  if (lo === hi) {
    const pad = lo === 0 ? 1 : Math.abs(lo) * 0.1;
    lo -= pad;
    hi += pad;
  }
  const raw = (hi - lo) / count;
  const mag = 10 ** Math.floor(Math.log10(raw));
  const norm = raw / mag;
  let step = (norm < 1.5 ? 1 : norm < 3 ? 2 : norm < 7 ? 5 : 10) * mag;
  if (integer) step = Math.max(1, Math.round(step));
  const min = integer ? lo : Math.floor(lo / step) * step;
  const max = integer ? hi : Math.ceil(hi / step) * step;
  const ticks: number[] = [];
  for (let v = Math.ceil(min / step) * step; v <= max + step * 1e-9; v += step) ticks.push(Number(v.toPrecision(12)));
  return { min, max, step, ticks };
}

function tickLabel(v: number, step: number): string {
  if (v === 0) return '0';
  if (step < 1e-3 || Math.abs(v) >= 1e6) return v.toExponential(1);
  const decimals = Math.max(0, -Math.floor(Math.log10(step) + 1e-9));
  return v.toFixed(decimals);
}

/** Exponential moving average with a span of about 2% of the points. */
function smooth(points: readonly [number, number][]): [number, number][] {
  const span = Math.max(1, Math.round(points.length / 50));
  const alpha = 2 / (span + 1);
  let ema: number | undefined;
  return points.map(([x, y]) => {
    ema = ema === undefined ? y : alpha * y + (1 - alpha) * ema;
    return [x, ema];
  });
}

/** At most `n` points: means of equal runs of consecutive points. */
function downsample(points: readonly [number, number][], n: number): [number, number][] {
  if (points.length <= n) return [...points];
  const out: [number, number][] = [];
  const per = points.length / n;
  for (let i = 0; i < n; i++) {
    const run = points.slice(Math.floor(i * per), Math.floor((i + 1) * per));
    if (run.length === 0) continue;
    out.push([run.reduce((a, p) => a + p[0], 0) / run.length, run.reduce((a, p) => a + p[1], 0) / run.length]);
  }
  return out;
}

/** The last step of each epoch (for the epoch marks when there was no evaluation). */
function epochEnds(history: FineTuneResult['history']): { epoch: number; step: number }[] {
  const ends = new Map<number, number>();
  for (const h of history) ends.set(h.epoch, h.step);
  return [...ends].map(([epoch, step]) => ({ epoch, step }));
}

function metricOf(m: EvalMetrics, name: string): number {
  const v = (m as unknown as Record<string, unknown>)[name];
  return typeof v === 'number' ? v : NaN;
}

/** A metric with 4 significant decimals ("0.8312", "1.2e-5"). */
export function fmt(v: number): string {
  if (!Number.isFinite(v)) return String(v);
  if (v !== 0 && Math.abs(v) < 1e-3) return v.toExponential(2);
  return v.toFixed(4);
}

function esc(s: string): string {
  return s.replace(/[&<>"']/g, (c) => `&#${String(c.charCodeAt(0))};`);
}
