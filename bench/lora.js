#!/usr/bin/env node
// `npm run bench:lora`: LoRA adapters against full fine-tuning, side by side in one run. SNIPS
// intent + slots, from the project's own encoder (assets/support-encoder, BERT-mini): the same
// examples, epochs, batch and seed; each side at its own learning rate (LoRA wants a larger one).
// Reported: intent accuracy and slot F1 on SNIPS test, trainable parameters, optimizer state,
// training wall time and turns/s, and what the saved adapter weighs against the whole model.
//
//   node bench/lora.js [--encoder=assets/support-encoder] [--epochs=3] [--lr=1e-3]
//        [--lora-lr=3e-3] [--rank=8] [--alpha=16] [--max-train=N] [--sides=full,lora] [--json=FILE]
// Needs `npm run build` first. Reads ../shared/data/snips (--data=DIR); copies nothing.
'use strict';

const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');

const root = path.join(__dirname, '..');
const { flags } = require('./common');
const { ChatModel, chatLabels } = require(path.join(root, 'dist'));
const { readSafetensors } = require(path.join(root, 'dist', 'safetensors'));
const { readSnips, subsample } = require('./chat-data');

function args() {
  return flags({
    encoder: path.join(root, 'assets', 'support-encoder'),
    epochs: 3,
    lr: 1e-3,
    loraLr: 3e-3,
    rank: 8,
    alpha: 16,
    maxTrain: 0,
    data: path.join(root, '..', 'shared', 'data'),
    json: undefined,
    seed: 42,
    sides: 'full,lora',
  });
}

function dirBytes(dir, only) {
  return fs
    .readdirSync(dir)
    .filter((f) => only === undefined || only.includes(f))
    .reduce((s, f) => s + fs.statSync(path.join(dir, f)).size, 0);
}

async function main() {
  const o = args();
  const snips = readSnips(path.join(o.data, 'snips'));
  const train = o.maxTrain > 0 ? subsample(snips.train.examples, o.maxTrain, 7) : snips.train.examples;
  const test = snips.test.examples;
  const labels = chatLabels(train);
  const work = fs.mkdtempSync(path.join(os.tmpdir(), 'elmo-bench-lora-'));
  const recipe = { epochs: o.epochs, batchSize: 32, warmupRatio: 0.06, seed: o.seed };
  const rows = [];
  for (const side of o.sides.split(',')) {
    const chat = await ChatModel.create(o.encoder, labels, { maxSeqLen: 64, seed: 1 });
    const params = chat.model.config.numParameters;
    let trainable = params;
    if (side === 'lora') {
      await chat.enableLora({ rank: o.rank, alpha: o.alpha, seed: 1 });
    }
    const lr = side === 'lora' ? o.loraLr : o.lr;
    const fit = await chat.fineTune(train, { ...recipe, learningRate: lr, ...(side === 'lora' ? { lora: true } : {}) });
    const m = await chat.evaluate(test);
    let adapterBytes;
    if (side === 'lora') {
      const dir = path.join(work, 'adapter');
      await chat.saveAdapter(dir);
      adapterBytes = dirBytes(dir);
      // trainable = the adapter tensors + the heads: what the adapter file holds
      const st = readSafetensors(path.join(dir, 'adapter_model.safetensors'));
      trainable = [...st.tensors.values()].reduce((n, t) => n + t.data.length, 0);
    }
    const modelDir = path.join(work, side);
    await chat.save(modelDir);
    rows.push({
      side,
      learningRate: lr,
      intentAccuracy: Math.round(1e4 * m.intent.accuracy) / 100,
      slotF1: Math.round(1e4 * m.slots.f1) / 100,
      trainableParameters: trainable,
      parameters: params,
      optimizerStateMB: Math.round((2 * 4 * trainable) / 1e4) / 100,
      trainSeconds: Math.round(fit.seconds),
      trainTurnsPerSecond: Math.round((train.length * o.epochs) / fit.seconds),
      savedMB: Math.round((side === 'lora' ? adapterBytes : dirBytes(modelDir, ['model.safetensors'])) / 1e4) / 100,
      inferenceTurnsPerSecond: Math.round(m.turnsPerSecond),
    });
    chat.dispose();
    console.error(JSON.stringify(rows[rows.length - 1]));
  }
  fs.rmSync(work, { recursive: true, force: true });
  const result = {
    dataset: 'SNIPS (intent + slots)',
    train: train.length,
    test: test.length,
    recipe: { encoder: path.relative(root, o.encoder), ...recipe, maxSeqLen: 64, lora: { rank: o.rank, alpha: o.alpha, targets: ['query', 'value'] } },
    rows,
    machine: `${os.cpus()[0]?.model ?? 'cpu'} x${os.cpus().length}`,
  };
  const text = JSON.stringify(result, null, 2);
  if (o.json) fs.writeFileSync(o.json, `${text}\n`);
  console.log(text);
}

main().catch((err) => {
  console.error(err);
  process.exitCode = 1;
});
