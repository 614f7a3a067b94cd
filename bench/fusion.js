#!/usr/bin/env node
// Model fusion on SNIPS (docs/accuracy.md, "Fusion: soups, ensembles, distillation"): four chat
// models fine-tuned from one encoder (same heads' seed; other data orders and learning rates),
// then, side by side on the same test turns:
//
//   best single     the ingredient with the best validation score (mean of intent accuracy and slot F1)
//   uniform soup    the four averaged (averageChatModels)
//   greedy soup     greedySoup on the validation split
//   ensemble        ChatEnsemble of the four (mean probabilities, word-level slots)
//   student (gold)  a small encoder from random init (--student LxH) fine-tuned on the gold labels
//   student (KD)    the same student distilled from the best single (ChatModel.distill), same recipe
//                   and texts, once per --kd TEMPERATURE:ALPHA (alpha: the weight of the gold intent;
//                   the slot targets are always the teacher's tags)
//
// with intent accuracy and slot F1 on the SNIPS test split, turns per second (understandMany in
// batches of 64 over the test turns; each system timed --rounds times, in rotating order, the
// median kept) and parameters. Every number as JSON on stdout (and in --json FILE); progress and
// a Markdown table on stderr.
//
//   node bench/fusion.js [--epochs 2] [--max-train N] [--max-test N] [--max-valid N] [--batch 32]
//        [--lrs 1e-3,1e-3,5e-4,5e-4] [--seeds 42,43,44,45] [--student 2x128] [--student-lr 1e-3]
//        [--student-epochs E] [--kd 2:0.5,1:1] [--rounds 3] [--encoder DIR]
//        [--data DIR] [--work DIR] [--json FILE]
//
// Needs `npm run build` (dist/). SNIPS is read from ../shared/data (--data DIR), never copied.
// Each ingredient: 10% warmup then linear decay, weight decay 0.01, clipping 1, sequences of at
// most 128 tokens (the encoder's positions).
'use strict';

const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');

const root = path.join(__dirname, '..');
const { Bert } = require(path.join(root, 'dist', 'bert'));
const { ChatModel, chatLabels } = require(path.join(root, 'dist', 'chat', 'chat-model'));
const { ChatEnsemble, averageChatModels, chatScore, greedySoup } = require(path.join(root, 'dist', 'chat', 'fusion'));
const data = require('./chat-data');
const { median } = require('./common');

function parseArgs(argv) {
  const out = {};
  for (let i = 0; i < argv.length; i++) {
    const m = /^--([^=]+)(?:=(.*))?$/.exec(argv[i]);
    if (!m) throw new Error(`bench/fusion: unknown argument ${argv[i]}`);
    if (m[2] !== undefined) out[m[1]] = m[2];
    else if (i + 1 < argv.length && !argv[i + 1].startsWith('--')) out[m[1]] = argv[++i];
    else out[m[1]] = 'true';
  }
  return out;
}

const args = parseArgs(process.argv.slice(2));
const KNOWN = ['epochs', 'max-train', 'max-test', 'max-valid', 'batch', 'lrs', 'seeds', 'student', 'student-lr', 'student-epochs', 'kd', 'rounds', 'encoder', 'data', 'work', 'json'];
for (const k of Object.keys(args)) if (!KNOWN.includes(k)) throw new Error(`bench/fusion: unknown option --${k} (known: ${KNOWN.join(', ')})`);
const count = (name, fallback) => {
  if (args[name] === undefined) return fallback;
  const v = Number(args[name]);
  if (!Number.isInteger(v) || v < 1) throw new Error(`--${name}: expected a positive integer, got ${args[name]}`);
  return v;
};
const numbers = (name, fallback) => {
  const v = (args[name] ?? fallback).split(',').map(Number);
  if (v.some((x) => !Number.isFinite(x))) throw new Error(`--${name}: expected numbers, got ${args[name]}`);
  return v;
};
const dataDir = path.resolve(args.data ?? data.DATA);
const encoder = path.resolve(args.encoder ?? path.join(root, 'assets', 'support-encoder'));
const epochs = count('epochs', 2);
const batchSize = count('batch', 32);
const lrs = numbers('lrs', '1e-3,1e-3,5e-4,5e-4');
const seeds = numbers('seeds', '42,43,44,45');
if (lrs.length !== seeds.length || lrs.length < 2) throw new Error('--lrs and --seeds: expected lists of the same length, at least 2');
const maxTrain = count('max-train', undefined);
const maxTest = count('max-test', undefined);
const maxValid = count('max-valid', undefined);
const [studentLayers, studentHidden] = (args.student ?? '2x128').split('x').map(Number);
if (!(studentLayers >= 1 && studentHidden >= 2 && studentHidden % 64 === 0)) throw new Error(`--student: expected LAYERSxHIDDEN (hidden a multiple of 64), got ${args.student}`);
const studentLr = Number(args['student-lr'] ?? 1e-3);
const studentEpochs = count('student-epochs', epochs);
const kd = (args.kd ?? '2:0.5').split(',').map((v) => {
  const [temperature, alpha] = v.split(':').map(Number);
  if (!(temperature > 0 && alpha >= 0 && alpha <= 1)) throw new Error(`--kd: expected TEMPERATURE:ALPHA pairs, got ${args.kd}`);
  return { temperature, alpha };
});
const rounds = count('rounds', 3);
const HEAD_SEED = 42; // every ingredient starts from the same heads: a condition of averaging
const MAX_SEQ_LEN = 128;
const log = (s) => process.stderr.write(`${s}\n`);
const round = (x, d = 4) => (typeof x === 'number' ? Math.round(x * 10 ** d) / 10 ** d : x);

function metrics(m) {
  return {
    intentAccuracy: round(m.intent?.accuracy),
    intentMacroF1: round(m.intent?.macroF1),
    slotF1: round(m.slots?.f1),
    score: round(chatScore(m)),
  };
}

/** Fine-tunes a chat model (or distills into it), progress on stderr every 30 s. */
async function train(chat, examples, name, recipe, teacher, distill) {
  let last = 0;
  const options = {
    epochs: recipe.epochs,
    batchSize,
    learningRate: recipe.learningRate,
    warmupRatio: 0.1,
    weightDecay: 0.01,
    maxGradNorm: 1,
    seed: recipe.seed,
    onProgress: (p) => {
      if (p.seconds - last < 30 && p.step !== p.totalSteps) return;
      last = p.seconds;
      log(`  ${name}: step ${p.step}/${p.totalSteps} loss ${p.loss.toFixed(3)} ${p.seconds.toFixed(0)} s`);
    },
  };
  const r = teacher ? await chat.distill(teacher, examples, { ...options, ...distill }) : await chat.fineTune(examples, options);
  return { steps: r.steps, trainSeconds: round(r.seconds, 1), loss: round(r.loss) };
}

/** Turns per second of each system on the same turns: rounds in rotating order, the median kept. */
async function throughput(systems, turns) {
  const times = systems.map(() => []);
  for (let r = 0; r < rounds; r++) {
    for (let k = 0; k < systems.length; k++) {
      const i = (k + r) % systems.length;
      const t0 = performance.now();
      for (let at = 0; at < turns.length; at += 64) await systems[i].run.understandMany(turns.slice(at, at + 64));
      times[i].push(turns.length / ((performance.now() - t0) / 1000));
    }
  }
  return times.map((t) => round(median(t), 1));
}

async function main() {
  const t0 = performance.now();
  const s = data.readSnips(path.join(dataDir, 'snips'));
  const all = [...s.train.examples, ...s.valid.examples, ...s.test.examples];
  const labels = chatLabels(all); // every split's names, so that a subset of train knows each test label
  const trainSet = data.subsample(s.train.examples, maxTrain, 1);
  const validSet = data.subsample(s.valid.examples, maxValid, 3);
  const testSet = data.subsample(s.test.examples, maxTest, 2);
  const work = args.work ? path.resolve(args.work) : fs.mkdtempSync(path.join(os.tmpdir(), 'elmo-fusion-bench-'));
  fs.mkdirSync(work, { recursive: true });
  log(`SNIPS: ${trainSet.length} train, ${validSet.length} valid, ${testSet.length} test; ${labels.intents.length} intents, ${labels.slots.length} slots; work in ${work}`);

  // 1. the ingredients
  const ingredients = [];
  for (let k = 0; k < lrs.length; k++) {
    const name = `ingredient-${k + 1}`;
    const dir = path.join(work, name);
    const recipe = { epochs, learningRate: lrs[k], seed: seeds[k] };
    log(`${name}: lr ${recipe.learningRate}, seed ${recipe.seed}`);
    const chat = await ChatModel.create(encoder, labels, { device: 'cpu', maxSeqLen: MAX_SEQ_LEN, seed: HEAD_SEED });
    try {
      const t = await train(chat, trainSet, name, recipe);
      await chat.save(dir);
      const valid = metrics(await chat.evaluate(validSet));
      const test = metrics(await chat.evaluate(testSet));
      ingredients.push({ name, dir, ...recipe, ...t, valid, test, parameters: chat.model.config.numParameters });
      log(`  ${name}: valid ${JSON.stringify(valid)} test ${JSON.stringify(test)}`);
    } finally {
      chat.dispose();
    }
  }
  const dirs = ingredients.map((x) => x.dir);
  const best = ingredients.reduce((a, b) => (b.valid.score > a.valid.score ? b : a));
  log(`best single by validation score: ${best.name}`);

  // 2. soups
  const uniformDir = path.join(work, 'uniform-soup');
  const uniform = averageChatModels(dirs, uniformDir);
  log(`uniform soup: ${uniform.tensors} tensors, ${uniform.parameters} values averaged in ${uniform.seconds.toFixed(2)} s`);
  const greedyDir = path.join(work, 'greedy-soup');
  const greedy = await greedySoup(dirs, validSet, greedyDir, {
    load: { device: 'cpu' },
    onStep: (st) => log(`greedy soup: ${path.basename(st.dir)} ${st.kept ? 'kept' : 'rejected'} (candidate ${st.score.toFixed(4)}, soup ${st.soupScore.toFixed(4)})`),
  });

  // 3. distillation: a small student from random init, on gold labels and from the best single
  const teacher = await ChatModel.load(best.dir, { device: 'cpu' });
  const studentConfig = {
    vocabSize: teacher.model.tokenizer.vocabSize,
    hiddenSize: studentHidden,
    numLayers: studentLayers,
    numHeads: studentHidden / 64,
    intermediateSize: 4 * studentHidden,
    maxPositions: MAX_SEQ_LEN,
    typeVocabSize: 2,
  };
  const studentRecipe = { epochs: studentEpochs, learningRate: studentLr, seed: 42 };
  const students = [];
  for (const distill of [undefined, ...kd]) {
    const kind = distill ? `distilled, T ${distill.temperature}, alpha ${distill.alpha}` : 'gold';
    const bert = Bert.create(studentConfig, { tokenizer: teacher.model.tokenizer, device: 'cpu', seed: 7 });
    const chat = await ChatModel.create(bert, labels, { seed: HEAD_SEED });
    log(`student (${kind}): ${studentLayers} layers x ${studentHidden}, ${chat.model.config.numParameters} parameters`);
    const t = await train(chat, trainSet, `student (${kind})`, studentRecipe, distill ? teacher : undefined, distill);
    students.push({ kind, distill, chat, train: t });
  }

  // 4. side by side on the test turns
  const systems = [
    { system: 'best single', run: teacher, parameters: teacher.model.config.numParameters },
    { system: 'uniform soup', run: await ChatModel.load(uniformDir, { device: 'cpu' }) },
    { system: 'greedy soup', run: await ChatModel.load(greedyDir, { device: 'cpu' }) },
    { system: `ensemble of ${dirs.length}`, run: await ChatEnsemble.load(dirs, { device: 'cpu' }) },
    ...students.map((st) => ({ system: `student ${studentLayers}x${studentHidden} (${st.kind})`, run: st.chat })),
  ];
  for (const x of systems) {
    x.parameters = x.run instanceof ChatEnsemble ? x.run.parameters : x.run.model.config.numParameters;
    x.test = metrics(await x.run.evaluate(testSet));
    x.valid = metrics(await x.run.evaluate(validSet));
    log(`${x.system}: test ${JSON.stringify(x.test)}`);
  }
  const turns = testSet.map((ex) => ({ text: ex.text }));
  const tps = await throughput(systems, turns);
  const table = systems.map((x, i) => ({
    system: x.system,
    intentAccuracy: x.test.intentAccuracy,
    slotF1: x.test.slotF1,
    turnsPerSecond: tps[i],
    parameters: x.parameters,
    validScore: x.valid.score,
  }));
  for (const x of systems) x.run.dispose();

  const result = {
    bench: 'fusion',
    dataset: 'snips',
    machine: { cpus: os.cpus().length, model: os.cpus()[0]?.model, node: process.version },
    encoder: path.relative(root, encoder),
    data: { train: trainSet.length, trainAvailable: s.train.examples.length, valid: validSet.length, test: testSet.length },
    recipe: { epochs, batchSize, warmupRatio: 0.1, weightDecay: 0.01, maxGradNorm: 1, maxSeqLen: MAX_SEQ_LEN, headSeed: HEAD_SEED },
    ingredients: ingredients.map((x) => ({ ...x, dir: path.basename(x.dir) })),
    bestSingle: best.name,
    greedy: {
      kept: greedy.kept.map((d) => path.basename(d)),
      steps: greedy.steps.map((st) => ({ ingredient: path.basename(st.dir), kept: st.kept, score: round(st.score), soupScore: round(st.soupScore) })),
      seconds: round(greedy.seconds, 1),
    },
    students: {
      config: studentConfig,
      recipe: studentRecipe,
      teacher: best.name,
      runs: students.map((st) => ({ kind: st.kind, ...(st.distill ?? {}), ...st.train })),
    },
    timing: { rounds, batch: 64, turns: turns.length },
    table,
    seconds: round((performance.now() - t0) / 1000, 1),
  };
  const json = JSON.stringify(result, null, 2);
  process.stdout.write(`${json}\n`);
  if (args.json) fs.writeFileSync(args.json, `${json}\n`);
  log('\n| system | intent accuracy | slot F1 | turns/s | parameters |\n|---|---|---|---|---|');
  for (const r of table) {
    log(`| ${r.system} | ${(100 * r.intentAccuracy).toFixed(2)} % | ${r.slotF1.toFixed(4)} | ${r.turnsPerSecond} | ${(r.parameters / 1e6).toFixed(2)} M |`);
  }
  if (!args.work) fs.rmSync(work, { recursive: true, force: true });
}

main().catch((err) => {
  process.stderr.write(`${err.stack ?? err}\n`);
  process.exit(1);
});
