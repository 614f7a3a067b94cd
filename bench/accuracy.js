#!/usr/bin/env node
// `npm run bench:accuracy`: fine-tuning accuracy on real data, elmo-chat next to PyTorch with
// the same recipe, in one run (docs/accuracy.md).
//
//   node bench/accuracy.js [--data=DIR] [--config=mini] [--lr=1e-3] [--epochs=5] [--batch=32]
//                          [--max-seq-len=64] [--seed=42] [--engines=elmo,pytorch] [--json=out.json]
//
// Data: BANKING77 (CSV `text,category`; DIR/train.csv and DIR/test.csv; default
// ../shared/data/banking77, the benchmark's input, never read by the package). Model: BERT of
// the named size from random init (tiny L2 H128, mini L4 H256, small L4 H512, base L12 H768),
// the bert-base-uncased vocabulary (DIR/../bert_vocab/vocab.txt), 77 labels. Recipe, both
// engines: AdamW (weight decay 0.01, none on biases and LayerNorm), linear decay after a 6 %
// warmup, gradient clipping at 1, dropout 0.1, batches of 32 shuffled every epoch, sequences cut
// at max-seq-len tokens. elmo packs each batch (length-bucketed, no padding); PyTorch
// (scripts/accuracy_torch.py: transformers BertForSequenceClassification) pads each batch to its
// longest sequence. Metrics on the test split: accuracy and macro-F1 (sklearn's on the PyTorch
// side, lib/train/metrics.ts on elmo's), and wall time of the training.
'use strict';

const { spawnSync } = require('node:child_process');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');

const root = path.resolve(__dirname, '..');
const args = Object.fromEntries(
  process.argv.slice(2).map((a) => {
    const m = /^--([^=]+)(?:=(.*))?$/.exec(a);
    if (!m) throw new Error(`bench/accuracy: unknown argument ${a}`);
    return [m[1], m[2] ?? 'true'];
  }),
);
const dataDir = path.resolve(args.data ?? path.join(root, '..', 'shared', 'data', 'banking77'));
const vocabFile = path.resolve(args.vocab ?? path.join(dataDir, '..', 'bert_vocab', 'vocab.txt'));
const configName = args.config ?? 'mini';
const lr = Number(args.lr ?? 1e-3);
const epochs = Number(args.epochs ?? 5);
const batch = Number(args.batch ?? 32);
const maxSeqLen = Number(args['max-seq-len'] ?? 64);
const seed = Number(args.seed ?? 42);
const engines = (args.engines ?? 'elmo,pytorch').split(',');
const CONFIGS = {
  tiny: { numLayers: 2, hiddenSize: 128, numHeads: 2, intermediateSize: 512 },
  mini: { numLayers: 4, hiddenSize: 256, numHeads: 4, intermediateSize: 1024 },
  small: { numLayers: 4, hiddenSize: 512, numHeads: 8, intermediateSize: 2048 },
  base: { numLayers: 12, hiddenSize: 768, numHeads: 12, intermediateSize: 3072 },
};
if (!CONFIGS[configName]) throw new Error(`bench/accuracy: --config must be one of ${Object.keys(CONFIGS).join(', ')}`);

async function runElmo() {
  const { Bert, Tokenizer } = require(path.join(root, 'dist'));
  const tokenizer = Tokenizer.fromVocab(fs.readFileSync(vocabFile, 'utf8'));
  const model = Bert.create(
    { vocabSize: tokenizer.vocabSize, maxPositions: 512, typeVocabSize: 2, ...CONFIGS[configName] },
    { tokenizer, device: 'cpu', seed, maxSeqLen },
  );
  const t0 = performance.now();
  const result = await model.fineTune(path.join(dataDir, 'train.csv'), {
    epochs,
    batchSize: batch,
    learningRate: lr,
    weightDecay: 0.01,
    warmupRatio: 0.06,
    maxGradNorm: 1,
    seed,
    maxSeqLen,
    onProgress: (p) => {
      if (p.phase === 'train') process.stderr.write(`\r  elmo epoch ${p.epoch}/${p.epochs} step ${p.step}/${p.totalSteps} loss ${p.loss.toFixed(3)}   `);
    },
    progressIntervalMs: 2000,
  });
  const trainSeconds = (performance.now() - t0) / 1000;
  process.stderr.write('\n');
  const m = await model.evaluate(path.join(dataDir, 'test.csv'));
  model.dispose();
  return {
    engine: 'elmo',
    trainSeconds,
    steps: result.steps,
    finalTrainLoss: result.trainLoss,
    accuracy: m.accuracy,
    macroF1: m.macroF1,
    sequencesPerSecond: result.trainSequencesPerSecond,
  };
}

function runTorch() {
  const py = path.join(root, '.venv', 'bin', 'python');
  if (!fs.existsSync(py)) return { engine: 'pytorch', error: 'no .venv (see README: Python reference tools)' };
  const r = spawnSync(
    py,
    [
      path.join(root, 'scripts', 'accuracy_torch.py'),
      `--data=${dataDir}`,
      `--vocab=${vocabFile}`,
      `--config=${configName}`,
      `--lr=${lr}`,
      `--epochs=${epochs}`,
      `--batch=${batch}`,
      `--max-seq-len=${maxSeqLen}`,
      `--seed=${seed}`,
      `--threads=${os.availableParallelism()}`,
    ],
    { encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'], maxBuffer: 1 << 24 },
  );
  if (r.status !== 0) return { engine: 'pytorch', error: `exit ${r.status}` };
  return JSON.parse(r.stdout.trim().split('\n').pop());
}

(async () => {
  const rows = [];
  for (const e of engines) {
    if (e === 'elmo') rows.push(await runElmo());
    else if (e === 'pytorch') rows.push(runTorch());
    else throw new Error(`bench/accuracy: unknown engine ${e}`);
    console.error(JSON.stringify(rows[rows.length - 1]));
  }
  const out = {
    dataset: path.basename(dataDir),
    config: configName,
    recipe: { lr, epochs, batch, maxSeqLen, seed, weightDecay: 0.01, warmupRatio: 0.06, maxGradNorm: 1, dropout: 0.1 },
    machine: { cpu: os.cpus()[0]?.model, cores: os.availableParallelism() },
    command: `node bench/accuracy.js ${process.argv.slice(2).join(' ')}`.trim(),
    rows,
  };
  console.log('engine    accuracy  macroF1  train s  seq/s');
  for (const r of rows) {
    if (r.error) console.log(`${r.engine.padEnd(9)} ${r.error}`);
    else
      console.log(
        `${r.engine.padEnd(9)} ${(100 * r.accuracy).toFixed(2).padStart(7)}%  ${r.macroF1.toFixed(4)}  ${r.trainSeconds.toFixed(0).padStart(7)}  ${r.sequencesPerSecond.toFixed(1)}`,
      );
  }
  if (args.json) fs.writeFileSync(args.json, `${JSON.stringify(out, null, 2)}\n`);
})().catch((err) => {
  console.error(err);
  process.exit(1);
});
