#!/usr/bin/env node
// Pruning a fine-tuned classifier: attention heads (by ablation) and FFN neurons (by weight
// magnitude) at several sparsities, each model recovered with a short fine-tune. No training of
// the starting model here: it takes one (--model, a BANKING77 classifier) and the dataset.
// Per row: the sparsity, parameters (as elmo holds them), test accuracy after pruning and after
// recovery, and inference speed (sequences/s of predict() over test texts, batch --batch) of the
// pruned and the unpruned model measured in alternating rounds in the same run.
//
//   node bench/pruning.js --model DIR [--data ../shared/data/banking77] [--heads 0.25,0.5]
//        [--ffn 0.25,0.5,0.75] [--both 0.25:0.5,0.5:0.5] [--recover-epochs 1] [--lr 0]
//        [--batch 64] [--texts 1024] [--rounds 5] [--threads 1] [--max-seq-len 64]
//        [--importance-examples 1000] [--json bench/results/pruning-latest.json]
// Needs `npm run build` first. --data holds train.csv and test.csv (text, category). The head
// importance is measured once, on a sample of train.csv, and each head sparsity takes its
// least important heads. A first row fine-tunes the unpruned model as the others are (the
// recovery's own effect). Speed is measured in alternating rounds against the unpruned model.
'use strict';

const fs = require('node:fs');
const path = require('node:path');

const root = path.join(__dirname, '..');
const { flags, median } = require('./common');
const { Bert, headImportance, prune, selectHeads } = require(path.join(root, 'dist'));
const { readExamples } = require(path.join(root, 'dist', 'train', 'data'));

function args() {
  return flags({
    model: '',
    data: path.join(root, '..', 'shared', 'data', 'banking77'),
    heads: '0.25,0.5',
    ffn: '0.25,0.5,0.75',
    both: '0.25:0.5,0.5:0.5',
    recoverEpochs: 1,
    lr: 0,
    batch: 64,
    texts: 1024,
    rounds: 5,
    threads: 1,
    maxSeqLen: 64,
    importanceExamples: 1000,
    seed: 42,
    json: path.join(root, 'bench', 'results', 'pruning-latest.json'),
  });
}

async function collect(file) {
  const out = [];
  for await (const ex of readExamples(file)) out.push(ex);
  return out;
}

/** Sequences per second of predict() over `texts` in batches of `batch`: one round. */
async function round(model, texts, batch) {
  const t0 = performance.now();
  for (let i = 0; i < texts.length; i += batch) await model.predict(texts.slice(i, i + batch));
  return texts.length / ((performance.now() - t0) / 1000);
}

/** Median sequences/s of `model` and of `base`, rounds alternating (base first), after a warm-up each. */
async function speeds(model, base, texts, o) {
  await round(base, texts.slice(0, o.batch * 2), o.batch);
  await round(model, texts.slice(0, o.batch * 2), o.batch);
  const a = [];
  const b = [];
  for (let r = 0; r < o.rounds; r++) {
    a.push(await round(base, texts, o.batch));
    b.push(await round(model, texts, o.batch));
  }
  return { base: median(a), pruned: median(b) };
}

const pct = (x) => Math.round(1e4 * x) / 100;
const list = (s) => String(s).split(',').filter(Boolean);

async function main() {
  const o = args();
  if (o.model === '') throw new Error('--model DIR: a fine-tuned BANKING77 classifier is required');
  const train = await collect(path.join(o.data, 'train.csv'));
  const test = await collect(path.join(o.data, 'test.csv'));
  // Speed texts: a fixed spread over the test set.
  const step = Math.max(1, Math.floor(test.length / o.texts));
  const texts = test.filter((_, i) => i % step === 0).slice(0, o.texts).map((e) => e.text);
  const run = { device: 'cpu', threads: o.threads, maxSeqLen: o.maxSeqLen };
  const base = await Bert.load(o.model, run);
  const info = base.config;
  const baseline = await base.evaluate(test);
  const t0 = performance.now();
  const importance = await headImportance(base, train, {
    maxExamples: o.importanceExamples,
    seed: o.seed,
    runOptions: run,
  });
  const importanceSeconds = (performance.now() - t0) / 1000;
  process.stderr.write(
    `baseline: accuracy ${pct(baseline.accuracy)}%, ${info.numParameters} parameters; head importance in ${importanceSeconds.toFixed(1)} s\n`,
  );

  const cases = [{ heads: 0, ffn: 0 }];
  for (const h of list(o.heads)) cases.push({ heads: Number(h), ffn: 0 });
  for (const f of list(o.ffn)) cases.push({ heads: 0, ffn: Number(f) });
  for (const hf of list(o.both)) {
    const [h, f] = hf.split(':').map(Number);
    cases.push({ heads: h, ffn: f });
  }
  const rows = [];
  for (const c of cases) {
    const heads = c.heads > 0 ? selectHeads(importance, { sparsity: c.heads }) : {};
    const r = await prune(base, {
      data: train,
      evalSet: test,
      heads,
      ffn: c.ffn,
      recoverEpochs: o.recoverEpochs,
      seed: o.seed,
      runOptions: run,
      recover: { maxSeqLen: o.maxSeqLen, ...(o.lr > 0 ? { learningRate: o.lr } : {}) },
    });
    const s = await speeds(r.model, base, texts, o);
    const row = {
      heads: c.heads,
      ffn: c.ffn,
      headsPruned: r.headsPruned,
      prunedHeads: r.heads,
      intermediateSize: r.intermediateSize.after,
      parameters: r.parameters.after,
      parameterShare: Math.round((1e4 * r.parameters.after) / r.parameters.before) / 1e4,
      accuracyPruned: pct(r.eval.pruned.accuracy),
      accuracyRecovered: r.eval.recovered !== undefined ? pct(r.eval.recovered.accuracy) : null,
      recoverySeconds: Math.round(10 * (r.recovery?.seconds ?? 0)) / 10,
      seqPerSec: Math.round(s.pruned),
      baseSeqPerSec: Math.round(s.base),
      speedup: Math.round((100 * s.pruned) / s.base) / 100,
    };
    rows.push(row);
    process.stderr.write(`${JSON.stringify(row)}\n`);
    r.model.dispose();
  }
  base.dispose();

  const result = {
    bench: 'pruning',
    date: new Date().toISOString(),
    model: o.model,
    baseline: { accuracy: pct(baseline.accuracy), parameters: info.numParameters, config: info },
    importance: { seconds: Math.round(10 * importanceSeconds) / 10, ...importance },
    options: o,
    machine: { cpus: require('node:os').cpus().length, cpu: require('node:os').cpus()[0]?.model },
    rows,
  };
  fs.mkdirSync(path.dirname(o.json), { recursive: true });
  fs.writeFileSync(o.json, `${JSON.stringify(result, null, 1)}\n`);
  console.log('| heads pruned | FFN pruned | params | acc. pruned | acc. recovered | seq/s | unpruned seq/s | speed-up |');
  console.log('|---|---|---|---|---|---|---|---|');
  for (const r of rows) {
    console.log(
      `| ${r.headsPruned}/${info.numLayers * info.numHeads} | ${pct(r.ffn)}% (I=${r.intermediateSize}) | ` +
        `${(r.parameters / 1e6).toFixed(2)} M | ${r.accuracyPruned}% | ${r.accuracyRecovered}% | ${r.seqPerSec} | ` +
        `${r.baseSeqPerSec} | ${r.speedup.toFixed(2)}x |`,
    );
  }
  console.log(`(${o.json})`);
}

main().catch((err) => {
  console.error(err);
  process.exitCode = 1;
});
