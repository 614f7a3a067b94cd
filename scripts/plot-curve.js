#!/usr/bin/env node
// Writes a small self-contained SVG line chart (no dependencies), for the figures of the docs:
//
//   node scripts/plot-curve.js --in points.json --out docs/img/chart.svg
//
// points.json: { "title": "...", "x": "x label", "y": "y label",
//                "series": [{ "name": "...", "points": [[x, y], ...], "dashed"?: true }] }
'use strict';

const fs = require('node:fs');

const argv = process.argv.slice(2);
const arg = (name) => argv[argv.indexOf(`--${name}`) + 1];
const spec = JSON.parse(fs.readFileSync(arg('in'), 'utf8'));

const W = 640;
const H = 360;
const m = { l: 60, r: 170, t: 40, b: 50 };
const all = spec.series.flatMap((s) => s.points);
const xs = all.map((p) => p[0]);
const ys = all.map((p) => p[1]);
const x0 = Math.min(0, ...xs);
const x1 = Math.max(...xs);
const yPad = (Math.max(...ys) - Math.min(...ys)) * 0.1 || 1;
const y0 = Math.floor(Math.min(...ys) - yPad);
const y1 = Math.ceil(Math.max(...ys) + yPad);
const px = (x) => m.l + ((x - x0) / (x1 - x0 || 1)) * (W - m.l - m.r);
const py = (y) => H - m.b - ((y - y0) / (y1 - y0 || 1)) * (H - m.t - m.b);
const colors = ['#1f77b4', '#d62728', '#2ca02c', '#9467bd', '#ff7f0e'];
const esc = (s) => String(s).replace(/&/g, '&amp;').replace(/</g, '&lt;');

const parts = [
  `<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" font-family="sans-serif" font-size="12">`,
  `<rect width="${W}" height="${H}" fill="white"/>`,
  `<text x="${m.l}" y="22" font-size="14">${esc(spec.title)}</text>`,
];
for (let i = 0; i <= 5; i++) {
  const y = y0 + ((y1 - y0) * i) / 5;
  parts.push(`<line x1="${m.l}" x2="${W - m.r}" y1="${py(y)}" y2="${py(y)}" stroke="#ddd"/>`);
  parts.push(`<text x="${m.l - 6}" y="${py(y) + 4}" text-anchor="end">${y.toFixed(0)}</text>`);
}
const xTicks = [...new Set(xs)].sort((a, b) => a - b);
for (const x of xTicks) {
  parts.push(`<text x="${px(x)}" y="${H - m.b + 16}" text-anchor="middle">${x}</text>`);
}
parts.push(`<line x1="${m.l}" x2="${W - m.r}" y1="${H - m.b}" y2="${H - m.b}" stroke="#333"/>`);
parts.push(`<line x1="${m.l}" x2="${m.l}" y1="${m.t}" y2="${H - m.b}" stroke="#333"/>`);
parts.push(`<text x="${(m.l + W - m.r) / 2}" y="${H - 12}" text-anchor="middle">${esc(spec.x)}</text>`);
parts.push(
  `<text transform="translate(16 ${(m.t + H - m.b) / 2}) rotate(-90)" text-anchor="middle">${esc(spec.y)}</text>`,
);
spec.series.forEach((s, i) => {
  const c = colors[i % colors.length];
  const d = s.points.map((p, k) => `${k ? 'L' : 'M'}${px(p[0]).toFixed(1)},${py(p[1]).toFixed(1)}`).join(' ');
  parts.push(`<path d="${d}" fill="none" stroke="${c}" stroke-width="2"${s.dashed ? ' stroke-dasharray="6 4"' : ''}/>`);
  for (const p of s.points) parts.push(`<circle cx="${px(p[0])}" cy="${py(p[1])}" r="3" fill="${c}"/>`);
  const ly = m.t + 10 + i * 20;
  parts.push(`<line x1="${W - m.r + 12}" x2="${W - m.r + 32}" y1="${ly}" y2="${ly}" stroke="${c}" stroke-width="2"/>`);
  parts.push(`<text x="${W - m.r + 38}" y="${ly + 4}">${esc(s.name)}</text>`);
});
parts.push('</svg>');
fs.writeFileSync(arg('out'), `${parts.join('\n')}\n`);
