#!/usr/bin/env node
// `npm run bench`: native benchmarks next to their PyTorch baselines.
//
//   * builds (if needed) and runs build-native-ci/bench_{gemm,attention,bert} when their sources
//     exist (native/bench/bench_*.cpp); arguments after `--` are passed to each executable;
//   * runs scripts/bench_torch_{gemm,attention}.py with .venv/bin/python when .venv exists;
//   * every program prints one JSON object per line:
//       {"bench":"gemm","m","n","k","op","threads","gflops","ms"}
//       {"bench":"attention","B","S","NH","HD","pass","threads","tokens_per_s","ms"}
//     other lines are passed through as they are;
//   * rows with the same key are put side by side with ratio = elmo / pytorch (of gflops or
//     tokens_per_s: > 1 means elmo is faster); written to bench/results/latest.json, and printed.
//
// Options: --no-build, --no-torch, --only=gemm,attention,bert. Each program has its own arguments,
// so pass-through arguments are meant for one bench at a time: --only=gemm -- op=NT m=768 threads=1
'use strict';

const { spawnSync } = require('node:child_process');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');

const root = path.resolve(__dirname, '..');
const buildDir = path.join(root, 'build-native-ci');
const argv = process.argv.slice(2);
const dashdash = argv.indexOf('--');
const own = dashdash >= 0 ? argv.slice(0, dashdash) : argv;
const passThrough = dashdash >= 0 ? argv.slice(dashdash + 1) : [];
const flag = (name) => own.includes(name);
const only = (own.find((a) => a.startsWith('--only=')) || '').slice('--only='.length).split(',').filter(Boolean);
const wanted = (name) => only.length === 0 || only.includes(name);

const BENCHES = ['gemm', 'attention', 'bert'];
const METRIC = { gemm: 'gflops', attention: 'tokens_per_s', bert: 'tokens_per_s' };
const KEYS = {
  gemm: ['m', 'n', 'k', 'op', 'threads'],
  attention: ['B', 'S', 'NH', 'HD', 'pass', 'threads'],
  bert: ['B', 'S', 'pass', 'threads'],
};

function sh(cmd, args, options = {}) {
  console.log(`$ ${[cmd, ...args].join(' ')}`);
  return spawnSync(cmd, args, { cwd: root, encoding: 'utf8', maxBuffer: 64 * 1024 * 1024, ...options });
}

// Runs a program and collects its JSON rows (stderr and non-JSON lines shown as they are).
function collect(cmd, args, source) {
  const r = sh(cmd, args, { stdio: ['ignore', 'pipe', 'inherit'] });
  const rows = [];
  for (const line of (r.stdout || '').split('\n')) {
    const t = line.trim();
    if (t.startsWith('{')) {
      try {
        rows.push({ ...JSON.parse(t), source });
        continue;
      } catch {
        // not JSON after all: shown below
      }
    }
    if (t) console.log(`  ${t}`);
  }
  if (r.error || r.status !== 0) {
    console.log(`  ! ${path.basename(cmd)} ${r.error ? r.error.message : `exited with ${r.status}`}`);
  }
  return { rows, ok: !r.error && r.status === 0 };
}

const problems = [];
const rows = [];

// ---- native ------------------------------------------------------------------------------
const present = BENCHES.filter(
  (b) => wanted(b) && fs.existsSync(path.join(root, 'native', 'bench', `bench_${b}.cpp`)),
);
for (const b of BENCHES.filter((x) => wanted(x) && !present.includes(x))) {
  console.log(`elmo: bench_${b} skipped (native/bench/bench_${b}.cpp not found)`);
}
if (present.length > 0 && !flag('--no-build')) {
  if (!fs.existsSync(path.join(buildDir, 'CMakeCache.txt'))) {
    // CPU benchmarks: the CUDA backend is left out unless ELMO_CUDA asks for it (the GPU
    // benchmarks run through scripts/gpu-check.sh on a GPU machine).
    const cuda = `-DELMO_CUDA=${process.env.ELMO_CUDA || 'OFF'}`;
    const r = sh('cmake', ['-S', '.', '-B', buildDir, '-DELMO_ADDON=OFF', '-DELMO_WERROR=ON', cuda], { stdio: 'inherit' });
    if (r.status !== 0) problems.push('cmake configure failed');
  }
  const jobs = String(typeof os.availableParallelism === 'function' ? os.availableParallelism() : os.cpus().length);
  const targets = present.flatMap((b) => ['--target', `bench_${b}`]);
  const r = sh('cmake', ['--build', buildDir, '-j', jobs, ...targets], { stdio: 'inherit' });
  if (r.status !== 0) problems.push('benchmark build failed');
}
for (const b of present) {
  const exe = path.join(buildDir, `bench_${b}`);
  if (!fs.existsSync(exe)) {
    problems.push(`bench_${b} was not built`);
    continue;
  }
  const r = collect(exe, passThrough, 'elmo');
  rows.push(...r.rows);
  if (!r.ok) problems.push(`bench_${b} failed`);
}

// ---- PyTorch -----------------------------------------------------------------------------
const python = path.join(root, '.venv', 'bin', 'python');
if (flag('--no-torch')) {
  console.log('pytorch: skipped (--no-torch)');
} else if (!fs.existsSync(python)) {
  console.log('pytorch: skipped (.venv not found)');
} else {
  for (const b of ['gemm', 'attention'].filter(wanted)) {
    const script = path.join(root, 'scripts', `bench_torch_${b}.py`);
    if (!fs.existsSync(script)) {
      console.log(`pytorch: ${b} skipped (scripts/bench_torch_${b}.py not found)`);
      continue;
    }
    const r = collect(python, [script, ...passThrough], 'pytorch');
    rows.push(...r.rows);
    if (!r.ok) problems.push(`bench_torch_${b}.py failed`);
  }
}

// ---- merge -------------------------------------------------------------------------------
const keyOf = (row) => {
  const fields = KEYS[row.bench];
  return fields ? `${row.bench}|${fields.map((f) => String(row[f])).join('|')}` : `${row.bench}|${JSON.stringify(row)}`;
};
const merged = new Map();
for (const row of rows) {
  const key = keyOf(row);
  const entry = merged.get(key) || { bench: row.bench, key: {}, elmo: null, pytorch: null, ratio: null };
  for (const f of KEYS[row.bench] || []) entry.key[f] = row[f];
  const { source, ...data } = row;
  entry[source] = data;
  merged.set(key, entry);
}
for (const e of merged.values()) {
  const metric = METRIC[e.bench];
  const a = e.elmo && e.elmo[metric];
  const b = e.pytorch && e.pytorch[metric];
  if (typeof a === 'number' && typeof b === 'number' && b > 0) e.ratio = a / b;
}
const results = {
  date: new Date().toISOString(),
  host: { cpu: (os.cpus()[0] || {}).model || 'unknown', cores: os.cpus().length, platform: `${os.platform()} ${os.arch()}` },
  rows: [...merged.values()],
  problems,
};
const outDir = path.join(__dirname, 'results');
fs.mkdirSync(outDir, { recursive: true });
fs.writeFileSync(path.join(outDir, 'latest.json'), `${JSON.stringify(results, null, 2)}\n`);

// ---- table -------------------------------------------------------------------------------
const fmt = (x) => (typeof x === 'number' ? (Math.abs(x) >= 100 ? x.toFixed(0) : x.toPrecision(3)) : '-');
for (const bench of [...new Set(results.rows.map((r) => r.bench))]) {
  const metric = METRIC[bench] || 'value';
  const header = [...(KEYS[bench] || ['row']), `elmo ${metric}`, `torch ${metric}`, 'elmo ms', 'torch ms', 'ratio'];
  const lines = results.rows
    .filter((r) => r.bench === bench)
    .map((r) => [
      ...(KEYS[bench] || []).map((f) => String(r.key[f])),
      fmt(r.elmo && r.elmo[metric]),
      fmt(r.pytorch && r.pytorch[metric]),
      fmt(r.elmo && r.elmo.ms),
      fmt(r.pytorch && r.pytorch.ms),
      r.ratio === null ? '-' : `${r.ratio.toFixed(2)}x`,
    ]);
  const widths = header.map((h, i) => Math.max(h.length, ...lines.map((l) => (l[i] || '').length)));
  const pad = (cells) => cells.map((c, i) => c.padStart(widths[i])).join('  ');
  console.log(`\n${bench}`);
  console.log(pad(header));
  for (const l of lines) console.log(pad(l));
}
if (results.rows.length === 0) console.log('\nno benchmark rows were produced');
console.log(`\nwrote ${path.relative(root, path.join(outDir, 'latest.json'))}`);
for (const p of problems) console.log(`! ${p}`);
process.exit(problems.length > 0 ? 1 : 0);
