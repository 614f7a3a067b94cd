#!/usr/bin/env node
// `npm run bench:quantize`: int8 inference of a fine-tuned classifier, side by side in one run:
// elmo fp32, elmo int8 (precision 'int8'), onnxruntime-node fp32 and onnxruntime-node int8
// (onnxruntime's quantize_dynamic of the same model), on one test set.
//
//   node bench/quantize.js --model DIR [--data DIR] [--onnx DIR] [--engines elmo,elmo-int8,ort,ort-int8]
//                          [--rounds 3] [--threads N] [--max-seq-len 64] [--batch 32] [--latency-n 300] [--limit N]
//                          [--wait-quiet PCT] [--out bench/results/quantize-latest.json]
//
// --model: a BertForSequenceClassification checkpoint (e.g. `elmo finetune` on BANKING77).
// --baseline DIR: another checkpoint run as elmo fp32 in the same rounds (engine 'baseline'),
// e.g. the unpruned model when --model is a pruned one.
// --data: a directory with test.csv (columns text, category or label); default
// ../shared/data/banking77 (the benchmark's input, never read by the package).
// --onnx: where model.onnx and model.int8.onnx are (scripts/export_int8_onnx.py writes them
// there with .venv/bin/python when missing; default <model>/onnx). Without them the ORT engines
// are reported as skipped, by name.
//
// Every engine gets the same token ids (the model's tokenizer, --max-seq-len) and runs in its own
// child process with --threads threads (default: the machine's cores). Per engine and round:
//   accuracy     arg-max of the logits over the whole test set, against its labels;
//   batch        the whole test set in batches of --batch (in file order): sequences per second;
//   latency      the first --latency-n sequences one at a time: median and p90 ms.
// Rounds run the engines in turn (elmo, elmo-int8, ort, ort-int8, elmo, ...); each figure keeps
// its best round (`ratios`: best against best), and `ratios_paired_median` takes each ratio
// within a round, then the median over rounds, so a burst of load on a shared machine that hits
// one round does not decide it.
// The goals: elmo int8 >= 1.6x elmo fp32 and >= ORT int8 in sequences per second, accuracy
// within 1 point of fp32.
'use strict';

const { spawnSync } = require('node:child_process');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');

const { flags, ortFeeds, waitQuiet } = require('./common');

const root = path.resolve(__dirname, '..');
const python = path.join(root, '.venv', 'bin', 'python');
const ortPrefix = path.join(__dirname, '.ort');
const cores = typeof os.availableParallelism === 'function' ? os.availableParallelism() : os.cpus().length;
const ENGINES = ['elmo', 'elmo-int8', 'ort', 'ort-int8', 'baseline'];

const args = flags({
  model: '',
  data: path.join(root, '..', 'shared', 'data', 'banking77'),
  onnx: '',
  // Another model directory run as elmo fp32 in the same rounds (engine 'baseline', added when
  // given): e.g. the unpruned model beside a pruned one.
  baseline: '',
  engines: ENGINES.slice(0, 4).join(','),
  rounds: 3,
  threads: cores,
  maxSeqLen: 64,
  batch: 32,
  latencyN: 300,
  limit: 0, // the first N test examples only (0: all)
  out: path.join(__dirname, 'results', 'quantize-latest.json'),
  // Before each engine's run, wait (at most --wait-quiet-max s) until the rest of the machine
  // keeps under this percentage of its cores busy (0: no wait).
  waitQuiet: 0,
  waitQuietMax: 600,
  child: '',
  spec: '',
});

const percentile = (sorted, p) => sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))];

// ---- children ---------------------------------------------------------------------------------
// Runs forward(seqs) -> Float32Array logits [B, L] for the engine; reports one JSON line.
async function measure(engine, spec, forward, numLabels) {
  const seqs = spec.ids;
  let correct = 0;
  const t0 = performance.now();
  for (let i = 0; i < seqs.length; i += spec.batch) {
    const chunk = seqs.slice(i, i + spec.batch);
    const logits = await forward(chunk);
    chunk.forEach((_, b) => {
      let best = 0;
      for (let j = 1; j < numLabels; ++j) if (logits[b * numLabels + j] > logits[b * numLabels + best]) best = j;
      if (best === spec.labels[i + b]) ++correct;
    });
  }
  const batchS = (performance.now() - t0) / 1000;
  const lat = [];
  for (let i = 0; i < Math.min(spec.latency_n, seqs.length); ++i) {
    const s = performance.now();
    await forward([seqs[i]]);
    lat.push(performance.now() - s);
  }
  lat.sort((a, b) => a - b);
  const row = {
    engine,
    accuracy: correct / seqs.length,
    batch_seq_per_s: seqs.length / batchS,
    latency_p50_ms: percentile(lat, 50),
    latency_p90_ms: percentile(lat, 90),
    latency_seq_per_s: lat.length / (lat.reduce((a, b) => a + b, 0) / 1000),
    rss_mb: process.resourceUsage().maxRSS / 1024,
  };
  console.log(JSON.stringify(row));
}

async function elmoChild(engine, spec) {
  const { Bert } = require(path.join(root, 'dist'));
  const model = await Bert.load(engine === 'baseline' ? spec.baseline : spec.model, {
    threads: spec.threads,
    precision: engine === 'elmo-int8' ? 'int8' : 'fp32',
    maxSeqLen: spec.max_seq_len,
  });
  const L = model.labels.length;
  const forward = async (chunk) => {
    const offsets = new Int32Array(chunk.length + 1);
    chunk.forEach((s, b) => (offsets[b + 1] = offsets[b] + s.length));
    const ids = new Int32Array(offsets[chunk.length]);
    chunk.forEach((s, b) => ids.set(s, offsets[b]));
    const out = await model.forwardIds({ ids, offsets });
    return out.logits;
  };
  await measure(engine, spec, forward, L);
  model.dispose();
}

async function ortChild(engine, spec) {
  const ort = require(path.join(ortPrefix, 'node_modules', 'onnxruntime-node'));
  const file = path.join(spec.onnx, engine === 'ort-int8' ? 'model.int8.onnx' : 'model.onnx');
  const session = await ort.InferenceSession.create(file, {
    executionProviders: ['cpu'],
    intraOpNumThreads: spec.threads,
    interOpNumThreads: 1,
    graphOptimizationLevel: 'all',
  });
  let L = 0;
  const forward = async (chunk) => {
    const out = await session.run(ortFeeds(ort, session, chunk).f);
    L = out.logits.dims[1];
    return out.logits.data;
  };
  await forward([spec.ids[0]]);
  await measure(engine, spec, forward, L);
  await session.release();
}

// ---- parent ------------------------------------------------------------------------------------
async function readTest(dir) {
  const { readExamples } = require(path.join(root, 'dist', 'train', 'data.js'));
  const out = [];
  for await (const ex of readExamples(path.join(dir, 'test.csv'))) out.push(ex);
  return out;
}

function ensureOnnx(modelDir, onnxDir) {
  const have = () => ['model.onnx', 'model.int8.onnx'].every((f) => fs.existsSync(path.join(onnxDir, f)));
  if (have()) return null;
  if (!fs.existsSync(python)) return `.venv/bin/python not found (to export ${onnxDir})`;
  console.error(`bench:quantize: exporting ONNX models into ${onnxDir}`);
  const r = spawnSync(python, [path.join(root, 'scripts', 'export_int8_onnx.py'), modelDir, onnxDir], {
    stdio: ['ignore', 'inherit', 'inherit'],
  });
  return r.status === 0 && have() ? null : 'scripts/export_int8_onnx.py failed';
}

function ortMissing() {
  return fs.existsSync(path.join(ortPrefix, 'node_modules', 'onnxruntime-node', 'package.json'))
    ? null
    : `onnxruntime-node is not installed in ${ortPrefix} (npm install --prefix bench/.ort onnxruntime-node with ONNXRUNTIME_NODE_INSTALL=skip)`;
}

async function main() {
  if (args.child) {
    const spec = JSON.parse(fs.readFileSync(args.spec, 'utf8'));
    if (args.child.startsWith('ort')) await ortChild(args.child, spec);
    else await elmoChild(args.child, spec);
    return;
  }
  if (!args.model) throw new Error('--model DIR is required (a fine-tuned classifier)');
  const modelDir = path.resolve(args.model);
  const onnxDir = path.resolve(args.onnx || path.join(modelDir, 'onnx'));
  const engines = args.engines.split(',').filter(Boolean);
  if (args.baseline && !engines.includes('baseline')) engines.unshift('baseline');
  if (engines.includes('baseline') && !args.baseline) throw new Error("engine 'baseline' needs --baseline DIR");
  for (const e of engines) if (!ENGINES.includes(e)) throw new Error(`unknown engine '${e}' (known: ${ENGINES.join(', ')})`);

  const { Bert } = require(path.join(root, 'dist'));
  const probe = await Bert.load(modelDir, { threads: 1 });
  const labels = probe.labels;
  const all = await readTest(path.resolve(args.data));
  const examples = args.limit > 0 ? all.slice(0, args.limit) : all;
  const ids = [];
  const gold = [];
  for (const ex of examples) {
    const label = labels.indexOf(ex.label);
    if (label < 0) throw new Error(`test label '${ex.label}' is not one of the model's ${labels.length} labels`);
    const enc = probe.tokenizer.encode(ex.text, undefined, { maxSeqLen: args.maxSeqLen });
    ids.push(Array.from(enc.ids));
    gold.push(label);
  }
  probe.dispose();

  const skipped = {};
  if (engines.some((e) => e.startsWith('ort'))) {
    const why = ortMissing() || ensureOnnx(modelDir, onnxDir);
    if (why) for (const e of engines.filter((x) => x.startsWith('ort'))) skipped[e] = why;
  }
  const run = engines.filter((e) => !skipped[e]);
  const specFile = path.join(os.tmpdir(), `elmo-quantize-${process.pid}.json`);
  fs.writeFileSync(
    specFile,
    JSON.stringify({
      model: modelDir,
      baseline: args.baseline ? path.resolve(args.baseline) : '',
      onnx: onnxDir,
      ids,
      labels: gold,
      threads: args.threads,
      batch: args.batch,
      latency_n: args.latencyN,
      max_seq_len: args.maxSeqLen,
    }),
  );
  const rounds = {};
  try {
    for (let r = 0; r < args.rounds; ++r) {
      for (const e of run) {
        await waitQuiet(args.waitQuiet, args.waitQuietMax);
        const child = spawnSync(process.execPath, [__filename, '--child', e, '--spec', specFile], {
          encoding: 'utf8',
          maxBuffer: 64 * 1024 * 1024,
          env: { ...process.env, ELMO_NUM_THREADS: String(args.threads) },
        });
        if (child.status !== 0) throw new Error(`${e} failed:\n${child.stderr}`);
        const line = child.stdout.trim().split('\n').filter((l) => l.startsWith('{')).pop();
        const row = JSON.parse(line);
        console.error(
          `round ${r + 1} ${e.padEnd(9)} acc ${(100 * row.accuracy).toFixed(2)}%  batch ${row.batch_seq_per_s.toFixed(1)} seq/s  ` +
            `batch-1 p50 ${row.latency_p50_ms.toFixed(2)} ms`,
        );
        (rounds[e] ||= []).push(row);
      }
    }
  } finally {
    fs.rmSync(specFile, { force: true });
  }
  // Best round per figure.
  const best = {};
  for (const [e, rows] of Object.entries(rounds)) {
    best[e] = {
      accuracy: rows[0].accuracy,
      batch_seq_per_s: Math.max(...rows.map((x) => x.batch_seq_per_s)),
      latency_p50_ms: Math.min(...rows.map((x) => x.latency_p50_ms)),
      latency_p90_ms: Math.min(...rows.map((x) => x.latency_p90_ms)),
      latency_seq_per_s: Math.max(...rows.map((x) => x.latency_seq_per_s)),
      rss_mb: Math.max(...rows.map((x) => x.rss_mb)),
      accuracy_same_every_round: rows.every((x) => x.accuracy === rows[0].accuracy),
    };
  }
  const ratio = (a, b, key) => (best[a] && best[b] ? +(best[a][key] / best[b][key]).toFixed(3) : null);
  // The same ratio within each round (the two runs minutes apart at most), then the median.
  const pairedRatio = (a, b, key) => {
    if (!rounds[a] || !rounds[b]) return null;
    const r = rounds[a].map((x, i) => x[key] / rounds[b][i][key]).sort((x, y) => x - y);
    const mid = r.length >> 1;
    return +(r.length % 2 ? r[mid] : (r[mid - 1] + r[mid]) / 2).toFixed(3);
  };
  const points = (a, b) => (best[a] && best[b] ? +(100 * (best[a].accuracy - best[b].accuracy)).toFixed(2) : null);
  const { devices } = require(path.join(root, 'dist'));
  const result = {
    bench: 'quantize',
    date: new Date().toISOString(),
    machine: { cpu: os.cpus()[0]?.model, cores, int8_kernel: devices().cpu.int8Kernel, threads: args.threads },
    model: modelDir,
    test_examples: ids.length,
    max_seq_len: args.maxSeqLen,
    batch: args.batch,
    rounds: args.rounds,
    engines: best,
    per_round: rounds,
    skipped,
    ratios: {
      int8_vs_fp32_batch: ratio('elmo-int8', 'elmo', 'batch_seq_per_s'),
      int8_vs_fp32_batch1: ratio('elmo-int8', 'elmo', 'latency_seq_per_s'),
      int8_vs_ort_int8_batch: ratio('elmo-int8', 'ort-int8', 'batch_seq_per_s'),
      int8_vs_ort_int8_batch1: ratio('elmo-int8', 'ort-int8', 'latency_seq_per_s'),
      fp32_vs_ort_fp32_batch: ratio('elmo', 'ort', 'batch_seq_per_s'),
      int8_vs_baseline_batch: ratio('elmo-int8', 'baseline', 'batch_seq_per_s'),
      int8_vs_baseline_batch1: ratio('elmo-int8', 'baseline', 'latency_seq_per_s'),
      fp32_vs_baseline_batch: ratio('elmo', 'baseline', 'batch_seq_per_s'),
      ort_int8_vs_ort_fp32_batch: ratio('ort-int8', 'ort', 'batch_seq_per_s'),
    },
    ratios_paired_median: {
      int8_vs_fp32_batch: pairedRatio('elmo-int8', 'elmo', 'batch_seq_per_s'),
      int8_vs_fp32_batch1: pairedRatio('elmo-int8', 'elmo', 'latency_seq_per_s'),
      int8_vs_ort_int8_batch: pairedRatio('elmo-int8', 'ort-int8', 'batch_seq_per_s'),
      int8_vs_ort_int8_batch1: pairedRatio('elmo-int8', 'ort-int8', 'latency_seq_per_s'),
      int8_vs_baseline_batch: pairedRatio('elmo-int8', 'baseline', 'batch_seq_per_s'),
      int8_vs_baseline_batch1: pairedRatio('elmo-int8', 'baseline', 'latency_seq_per_s'),
      fp32_vs_baseline_batch: pairedRatio('elmo', 'baseline', 'batch_seq_per_s'),
    },
    accuracy_points: {
      elmo_int8_minus_fp32: points('elmo-int8', 'elmo'),
      ort_int8_minus_fp32: points('ort-int8', 'ort'),
      elmo_int8_minus_baseline: points('elmo-int8', 'baseline'),
    },
  };
  fs.mkdirSync(path.dirname(args.out), { recursive: true });
  const tmp = `${args.out}.tmp`;
  fs.writeFileSync(tmp, JSON.stringify(result, null, 2));
  fs.renameSync(tmp, args.out);
  console.log(
    JSON.stringify(
      {
        engines: best,
        ratios: result.ratios,
        ratios_paired_median: result.ratios_paired_median,
        accuracy_points: result.accuracy_points,
        skipped,
      },
      null,
      2,
    ),
  );
}

main().catch((err) => {
  console.error(err.stack || String(err));
  process.exit(1);
});
