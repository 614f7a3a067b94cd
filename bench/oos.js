#!/usr/bin/env node
// `npm run bench:oos`: how well does a calibrated threshold tell out-of-scope turns apart?
// In scope: the 7 SNIPS intents (a ChatModel trained on SNIPS train from the project's encoder).
// Out of scope: banking questions (BANKING77), a domain the model never saw.
//
//   calibration: SNIPS valid (700) + 700 BANKING77 train utterances (seeded sample)
//   test:        SNIPS test (700) + 700 BANKING77 test utterances (seeded sample)
//
// Three thresholds, each chosen on the calibration set only (ChatModel.calibrate, that is
// calibrateThreshold): best F1 of out-of-scope detection; in-scope accuracy at 90% out-of-scope
// recall; and, without any out-of-scope examples, the threshold keeping 95% of the correctly
// understood in-scope turns. Each is then measured on the test set (evaluateThreshold).
//
//   node bench/oos.js [--encoder=assets/support-encoder] [--epochs=2] [--lr=1e-3] [--json=FILE]
// Needs `npm run build` first. Reads ../shared/data (--data=DIR); copies nothing.
'use strict';

const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');

const root = path.join(__dirname, '..');
const { flags } = require('./common');
const { ChatModel, chatLabels, evaluateThreshold, expectedCalibrationError } = require(path.join(root, 'dist'));
const { readBanking77, readSnips, subsample } = require('./chat-data');

function args() {
  return flags({
    encoder: path.join(root, 'assets', 'support-encoder'),
    epochs: 2,
    lr: 1e-3,
    data: path.join(root, '..', 'shared', 'data'),
    json: undefined,
    seed: 42,
  });
}

/** Best intent score and correctness of each turn (one forward per 64 turns). */
async function scored(chat, examples) {
  const out = [];
  for (let at = 0; at < examples.length; at += 64) {
    const part = examples.slice(at, at + 64);
    const s = await chat.scores(part.map((e) => ({ text: e.text })));
    s.forEach((x, b) => {
      let best = 0;
      for (let i = 1; i < x.intentProbs.length; i++) if (x.intentProbs[i] > x.intentProbs[best]) best = i;
      out.push({ score: x.intentProbs[best], correct: chat.intents[best] === part[b].intent });
    });
  }
  return out;
}

async function main() {
  const o = args();
  const t0 = performance.now();
  const raw = readSnips(path.join(o.data, 'snips'));
  const snips = { train: raw.train.examples, valid: raw.valid.examples, test: raw.test.examples };
  const intentsOnly = (xs) => xs.map((e) => ({ text: e.text, intent: e.intent }));
  const train = intentsOnly(snips.train);
  const bankTrain = subsample(readBanking77(path.join(o.data, 'banking77', 'train.csv')), 700, 3);
  const bankTest = subsample(readBanking77(path.join(o.data, 'banking77', 'test.csv')), 700, 4);
  const chat = await ChatModel.create(o.encoder, chatLabels(train), { maxSeqLen: 64 });
  const fit = await chat.fineTune(train, { epochs: o.epochs, learningRate: o.lr, batchSize: 32, warmupRatio: 0.06, seed: o.seed });
  const inCal = await scored(chat, intentsOnly(snips.valid));
  const inTest = await scored(chat, intentsOnly(snips.test));
  const oosCal = (await scored(chat, bankTrain)).map((x) => x.score);
  const oosTest = (await scored(chat, bankTest)).map((x) => x.score);
  const calSet = [...intentsOnly(snips.valid), ...bankTrain.map((e) => ({ text: e.text, intent: `oos:${e.intent}` }))];
  const pct = (x) => (x === undefined ? undefined : Math.round(1e4 * x) / 100);
  const pick = (m) => ({
    threshold: Math.round(1e4 * m.threshold) / 1e4,
    coverage: pct(m.coverage),
    accuracyKept: pct(m.accuracyKept),
    inScopeAccuracy: pct(m.inScopeAccuracy),
    oosPrecision: pct(m.oosPrecision),
    oosRecall: pct(m.oosRecall),
    oosF1: pct(m.oosF1),
  });
  const methods = [
    ['f1', { objective: 'f1' }],
    ['accuracy at 90% oos recall', { objective: 'accuracy-at-recall', targetRecall: 0.9 }],
  ];
  const rows = [];
  for (const [name, options] of methods) {
    const c = await chat.calibrate(calSet, options);
    rows.push({ method: name, calibration: pick(c), test: pick(evaluateThreshold(c.threshold, inTest, oosTest)) });
  }
  // Without out-of-scope examples: in-scope turns only.
  const keep = await chat.calibrate(intentsOnly(snips.valid), { keepFraction: 0.95 });
  rows.push({ method: 'keep 95% of right in-scope (no oos data)', calibration: pick(keep), test: pick(evaluateThreshold(keep.threshold, inTest, oosTest)) });
  chat.dispose();
  const result = {
    inScope: 'SNIPS (7 intents)',
    outOfScope: 'BANKING77 utterances',
    counts: { train: train.length, calibration: { inScope: inCal.length, oos: oosCal.length }, test: { inScope: inTest.length, oos: oosTest.length } },
    recipe: { encoder: path.relative(root, o.encoder), epochs: o.epochs, lr: o.lr, batchSize: 32, maxSeqLen: 64, seconds: Math.round(fit.seconds) },
    inScopeAccuracy: Math.round(1e4 * (inTest.filter((x) => x.correct).length / inTest.length)) / 100,
    ece: {
      calibration: Math.round(1e4 * expectedCalibrationError(inCal.map((x) => x.score), inCal.map((x) => x.correct))) / 1e4,
      test: Math.round(1e4 * expectedCalibrationError(inTest.map((x) => x.score), inTest.map((x) => x.correct))) / 1e4,
    },
    thresholds: rows,
    seconds: Math.round((performance.now() - t0) / 1000),
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
