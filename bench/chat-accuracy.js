#!/usr/bin/env node
// The dialogue layer on real data (docs/accuracy.md, "The dialogue layer"): ChatModel fine-tuned
// from an encoder (default: the shipped assets/support-encoder) on public datasets, every number
// as JSON on stdout (and in --json FILE).
//
//   node bench/chat-accuracy.js --task snips|sgd|goemotions|joint|banking77 [--epochs 3] [--lr 1e-3]
//        [--batch 32] [--max-train N] [--max-test N] [--max-seq-len 128] [--context-max-tokens 64]
//        [--encoder DIR] [--variants LIST] [--seed 42] [--data DIR] [--json FILE]
//
// snips       intent + slots in one model; SNIPS train (--max-train: a seeded subset), scored on
//             its test split. Slot F1 is entity-level over elmo's words (lib/chat wordSpans),
//             which split some SNIPS tokens further (`top-rated`, `2/6/2020`): the run reports
//             how many lines that touches.
// sgd         the user turns of SGD dev (the only split here), 80/20 by a seeded hash of the
//             dialogue id; intent + slots, --variants context,no-context: the same recipe once
//             with the earlier turns as context (segment A) and once without.
// goemotions  emotions, --variants original,ekman (28 and 7 labels): macro/micro-F1 on test at
//             threshold 0.5, and at the threshold with the best macro-F1 on dev (one for all labels).
// joint       one model on SNIPS (intent + slots) and GoEmotions-Ekman (emotions) mixed, each
//             example labelling its own heads, against three single-head models with the same
//             recipe (SNIPS intent; SNIPS slots; Ekman emotions): each head's metric in both
//             settings, and the inference cost of one joint forward against the three models
//             run one after another on the same turns (timed alternately in the same process).
//             --max-train applies to each dataset.
// banking77   intent only (BANKING77 train/test).
//
// Needs `npm run build` (dist/). The datasets are read from ../shared/data (--data DIR), never
// copied. Recipe defaults: 3 epochs, batch 32, lr 1e-3 (the pretrained BERT-mini's best on
// BANKING77, docs/accuracy.md), 10% warmup then linear decay, weight decay 0.01, clipping 1,
// sequences of at most 128 tokens (the encoder's positions), 64 of them for context.
'use strict';

const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');

const root = path.join(__dirname, '..');
const { ChatModel, chatLabels } = require(path.join(root, 'dist', 'chat', 'chat-model'));
const { multiLabelMetrics } = require(path.join(root, 'dist', 'train', 'metrics'));
const data = require('./chat-data');

function parseArgs(argv) {
  const out = {};
  for (let i = 0; i < argv.length; i++) {
    const m = /^--([^=]+)(?:=(.*))?$/.exec(argv[i]);
    if (!m) throw new Error(`bench/chat-accuracy: unknown argument ${argv[i]}`);
    if (m[2] !== undefined) out[m[1]] = m[2];
    else if (i + 1 < argv.length && !argv[i + 1].startsWith('--')) out[m[1]] = argv[++i];
    else out[m[1]] = 'true';
  }
  return out;
}

const args = parseArgs(process.argv.slice(2));
const KNOWN = ['task', 'epochs', 'lr', 'batch', 'max-train', 'max-test', 'max-seq-len', 'context-max-tokens', 'encoder', 'variants', 'seed', 'data', 'json'];
for (const k of Object.keys(args)) if (!KNOWN.includes(k)) throw new Error(`bench/chat-accuracy: unknown option --${k} (known: ${KNOWN.join(', ')})`);
const task = args.task;
const dataDir = path.resolve(args.data ?? data.DATA);
const encoder = path.resolve(args.encoder ?? path.join(root, 'assets', 'support-encoder'));
const optionalCount = (name) => {
  if (args[name] === undefined) return undefined;
  const v = Number(args[name]);
  if (!Number.isInteger(v) || v < 1) throw new Error(`--${name}: expected a positive integer, got ${args[name]}`);
  return v;
};
const recipe = {
  epochs: optionalCount('epochs') ?? 3,
  batchSize: optionalCount('batch') ?? 32,
  learningRate: Number(args.lr ?? 1e-3),
  warmupRatio: 0.1,
  weightDecay: 0.01,
  maxGradNorm: 1,
  seed: Number(args.seed ?? 42),
  maxSeqLen: optionalCount('max-seq-len') ?? 128,
  contextMaxTokens: Number(args['context-max-tokens'] ?? 64),
};
if (!(recipe.learningRate > 0)) throw new Error(`--lr: expected a positive number, got ${args.lr}`);
const maxTrain = optionalCount('max-train');
const maxTest = optionalCount('max-test');
const log = (s) => process.stderr.write(`${s}\n`);
const round = (x, d = 4) => (typeof x === 'number' ? Math.round(x * 10 ** d) / 10 ** d : x);

/** A fresh chat model over the encoder with the recipe's lengths. */
function createModel(labels) {
  return ChatModel.create(encoder, labels, {
    device: 'cpu',
    maxSeqLen: recipe.maxSeqLen,
    contextMaxTokens: recipe.contextMaxTokens,
    seed: recipe.seed,
  });
}

/** Parameters and bytes on disk of a chat model as `save` writes it (then removed). */
async function modelSize(chat) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'elmo-chat-size-'));
  try {
    await chat.save(dir);
    const files = fs.readdirSync(dir).map((f) => ({ f, bytes: fs.statSync(path.join(dir, f)).size }));
    const total = files.reduce((s, x) => s + x.bytes, 0);
    const weights = files.find((x) => x.f === 'model.safetensors')?.bytes ?? 0;
    return { parameters: chat.model.config.numParameters, diskMB: round(total / 1e6, 2), weightsMB: round(weights / 1e6, 2) };
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

/** Fine-tunes with the recipe, progress on stderr every 15 s. */
async function train(chat, examples, name) {
  let last = 0;
  const r = await chat.fineTune(examples, {
    epochs: recipe.epochs,
    batchSize: recipe.batchSize,
    learningRate: recipe.learningRate,
    warmupRatio: recipe.warmupRatio,
    weightDecay: recipe.weightDecay,
    maxGradNorm: recipe.maxGradNorm,
    seed: recipe.seed,
    onProgress: (p) => {
      if (p.seconds - last < 15 && p.step !== p.totalSteps) return;
      last = p.seconds;
      log(`  ${name}: step ${p.step}/${p.totalSteps} epoch ${p.epoch.toFixed(2)} loss ${p.loss.toFixed(3)} ${p.seconds.toFixed(0)} s`);
    },
  });
  return {
    examples: examples.length,
    steps: r.steps,
    trainSeconds: round(r.seconds, 1),
    loss: round(r.loss),
    headLoss: { intent: round(r.headLoss.intent), emotion: round(r.headLoss.emotion), slots: round(r.headLoss.slots) },
    history: r.history.map((h) => ({ epoch: h.epoch, loss: round(h.loss), seconds: round(h.seconds, 1) })),
  };
}

/** Rounds a ChatModel.evaluate result for the report. */
function metrics(m) {
  const out = { count: m.count, turnsPerSecond: round(m.turnsPerSecond, 1) };
  if (m.intent) out.intent = { accuracy: round(m.intent.accuracy), macroF1: round(m.intent.macroF1), count: m.intent.count };
  if (m.emotions)
    out.emotions = { microF1: round(m.emotions.microF1), macroF1: round(m.emotions.macroF1), threshold: m.emotions.threshold, count: m.emotions.count };
  if (m.slots) out.slots = { precision: round(m.slots.precision), recall: round(m.slots.recall), f1: round(m.slots.f1), count: m.slots.count };
  return out;
}

/** One model: create, fine-tune, size, evaluate on each named set; disposed at the end. */
async function run(name, labels, trainSet, evalSets, extra = {}) {
  log(`${name}: ${trainSet.length} training examples`);
  const chat = await createModel(labels);
  try {
    const t = await train(chat, trainSet, name);
    const size = await modelSize(chat);
    const scores = {};
    for (const [k, set] of Object.entries(evalSets)) scores[k] = metrics(await chat.evaluate(set));
    const out = { name, labels: labelCounts(labels), ...t, ...size, ...scores };
    if (extra.after) Object.assign(out, await extra.after(chat));
    log(`  ${name}: ${JSON.stringify(scores)}`);
    return out;
  } finally {
    chat.dispose();
  }
}

function labelCounts(labels) {
  return { intents: labels.intents?.length ?? 0, emotions: labels.emotions?.length ?? 0, slots: labels.slots?.length ?? 0 };
}

const only = (examples, keys) =>
  examples.map((ex) => {
    const out = { text: ex.text };
    if (ex.context !== undefined) out.context = ex.context;
    for (const k of keys) if (ex[k] !== undefined) out[k] = ex[k];
    return out;
  });
const cap = (examples, n, seed) => data.subsample(examples, n, seed);

function snipsData() {
  const s = data.readSnips(path.join(dataDir, 'snips'));
  const words = {};
  for (const k of ['train', 'valid', 'test']) {
    const c = data.checkWordTags(s[k].examples, s[k].tags);
    words[k] = { lines: c.lines, sameTags: c.same, splitFurther: c.split, other: c.other, splitExamples: c.splitExamples.slice(0, 3) };
  }
  return { train: s.train.examples, test: s.test.examples, all: [...s.train.examples, ...s.valid.examples, ...s.test.examples], words };
}

async function snipsTask() {
  const s = snipsData();
  const trainSet = cap(s.train, maxTrain, 1);
  const testSet = cap(s.test, maxTest, 2);
  // label names of every split, so that a subset of train still knows each test label
  const r = await run('snips', chatLabels(s.all), trainSet, { test: testSet });
  return { dataset: 'snips', trainAvailable: s.train.length, wordCheck: s.words, runs: [r] };
}

async function sgdTask() {
  const { dialogues, stats } = data.readSgd(path.join(dataDir, 'sgd', 'dev'));
  const split = data.splitByDialogue(dialogues, { fraction: 0.2, seed: 1 });
  const trainSet = cap(split.train, maxTrain, 1);
  const testSet = cap(split.test, maxTest, 2);
  const labels = chatLabels([...split.train, ...split.test]);
  const variants = (args.variants ?? 'context,no-context').split(',');
  const runs = [];
  for (const v of variants) {
    if (v === 'context') runs.push(await run('sgd-context', labels, trainSet, { test: testSet }));
    else if (v === 'no-context')
      runs.push(await run('sgd-no-context', labels, data.withoutContext(trainSet), { test: data.withoutContext(testSet) }));
    else throw new Error(`--variants for sgd: context, no-context (got ${v})`);
  }
  const withCtx = testSet.filter((e) => e.context.length > 0).length;
  return {
    dataset: 'sgd/dev',
    stats,
    split: { trainDialogues: split.trainDialogues, testDialogues: split.testDialogues, trainTurns: split.train.length, testTurns: split.test.length },
    testTurnsWithContext: withCtx,
    testTurnsWithSlots: testSet.filter((e) => e.slots.length > 0).length,
    runs,
  };
}

/** Emotion scores of every example (threshold 0), for choosing a threshold on dev. */
async function emotionScores(chat, examples) {
  const saved = chat.emotionThreshold;
  chat.emotionThreshold = 0;
  const rows = [];
  try {
    for (let at = 0; at < examples.length; at += 64) {
      const part = examples.slice(at, at + 64);
      const us = await chat.understandMany(part.map((ex) => ({ text: ex.text })));
      for (const u of us) {
        const byName = new Map(u.emotions.map((e) => [e.label, e.score]));
        rows.push(chat.emotions.map((e) => byName.get(e) ?? 0));
      }
    }
  } finally {
    chat.emotionThreshold = saved;
  }
  return rows;
}

/** The one threshold (0.05 ... 0.95) with the best dev macro-F1, and the test metrics at it. */
async function tunedThreshold(chat, dev, test) {
  const scores = await emotionScores(chat, dev);
  const truth = dev.map((ex) => chat.emotions.map((e) => (ex.emotions.includes(e) ? 1 : 0)));
  let best = { threshold: 0.5, macroF1: -1 };
  const curve = [];
  for (let k = 1; k <= 19; k++) {
    const t = k / 20;
    const m = multiLabelMetrics(truth, scores, chat.emotions, t);
    curve.push({ threshold: t, macroF1: round(m.macroF1), microF1: round(m.microF1) });
    if (m.macroF1 > best.macroF1) best = { threshold: t, macroF1: m.macroF1 };
  }
  chat.emotionThreshold = best.threshold;
  const atTuned = metrics(await chat.evaluate(test));
  chat.emotionThreshold = 0.5;
  return { devCurve: curve, tunedThreshold: best.threshold, devMacroF1AtTuned: round(best.macroF1), testAtTuned: atTuned };
}

async function goemotionsTask() {
  const variants = (args.variants ?? 'original,ekman').split(',');
  const runs = [];
  for (const v of variants) {
    if (v !== 'original' && v !== 'ekman') throw new Error(`--variants for goemotions: original, ekman (got ${v})`);
    const g = data.readGoEmotions(path.join(dataDir, 'goemotions', v));
    const trainSet = cap(g.train, maxTrain, 1);
    const dev = cap(g.dev, maxTest, 3);
    const test = cap(g.test, maxTest, 2);
    const r = await run(`goemotions-${v}`, { emotions: g.labels }, trainSet, { test }, { after: (chat) => tunedThreshold(chat, dev, test) });
    r.trainAvailable = g.train.length;
    runs.push(r);
  }
  return { dataset: 'goemotions', runs };
}

async function banking77Task() {
  const trainAll = data.readBanking77(path.join(dataDir, 'banking77', 'train.csv'));
  const test = cap(data.readBanking77(path.join(dataDir, 'banking77', 'test.csv')), maxTest, 2);
  const r = await run('banking77', chatLabels(trainAll), cap(trainAll, maxTrain, 1), { test });
  return { dataset: 'banking77', runs: [r] };
}

/**
 * Wall and CPU seconds (all threads of the process, native ones included) to run `models` one
 * after another over `turns` in batches of `batch`. CPU time is what other jobs on a shared
 * machine disturb least.
 */
async function timeModels(models, turns, batch) {
  const t0 = performance.now();
  const c0 = process.cpuUsage();
  for (const m of models) {
    for (let at = 0; at < turns.length; at += batch) await m.understandMany(turns.slice(at, at + batch));
  }
  const c = process.cpuUsage(c0);
  return { wall: (performance.now() - t0) / 1000, cpu: (c.user + c.system) / 1e6 };
}

/**
 * Turns/s of the joint model and of the three separate ones in sequence, timed alternately in
 * rounds; on a shared machine the fastest round is the least disturbed, so both the median and
 * the fastest round are reported.
 */
async function inferenceCost(joint, separate, turns) {
  const out = {};
  for (const [batch, n, rounds] of [
    [64, Math.min(2000, turns.length), 7],
    [1, Math.min(300, turns.length), 9],
  ]) {
    // one at a time: a seeded sample of the same turns (both datasets, in their proportions)
    const part = data.subsample(turns, n, 3);
    await timeModels([joint, ...separate], part.slice(0, Math.min(n, 64)), batch); // warm-up
    const j = [];
    const s = [];
    for (let r = 0; r < rounds; r++) {
      j.push(await timeModels([joint], part, batch));
      s.push(await timeModels(separate, part, batch));
    }
    const med = (xs) => [...xs].sort((a, b) => a - b)[xs.length >> 1];
    const summary = (pick) => {
      const jj = j.map((x) => x[pick]);
      const ss = s.map((x) => x[pick]);
      return {
        median: { joint: round(n / med(jj), 1), separate: round(n / med(ss), 1), costRatio: round(med(jj) / med(ss), 3) },
        fastest: { joint: round(n / Math.min(...jj), 1), separate: round(n / Math.min(...ss), 1), costRatio: round(Math.min(...jj) / Math.min(...ss), 3) },
        jointSeconds: jj.map((x) => round(x, 3)),
        separateSeconds: ss.map((x) => round(x, 3)),
      };
    };
    // turns per wall second, and per CPU second (the process's CPU time over all its threads)
    out[`batch${batch}`] = { turns: n, rounds, wall: summary('wall'), cpu: summary('cpu') };
    log(`  inference, batch ${batch}: ${JSON.stringify(out[`batch${batch}`])}`);
  }
  return out;
}

async function jointTask() {
  const s = snipsData();
  const ek = data.readGoEmotions(path.join(dataDir, 'goemotions', 'ekman'));
  const snipsTrain = cap(s.train, maxTrain, 1);
  const ekTrain = cap(ek.train, maxTrain, 1);
  const snipsTest = cap(s.test, maxTest, 2);
  const ekTest = cap(ek.test, maxTest, 2);
  const all = chatLabels(s.all);
  // one training set of both (fineTune shuffles it each epoch); each example labels its own heads
  const mixed = [...snipsTrain, ...ekTrain.map((e) => ({ text: e.text, emotions: e.emotions }))];
  const turns = [...snipsTest, ...ekTest].map((e) => ({ text: e.text }));
  const models = {};
  const results = {};
  try {
    const spec = [
      ['joint', { intents: all.intents, slots: all.slots, emotions: ek.labels }, mixed],
      ['intent', { intents: all.intents }, only(snipsTrain, ['intent'])],
      ['slots', { slots: all.slots }, only(snipsTrain, ['slots'])],
      ['emotions', { emotions: ek.labels }, ekTrain.map((e) => ({ text: e.text, emotions: e.emotions }))],
    ];
    for (const [name, labels, trainSet] of spec) {
      log(`${name}: ${trainSet.length} training examples`);
      const chat = await createModel(labels);
      models[name] = chat;
      const t = await train(chat, trainSet, name);
      const size = await modelSize(chat);
      const r = { name, labels: labelCounts(labels), ...t, ...size };
      if (labels.intents || labels.slots) r.snipsTest = metrics(await chat.evaluate(only(snipsTest, [...(labels.intents ? ['intent'] : []), ...(labels.slots ? ['slots'] : [])])));
      if (labels.emotions) r.ekmanTest = metrics(await chat.evaluate(ekTest));
      log(`  ${name}: ${JSON.stringify({ snips: r.snipsTest, ekman: r.ekmanTest })}`);
      results[name] = r;
    }
    const cost = await inferenceCost(models.joint, [models.intent, models.slots, models.emotions], turns);
    const j = results.joint;
    const heads = {
      intentAccuracy: { joint: j.snipsTest.intent.accuracy, separate: results.intent.snipsTest.intent.accuracy },
      slotF1: { joint: j.snipsTest.slots.f1, separate: results.slots.snipsTest.slots.f1 },
      emotionMacroF1: { joint: j.ekmanTest.emotions.macroF1, separate: results.emotions.ekmanTest.emotions.macroF1 },
      emotionMicroF1: { joint: j.ekmanTest.emotions.microF1, separate: results.emotions.ekmanTest.emotions.microF1 },
    };
    for (const h of Object.values(heads)) h.jointMinusSeparatePoints = round(100 * (h.joint - h.separate), 2);
    return {
      dataset: 'snips + goemotions/ekman',
      trainExamples: { snips: snipsTrain.length, ekman: ekTrain.length },
      testExamples: { snips: snipsTest.length, ekman: ekTest.length },
      heads,
      trainSeconds: { joint: j.trainSeconds, separate: round(results.intent.trainSeconds + results.slots.trainSeconds + results.emotions.trainSeconds, 1) },
      inference: cost,
      runs: Object.values(results),
    };
  } finally {
    for (const m of Object.values(models)) m.dispose();
  }
}

const TASKS = { snips: snipsTask, sgd: sgdTask, goemotions: goemotionsTask, joint: jointTask, banking77: banking77Task };

(async () => {
  if (!TASKS[task]) throw new Error(`bench/chat-accuracy: --task must be one of ${Object.keys(TASKS).join(', ')}`);
  const t0 = performance.now();
  const result = await TASKS[task]();
  const out = {
    task,
    encoder: path.relative(root, encoder) || encoder,
    recipe,
    maxTrain: maxTrain ?? null,
    maxTest: maxTest ?? null,
    ...result,
    wallSeconds: round((performance.now() - t0) / 1000, 1),
    machine: { cpu: os.cpus()[0]?.model, cores: os.availableParallelism(), loadAverage: os.loadavg().map((x) => round(x, 2)), node: process.version },
    command: `node bench/chat-accuracy.js ${process.argv.slice(2).join(' ')}`.trim(),
    finishedAt: new Date().toISOString(),
  };
  const text = `${JSON.stringify(out, null, 1)}\n`;
  if (args.json) fs.writeFileSync(path.resolve(args.json), text);
  process.stdout.write(text);
})().catch((err) => {
  console.error(err);
  process.exit(1);
});
