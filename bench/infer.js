#!/usr/bin/env node
// `npm run bench:infer`: BERT inference on the CPU, elmo-chat next to onnxruntime-node and
// PyTorch, in one run.
//
//   node bench/infer.js [--models=mini,small,base] [--engines=elmo,ort,pytorch[,elmo-bf16]] [--repeat=N]
//                       [--batches=1,8,32] [--seqs=32,128] [--no-chat]
//                       [--budget-ms=1500] [--elmo=auto|api|native] [--no-build] [--no-check]
//   node bench/infer.js --merge=run1.json,run2.json     (best of earlier runs, runs nothing)
//
// Models (scripts/export_bench_models.py writes them into bench/models/<name>/ when missing):
// seeded random BERT mini (L4 H256), small (L4 H512), base (L12 H768), with pooler; the same
// weights for every engine (model.safetensors for elmo and PyTorch, model.onnx for ORT).
// Cases per model: batch 1/8/32 x seq 32/128, and a chat batch of 32 sequences of 5-60 tokens
// (seeded). Token ids and chat lengths are drawn from the same generators as native/bench/bench_bert.
// --batches, --seqs and --no-chat keep a subset of the fixed-length rows (e.g. --batches=1
// --no-chat --repeat=6 for the batch-1 rows alone); the numerical check still runs the chat batch.
//
// Engines, each in its own child process per model (so peak RSS is per engine and model):
//   elmo     the Node API (Bert.load + forwardIds over packed batches) when dist/ exports it,
//            else the native build-bench/bench_bert executable (packed batches, random weights
//            of the same shapes; its ms is the mean over >= 2 runs of at least budget-ms);
//            --elmo=native forces the executable, --elmo=api the Node API;
//   elmo-bf16  (opt-in) the Node API with precision 'bf16': bf16 copies of the linear weights,
//            activations rounded to bf16, fp32 sums (the vdpbf16ps GEMM on CPUs with AVX512_BF16,
//            fp32 FMA on widened values elsewhere); compared with ORT's fp32 (goal >= 1.6x on
//            large rows) and checked against the fp32 engines with a bf16-sized tolerance;
//   ort      onnxruntime-node, CPU provider, intraOpNumThreads = cores, graphOptimizationLevel
//            'all', batches padded to the longest sequence with an attention mask;
//   pytorch  scripts/bench_torch_bert_cpu.py with .venv/bin/python (transformers BertModel,
//            SDPA attention, torch.inference_mode, set_num_threads = cores), padded likewise.
// Timing: warm-up (>= 200 ms, at least one forward), then the median of N forwards with
// N = clamp(budget / warm-up time, 3, 25), or 2 when one forward takes over 4 s. With --repeat=N
// the whole set runs N times (engines interleaved) and each row keeps its best (lowest ms).
//
// GFLOP/s counts only the real tokens (padding is work an engine chose to do):
//   FLOPs = sum over sequences of length n: L * (2n(4H^2 + 2HI) + 4n^2 H)  +  B * 2H^2 (pooler)
// % of peak is against the CPU's measured peak (elmo's measureCpuPeak: every thread runs
// independent vector FMAs, and bf16 dot products for the bf16 engine, on the path elmo uses);
// without dist/, against cores x FLOP/cycle (32 AVX2, 64 AVX-512) x the clock read from lscpu
// (max MHz) or /proc/cpuinfo, which a VM or a boosting core may not run at.
//
// Numerical check: on the chat batch of every model, pooled output and the last hidden state of
// the real tokens, engine against engine: max |diff| must be <= 1e-3.
//
// Writes bench/results/infer-latest.json and prints a table and the goal summary.
'use strict';

const { spawnSync } = require('node:child_process');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');

const { option, listOption, countsOption, lcg, makeIds, median, ortFeeds } = require('./common');

const root = path.resolve(__dirname, '..');
const buildDir = path.join(root, 'build-bench');
const modelsDir = path.join(__dirname, 'models');
const python = path.join(root, '.venv', 'bin', 'python');
const cores = typeof os.availableParallelism === 'function' ? os.availableParallelism() : os.cpus().length;

const MODELS = { mini: { L: 4, H: 256, NH: 4 }, small: { L: 4, H: 512, NH: 8 }, base: { L: 12, H: 768, NH: 12 } };
const TOLERANCE = 1e-3;
// elmo-bf16 against the fp32 engines: bf16 operands (8 significant bits) through L layers.
const BF16_TOLERANCE = 1e-1;

// ---- inputs: the generators of bench_bert (64-bit LCG) -------------------------------------
function chatLengths() {
  const lens = [];
  let s = 12345n;
  for (let i = 0; i < 32; ++i) {
    s = lcg(s);
    lens.push(5 + Number((s >> 33n) % 56n));
  }
  return lens;
}

function chatCase() {
  const lens = chatLengths();
  return { name: 'chat', batch: 32, seq: 'chat', lens, ids: makeIds(lens) };
}

// The benchmark's rows: batch x seq (fixed lengths) and the chat batch, less what --batches,
// --seqs and --no-chat leave out. The chat batch is always the check's input (chatCase).
function makeCases() {
  const cases = [];
  for (const batch of countsOption('batches', '1,8,32')) {
    for (const seq of countsOption('seqs', '32,128')) {
      const lens = new Array(batch).fill(seq);
      cases.push({ name: `b${batch}-s${seq}`, batch, seq, lens, ids: makeIds(lens) });
    }
  }
  if (!option('no-chat', false)) cases.push(chatCase());
  return cases;
}

function flops(m, lens) {
  const { L, H } = MODELS[m];
  const I = 4 * H;
  let f = 2 * H * H * lens.length;
  for (const n of lens) f += L * (2 * n * (4 * H * H + 2 * H * I) + 4 * n * n * H);
  return f;
}

// ---- timing loop shared by the Node children -----------------------------------------------
async function timeCase(forward, timing) {
  const times = [];
  const t0 = performance.now();
  do {
    const s = performance.now();
    await forward();
    times.push(performance.now() - s);
  } while (performance.now() - t0 < 200);
  const est = Math.min(...times);
  const runs =
    est > timing.long_ms
      ? 2
      : Math.max(timing.min_runs, Math.min(timing.max_runs, Math.ceil(timing.budget_ms / est)));
  const ms = [];
  for (let i = 0; i < runs; ++i) {
    const s = performance.now();
    await forward();
    ms.push(performance.now() - s);
  }
  ms.sort((a, b) => a - b);
  const median = runs % 2 ? ms[(runs - 1) / 2] : (ms[runs / 2 - 1] + ms[runs / 2]) / 2;
  return { ms: median, runs };
}

function writeF32(file, arrays) {
  fs.writeFileSync(file, Buffer.concat(arrays.map((a) => Buffer.from(a.buffer, a.byteOffset, a.byteLength))));
}

const peakRssMb = () => process.resourceUsage().maxRSS / 1024;

// start: resident before the model (the runtime); load: peak right after loading the model.
function emitRss(rssStart, loadPeak) {
  const rss = { peak_mb: +peakRssMb().toFixed(1), start_mb: +rssStart.toFixed(1), load_peak_mb: +loadPeak.toFixed(1) };
  console.log(JSON.stringify({ rss }));
}

// ---- child: onnxruntime-node ---------------------------------------------------------------
// onnxruntime-node is not a dependency of the project (its install script downloads binaries,
// which an offline `npm install` cannot do): the benchmark installs it on first use into
// bench/.ort (git-ignored), ORT_VERSION unless $ELMO_ORT_VERSION says otherwise.
const ORT_VERSION = process.env.ELMO_ORT_VERSION || '1.30.0';
const ORT_PREFIX = path.join(__dirname, '.ort');

function ortPath(file = '') {
  return path.join(ORT_PREFIX, 'node_modules', 'onnxruntime-node', file);
}

/** Installs onnxruntime-node into bench/.ort when it is not there yet; false when that fails. */
function ensureOrt() {
  if (fs.existsSync(ortPath('package.json'))) return true;
  console.error(`bench:infer: installing onnxruntime-node@${ORT_VERSION} into ${ORT_PREFIX} (first use; needs network)`);
  fs.mkdirSync(ORT_PREFIX, { recursive: true });
  const r = spawnSync('npm', ['install', '--no-save', '--no-audit', '--no-fund', '--prefix', ORT_PREFIX, `onnxruntime-node@${ORT_VERSION}`], {
    stdio: 'inherit',
  });
  return r.status === 0 && fs.existsSync(ortPath('package.json'));
}

async function ortChild(spec) {
  const ort = require(ortPath());
  const rssStart = process.memoryUsage().rss / 2 ** 20;
  const session = await ort.InferenceSession.create(spec.onnx, {
    executionProviders: ['cpu'],
    intraOpNumThreads: spec.threads,
    interOpNumThreads: 1,
    graphOptimizationLevel: 'all',
  });
  const loadPeak = peakRssMb();
  let version = '';
  try {
    version = require(ortPath('package.json')).version;
  } catch {
    // version unknown
  }
  console.error(`onnxruntime-node ${version}, ${spec.threads} intra-op threads`);
  const feeds = (seqs) => ortFeeds(ort, session, seqs);
  if (spec.check) {
    const seqs = spec.check.ids;
    const { f, S } = feeds(seqs);
    const out = await session.run(f);
    const H = out.pooler_output.dims[1];
    const hid = out.last_hidden_state.data;
    const T = seqs.reduce((a, s) => a + s.length, 0);
    const packed = new Float32Array(T * H);
    let t = 0;
    seqs.forEach((s, b) => {
      packed.set(hid.subarray(b * S * H, (b * S + s.length) * H), t * H);
      t += s.length;
    });
    writeF32(spec.check.out, [out.pooler_output.data, packed]);
  }
  for (const c of spec.cases) {
    const { f, S } = feeds(c.ids);
    const r = await timeCase(() => session.run(f), spec.timing);
    console.log(JSON.stringify({ engine: 'ort', case: c.name, ms: +r.ms.toFixed(3), runs: r.runs, padded_tokens: c.ids.length * S }));
  }
  await session.release();
  emitRss(rssStart, loadPeak);
}

// ---- child: elmo through the Node API ------------------------------------------------------
function elmoApi() {
  try {
    const api = require(path.join(root, 'dist'));
    if (api && api.Bert && typeof api.Bert.load === 'function' && typeof api.Bert.prototype.forwardIds === 'function') {
      return api;
    }
  } catch {
    // not built, or no addon
  }
  return null;
}

async function elmoChild(spec, engine) {
  const api = elmoApi();
  if (!api) throw new Error('dist/ does not export Bert with forwardIds');
  const rssStart = process.memoryUsage().rss / 2 ** 20;
  const precision = engine === 'elmo-bf16' ? 'bf16' : 'fp32';
  const model = await api.Bert.load(spec.model_dir, { device: 'cpu', threads: spec.threads, precision });
  const loadPeak = peakRssMb();
  const packed = (seqs) => {
    const offsets = new Int32Array(seqs.length + 1);
    seqs.forEach((s, b) => (offsets[b + 1] = offsets[b] + s.length));
    const ids = new Int32Array(offsets[seqs.length]);
    seqs.forEach((s, b) => ids.set(s, offsets[b]));
    return { ids, typeIds: new Int32Array(ids.length), offsets };
  };
  if (spec.check) {
    const out = await model.forwardIds(packed(spec.check.ids));
    writeF32(spec.check.out, [Float32Array.from(out.pooled), Float32Array.from(out.hidden)]);
  }
  for (const c of spec.cases) {
    const inputs = packed(c.ids);
    const r = await timeCase(() => model.forwardIds(inputs), spec.timing);
    console.log(JSON.stringify({ engine, case: c.name, ms: +r.ms.toFixed(3), runs: r.runs, padded_tokens: inputs.ids.length }));
  }
  if (typeof model.dispose === 'function') model.dispose();
  emitRss(rssStart, loadPeak);
}

// ---- orchestration --------------------------------------------------------------------------
function sh(cmd, args, opts = {}) {
  return spawnSync(cmd, args, { cwd: root, encoding: 'utf8', maxBuffer: 256 * 1024 * 1024, ...opts });
}

function hostInfo() {
  const cpuinfo = fs.existsSync('/proc/cpuinfo') ? fs.readFileSync('/proc/cpuinfo', 'utf8') : '';
  const field = (name) => {
    const m = cpuinfo.match(new RegExp(`^${name}\\s*:\\s*(.+)$`, 'm'));
    return m ? m[1].trim() : null;
  };
  let mhz = null;
  let clockSource = null;
  const lscpu = sh('lscpu', []);
  const max = lscpu.status === 0 ? (lscpu.stdout.match(/^CPU max MHz:\s*([\d.]+)/m) || [])[1] : undefined;
  if (max) {
    mhz = parseFloat(max);
    clockSource = 'lscpu CPU max MHz';
  } else if (field('cpu MHz')) {
    mhz = parseFloat(field('cpu MHz'));
    clockSource = '/proc/cpuinfo cpu MHz';
  }
  const flags = field('flags') || '';
  const avx512 = / avx512f /.test(` ${flags} `);
  const flopsPerCycle = avx512 ? 64 : 32;
  let measured = null;
  try {
    const api = require(path.join(root, 'dist'));
    if (typeof api.measureCpuPeak === 'function') measured = api.measureCpuPeak(0.5);
  } catch {
    // no dist/ (or an older one): the clock-derived figure below
  }
  const clockPeak = mhz ? (cores * flopsPerCycle * mhz) / 1e3 : null;
  return {
    cpu: field('model name') || (os.cpus()[0] || {}).model || 'unknown',
    cores,
    mhz,
    clock_source: clockSource,
    flops_per_cycle: flopsPerCycle,
    clock_peak_gflops: clockPeak,
    peak_gflops: measured ? +measured.fp32Gflops.toFixed(1) : clockPeak,
    bf16_peak_gflops: measured && measured.bf16Gflops > 0 ? +measured.bf16Gflops.toFixed(1) : null,
    peak_source: measured
      ? `measured (measureCpuPeak, ${measured.isa}, ${measured.threads} threads)`
      : `${cores} x ${flopsPerCycle} FLOP/cycle x clock`,
    ram_gb: +(os.totalmem() / 2 ** 30).toFixed(1),
    platform: `${os.platform()} ${os.arch()}`,
    node: process.version,
  };
}

function parseRows(stdout) {
  const rows = [];
  let rss = null;
  for (const line of (stdout || '').split('\n')) {
    const t = line.trim();
    if (!t.startsWith('{')) continue;
    try {
      const o = JSON.parse(t);
      if (o.rss) rss = o.rss;
      else rows.push(o);
    } catch {
      // not a row
    }
  }
  return { rows, rss };
}

function ensureModels(names, problems) {
  const missing = names.filter((m) =>
    ['config.json', 'model.safetensors', 'tokenizer.json', 'model.onnx'].some((f) => !fs.existsSync(path.join(modelsDir, m, f))),
  );
  if (missing.length === 0) return;
  if (!fs.existsSync(python)) {
    problems.push(`bench/models/{${missing.join(',')}} missing and .venv not found to export them`);
    return;
  }
  console.log(`exporting ${missing.join(', ')} (scripts/export_bench_models.py) ...`);
  const r = sh(python, [path.join(root, 'scripts', 'export_bench_models.py'), '--models', missing.join(',')], {
    stdio: ['ignore', 'inherit', 'inherit'],
  });
  if (r.status !== 0) problems.push('export_bench_models.py failed');
}

function buildNative(problems, needBench) {
  if (!fs.existsSync(path.join(buildDir, 'CMakeCache.txt'))) {
    const r = sh('cmake', ['-S', '.', '-B', buildDir, '-DELMO_ADDON=OFF', '-DELMO_WERROR=ON', '-DELMO_TESTS=OFF'], {
      stdio: ['ignore', 'inherit', 'inherit'],
    });
    if (r.status !== 0) return problems.push('cmake configure of build-bench failed');
  }
  const targets = needBench ? ['--target', 'elmo', '--target', 'bench_bert'] : ['--target', 'elmo'];
  let r = sh('cmake', ['--build', buildDir, '-j', String(cores), ...targets], { stdio: ['ignore', 'inherit', 'inherit'] });
  if (r.status !== 0) return problems.push('native build failed');
  const exe = path.join(buildDir, 'elmo_forward');
  const src = path.join(__dirname, 'elmo_forward.cpp');
  const lib = path.join(buildDir, 'libelmo.a');
  const stale = (f) => !fs.existsSync(exe) || fs.statSync(exe).mtimeMs < fs.statSync(f).mtimeMs;
  if (stale(src) || stale(lib)) {
    const cxx = process.env.CXX || 'g++';
    r = sh(cxx, ['-std=c++17', '-O2', '-Wall', '-Wextra', '-Werror', `-I${path.join(root, 'native', 'include')}`, src, lib, '-pthread', '-o', exe], {
      stdio: ['ignore', 'inherit', 'inherit'],
    });
    if (r.status !== 0) problems.push('elmo_forward build failed');
  }
}

// Peak RSS of a native child: /usr/bin/time -f %M when present.
function runMeasured(cmd, args) {
  const timeBin = '/usr/bin/time';
  if (fs.existsSync(timeBin)) {
    const file = path.join(os.tmpdir(), `elmo-infer-rss-${process.pid}.txt`);
    const r = sh(timeBin, ['-f', '%M', '-o', file, cmd, ...args], { stdio: ['ignore', 'pipe', 'inherit'] });
    let peak = null;
    try {
      peak = parseInt(fs.readFileSync(file, 'utf8').trim().split('\n').pop(), 10) / 1024;
      fs.unlinkSync(file);
    } catch {
      // no measurement
    }
    return { r, peak };
  }
  return { r: sh(cmd, args, { stdio: ['ignore', 'pipe', 'inherit'] }), peak: null };
}

function runEngine(engine, m, cases, timing, check, problems, useApi) {
  const dir = path.join(modelsDir, m);
  const spec = {
    model: m,
    model_dir: dir,
    onnx: path.join(dir, 'model.onnx'),
    threads: cores,
    timing,
    cases: cases.map((c) => ({ name: c.name, ids: c.ids })),
    check,
  };
  const specFile = path.join(os.tmpdir(), `elmo-infer-${process.pid}-${engine}-${m}.json`);
  fs.writeFileSync(specFile, JSON.stringify(spec));
  let r;
  if (engine === 'elmo' && !useApi) {
    const exe = path.join(buildDir, 'bench_bert');
    const fixed = cases.filter((c) => c.seq !== 'chat');
    const args = ['--models', m, '--threads', String(cores), '--min-ms', String(timing.budget_ms)];
    if (fixed.length > 0) {
      args.push('--batches', [...new Set(fixed.map((c) => c.batch))].join(','));
      args.push('--seqs', [...new Set(fixed.map((c) => c.seq))].join(','));
    }
    if (!cases.some((c) => c.seq === 'chat')) args.push('--no-chat');
    const measured = runMeasured(exe, args);
    r = measured.r;
    const peak = measured.peak;
    const rows = parseRows(r.stdout).rows.map((o) => ({
      engine: 'elmo',
      case: o.seq === 'chat' ? 'chat' : `b${o.batch}-s${o.seq}`,
      ms: o.ms,
      runs: null,
      padded_tokens: o.tokens,
    }));
    if (check) {
      const batch = check.ids;
      const offsets = [0];
      for (const s of batch) offsets.push(offsets[offsets.length - 1] + s.length);
      const T = offsets[offsets.length - 1];
      const ids = batch.flat();
      const buf = Int32Array.from([batch.length, T, ...offsets, ...ids, ...new Array(T).fill(0)]);
      const binFile = `${specFile}.bin`;
      fs.writeFileSync(binFile, Buffer.from(buf.buffer));
      const c = sh(path.join(buildDir, 'elmo_forward'), [dir, binFile, check.out], { stdio: ['ignore', 'inherit', 'inherit'] });
      if (c.status !== 0) problems.push(`elmo_forward failed on ${m}`);
      fs.rmSync(binFile, { force: true });
    }
    fs.rmSync(specFile, { force: true });
    if (r.status !== 0) problems.push(`bench_bert failed on ${m} (${r.error ? r.error.message : `exit ${r.status}`})`);
    return { rows, rss: peak === null ? null : { peak_mb: +peak.toFixed(1), start_mb: null } };
  }
  if (engine === 'pytorch') {
    r = sh(python, [path.join(root, 'scripts', 'bench_torch_bert_cpu.py'), '--spec', specFile], { stdio: ['ignore', 'pipe', 'inherit'] });
  } else {
    r = sh(process.execPath, [__filename, `--child=${engine}`, `--spec=${specFile}`], { stdio: ['ignore', 'pipe', 'inherit'] });
  }
  fs.rmSync(specFile, { force: true });
  if (r.status !== 0) problems.push(`${engine} failed on ${m} (${r.error ? r.error.message : `exit ${r.status}`})`);
  return parseRows(r.stdout);
}

function readF32(file) {
  const b = fs.readFileSync(file);
  return new Float32Array(b.buffer, b.byteOffset, b.byteLength / 4);
}

function compare(m, files, check, problems) {
  const H = MODELS[m].H;
  const B = check.ids.length;
  const out = [];
  const engines = Object.keys(files).filter((e) => fs.existsSync(files[e]));
  for (let i = 0; i < engines.length; ++i) {
    for (let j = i + 1; j < engines.length; ++j) {
      const a = readF32(files[engines[i]]);
      const b = readF32(files[engines[j]]);
      if (a.length !== b.length) {
        problems.push(`check ${m}: ${engines[i]} and ${engines[j]} wrote different sizes (${a.length} vs ${b.length})`);
        continue;
      }
      let pooled = 0;
      let hidden = 0;
      for (let k = 0; k < a.length; ++k) {
        const d = Math.abs(a[k] - b[k]);
        if (Number.isNaN(d)) {
          if (k < B * H) pooled = Infinity;
          else hidden = Infinity;
        } else if (k < B * H) pooled = Math.max(pooled, d);
        else hidden = Math.max(hidden, d);
      }
      const tol = engines[i] === 'elmo-bf16' || engines[j] === 'elmo-bf16' ? BF16_TOLERANCE : TOLERANCE;
      const ok = pooled <= tol && hidden <= tol;
      if (!ok) problems.push(`check ${m}: ${engines[i]} vs ${engines[j]} differ (pooled ${pooled}, hidden ${hidden})`);
      out.push({ model: m, a: engines[i], b: engines[j], pooled_max_abs: pooled, hidden_max_abs: hidden, ok });
    }
  }
  return out;
}


// seq/s ratios a over b, round by round, for the rounds both engines ran (ratio of speeds =
// b's ms over a's).
function pairedRatios(a, b) {
  const out = [];
  if (!a || !b || !a.rounds || !b.rounds) return out;
  for (let i = 0; i < Math.min(a.rounds.length, b.rounds.length); ++i) {
    if (typeof a.rounds[i] === 'number' && typeof b.rounds[i] === 'number') out.push(b.rounds[i] / a.rounds[i]);
  }
  return out;
}

function fmt(x, digits = 3) {
  if (typeof x !== 'number' || !Number.isFinite(x)) return '-';
  if (Math.abs(x) >= 100) return x.toFixed(0);
  return x.toPrecision(digits);
}

async function main() {
  const t0 = Date.now();
  const models = listOption('models', 'mini,small,base');
  for (const m of models) if (!MODELS[m]) throw new Error(`unknown model ${m}`);
  const engines = listOption('engines', 'elmo,ort,pytorch');
  const repeat = Math.max(1, parseInt(option('repeat', '1'), 10));
  const cases = makeCases();
  const timing = { budget_ms: parseFloat(option('budget-ms', '1500')), min_runs: 3, max_runs: 25, long_ms: 4000 };
  const problems = [];
  const skipped = {};
  const host = hostInfo();
  console.log(`${host.cpu}, ${host.cores} cores at ${host.mhz} MHz (${host.clock_source}); fp32 peak ` +
      `${fmt(host.peak_gflops)} GFLOP/s (${host.peak_source})` +
      (host.bf16_peak_gflops ? `, bf16 dot-product peak ${fmt(host.bf16_peak_gflops)} GFLOP/s` : '') +
      (host.clock_peak_gflops && host.clock_peak_gflops !== host.peak_gflops
        ? `; from the clock: ${fmt(host.clock_peak_gflops)} = ${host.cores} x ${host.flops_per_cycle} FLOP/cycle x clock`
        : ''));

  const active = [];
  const elmoVia = String(option('elmo', 'auto'));
  if (!['auto', 'api', 'native'].includes(elmoVia)) throw new Error(`--elmo=${elmoVia}: expected auto, api or native`);
  const api = engines.includes('elmo') && elmoVia !== 'native' ? elmoApi() : null;
  if (elmoVia === 'api' && engines.includes('elmo') && !api) throw new Error('--elmo=api: dist/ does not export Bert.forwardIds');
  if (engines.includes('elmo')) {
    if (api) console.log('elmo: Node API (dist/: Bert.load + forwardIds)');
    else console.log('elmo: native bench_bert (the Node API Bert.forwardIds is not built in dist/)');
    active.push('elmo');
  }
  if (engines.includes('elmo-bf16')) {
    if (elmoApi()) active.push('elmo-bf16');
    else {
      console.log('elmo-bf16: skipped (needs the Node API: npm run build:addon && npm run build)');
      skipped['elmo-bf16'] = 'Node API not built';
    }
  }
  if (engines.includes('ort')) {
    if (ensureOrt()) active.push('ort');
    else {
      console.log(`ort: skipped (onnxruntime-node@${ORT_VERSION} could not be installed into ${ORT_PREFIX})`);
      skipped.ort = 'onnxruntime-node not installed';
    }
  }
  if (engines.includes('pytorch')) {
    if (fs.existsSync(python)) active.push('pytorch');
    else {
      console.log('pytorch: skipped (.venv not found)');
      skipped.pytorch = '.venv not found';
    }
  }
  ensureModels(models, problems);
  // The Node API runs the addon as built (npm run build:addon, npm run build); bench_bert and
  // elmo_forward are built here.
  if (active.includes('elmo') && !api && !option('no-build', false)) buildNative(problems, true);

  const checkDir = fs.mkdtempSync(path.join(os.tmpdir(), 'elmo-infer-check-'));
  const results = {}; // model -> case -> engine -> {ms, runs, padded_tokens, rounds: [ms per round]}
  const rss = {}; // model -> engine -> {peak_mb, start_mb}
  const checks = [];
  const doCheck = !option('no-check', false);
  for (let round = 0; round < repeat; ++round) {
    for (const m of models) {
      const files = {};
      for (const e of active) {
        const check = doCheck && round === 0 ? { ids: chatCase().ids, out: path.join(checkDir, `${m}-${e}.bin`) } : null;
        if (check) files[e] = check.out;
        const ts = Date.now();
        const out = runEngine(e, m, cases, timing, check, problems, !!api);
        console.log(`  ${e} ${m} (round ${round + 1}/${repeat}): ${out.rows.length} rows, ${((Date.now() - ts) / 1e3).toFixed(0)} s` +
            (out.rss ? `, peak RSS ${fmt(out.rss.peak_mb)} MB` : ''));
        for (const row of out.rows) {
          results[m] = results[m] || {};
          results[m][row.case] = results[m][row.case] || {};
          const prev = results[m][row.case][e];
          const rounds = prev ? prev.rounds : [];
          rounds[round] = row.ms;
          if (!prev || row.ms < prev.ms) results[m][row.case][e] = { ms: row.ms, runs: row.runs, padded_tokens: row.padded_tokens, rounds };
          else prev.rounds = rounds;
        }
        if (out.rss) {
          rss[m] = rss[m] || {};
          const prev = rss[m][e];
          if (!prev || out.rss.peak_mb > prev.peak_mb) rss[m][e] = out.rss;
        }
      }
      if (doCheck && round === 0) {
        const c = compare(m, files, { ids: chatCase().ids }, problems);
        checks.push(...c);
        for (const x of c) {
          console.log(`  check ${m} chat batch: ${x.a} vs ${x.b}: max |diff| pooled ${x.pooled_max_abs.toExponential(2)}, ` +
              `hidden ${x.hidden_max_abs.toExponential(2)} ${x.ok ? 'ok' : 'FAIL'}`);
        }
      }
    }
  }
  fs.rmSync(checkDir, { recursive: true, force: true });

  const versions = { node: process.version };
  if (api && typeof api.buildInfo === 'function') {
    try {
      versions.elmo_addon = api.buildInfo();
    } catch {
      // no build info
    }
  }
  try {
    versions['onnxruntime-node'] = require(ortPath('package.json')).version;
  } catch {
    // not installed
  }
  if (active.includes('pytorch')) {
    const v = sh(python, ['-c', 'import torch, transformers; print(torch.__version__, transformers.__version__)']);
    if (v.status === 0) [versions.torch, versions.transformers] = v.stdout.trim().split(' ');
  }
  report({
    date: new Date().toISOString(),
    host,
    versions,
    elmo_path: active.includes('elmo') ? (api ? 'node-api' : 'bench_bert') : null,
    timing: { ...timing, repeat, reduce: repeat > 1 ? 'best of rounds (lowest ms)' : 'single round' },
    models,
    active,
    results,
    rss,
    checks,
    skipped,
    problems,
    wall_s: Math.round((Date.now() - t0) / 1e3),
  });
}

// Rows (seq/s, GFLOP/s, % of peak, ratios), goals; writes bench/results/infer-latest.json and
// prints the table. results: model -> case -> engine -> {ms, runs, padded_tokens}.
function report(ctx) {
  const { host, models, active, results, rss, problems } = ctx;
  const cases = makeCases();
  // ---- rows ----------------------------------------------------------------------------------
  const rows = [];
  for (const m of models) {
    for (const c of cases) {
      const tokens = c.lens.reduce((a, b) => a + b, 0);
      const f = flops(m, c.lens);
      const row = { model: m, batch: c.batch, seq: c.seq, tokens, gflop: +(f / 1e9).toFixed(4) };
      for (const e of active) {
        const r = results[m] && results[m][c.name] && results[m][c.name][e];
        if (!r) continue;
        const gflops = f / (r.ms * 1e6);
        // bf16 rows against the bf16 dot-product peak where the CPU has one
        const peak = e === 'elmo-bf16' && host.bf16_peak_gflops ? host.bf16_peak_gflops : host.peak_gflops;
        row[e] = {
          ms: +r.ms.toFixed(3),
          seq_per_s: +((c.batch * 1000) / r.ms).toFixed(2),
          gflops: +gflops.toFixed(2),
          pct_peak: peak ? +((100 * gflops) / peak).toFixed(1) : null,
          padded_tokens: r.padded_tokens,
          runs: r.runs,
        };
        if (r.rounds && r.rounds.length > 1) row[e].rounds_ms = r.rounds.map((x) => (typeof x === 'number' ? +x.toFixed(3) : null));
      }
      if (row.elmo && row.ort) {
        row.elmo_over_ort = +(row.elmo.seq_per_s / row.ort.seq_per_s).toFixed(3);
        // The same ratio per round (both engines ran within seconds of each other), and its
        // median: less exposed than the best-of to one engine catching a quiet moment alone.
        const paired = pairedRatios(results[m][c.name].elmo, results[m][c.name].ort);
        if (paired.length > 1) {
          row.elmo_over_ort_rounds = paired.map((x) => +x.toFixed(3));
          row.elmo_over_ort_median_round = +median(paired).toFixed(3);
        }
      }
      if (row.elmo && row.pytorch) row.elmo_over_pytorch = +(row.elmo.seq_per_s / row.pytorch.seq_per_s).toFixed(3);
      if (row['elmo-bf16'] && row.ort) {
        row.elmo_bf16_over_ort = +(row['elmo-bf16'].seq_per_s / row.ort.seq_per_s).toFixed(3);
        const paired = pairedRatios(results[m][c.name]['elmo-bf16'], results[m][c.name].ort);
        if (paired.length > 1) {
          row.elmo_bf16_over_ort_rounds = paired.map((x) => +x.toFixed(3));
          row.elmo_bf16_over_ort_median_round = +median(paired).toFixed(3);
        }
      }
      rows.push(row);
    }
  }

  // ---- goals -----------------------------------------------------------------------------------
  const goals = [];
  const ratioGoal = (name, target, pick, key = 'elmo_over_ort') => {
    const sel = rows.filter(pick).filter((r) => typeof r[key] === 'number');
    if (sel.length === 0) return key === 'elmo_over_ort' ? goals.push({ goal: name, target, met: null, detail: 'no elmo+ort rows' }) : 0;
    const worst = Math.min(...sel.map((r) => r[key]));
    const medianKey = `${key}_median_round`;
    const paired = sel.every((r) => typeof r[medianKey] === 'number');
    const label = (r) => `${r.model} b${r.batch} ${r.seq === 'chat' ? 'chat' : `s${r.seq}`}`;
    const goal = {
      goal: name,
      target,
      met: worst >= target,
      worst: +worst.toFixed(3),
      detail: sel.map((r) => `${label(r)}: ${r[key].toFixed(2)}x`).join(', '),
    };
    if (paired) {
      const worstMedian = Math.min(...sel.map((r) => r[medianKey]));
      goal.median_round = {
        met: worstMedian >= target,
        worst: +worstMedian.toFixed(3),
        detail: sel.map((r) => `${label(r)}: ${r[medianKey].toFixed(2)}x`).join(', '),
      };
    }
    goals.push(goal);
  };
  ratioGoal('elmo/ORT on large fixed-length rows (>= 1024 tokens)', 1.05, (r) => r.seq !== 'chat' && r.tokens >= 1024);
  ratioGoal('elmo/ORT at batch 1', 1.3, (r) => r.batch === 1);
  ratioGoal('elmo/ORT on the chat batch', 2.0, (r) => r.seq === 'chat');
  ratioGoal('elmo bf16 / ORT fp32 on large fixed-length rows', 1.6, (r) => r.seq !== 'chat' && r.tokens >= 1024, 'elmo_bf16_over_ort');
  if (rss.base && rss.base.elmo) {
    // weights: f32 parameters; activations: the inference working set of the largest row
    // (32 x 128 tokens): residual stream in + out, qkv, attention context, FFN inner, 4 bytes each.
    const { L, H } = MODELS.base;
    const I = 4 * H;
    const params = 30522 * H + 512 * H + 2 * H + 2 * H + L * (4 * H * H + 4 * H + 2 * H * I + I + H + 4 * H) + H * H + H;
    const T = 32 * 128;
    const weightsMb = (4 * params) / 2 ** 20;
    const actsMb = (4 * T * (2 * H + 3 * H + H + I)) / 2 ** 20;
    const budget = 1.3 * (weightsMb + actsMb);
    goals.push({
      goal: 'elmo peak RSS, base, <= 1.3 x (weights + activations)',
      target: +budget.toFixed(1),
      met: rss.base.elmo.peak_mb <= budget,
      detail: `peak ${fmt(rss.base.elmo.peak_mb)} MB vs 1.3 x (${weightsMb.toFixed(0)} MB weights + ${actsMb.toFixed(0)} MB activations) = ${budget.toFixed(0)} MB`,
    });
  }

  const result = {
    date: ctx.date,
    host,
    versions: ctx.versions,
    elmo_path: ctx.elmo_path,
    timing: ctx.timing,
    engines: active,
    flops_formula: 'sum over sequences of length n: L*(2n(4H^2+2HI) + 4n^2 H) + B*2H^2 (pooler); real tokens only',
    rows,
    rss,
    checks: ctx.checks,
    goals,
    skipped: ctx.skipped,
    problems,
    wall_s: ctx.wall_s,
  };
  if (ctx.merged_from) result.merged_from = ctx.merged_from;
  const outDir = path.join(__dirname, 'results');
  fs.mkdirSync(outDir, { recursive: true });
  fs.writeFileSync(path.join(outDir, 'infer-latest.json'), `${JSON.stringify(result, null, 2)}\n`);

  // ---- table -------------------------------------------------------------------------------
  const head = ['model', 'batch', 'seq', 'tokens'];
  for (const e of active) head.push(`${e} seq/s`, `${e} ms`, `${e} GF/s (%pk)`);
  if (active.includes('elmo') && active.includes('ort')) head.push('elmo/ORT');
  if (active.includes('elmo') && active.includes('pytorch')) head.push('elmo/PT');
  if (active.includes('elmo-bf16') && active.includes('ort')) head.push('bf16/ORT');
  const body = rows.map((r) => {
    const cells = [r.model, String(r.batch), String(r.seq), String(r.tokens)];
    for (const e of active) {
      const x = r[e];
      cells.push(x ? fmt(x.seq_per_s) : '-', x ? fmt(x.ms) : '-', x ? `${fmt(x.gflops)} (${fmt(x.pct_peak, 2)}%)` : '-');
    }
    if (head.includes('elmo/ORT')) cells.push(fmt(r.elmo_over_ort));
    if (head.includes('elmo/PT')) cells.push(fmt(r.elmo_over_pytorch));
    if (head.includes('bf16/ORT')) cells.push(fmt(r.elmo_bf16_over_ort));
    return cells;
  });
  const widths = head.map((h, i) => Math.max(h.length, ...body.map((b) => b[i].length)));
  const line = (cells) => `| ${cells.map((c, i) => c.padStart(widths[i])).join(' | ')} |`;
  console.log('');
  console.log(line(head));
  console.log(`|${widths.map((w) => '-'.repeat(w + 2)).join('|')}|`);
  for (const b of body) console.log(line(b));
  console.log('');
  for (const m of Object.keys(rss)) {
    console.log(`peak RSS ${m}: ${Object.entries(rss[m]).map(([e, x]) => `${e} ${fmt(x.peak_mb)} MB` + (x.start_mb ? ` (runtime ${fmt(x.start_mb)} MB, peak after load ${fmt(x.load_peak_mb)} MB)` : '')).join(', ')}`);
  }
  for (const g of goals) {
    console.log(`goal: ${g.goal} (target ${g.target}): ${g.met === null ? 'n/a' : g.met ? 'MET' : 'NOT MET'}; ${g.detail}`);
    if (g.median_round) {
      console.log(`  median of per-round ratios: ${g.median_round.met ? 'MET' : 'NOT MET'}; ${g.median_round.detail}`);
    }
  }
  for (const p of problems) console.log(`! ${p}`);
  console.log(`wrote bench/results/infer-latest.json (${result.wall_s} s)`);
  if (problems.length > 0) process.exitCode = 1;
}

// --merge=a.json,b.json: the best (lowest ms) of earlier runs' rows, peak RSS the highest, every
// check kept; rewrites infer-latest.json and prints the table. Runs nothing.
function merge(files) {
  const runs = files.map((f) => JSON.parse(fs.readFileSync(f, 'utf8')));
  const results = {};
  const rss = {};
  const models = [];
  const active = [];
  let roundsBefore = 0;
  for (const run of runs) {
    const runRounds = (run.timing && run.timing.repeat) || 1;
    for (const row of run.rows) {
      if (!models.includes(row.model)) models.push(row.model);
      const name = row.seq === 'chat' ? 'chat' : `b${row.batch}-s${row.seq}`;
      for (const e of run.engines || []) {
        if (!active.includes(e)) active.push(e);
        const x = row[e];
        if (!x) continue;
        results[row.model] = results[row.model] || {};
        results[row.model][name] = results[row.model][name] || {};
        const prev = results[row.model][name][e];
        // Rounds line up across engines within a run; runs are appended one after another
        // (every engine of a run gets the run's round count, missing ones as null).
        const base = roundsBefore;
        const rounds = prev ? prev.rounds : [];
        (x.rounds_ms || [x.ms]).forEach((v, i) => (rounds[base + i] = v));
        if (!prev || x.ms < prev.ms) results[row.model][name][e] = { ms: x.ms, runs: x.runs, padded_tokens: x.padded_tokens, rounds };
        else prev.rounds = rounds;
      }
    }
    for (const [m, byEngine] of Object.entries(run.rss || {})) {
      rss[m] = rss[m] || {};
      for (const [e, x] of Object.entries(byEngine)) {
        const prev = rss[m][e] || {};
        const most = (k) => Math.max(...[prev[k], x[k]].filter((v) => typeof v === 'number'), -Infinity);
        rss[m][e] = { peak_mb: most('peak_mb'), start_mb: x.start_mb ?? prev.start_mb ?? null };
        if (most('load_peak_mb') > -Infinity) rss[m][e].load_peak_mb = most('load_peak_mb');
      }
    }
    roundsBefore += runRounds;
  }
  const first = runs[0];
  report({
    date: new Date().toISOString(),
    host: first.host,
    versions: first.versions,
    elmo_path: first.elmo_path,
    timing: { ...first.timing, repeat: runs.reduce((a, r) => a + ((r.timing && r.timing.repeat) || 1), 0), reduce: `best of ${files.length} runs (lowest ms)` },
    models,
    active,
    results,
    rss,
    checks: runs.flatMap((r) => r.checks || []),
    skipped: first.skipped,
    problems: runs.flatMap((r) => r.problems || []),
    wall_s: runs.reduce((a, r) => a + (r.wall_s || 0), 0),
    merged_from: files.map((f) => path.basename(f)),
  });
}

const child = option('child', null);
if (child) {
  const spec = JSON.parse(fs.readFileSync(String(option('spec', '')), 'utf8'));
  (child === 'ort' ? ortChild(spec) : elmoChild(spec, child)).catch((e) => {
    console.error(e && e.stack ? e.stack : String(e));
    process.exit(1);
  });
} else if (option('merge', null)) {
  merge(listOption('merge', ''));
} else {
  main().catch((e) => {
    console.error(e && e.stack ? e.stack : String(e));
    process.exit(1);
  });
}
