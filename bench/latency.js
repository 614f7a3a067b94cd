#!/usr/bin/env node
// `npm run bench:latency`: what a single short request costs through the Node API, with the
// two batch-1 paths side by side in one run.
//
//   node bench/latency.js [--models=mini,small,base] [--seqs=32,128] [--rounds=5] [--ms=400]
//
// For each model (bench/models/<name>/, written by `npm run bench:infer` or
// scripts/export_bench_models.py) and each sequence length, one sequence of that many tokens:
//   * forwardIds on the model's thread (inlineMaxMs: 0) against forwardIds with the default
//     inlineMaxMs (1 ms: run on the calling thread once the model knows its speed, when the
//     forward is estimated to fit), on two models loaded from the same checkpoint;
//   * embed with mean pooling (the full last layer) against [CLS] pooling (the last layer's
//     projection and FFN on the [CLS] row only), on the default model.
// Each variant runs for --ms per round, rounds alternate the variants, and a row keeps the
// median over all its calls (and the 10th percentile). Ratios are baseline / variant (> 1:
// the variant is faster). One JSON object per line, then a table; bench/results/latency.json.
'use strict';

const fs = require('node:fs');
const path = require('node:path');

const { option, listOption, countsOption, makeIds } = require('./common');

const root = path.resolve(__dirname, '..');

function quantile(sorted, q) {
  return sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))];
}

async function timeFor(fn, ms, into) {
  const t0 = performance.now();
  do {
    const s = performance.now();
    await fn();
    into.push(performance.now() - s);
  } while (performance.now() - t0 < ms);
}

async function main() {
  let api;
  try {
    api = require(path.join(root, 'dist'));
  } catch (e) {
    throw new Error(`dist/ is not built (npm run build:addon && npm run build): ${e.message}`);
  }
  const models = listOption('models', 'mini,small,base');
  const seqs = countsOption('seqs', '32,128');
  const rounds = Math.max(1, parseInt(option('rounds', '5'), 10));
  const ms = Math.max(50, parseFloat(option('ms', '400')));
  const rows = [];
  for (const name of models) {
    const dir = path.join(__dirname, 'models', name);
    if (!fs.existsSync(path.join(dir, 'model.safetensors'))) {
      console.log(`${name}: skipped (bench/models/${name} missing: run npm run bench:infer once)`);
      continue;
    }
    const threaded = await api.Bert.load(dir, { device: 'cpu', inlineMaxMs: 0 });
    const model = await api.Bert.load(dir, { device: 'cpu' });
    for (const len of seqs) {
      const batch = { ids: Int32Array.from(makeIds([len])[0]), offsets: Int32Array.of(0, len) };
      // embed takes text: `len - 2` one-token words, so [CLS] text [SEP] is `len` tokens.
      const input = [Array.from({ length: Math.max(1, len - 2) }, () => 'the').join(' ')];
      const variants = {
        'forwardIds thread': () => threaded.forwardIds(batch),
        'forwardIds default': () => model.forwardIds(batch),
        'embed mean': () => model.embed(input, { pooling: 'mean' }),
        'embed cls': () => model.embed(input, { pooling: 'cls' }),
      };
      const times = {};
      for (const [k, fn] of Object.entries(variants)) {
        times[k] = [];
        await fn(); // warm-up: the default model learns its speed here
        await fn();
      }
      for (let r = 0; r < rounds; ++r) for (const [k, fn] of Object.entries(variants)) await timeFor(fn, ms / 4, times[k]);
      const tokens = model.tokenizer.encode(input[0]).ids.length;
      const stat = (k) => {
        const v = [...times[k]].sort((a, b) => a - b);
        return { median_ms: +quantile(v, 0.5).toFixed(4), p10_ms: +quantile(v, 0.1).toFixed(4), calls: v.length };
      };
      const fwdT = stat('forwardIds thread');
      const fwdD = stat('forwardIds default');
      const embM = stat('embed mean');
      const embC = stat('embed cls');
      const row = {
        bench: 'api_latency',
        model: name,
        tokens: len,
        embed_tokens: tokens,
        forward_thread: fwdT,
        forward_default: fwdD,
        default_speedup: +(fwdT.median_ms / fwdD.median_ms).toFixed(3),
        embed_mean: embM,
        embed_cls: embC,
        cls_speedup: +(embM.median_ms / embC.median_ms).toFixed(3),
      };
      console.log(JSON.stringify(row));
      rows.push(row);
    }
    threaded.dispose();
    model.dispose();
  }
  const out = path.join(__dirname, 'results');
  fs.mkdirSync(out, { recursive: true });
  fs.writeFileSync(path.join(out, 'latency.json'), `${JSON.stringify({ date: new Date().toISOString(), rows }, null, 2)}\n`);
  console.log('\n| model | tokens | forwardIds thread ms | forwardIds default ms | speedup | embed tokens | embed mean ms | embed cls ms | speedup |');
  console.log('|---|---|---|---|---|---|---|---|---|');
  for (const r of rows) {
    console.log(`| ${r.model} | ${r.tokens} | ${r.forward_thread.median_ms} | ${r.forward_default.median_ms} | ${r.default_speedup} | ` +
        `${r.embed_tokens} | ${r.embed_mean.median_ms} | ${r.embed_cls.median_ms} | ${r.cls_speedup} |`);
  }
}

main().catch((e) => {
  console.error(e && e.stack ? e.stack : String(e));
  process.exit(1);
});
