#!/usr/bin/env node
// `npm run bench:recipe`: does pretraining pay? Pretrains an encoder with elmo's own recipe,
// then fine-tunes it and the same architecture from random init on labelled sets, each side
// with its best learning rate, and writes every number to a JSON file (docs/accuracy.md).
//
//   node bench/pretrain-recipe.js pretrain --out DIR [--minutes 25] [--config mini]
//        [--vocab-size 6000] [--seq-len 64] [--lr 1e-3] [--no-in-domain] [--checkpoint-minutes 5]
//   node bench/pretrain-recipe.js finetune --init DIR [--random-init] --task NAME
//        [--lrs 1e-4,3e-4,1e-3,2e-3] [--epochs N] [--json FILE]
//   node bench/pretrain-recipe.js probe --init DIR [--random-init] --task NAME [--json FILE]
//
// pretrain: a WordPiece vocabulary trained on the corpus (Tokenizer.train), a fresh BertForMaskedLM
//   of --config, model.pretrain for --minutes with checkpoints every --checkpoint-minutes (for the
//   curve of accuracy against pretraining minutes). Corpus: the public-domain books and speeches
//   of ../shared/data/pretrain_text, plus (unless --no-in-domain) in-domain utterances from the
//   training splits only: BANKING77 train.csv, SNIPS train/seq.in, GoEmotions train.tsv, and the
//   user turns of the project's own support dialogues (lib/demo). Never a test split.
// finetune: --task banking77-10shot (10 examples per intent, seeded), banking77, snips,
//   goemotions (28 labels, multi-label, macro-F1). Each learning rate of --lrs is one run; the best
//   epoch is chosen on a dev set cut from the training split (the rest of it for few-shot; 10% by
//   seed otherwise) and its weights are scored on the test split. --random-init: the same
//   architecture and vocabulary as --init, with fresh weights.
// probe: the encoder frozen; a softmax regression on its mean-pooled embeddings (standardized,
//   300 full-batch gradient steps, L2 strength picked on the dev set) scored on the test split.
// Data paths: ../shared/data (override with --data DIR). Needs `npm run build` first.
'use strict';

const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');

const root = path.join(__dirname, '..');
const { Bert, Tokenizer } = require(path.join(root, 'dist'));
const { samplePerLabel, splitByGroup } = require(path.join(root, 'dist', 'train', 'data'));
const demo = require(path.join(root, 'dist', 'demo', 'support-dialogues'));

function parseArgs(argv) {
  const out = { _: [] };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (!a.startsWith('--')) out._.push(a);
    else if (a.startsWith('--no-')) out[a.slice(5)] = false;
    else if (i + 1 < argv.length && !argv[i + 1].startsWith('--')) out[a.slice(2)] = argv[++i];
    else out[a.slice(2)] = true;
  }
  return out;
}

const args = parseArgs(process.argv.slice(2));
const data = path.resolve(args.data ?? path.join(root, '..', 'shared', 'data'));
const CONFIGS = {
  tiny: { numLayers: 2, hiddenSize: 128, numHeads: 2, intermediateSize: 512 },
  mini: { numLayers: 4, hiddenSize: 256, numHeads: 4, intermediateSize: 1024 },
  small: { numLayers: 4, hiddenSize: 512, numHeads: 8, intermediateSize: 2048 },
};
const log = (s) => process.stderr.write(`${s}\n`);

/** In-domain unlabelled text from training splits, as .txt files in a temporary directory. */
function inDomainCorpus() {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'elmo-recipe-'));
  const banking = fs
    .readFileSync(path.join(data, 'banking77', 'train.csv'), 'utf8')
    .split('\n')
    .slice(1)
    .map((l) => l.replace(/,[a-z_]+$/, '').replace(/^"|"$/g, ''))
    .filter(Boolean);
  fs.writeFileSync(path.join(dir, 'banking77.txt'), banking.join('\n'));
  fs.copyFileSync(path.join(data, 'snips', 'train', 'seq.in'), path.join(dir, 'snips.txt'));
  const go = fs
    .readFileSync(path.join(data, 'goemotions', 'original', 'train.tsv'), 'utf8')
    .split('\n')
    .map((l) => l.split('\t')[0])
    .filter(Boolean);
  fs.writeFileSync(path.join(dir, 'goemotions.txt'), go.join('\n'));
  const dialogues = demo.splitDialogues(demo.generateSupportDialogues({ seed: 1 }), { testFraction: 0.2, seed: 1 }).train;
  const turns = dialogues.flatMap((d) => d.turns.filter((t) => t.speaker === 'user').map((t) => t.text));
  fs.writeFileSync(path.join(dir, 'support.txt'), turns.join('\n'));
  return { dir, lines: banking.length + go.length + turns.length };
}

async function pretrainCmd() {
  const out = path.resolve(args.out ?? 'recipe-out');
  const minutes = Number(args.minutes ?? 25);
  const config = args.config ?? 'mini';
  const vocabSize = Number(args['vocab-size'] ?? 6000);
  const seqLen = Number(args['seq-len'] ?? 64);
  const lr = Number(args.lr ?? 1e-3);
  const corpus = [path.join(data, 'pretrain_text')];
  let inDomain;
  if (args['in-domain'] !== false) {
    inDomain = inDomainCorpus();
    corpus.push(inDomain.dir);
  }
  const tv = performance.now();
  const tokenizer = await Tokenizer.train(corpus, { vocabSize });
  const vocabSeconds = (performance.now() - tv) / 1000;
  log(`vocabulary: ${tokenizer.vocabSize} tokens in ${vocabSeconds.toFixed(1)} s`);
  const model = Bert.create(
    { ...CONFIGS[config], vocabSize: tokenizer.vocabSize, maxPositions: 128, typeVocabSize: 2 },
    { tokenizer, seed: 42, mlm: true },
  );
  const result = await model.pretrain(corpus, {
    minutes,
    seqLen,
    batchSize: 32,
    learningRate: lr,
    checkpointDir: path.join(out, 'checkpoints'),
    checkpointMinutes: Number(args['checkpoint-minutes'] ?? 5),
    saveTotalLimit: 100,
    progressIntervalMs: 30000,
    onProgress: (p) => {
      if (p.phase === 'train') log(`step ${p.step}/${p.totalSteps} loss ${p.loss.toFixed(3)} lr ${p.lr.toExponential(2)} ${p.tokensPerSecond.toFixed(0)} tok/s ${p.elapsedSeconds.toFixed(0)} s`);
      else if (p.phase === 'eval') log(`  eval loss ${p.evalLoss.toFixed(3)} at step ${p.step}`);
      else if (p.message) log(`  ${p.message}`);
    },
  });
  await model.save(path.join(out, 'final'));
  model.dispose();
  const summary = {
    recipe: { config, vocabSize, seqLen, lr, minutes, batchSize: 32, inDomain: inDomain !== undefined, corpus: corpus.map((c) => path.basename(c)) },
    vocabSeconds,
    ...result,
    history: result.history.filter((h, i) => i % 25 === 0),
    machine: { cpu: os.cpus()[0].model, cores: os.cpus().length },
  };
  fs.writeFileSync(path.join(out, 'pretrain.json'), JSON.stringify(summary, null, 1));
  if (inDomain) fs.rmSync(inDomain.dir, { recursive: true, force: true });
  log(`done: ${result.steps} steps, loss ${result.trainLoss.toFixed(3)}, eval ${result.evalLoss.toFixed(3)}`);
}

function readTsv(file) {
  return fs
    .readFileSync(file, 'utf8')
    .split('\n')
    .filter(Boolean)
    .map((l) => l.split('\t'));
}

/** { train, dev, test, task, metric } of a named task. */
async function loadTask(name) {
  const csv = async (f) => {
    const { readExamples } = require(path.join(root, 'dist', 'train', 'data'));
    const out = [];
    for await (const ex of readExamples(f)) out.push(ex);
    return out;
  };
  if (name.startsWith('banking77')) {
    const all = await csv(path.join(data, 'banking77', 'train.csv'));
    const test = await csv(path.join(data, 'banking77', 'test.csv'));
    if (name === 'banking77-10shot') {
      const train = samplePerLabel(all, 10, { seed: 1 });
      const chosen = new Set(train);
      const rest = all.filter((e) => !chosen.has(e));
      const dev = samplePerLabel(rest, 5, { seed: 2 });
      return { train, dev, test, metric: 'accuracy', epochs: 30 };
    }
    const { train, eval: dev } = splitByGroup(all, { fraction: 0.1, seed: 1 });
    return { train, dev, test, metric: 'accuracy', epochs: 5 };
  }
  if (name === 'snips') {
    const read = (split) => {
      const texts = fs.readFileSync(path.join(data, 'snips', split, 'seq.in'), 'utf8').split('\n');
      const labels = fs.readFileSync(path.join(data, 'snips', split, 'label'), 'utf8').split('\n');
      return texts.map((t, i) => ({ text: t.trim(), label: (labels[i] ?? '').trim() })).filter((e) => e.text && e.label);
    };
    return { train: read('train'), dev: read('valid'), test: read('test'), metric: 'accuracy', epochs: 3 };
  }
  if (name === 'goemotions') {
    const names = fs.readFileSync(path.join(data, 'goemotions', 'original', 'labels.txt'), 'utf8').split('\n').filter(Boolean);
    const read = (split) =>
      readTsv(path.join(data, 'goemotions', 'original', `${split}.tsv`)).map(([text, ids]) => ({
        text,
        labels: ids.split(',').map((i) => names[Number(i)]),
      }));
    return { train: read('train'), dev: read('dev').slice(0, 2000), test: read('test'), metric: 'macroF1', epochs: 3, labels: names };
  }
  throw new Error(`unknown --task ${name}`);
}

/** Prints a run's result and appends it to the --json file (an array of results). */
function report(out) {
  if (args.json) {
    const file = path.resolve(args.json);
    const prev = fs.existsSync(file) ? JSON.parse(fs.readFileSync(file, 'utf8')) : [];
    prev.push(out);
    fs.writeFileSync(file, JSON.stringify(prev, null, 1));
  }
  process.stdout.write(`${JSON.stringify(out)}\n`);
}

/** The model of --init, or with --random-init fresh weights of its architecture and tokenizer. */
async function startingModel() {
  const source = await Bert.load(path.resolve(args.init));
  if (!args['random-init']) return source;
  const model = Bert.createLike(source, { seed: 42 });
  source.dispose();
  return model;
}

async function finetuneCmd() {
  const init = path.resolve(args.init);
  const task = await loadTask(args.task);
  const lrs = String(args.lrs ?? '1e-4,3e-4,1e-3,2e-3').split(',').map(Number);
  const epochs = Number(args.epochs ?? task.epochs);
  const runs = [];
  for (const lr of lrs) {
    const model = await startingModel();
    const t0 = performance.now();
    const r = await model.fineTune(task.train, {
      epochs,
      learningRate: lr,
      batchSize: 32,
      maxSeqLen: 64,
      evalSet: task.dev,
      metricForBest: task.metric,
      resetHead: true,
      seed: 42,
      ...(task.labels ? { labels: task.labels } : {}),
    });
    const seconds = (performance.now() - t0) / 1000;
    const m = await model.evaluate(task.test);
    model.dispose();
    const row = {
      lr,
      epochs,
      bestEpoch: r.bestEpoch,
      dev: r.evalMetrics?.[task.metric],
      accuracy: m.accuracy ?? m.exactMatch,
      macroF1: m.macroF1,
      microF1: m.microF1,
      seconds,
    };
    log(`${args.task} ${args['random-init'] ? 'random-init' : 'pretrained'} lr ${lr}: test ${task.metric} ${(m[task.metric] * 100).toFixed(2)} (best epoch ${r.bestEpoch}, ${seconds.toFixed(0)} s)`);
    runs.push(row);
  }
  const best = runs.reduce((a, b) => ((b.dev ?? 0) > (a.dev ?? 0) ? b : a));
  const out = { task: args.task, init, randomInit: Boolean(args['random-init']), metric: task.metric, trainExamples: task.train.length, runs, bestByDev: best };
  report(out);
}

/**
 * probe: the encoder frozen, a softmax regression on its mean-pooled embeddings (standardized),
 * trained by full-batch gradient descent with L2 (the strength picked on the dev set).
 */
async function probeCmd() {
  const task = await loadTask(args.task);
  const model = await startingModel();
  const labels = [...new Set(task.train.map((e) => e.label))].sort();
  const H = model.config.hiddenSize;
  const embed = async (exs) => {
    const out = new Float32Array(exs.length * H);
    for (let i = 0; i < exs.length; i += 256) {
      const e = await model.embed(exs.slice(i, i + 256).map((x) => x.text), { pooling: 'mean' });
      out.set(e, i * H);
    }
    return out;
  };
  const [xtr, xdev, xte] = [await embed(task.train), await embed(task.dev), await embed(task.test)];
  model.dispose();
  const mean = new Float64Array(H);
  const sd = new Float64Array(H);
  const n = task.train.length;
  for (let i = 0; i < n; i++) for (let j = 0; j < H; j++) mean[j] += xtr[i * H + j] / n;
  for (let i = 0; i < n; i++) for (let j = 0; j < H; j++) sd[j] += (xtr[i * H + j] - mean[j]) ** 2 / n;
  for (let j = 0; j < H; j++) sd[j] = Math.sqrt(sd[j]) || 1;
  const norm = (x) => { for (let i = 0; i < x.length; i++) x[i] = (x[i] - mean[i % H]) / sd[i % H]; };
  norm(xtr); norm(xdev); norm(xte);
  const L = labels.length;
  const ytr = task.train.map((e) => labels.indexOf(e.label));
  const fit = (l2) => {
    const W = new Float64Array(L * H);
    const b = new Float64Array(L);
    const p = new Float64Array(L);
    for (let it = 0; it < 300; it++) {
      const gW = new Float64Array(L * H);
      const gb = new Float64Array(L);
      for (let i = 0; i < n; i++) {
        let m = -Infinity;
        for (let k = 0; k < L; k++) {
          let z = b[k];
          for (let j = 0; j < H; j++) z += W[k * H + j] * xtr[i * H + j];
          p[k] = z;
          if (z > m) m = z;
        }
        let sum = 0;
        for (let k = 0; k < L; k++) sum += (p[k] = Math.exp(p[k] - m));
        for (let k = 0; k < L; k++) {
          const g = p[k] / sum - (k === ytr[i] ? 1 : 0);
          gb[k] += g / n;
          for (let j = 0; j < H; j++) gW[k * H + j] += (g * xtr[i * H + j]) / n;
        }
      }
      for (let k = 0; k < L * H; k++) W[k] -= 0.5 * (gW[k] + l2 * W[k]);
      for (let k = 0; k < L; k++) b[k] -= 0.5 * gb[k];
    }
    return (x, exs) => {
      let ok = 0;
      for (let i = 0; i < exs.length; i++) {
        let best = 0;
        let bz = -Infinity;
        for (let k = 0; k < L; k++) {
          let z = b[k];
          for (let j = 0; j < H; j++) z += W[k * H + j] * x[i * H + j];
          if (z > bz) { bz = z; best = k; }
        }
        if (labels[best] === exs[i].label) ok++;
      }
      return ok / exs.length;
    };
  };
  const runs = [];
  for (const l2 of [1e-3, 1e-2, 1e-1]) {
    const score = fit(l2);
    runs.push({ l2, dev: score(xdev, task.dev), accuracy: score(xte, task.test) });
    log(`probe ${args.task} ${args['random-init'] ? 'random-init' : 'pretrained'} l2 ${l2}: dev ${(runs.at(-1).dev * 100).toFixed(2)} test ${(runs.at(-1).accuracy * 100).toFixed(2)}`);
  }
  const best = runs.reduce((a, r) => (r.dev > a.dev ? r : a));
  const out = { probe: true, task: args.task, init: path.resolve(args.init), randomInit: Boolean(args['random-init']), runs, bestByDev: best };
  report(out);
}

const cmd = args._[0];
(cmd === 'pretrain' ? pretrainCmd() : cmd === 'finetune' ? finetuneCmd() : cmd === 'probe' ? probeCmd() : Promise.reject(new Error('usage: pretrain | finetune | probe'))).catch((err) => {
  console.error(err);
  process.exit(1);
});
