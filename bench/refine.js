#!/usr/bin/env node
// `npm run bench:refine`: does the feedback loop fix what users corrected without forgetting?
// On BANKING77 (77 banking intents), from the project's own pretrained encoder:
//
//   1. the training split is cut by a hash of the text into a base part (the model's training
//      data, less a dev slice for the shadow evaluation) and a "live traffic" part;
//   2. a ChatModel is trained on the base part and served by a ChatAgent; the live traffic goes
//      through agent.reply(), and every turn it gets wrong receives a user correction
//      (agent.feedback with the true intent), up to --corrections of them;
//   3. agent.refine(): the corrections + a replay sample of the base data, shadow-evaluated on
//      the dev slice, swapped in only if not worse;
//   4. against naive fine-tuning on the corrections alone (same epochs, learning rate, seed).
//
// Reported for the base model, refine and naive: accuracy on the original test split (3,080
// utterances: forgetting is the drop), on the corrected turns (fixed), and on the live turns the
// base model got wrong that nobody corrected (do the corrections generalize to similar errors?).
// Each learning rate of --refine-lrs is one refine and one naive run from the same base model.
//
//   node bench/refine.js [--encoder=assets/support-encoder] [--epochs=3] [--lr=1e-3]
//        [--corrections=300] [--refine-lrs=1e-4,3e-4] [--refine-epochs=2] [--replay-ratio=8]
//        [--json=FILE] [--data=DIR]
// Needs `npm run build` first. Reads ../shared/data/banking77 (--data to move it); copies nothing.
'use strict';

const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');

const root = path.join(__dirname, '..');
const { flags } = require('./common');
const { ChatAgent, ChatModel, chatLabels } = require(path.join(root, 'dist'));
const { readBanking77 } = require('./chat-data');

function args() {
  return flags({
    encoder: path.join(root, 'assets', 'support-encoder'),
    epochs: 3,
    lr: 1e-3,
    corrections: 300,
    refineLrs: '1e-4,3e-4',
    refineEpochs: 2,
    replayRatio: 8,
    data: path.join(root, '..', 'shared', 'data'),
    json: undefined,
    seed: 42,
  });
}

/** FNV-1a of the text: the split does not depend on file order. */
function bucket(text, n) {
  let h = 0x811c9dc5;
  for (let i = 0; i < text.length; i++) {
    h ^= text.charCodeAt(i);
    h = Math.imul(h, 0x01000193) >>> 0;
  }
  return h % n;
}

async function main() {
  const o = args();
  const t0 = performance.now();
  const train = readBanking77(path.join(o.data, 'banking77', 'train.csv'));
  const test = readBanking77(path.join(o.data, 'banking77', 'test.csv'));
  // 60% base training, 10% dev (shadow evaluation), 30% live traffic.
  const base = [];
  const dev = [];
  const live = [];
  for (const ex of train) {
    const b = bucket(ex.text, 10);
    (b < 6 ? base : b < 7 ? dev : live).push(ex);
  }
  const labels = chatLabels(train);
  const work = fs.mkdtempSync(path.join(os.tmpdir(), 'elmo-bench-refine-'));
  const recipe = { epochs: o.epochs, batchSize: 32, learningRate: o.lr, warmupRatio: 0.06, seed: o.seed };
  console.error(`base ${base.length}, dev ${dev.length}, live ${live.length}, test ${test.length}; training the base model`);
  const model = await ChatModel.create(o.encoder, labels, { maxSeqLen: 64 });
  const baseFit = await model.fineTune(base, recipe);
  const modelDir = path.join(work, 'base');
  await model.save(modelDir);
  const baseTest = await model.evaluate(test);
  model.dispose();
  console.error(`base: test accuracy ${(100 * baseTest.intent.accuracy).toFixed(2)}% after ${baseFit.seconds.toFixed(0)} s`);

  // Live traffic through the agent; wrong answers corrected by the "user".
  const agent = await ChatAgent.open({ modelsDir: path.join(work, 'agent'), initialModel: modelDir, mask: false });
  const corrected = [];
  const uncorrected = []; // wrong, and nobody corrected them
  let wrong = 0;
  for (const ex of live) {
    const r = await agent.reply({ text: ex.text });
    if (r.understanding.intent.label === ex.intent) continue;
    wrong++;
    if (corrected.length < o.corrections) {
      await agent.feedback({ conversationId: r.conversationId, turn: r.turn, intent: ex.intent });
      corrected.push(ex);
    } else {
      uncorrected.push(ex);
    }
  }
  await agent.close();
  console.error(`live: ${wrong} of ${live.length} wrong; ${corrected.length} corrected`);
  const acc = (m) => Math.round(1e4 * m.intent.accuracy) / 100;
  const row = async (m) => ({
    test: acc(await m.evaluate(test)),
    fixed: acc(await m.evaluate(corrected)),
    uncorrectedErrors: acc(await m.evaluate(uncorrected)),
  });
  const baseModel = await ChatModel.load(modelDir);
  const baseRow = { ...(await row(baseModel)), test: acc(baseTest) };
  baseModel.dispose();

  const runs = [];
  for (const lr of String(o.refineLrs).split(',').map(Number)) {
    // refine: a fresh agent over the same store (the corrections are still new in it)
    const agentDir = path.join(work, `agent-${lr}`);
    fs.cpSync(path.join(work, 'agent'), agentDir, { recursive: true });
    const a = await ChatAgent.open({ modelsDir: agentDir, store: path.join(agentDir, 'chat.db'), mask: false });
    const refineOptions = {
      replay: base,
      heldOut: dev,
      epochs: o.refineEpochs,
      learningRate: lr,
      replayRatio: o.replayRatio,
      batchSize: 32,
      seed: o.seed,
    };
    console.error(`refine at lr ${lr}`);
    const report = await a.refine(refineOptions);
    const refined = await row(a.model);
    await a.close();
    // naive: the corrections alone, each seen as often as in refine, same epochs and rate
    const naive = await ChatModel.load(modelDir);
    const naiveFit = await naive.fineTune([...corrected, ...corrected], {
      epochs: o.refineEpochs,
      learningRate: lr,
      batchSize: 32,
      seed: o.seed,
    });
    const naiveRow = await row(naive);
    naive.dispose();
    runs.push({
      learningRate: lr,
      refine: {
        ...refined,
        forgetting: Math.round(100 * (baseRow.test - refined.test)) / 100,
        accepted: report.accepted,
        version: report.version,
        replayed: report.replayed,
        shadow: report.score,
        seconds: Math.round(report.seconds),
      },
      naive: {
        ...naiveRow,
        forgetting: Math.round(100 * (baseRow.test - naiveRow.test)) / 100,
        seconds: Math.round(naiveFit.seconds),
      },
    });
  }
  fs.rmSync(work, { recursive: true, force: true });
  const result = {
    dataset: 'BANKING77',
    split: {
      base: base.length,
      dev: dev.length,
      live: live.length,
      wrong,
      corrected: corrected.length,
      uncorrected: uncorrected.length,
      test: test.length,
    },
    recipe: {
      encoder: path.relative(root, o.encoder),
      base: recipe,
      refine: { epochs: o.refineEpochs, replayRatio: o.replayRatio, feedbackRepeat: 2, batchSize: 32 },
    },
    base: { ...baseRow, seconds: Math.round(baseFit.seconds) },
    runs,
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
