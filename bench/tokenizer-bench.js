#!/usr/bin/env node
// Tokenizer throughput on real chat utterances (BANKING77 test set), one core.
//   node bench/tokenizer-bench.js [--data ../shared/data] [--seconds 2]
// Prints one JSON line: {"bench":"tokenizer","utterances_per_s":...,...}.
'use strict';
const fs = require('fs');
const path = require('path');

// Load lib/ straight from TypeScript (transpile-only), so the bench needs no build step.
const ts = require('typescript');
require.extensions['.ts'] = (module, filename) => {
  const src = fs.readFileSync(filename, 'utf8');
  const out = ts.transpileModule(src, {
    compilerOptions: { module: ts.ModuleKind.CommonJS, target: ts.ScriptTarget.ES2022 },
    fileName: filename,
  });
  module._compile(out.outputText, filename);
};
const { Tokenizer } = require('../lib/tokenizer');

function arg(name, dflt) {
  const i = process.argv.indexOf(name);
  return i >= 0 && i + 1 < process.argv.length ? process.argv[i + 1] : dflt;
}
const root = path.resolve(__dirname, '..');
const dataDir = path.resolve(arg('--data', process.env.ELMO_DATA || path.join(root, '..', 'shared', 'data')));
const seconds = Number(arg('--seconds', '2'));

/** First column of a CSV with a header; handles quoted fields with "" escapes. */
function readCsvColumn0(file) {
  const text = fs.readFileSync(file, 'utf8');
  const rows = [];
  let i = text.indexOf('\n') + 1;
  while (i < text.length) {
    let field = '';
    if (text[i] === '"') {
      i++;
      for (;;) {
        const q = text.indexOf('"', i);
        if (text[q + 1] === '"') {
          field += text.slice(i, q + 1);
          i = q + 2;
        } else {
          field += text.slice(i, q);
          i = q + 1;
          break;
        }
      }
    } else {
      const c = text.indexOf(',', i);
      field = text.slice(i, c);
      i = c;
    }
    rows.push(field);
    const nl = text.indexOf('\n', i);
    i = nl < 0 ? text.length : nl + 1;
  }
  return rows;
}

const texts = readCsvColumn0(path.join(dataDir, 'banking77', 'test.csv'));
const tok = Tokenizer.fromVocab(path.join(root, 'test', 'fixtures', 'tokenizer', 'vocab.txt'));
const opts = { maxSeqLen: 128 };

function measure(fn) {
  const warmEnd = process.hrtime.bigint() + 300_000_000n;
  while (process.hrtime.bigint() < warmEnd) fn();
  let n = 0;
  const t0 = process.hrtime.bigint();
  const end = t0 + BigInt(Math.round(seconds * 1e9));
  let t = t0;
  while (t < end) {
    n += fn();
    t = process.hrtime.bigint();
  }
  return n / (Number(t - t0) / 1e9);
}

let tokens = 0;
for (const s of texts) tokens += tok.encode(s, undefined, opts).ids.length;

const single = measure(() => {
  for (const s of texts) tok.encode(s, undefined, opts);
  return texts.length;
});
const BATCH = 32;
const batches = [];
for (let i = 0; i < texts.length; i += BATCH) batches.push(texts.slice(i, i + BATCH));
const batched = measure(() => {
  for (const b of batches) tok.encodeBatch(b, opts);
  return texts.length;
});

console.log(
  JSON.stringify({
    bench: 'tokenizer',
    dataset: 'banking77/test.csv',
    utterances: texts.length,
    tokens_per_utterance: +(tokens / texts.length).toFixed(2),
    utterances_per_s: Math.round(batched),
    utterances_per_s_encode: Math.round(single),
    tokens_per_s: Math.round((batched * tokens) / texts.length),
    batch_size: BATCH,
    node: process.version,
  }),
);
