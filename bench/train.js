#!/usr/bin/env node
// `npm run bench:train`: BERT sequence-classification training steps on the CPU, elmo-chat next
// to PyTorch, in one run; `npm run bench:mlm` (--task mlm): masked-LM pretraining steps.
//
//   node bench/train.js [--task sequence|mlm] [--quick] [--cases tiny,mini-s32,chat] [--json out.json]
//                       [--precision fp32|bf16] [--repeat N] [--base-repeat N] [--target-s S]
//                       [--threads N] [--chat-batches K] [--no-base-s128] [--eval-loss]
//                       [--wait-load X] [--max-others F] [--retries N]
//
// Models: randomly initialised BERT, vocab 30522 (the WordPiece vocabulary of
// /work/shared/data/bert_vocab, or $ELMO_BENCH_VOCAB), 512 positions, 77 labels, dropout 0.1:
// tiny (L2 H128, 2 heads, I512), mini (L4 H256, 4 heads, I1024), small (L4 H512, 8 heads, I2048),
// base (L12 H768, 12 heads, I3072).
// Cases per model (`<model>-<shape>`):
//   s32, s128  batch 32 x 32 or 128 tokens, random ids ([CLS] then ids in [1000, 29000)), random labels;
//   chat       real utterances: the first 32 x K texts of banking77's train.csv (K = --chat-batches,
//              default 8), tokenized (maxSeqLen 64), 32 consecutive utterances per batch, their
//              real labels. elmo gets each batch packed (no padding); PyTorch gets the same
//              per-batch lengths (scripts/bench_torch_train.py --lengths), padded per batch.
// --cases keeps the cases whose name, model or shape is listed (e.g. `tiny,base-s32,chat`).
// --quick: tiny and mini only, ~3 s per measurement, one round.
//
// --task mlm: masked-LM steps instead, one shape, s128 (batch 32 x 128), on tiny, mini and small
// (base with --cases base-s128). The model has no classifier; the MLM head (dense + GELU +
// LayerNorm, then the decoder tied to the word embeddings, bias of its own) is on both sides.
// One batch, built here in the parent and handed to both children as a JSON file: the s128
// ids with [SEP] last; in each sequence of n tokens, round(0.15 (n-2)) positions among the n-2
// between [CLS] and [SEP] (19 of 126), drawn without replacement by an LCG (seed 1234); labels
// are the original ids there and -100 elsewhere; the inputs there are 80% [MASK], 10% a random
// id in [1000, 29000), 10% unchanged (the draw decides per position). 608 masked rows per step.
//   elmo     Bert.create(config without numLabels, {..., mlm: true}), model.trainer({task: 'mlm',
//            ...the same optimizer options}); elmo runs the MLM head on the masked rows only;
//   pytorch  scripts/bench_torch_train.py --mlm FILE: transformers BertForMaskedLM (no pooler,
//            tie_word_embeddings as its default, true), labels -100 off the masked positions;
//            it runs the head, and the loss's softmax, on every position, as users get it.
// The goal checked is elmo/PyTorch >= 3x on every case.
//
// Engines, each in its own process per case and round (so peak RSS is per case):
//   elmo     Bert.create(config, {tokenizer, device: 'cpu', threads, seed, precision}) and
//            model.trainer({task: 'sequence', learningRate: 1e-4, weightDecay: 0.01, maxGradNorm: 1}),
//            then trainer.step({ids, typeIds, offsets, labels}) on packed batches;
//   pytorch  scripts/bench_torch_train.py (.venv): transformers BertForSequenceClassification,
//            AdamW (lr 1e-4, weight decay 0.01 = torch's default), clip_grad_norm_(1.0),
//            --threads = the same thread count.
// A step is forward + loss + backward + clipping + AdamW on both sides. Each run: 2 warm-up steps,
// then N timed steps. N is picked once per case from the first elmo run's warm-up (about
// --target-s seconds, default 8, of timed steps; at least 2; a multiple of K for chat) and
// reused by every run of the case on both sides. Engines alternate (elmo, pytorch, elmo,
// pytorch, ...), --repeat rounds per case (default 2; --base-repeat for base, default 2).
//
// Per run: fixed-length cases (mlm too), the median step time; the chat case, total time over whole
// cycles of its K batches (batches differ in size, so a median would pick one batch). Per case:
// the median over the rounds; the ratio elmo/PyTorch is the ratio of those medians (the per-round
// ratios are in the JSON too).
// GFLOP/s counts real tokens only; a training step counts 3x the forward:
//   forward = sum over sequences of n tokens: L*(2n(4H^2 + 2HI) + 4n^2 H) + B*(2H^2 + 2H*77)
// (pooler and classifier), against the peak measured at the start (measureCpuPeak, the better
// of two half-second measurements). --task mlm counts the encoder the same way and the MLM
// head on the M masked rows only (the work elmo does; PyTorch does the head on all B*n rows,
// so its figure is a rate of that useful work, not of its arithmetic):
//   forward = sum over sequences: L*(2n(4H^2 + 2HI) + 4n^2 H) + M*(2H^2 + 2HV), V = 30522.
// Peak RSS: process.resourceUsage().maxRSS of the elmo child, ru_maxrss of the Python child.
//
// Noise: for each child, the CPU time the rest of the machine used meanwhile (/proc/stat busy
// time less the child's own, from /usr/bin/time) and the time the hypervisor stole, each as a
// fraction of wall x cores. A round where either exceeds --max-others (default 0.1) for either
// engine is run again, at most --retries times per case (default 2); the discarded rounds are
// kept in the JSON.
// --eval-loss also times trainer.evalLoss (forward + loss, no backward or update) per elmo run.
// --wait-load X waits before each round for the 1-minute load average to fall below X; the
// load average before each run is in the JSON either way.
//
// Writes the JSON (default bench-train.json in the current directory) and prints a table.
'use strict';

const { spawnSync } = require('node:child_process');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');

const { lcg, makeIds, median } = require('./common');

const root = path.resolve(__dirname, '..');
const python = path.join(root, '.venv', 'bin', 'python');
const torchScript = path.join(root, 'scripts', 'bench_torch_train.py');
const sharedData = path.resolve(root, '..', 'shared', 'data');
const vocabFile = process.env.ELMO_BENCH_VOCAB || path.join(sharedData, 'bert_vocab', 'vocab.txt');
const chatFile = process.env.ELMO_BENCH_CHAT || path.join(sharedData, 'banking77', 'train.csv');
const cores = typeof os.availableParallelism === 'function' ? os.availableParallelism() : os.cpus().length;

const MODELS = {
  tiny: { L: 2, H: 128, NH: 2, I: 512 },
  mini: { L: 4, H: 256, NH: 4, I: 1024 },
  small: { L: 4, H: 512, NH: 8, I: 2048 },
  base: { L: 12, H: 768, NH: 12, I: 3072 },
};
const SHAPES = ['s32', 's128', 'chat'];
const NUM_LABELS = 77;
const VOCAB = 30522;
// masked LM (--task mlm)
const MLM_SHAPES = ['s128'];
const MASK_PROB = 0.15;
const CLS = 101;
const SEP = 102;
const MASK = 103;
const IGNORE = -100;
const BATCH = 32;
const CHAT_MAX_LEN = 64;
const WARMUP = 2;

// ---- options: --name value or --name=value ----------------------------------------------------
const argv = process.argv.slice(2);
function option(name, fallback) {
  for (let i = 0; i < argv.length; ++i) {
    const a = argv[i];
    if (a.startsWith(`--${name}=`)) return a.slice(name.length + 3);
    if (a === `--${name}`) {
      const next = argv[i + 1];
      return next !== undefined && !next.startsWith('--') ? next : true;
    }
  }
  return fallback;
}
const flag = (name) => option(name, false) !== false;
function intOption(name, fallback, min = 1) {
  const v = option(name, undefined);
  if (v === undefined) return fallback;
  const n = Number(v);
  if (!Number.isInteger(n) || n < min) throw new Error(`--${name}: expected an integer >= ${min}, got ${v}`);
  return n;
}

// ---- FLOPs --------------------------------------------------------------------------------------
function trainFlops(m, lens) {
  const { L, H, I } = MODELS[m];
  let f = lens.length * (2 * H * H + 2 * H * NUM_LABELS);
  for (const n of lens) f += L * (2 * n * (4 * H * H + 2 * H * I) + 4 * n * n * H);
  return 3 * f;
}

// Encoder as above, no pooler or classifier; the MLM head on the `masked` rows only.
function mlmFlops(m, lens, masked) {
  const { L, H, I } = MODELS[m];
  let f = masked * (2 * H * H + 2 * H * VOCAB);
  for (const n of lens) f += L * (2 * n * (4 * H * H + 2 * H * I) + 4 * n * n * H);
  return 3 * f;
}

// ---- inputs -------------------------------------------------------------------------------------
// Minimal CSV (RFC 4180 quoting) for banking77's `text,category`.
function parseCsv(text) {
  const rows = [];
  let row = [];
  let field = '';
  let quoted = false;
  for (let i = 0; i < text.length; ++i) {
    const c = text[i];
    if (quoted) {
      if (c === '"' && text[i + 1] === '"') {
        field += '"';
        ++i;
      } else if (c === '"') quoted = false;
      else field += c;
    } else if (c === '"') quoted = true;
    else if (c === ',') {
      row.push(field);
      field = '';
    } else if (c === '\n' || c === '\r') {
      if (c === '\r' && text[i + 1] === '\n') ++i;
      row.push(field);
      rows.push(row);
      row = [];
      field = '';
    } else field += c;
  }
  if (field !== '' || row.length > 0) {
    row.push(field);
    rows.push(row);
  }
  return rows.filter((r) => r.length > 1 || r[0] !== '');
}

// The chat batches: K x 32 consecutive utterances, tokenized; labels are the categories' ids in
// order of first appearance in the file.
function chatBatches(tokenizer, k) {
  const rows = parseCsv(fs.readFileSync(chatFile, 'utf8'));
  const head = rows.shift();
  const ti = head.indexOf('text');
  const ci = head.indexOf('category');
  if (ti < 0 || ci < 0) throw new Error(`${chatFile}: expected a text,category header`);
  const labelIds = new Map();
  for (const r of rows) if (!labelIds.has(r[ci])) labelIds.set(r[ci], labelIds.size);
  if (rows.length < k * BATCH) throw new Error(`${chatFile}: ${rows.length} rows, fewer than ${k} x ${BATCH}`);
  const batches = [];
  for (let b = 0; b < k; ++b) {
    const slice = rows.slice(b * BATCH, (b + 1) * BATCH);
    const enc = tokenizer.encodeBatch(
      slice.map((r) => r[ti]),
      { maxSeqLen: CHAT_MAX_LEN },
    );
    const labels = Int32Array.from(slice, (r) => labelIds.get(r[ci]) % NUM_LABELS);
    batches.push({ ids: enc.ids, typeIds: enc.typeIds, offsets: enc.offsets, labels });
  }
  return batches;
}

function fixedBatch(seq) {
  const lens = new Array(BATCH).fill(seq);
  const seqs = makeIds(lens);
  const offsets = Int32Array.from({ length: BATCH + 1 }, (_, b) => b * seq);
  const ids = Int32Array.from(seqs.flat());
  const labels = new Int32Array(BATCH);
  let s = 99n;
  for (let b = 0; b < BATCH; ++b) {
    s = lcg(s);
    labels[b] = Number((s >> 33n) % BigInt(NUM_LABELS));
  }
  return { ids, typeIds: new Int32Array(ids.length), offsets, labels };
}

// The masked-LM batch (see the header): plain arrays, as the JSON file both children read.
function mlmBatch(seq) {
  const seqs = makeIds(new Array(BATCH).fill(seq));
  let s = 1234n;
  const draw = (n) => {
    s = lcg(s);
    return Number((s >> 33n) % BigInt(n));
  };
  const ids = [];
  const labels = [];
  const offsets = [0];
  let masked = 0;
  for (const row of seqs) {
    const n = row.length;
    const base = ids.length;
    row[0] = CLS;
    row[n - 1] = SEP;
    ids.push(...row);
    labels.push(...new Array(n).fill(IGNORE));
    offsets.push(ids.length);
    const inner = Array.from({ length: n - 2 }, (_, i) => i + 1);
    const k = Math.max(1, Math.round(MASK_PROB * (n - 2)));
    for (let j = 0; j < k; ++j) {
      // partial Fisher-Yates: inner[0..k) are the masked positions
      const r = j + draw(n - 2 - j);
      [inner[j], inner[r]] = [inner[r], inner[j]];
      const t = base + inner[j];
      labels[t] = ids[t];
      const u = draw(10);
      if (u < 8) ids[t] = MASK;
      else if (u === 8) ids[t] = 1000 + draw(29000);
    }
    masked += k;
  }
  return { ids, offsets, labels, masked };
}

const lengthsOf = (batch) =>
  Array.from({ length: batch.offsets.length - 1 }, (_, b) => batch.offsets[b + 1] - batch.offsets[b]);

// ---- child: elmo --------------------------------------------------------------------------------
async function elmoChild(spec) {
  const api = require(path.join(root, 'dist'));
  const rssStart = process.memoryUsage().rss / 2 ** 20;
  const tokenizer = api.Tokenizer.fromVocab(fs.readFileSync(vocabFile, 'utf8'));
  const { L, H, NH, I } = MODELS[spec.model];
  const mlm = spec.task === 'mlm';
  const model = api.Bert.create(
    {
      vocabSize: VOCAB,
      hiddenSize: H,
      numLayers: L,
      numHeads: NH,
      intermediateSize: I,
      maxPositions: 512,
      typeVocabSize: 2,
      ...(mlm ? {} : { numLabels: NUM_LABELS }),
    },
    { tokenizer, device: 'cpu', threads: spec.threads, seed: 1, precision: spec.precision, mlm },
  );
  let batches;
  if (mlm) {
    const b = JSON.parse(fs.readFileSync(spec.batch_file, 'utf8'));
    const ids = Int32Array.from(b.ids);
    batches = [
      {
        ids,
        typeIds: new Int32Array(ids.length),
        offsets: Int32Array.from(b.offsets),
        labels: Int32Array.from(b.labels),
      },
    ];
  } else {
    batches =
      spec.shape === 'chat' ? chatBatches(tokenizer, spec.chat_batches) : [fixedBatch(Number(spec.shape.slice(1)))];
  }
  const trainer = model.trainer({
    task: mlm ? 'mlm' : 'sequence',
    learningRate: 1e-4,
    weightDecay: 0.01,
    maxGradNorm: 1,
    seed: 1,
  });
  const stepAt = async (i) => {
    const s = performance.now();
    const r = await trainer.step(batches[i % batches.length]);
    return { ms: performance.now() - s, loss: r.loss };
  };
  const warm = [];
  for (let i = 0; i < WARMUP; ++i) warm.push((await stepAt(i)).ms);
  let steps = spec.steps;
  if (!steps) {
    // the warm-up's second step (the first allocates), scaled to target_s; a multiple of the
    // number of batches
    const est = warm[warm.length - 1];
    steps = Math.max(2, Math.round((spec.target_s * 1000) / est));
    const k = batches.length;
    if (k > 1) steps = Math.max(k, Math.round(steps / k) * k);
  }
  const times = [];
  const losses = [];
  for (let i = 0; i < steps; ++i) {
    const r = await stepAt(i);
    times.push(r.ms);
    losses.push(r.loss);
  }
  let evalMs = null;
  if (spec.eval_loss) {
    // forward + loss only (no dropout, no backward, no update), same batches
    const e = [];
    for (let i = 0; i < Math.max(3, Math.min(steps, 10)); ++i) {
      const s = performance.now();
      await trainer.evalLoss(batches[i % batches.length]);
      e.push(performance.now() - s);
    }
    evalMs = median(e);
  }
  const peakMb = process.resourceUsage().maxRSS / 1024;
  await trainer.dispose();
  model.dispose();
  console.log(
    JSON.stringify({
      engine: 'elmo',
      steps,
      warmup_ms: warm,
      step_ms: times,
      eval_loss_ms: evalMs,
      loss_first: losses[0],
      loss_last: losses[losses.length - 1],
      peak_rss_mb: +peakMb.toFixed(1),
      start_rss_mb: +rssStart.toFixed(1),
      lengths: batches.map(lengthsOf),
    }),
  );
}

// ---- orchestration ------------------------------------------------------------------------------
function sh(cmd, args, opts = {}) {
  return spawnSync(cmd, args, { cwd: root, encoding: 'utf8', maxBuffer: 64 * 1024 * 1024, ...opts });
}

function lastJson(stdout) {
  const lines = (stdout || '').split('\n').filter((l) => l.trim().startsWith('{'));
  return lines.length ? JSON.parse(lines[lines.length - 1]) : null;
}

// Busy and stolen CPU time of the whole machine (/proc/stat, in clock ticks).
function cpuTicks() {
  try {
    const f = fs.readFileSync('/proc/stat', 'utf8').split('\n')[0].trim().split(/\s+/).slice(1).map(Number);
    // user nice system idle iowait irq softirq steal
    return { busy: f[0] + f[1] + f[2] + f[5] + f[6], steal: f[7] || 0 };
  } catch {
    return null;
  }
}
const timeBin = fs.existsSync('/usr/bin/time') ? '/usr/bin/time' : null;
let clkTck = null;

// Runs a child and measures how much CPU others took meanwhile: the machine's busy time
// (/proc/stat) less the child's own user + system time (/usr/bin/time), as a fraction of
// wall x cores; and the time the hypervisor stole, likewise. null where not measurable.
function measured(cmd, args, opts) {
  if (clkTck === null) {
    const g = sh('getconf', ['CLK_TCK']);
    clkTck = g.status === 0 ? parseInt(g.stdout, 10) || 100 : 100;
  }
  const before = cpuTicks();
  const t0 = performance.now();
  let r;
  let own = null;
  if (timeBin && before) {
    const file = path.join(os.tmpdir(), `elmo-train-time-${process.pid}.txt`);
    r = sh(timeBin, ['-f', '%U %S', '-o', file, cmd, ...args], opts);
    try {
      const [u, sy] = fs.readFileSync(file, 'utf8').trim().split('\n').pop().split(' ').map(Number);
      own = u + sy;
      fs.rmSync(file, { force: true });
    } catch {
      // not measured
    }
  } else r = sh(cmd, args, opts);
  const wall = (performance.now() - t0) / 1e3;
  const after = cpuTicks();
  if (own === null || !after) return { r, noise: { foreign_cpu: null, steal: null } };
  const capacity = wall * cores;
  const busy = (after.busy - before.busy) / clkTck;
  return {
    r,
    noise: {
      foreign_cpu: +Math.max(0, (busy - own) / capacity).toFixed(3),
      steal: +((after.steal - before.steal) / clkTck / capacity).toFixed(3),
    },
  };
}

function runElmo(c, spec) {
  const file = path.join(os.tmpdir(), `elmo-train-${process.pid}-${c.name}.json`);
  fs.writeFileSync(file, JSON.stringify(spec));
  const { r, noise } = measured(process.execPath, [__filename, '--child=elmo', `--spec=${file}`], {
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  fs.rmSync(file, { force: true });
  if (r.status !== 0)
    throw new Error(`elmo child failed on ${c.name} (${r.error ? r.error.message : `exit ${r.status}`})`);
  const o = lastJson(r.stdout);
  const sum = o.step_ms.reduce((a, b) => a + b, 0);
  // chat: whole cycles over the K batches, total time; fixed: the median step
  const ms = c.shape === 'chat' ? sum / o.steps : median(o.step_ms);
  return {
    ms,
    steps: o.steps,
    peak_rss_mb: o.peak_rss_mb,
    start_rss_mb: o.start_rss_mb,
    eval_loss_ms: o.eval_loss_ms,
    loss: [o.loss_first, o.loss_last],
    lengths: o.lengths,
    ...noise,
  };
}

function runTorch(c, steps, threads, lengthsFile, batchFile) {
  const args = [
    torchScript,
    '--config',
    c.model,
    '--steps',
    String(steps),
    '--warmup',
    String(WARMUP),
    '--threads',
    String(threads),
    '--num-labels',
    String(NUM_LABELS),
  ];
  if (batchFile) args.push('--mlm', batchFile);
  else if (c.shape === 'chat') args.push('--lengths', lengthsFile);
  else args.push('--batch', String(BATCH), '--seq', c.shape.slice(1));
  const { r, noise } = measured(python, args, { stdio: ['ignore', 'pipe', 'pipe'] });
  if (r.status !== 0)
    throw new Error(`${torchScript} failed on ${c.name}: ${(r.stderr || '').trim().split('\n').slice(-3).join(' | ')}`);
  const o = lastJson(r.stdout);
  const ms = 1000 * (c.shape === 'chat' ? o.meanSecPerStep : o.secPerStep);
  return {
    ms,
    steps: o.steps,
    peak_rss_mb: +o.peakRssMb.toFixed(1),
    torch: o.torch,
    padding_fraction: o.paddingFraction,
    loss: [o.lossFirst, o.lossLast],
    ...noise,
  };
}

function loadAvg() {
  return os.loadavg()[0];
}

// --wait-load X: before each round, wait (up to 10 min, polling every 15 s) for the 1-minute
// load average to drop below X.
function waitLoad(limit) {
  if (!limit) return;
  const until = Date.now() + 600e3;
  while (loadAvg() >= limit && Date.now() < until) {
    console.log(`  waiting: load average ${loadAvg().toFixed(2)} >= ${limit}`);
    Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 15e3);
  }
}

function hostInfo(api) {
  const cpuinfo = fs.existsSync('/proc/cpuinfo') ? fs.readFileSync('/proc/cpuinfo', 'utf8') : '';
  const m = cpuinfo.match(/^model name\s*:\s*(.+)$/m);
  const fam = cpuinfo.match(/^cpu family\s*:\s*(.+)$/m);
  const mod = cpuinfo.match(/^model\s*:\s*(.+)$/m);
  const d = api.devices();
  // the better of two measurements (another process or the host's clock can pull one down)
  const peak = [api.measureCpuPeak(0.5), api.measureCpuPeak(0.5)].sort((a, b) => b.fp32Gflops - a.fp32Gflops)[0];
  return {
    cpu:
      (m ? m[1].trim() : (os.cpus()[0] || {}).model) +
      (fam && mod ? ` (family ${fam[1].trim()} model ${mod[1].trim()})` : ''),
    cores,
    isa: d.cpu.isa,
    features: d.cpu.features,
    bf16_kernel: d.cpu.bf16Kernel,
    peak_gflops: +peak.fp32Gflops.toFixed(1),
    bf16_peak_gflops: peak.bf16Gflops > 0 ? +peak.bf16Gflops.toFixed(1) : null,
    peak_source: `measureCpuPeak(0.5), better of 2, ${peak.isa}, ${peak.threads} threads`,
    ram_gb: +(os.totalmem() / 2 ** 30).toFixed(1),
    platform: `${os.platform()} ${os.arch()}`,
  };
}

function fmt(x, digits = 3) {
  if (typeof x !== 'number' || !Number.isFinite(x)) return '-';
  if (Math.abs(x) >= 100) return x.toFixed(0);
  return x.toPrecision(digits);
}

function selectCases(quick, task) {
  const models = quick ? ['tiny', 'mini'] : Object.keys(MODELS);
  let cases = [];
  for (const m of models)
    for (const s of task === 'mlm' ? MLM_SHAPES : SHAPES) cases.push({ name: `${m}-${s}`, model: m, shape: s });
  const want = option('cases', null);
  // mlm: base only when asked for
  if (task === 'mlm' && !(want && want !== true)) cases = cases.filter((c) => c.model !== 'base');
  if (want && want !== true) {
    const keys = String(want).split(',').filter(Boolean);
    for (const k of keys) {
      if (!cases.some((c) => c.name === k || c.model === k || c.shape === k))
        throw new Error(`--cases: unknown case ${k}`);
    }
    cases = cases.filter((c) => keys.some((k) => c.name === k || c.model === k || c.shape === k));
  }
  if (flag('no-base-s128')) cases = cases.filter((c) => c.name !== 'base-s128');
  return cases;
}

async function main() {
  const t0 = Date.now();
  const quick = flag('quick');
  const task = String(option('task', 'sequence'));
  if (task !== 'sequence' && task !== 'mlm') throw new Error(`--task: expected sequence or mlm, got ${task}`);
  const mlm = task === 'mlm';
  const precision = String(option('precision', 'fp32'));
  if (precision !== 'fp32' && precision !== 'bf16')
    throw new Error(`--precision: expected fp32 or bf16, got ${precision}`);
  const threads = intOption('threads', cores);
  const repeat = intOption('repeat', quick ? 1 : 2);
  const baseRepeat = intOption('base-repeat', repeat);
  const targetS = parseFloat(option('target-s', quick ? '3' : '8'));
  const chatK = intOption('chat-batches', 8);
  const jsonOut = path.resolve(String(option('json', 'bench-train.json')));
  const cases = selectCases(quick, task);
  const maxForeign = parseFloat(option('max-others', '0.1'));
  const maxRetries = intOption('retries', 2, 0);
  const waitLimit = option('wait-load', null) === null ? null : parseFloat(option('wait-load', '1.5'));
  if (!fs.existsSync(python)) throw new Error('.venv/bin/python not found (PyTorch side)');
  const api = require(path.join(root, 'dist'));
  if (typeof api.Bert.prototype.trainer !== 'function')
    throw new Error('dist/ has no Bert.trainer: npx tsc -p tsconfig.build.json');

  const host = hostInfo(api);
  // The addon each elmo child loads; a rebuild during the run would mix two builds.
  const addon = typeof api.addonPath === 'string' ? api.addonPath : path.join(root, 'build', 'Release', 'elmo.node');
  const addonStamp = () => (fs.existsSync(addon) ? fs.statSync(addon).mtime.toISOString() : null);
  const addonAtStart = addonStamp();
  const git = sh('git', ['rev-parse', '--short', 'HEAD']);
  const commit = git.status === 0 ? git.stdout.trim() : null;
  const v = sh(python, ['-c', 'import torch, transformers; print(torch.__version__, transformers.__version__)']);
  const versions = { node: process.version };
  if (v.status === 0) [versions.torch, versions.transformers] = v.stdout.trim().split(' ');
  try {
    versions.elmo_addon = api.buildInfo();
  } catch {
    // no build info
  }
  console.log(
    `${host.cpu}, ${host.cores} cores, elmo ISA ${host.isa}, bf16 kernel ${host.bf16_kernel}; measured fp32 peak ` +
      `${fmt(host.peak_gflops)} GFLOP/s${host.bf16_peak_gflops ? `, bf16 ${fmt(host.bf16_peak_gflops)}` : ''}; ` +
      `node ${versions.node}, torch ${versions.torch}, transformers ${versions.transformers}; elmo precision ${precision}, ${threads} threads` +
      (mlm ? '; task mlm' : ''),
  );
  if (precision === 'bf16' && host.bf16_kernel !== 'avx512_bf16') {
    console.log(
      `note: no AVX512_BF16 here (bf16 kernel ${host.bf16_kernel}): bf16 weights are widened to fp32, expect no speed-up`,
    );
  }

  const rows = [];
  for (const c of cases) {
    const rounds = c.model === 'base' ? baseRepeat : repeat;
    const tmp = path.join(os.tmpdir(), `elmo-train-${process.pid}-${c.name}-lengths.json`);
    let batchFile = null;
    let masked = 0;
    if (mlm) {
      const b = mlmBatch(Number(c.shape.slice(1)));
      masked = b.masked;
      batchFile = path.join(os.tmpdir(), `elmo-train-${process.pid}-${c.name}-mlm.json`);
      fs.writeFileSync(batchFile, JSON.stringify({ ids: b.ids, offsets: b.offsets, labels: b.labels }));
    }
    const spec = {
      task,
      batch_file: batchFile,
      model: c.model,
      shape: c.shape,
      threads,
      precision,
      chat_batches: chatK,
      target_s: targetS,
      steps: null,
      eval_loss: flag('eval-loss'),
    };
    const elmoRuns = [];
    const torchRuns = [];
    let lens = null;
    const discarded = [];
    let retries = maxRetries;
    for (let r = 0; r < rounds; ++r) {
      waitLoad(waitLimit);
      const la = loadAvg();
      if (la >= 1.5) console.log(`  (load average ${la.toFixed(2)} before ${c.name} round ${r + 1})`);
      const ts = Date.now();
      const e = runElmo(c, spec);
      e.load_before = +la.toFixed(2);
      spec.steps = e.steps;
      if (!lens) {
        lens = e.lengths;
        fs.writeFileSync(tmp, JSON.stringify(lens));
      }
      delete e.lengths;
      const la2 = loadAvg();
      const p = runTorch(c, e.steps, threads, tmp, batchFile);
      p.load_before = +la2.toFixed(2);
      const noisy = [e, p].some((x) => (x.foreign_cpu ?? 0) > maxForeign || (x.steal ?? 0) > maxForeign);
      const pct = (x) => (x === null || x === undefined ? '?' : `${(100 * x).toFixed(0)}%`);
      console.log(
        `  ${c.name} round ${r + 1}/${rounds}: elmo ${fmt(e.ms)} ms/step, pytorch ${fmt(p.ms)} ms/step ` +
          `(${e.steps} steps each, ${((Date.now() - ts) / 1e3).toFixed(0)} s; others' CPU ${pct(e.foreign_cpu)} / ${pct(p.foreign_cpu)}` +
          `, steal ${pct(e.steal)} / ${pct(p.steal)})` +
          (e.eval_loss_ms ? `; elmo evalLoss ${fmt(e.eval_loss_ms)} ms` : '') +
          (noisy && retries > 0 ? ' -- noisy, round run again' : noisy ? ' -- noisy, kept (no retries left)' : ''),
      );
      if (noisy && retries > 0) {
        --retries;
        discarded.push({ elmo: e, pytorch: p });
        --r;
        continue;
      }
      elmoRuns.push(e);
      torchRuns.push(p);
    }
    fs.rmSync(tmp, { force: true });
    if (batchFile) fs.rmSync(batchFile, { force: true });
    const seqPerStep = lens.reduce((a, l) => a + l.length, 0) / lens.length;
    const tokPerStep = lens.reduce((a, l) => a + l.reduce((x, y) => x + y, 0), 0) / lens.length;
    const paddedPerStep = lens.reduce((a, l) => a + l.length * Math.max(...l), 0) / lens.length;
    const flopPerStep =
      lens.reduce((a, l) => a + (mlm ? mlmFlops(c.model, l, masked) : trainFlops(c.model, l)), 0) / lens.length;
    const peak = precision === 'bf16' && host.bf16_peak_gflops ? host.bf16_peak_gflops : host.peak_gflops;
    const summarize = (runs, extra = {}) => {
      const ms = median(runs.map((x) => x.ms));
      const gflops = flopPerStep / (ms * 1e6);
      return {
        ms_per_step: +ms.toFixed(2),
        seq_per_s: +((1000 * seqPerStep) / ms).toFixed(2),
        tokens_per_s: +((1000 * tokPerStep) / ms).toFixed(0),
        gflops: +gflops.toFixed(1),
        pct_peak: +((100 * gflops) / peak).toFixed(1),
        peak_rss_mb: Math.max(...runs.map((x) => x.peak_rss_mb)),
        steps: runs[0].steps,
        rounds_ms: runs.map((x) => +x.ms.toFixed(2)),
        load_before: runs.map((x) => x.load_before),
        others_cpu: runs.map((x) => x.foreign_cpu),
        steal: runs.map((x) => x.steal),
        ...extra,
      };
    };
    const elmo = summarize(elmoRuns, {
      loss_first_last: elmoRuns[0].loss.map((x) => +x.toFixed(4)),
      ...(elmoRuns[0].eval_loss_ms ? { eval_loss_ms: +median(elmoRuns.map((x) => x.eval_loss_ms)).toFixed(2) } : {}),
    });
    const pytorch = summarize(torchRuns, {
      padding_fraction: +torchRuns[0].padding_fraction.toFixed(3),
      loss_first_last: torchRuns[0].loss.map((x) => +x.toFixed(4)),
    });
    const row = {
      case: c.name,
      model: c.model,
      shape: c.shape,
      batches: lens.length,
      batch: BATCH,
      tokens_per_step: +tokPerStep.toFixed(1),
      ...(mlm ? { masked_per_step: masked } : {}),
      padded_tokens_per_step: +paddedPerStep.toFixed(1),
      gflop_per_step: +(flopPerStep / 1e9).toFixed(3),
      elmo,
      pytorch,
      ratio: +(pytorch.ms_per_step / elmo.ms_per_step).toFixed(3),
      ratio_rounds: elmoRuns.map((e, i) => +(torchRuns[i].ms / e.ms).toFixed(3)),
      rss_ratio: +(elmo.peak_rss_mb / pytorch.peak_rss_mb).toFixed(3),
    };
    if (discarded.length) {
      row.discarded_rounds = discarded.map((d) => ({
        elmo_ms: +d.elmo.ms.toFixed(2),
        pytorch_ms: +d.pytorch.ms.toFixed(2),
        others_cpu: [d.elmo.foreign_cpu, d.pytorch.foreign_cpu],
        steal: [d.elmo.steal, d.pytorch.steal],
      }));
    }
    rows.push(row);
  }

  // ---- goals ------------------------------------------------------------------------------------
  const goals = [];
  const engine = precision === 'bf16' ? 'elmo (bf16)' : 'elmo';
  const goal = (name, target, pick) => {
    name = name.replace(/^elmo/, engine);
    const sel = rows.filter(pick);
    if (sel.length === 0) return;
    const worst = Math.min(...sel.map((r) => r.ratio));
    goals.push({
      goal: name,
      target,
      met: worst >= target,
      worst,
      detail: sel.map((r) => `${r.case} ${r.ratio.toFixed(2)}x`).join(', '),
    });
  };
  if (mlm) goal('elmo/PyTorch on masked-LM steps, every case', 3, () => true);
  else {
    goal(
      'elmo/PyTorch on tiny, mini, small (fixed-length batches)',
      1.5,
      (r) => ['tiny', 'mini', 'small'].includes(r.model) && r.shape !== 'chat',
    );
    goal('elmo/PyTorch on base (fixed-length batches)', 1.1, (r) => r.model === 'base' && r.shape !== 'chat');
    goal('elmo/PyTorch on the chat batches', 2.5, (r) => r.shape === 'chat');
  }
  if (rows.length) {
    const bad = rows.filter((r) => r.elmo.peak_rss_mb > r.pytorch.peak_rss_mb);
    goals.push({
      goal: `${engine} peak RSS <= PyTorch peak RSS`,
      target: 1,
      met: bad.length === 0,
      worst: Math.max(...rows.map((r) => r.rss_ratio)),
      detail: rows.map((r) => `${r.case} ${fmt(r.elmo.peak_rss_mb)}/${fmt(r.pytorch.peak_rss_mb)} MB`).join(', '),
    });
  }

  const addonAtEnd = addonStamp();
  const addonChanged = addonAtEnd !== addonAtStart;
  const command = `node bench/train.js${argv.length ? ` ${argv.join(' ')}` : ''}`;
  const result = {
    date: new Date().toISOString(),
    command,
    host,
    versions,
    commit,
    addon: {
      path: path.relative(root, addon),
      mtime_start: addonAtStart,
      mtime_end: addonAtEnd,
      changed_during_run: addonChanged,
    },
    settings: {
      task,
      ...(mlm ? { mask_prob: MASK_PROB, mask_seed: 1234 } : {}),
      precision,
      threads,
      max_others: maxForeign,
      retries: maxRetries,
      repeat,
      base_repeat: baseRepeat,
      target_s: targetS,
      warmup: WARMUP,
      chat_batches: chatK,
      batch: BATCH,
      num_labels: NUM_LABELS,
      chat_max_len: CHAT_MAX_LEN,
    },
    flops_formula: mlm
      ? '3 x forward; forward = sum over sequences of n tokens: L*(2n(4H^2+2HI) + 4n^2 H) + M*(2H^2 + 2H*30522), M masked rows (the head on masked rows only, as elmo does it)'
      : '3 x forward; forward = sum over sequences of n real tokens: L*(2n(4H^2+2HI) + 4n^2 H) + B*(2H^2 + 2H*77)',
    rows,
    goals,
    wall_s: Math.round((Date.now() - t0) / 1e3),
  };
  fs.writeFileSync(jsonOut, `${JSON.stringify(result, null, 2)}\n`);

  // ---- table --------------------------------------------------------------------------------------
  const e = precision === 'bf16' ? 'elmo-bf16' : 'elmo';
  const head = [
    'model',
    'case',
    'tokens/step',
    `${e} seq/s`,
    `${e} tok/s`,
    `${e} GF/s (%pk)`,
    'PT seq/s',
    'PT tok/s',
    'PT GF/s (%pk)',
    `${e}/PT`,
    `RSS ${e}/PT MB`,
  ];
  const body = rows.map((r) => [
    r.model,
    r.shape === 'chat' ? `chat (${r.batches}x32)` : `32x${r.shape.slice(1)}${mlm ? ' mlm' : ''}`,
    mlm ? `${fmt(r.tokens_per_step)} (${r.masked_per_step} masked)` : fmt(r.tokens_per_step),
    fmt(r.elmo.seq_per_s),
    String(r.elmo.tokens_per_s),
    `${fmt(r.elmo.gflops)} (${fmt(r.elmo.pct_peak, 2)}%)`,
    fmt(r.pytorch.seq_per_s),
    String(r.pytorch.tokens_per_s),
    `${fmt(r.pytorch.gflops)} (${fmt(r.pytorch.pct_peak, 2)}%)`,
    `${r.ratio.toFixed(2)}x`,
    `${r.elmo.peak_rss_mb.toFixed(0)} / ${r.pytorch.peak_rss_mb.toFixed(0)}`,
  ]);
  const widths = head.map((h, i) => Math.max(h.length, ...body.map((b) => b[i].length)));
  const line = (cells) => `| ${cells.map((x, i) => x.padStart(widths[i])).join(' | ')} |`;
  console.log('');
  console.log(line(head));
  console.log(`|${widths.map((w) => '-'.repeat(w + 2)).join('|')}|`);
  for (const b of body) console.log(line(b));
  console.log('');
  for (const g of goals)
    console.log(
      `goal: ${g.goal}${g.target !== 1 ? ` (>= ${g.target}x)` : ''}: ${g.met ? 'MET' : 'NOT MET'}; ${g.detail}`,
    );
  if (addonChanged) console.log(`! ${addon} was rebuilt during the run: the elmo rows mix two builds`);
  console.log(`wrote ${path.relative(process.cwd(), jsonOut) || jsonOut} (${result.wall_s} s)`);
}

const child = option('child', null);
if (child) {
  const spec = JSON.parse(fs.readFileSync(String(option('spec', '')), 'utf8'));
  elmoChild(spec).catch((e) => {
    console.error(e && e.stack ? e.stack : String(e));
    process.exit(1);
  });
} else {
  main().catch((e) => {
    console.error(e && e.stack ? e.stack : String(e));
    process.exit(1);
  });
}
