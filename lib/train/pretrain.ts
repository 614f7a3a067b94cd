/**
 * Masked-LM pretraining behind {@link Bert.pretrain}: unlabelled text in, a `BertForMaskedLM`
 * that fine-tunes better out.
 *
 *   readCorpus (files, directories, texts; lib/train/corpus.ts)
 *     -> sentences, tokenized once, packed into blocks of at most seqLen - 2 tokens of one
 *        document (consecutive sentences; a longer sentence is cut)
 *     -> per epoch a seeded order of the blocks, batches by a token budget (batchSize x seqLen)
 *     -> per step a fresh masking (dynamic, as RoBERTa): maskProb of each block's tokens (at
 *        least one), of which 80% become [MASK], 10% a random token, 10% stay; whole words
 *        optionally
 *     -> one native training step: the vocabulary projection and its loss run on the masked
 *        rows only (native/src/model/trainer.cpp), not on every position as a padded
 *        framework's BertForMaskedLM does.
 *
 * The budget is `steps`, `epochs` or `minutes` (wall clock of the training loop); with
 * `minutes` the learning-rate schedule is fitted to the measured step rate and refitted as it
 * goes. Checkpoints are written as fine-tuning writes them (lib/train/checkpoint.ts); resuming
 * one continues exactly: the data order and the masking are functions of (seed, step).
 */
import * as fs from 'node:fs';
import * as path from 'node:path';

import { AbortedError, CheckpointError, ElmoError, InputError, NonFiniteError, expected } from '../errors';
import type { NativeModelConfig } from '../native';
import type { Tokenizer } from '../tokenizer';
import { listCheckpoints, pruneCheckpoints, readJsonState, resumeDir, saveAtomic } from './checkpoint';
import { checkCorpus, readCorpus, splitSentences } from './corpus';
import type { CorpusSource } from './corpus';
import { IGNORE_INDEX } from './data';
import { Rng } from './rng';
import { Trainer } from './trainer';
import type { LrSchedule, StepResult, TrainerHost } from './trainer';

/** Options of {@link Bert.pretrain}. One budget applies: `steps`, else `minutes`, else `epochs` (default 1). */
export interface PretrainOptions {
  /** Optimizer steps to run. */
  steps?: number;
  /** Wall-clock minutes of the training loop (reading the corpus not counted). */
  minutes?: number;
  /** Passes over the corpus; default 1 when neither steps nor minutes is given. */
  epochs?: number;
  /** Sequences of seqLen tokens per step: the token budget of a batch is batchSize x seqLen; default 32. */
  batchSize?: number;
  /** Longest block, [CLS] and [SEP] included; default min(128, the model's max_position_embeddings). */
  seqLen?: number;
  /** Peak learning rate; default 1e-3 for hidden size <= 256, 5e-4 up to 512, 1e-4 above. */
  learningRate?: number;
  /** Default: warmupRatio of the total steps. */
  warmupSteps?: number;
  /** Default 0.06. */
  warmupRatio?: number;
  /** Default 'linear'. */
  schedule?: LrSchedule;
  /** Default 0.01. */
  weightDecay?: number;
  /** Default 1. */
  maxGradNorm?: number;
  /** Hidden dropout; default the model config's. */
  dropout?: number;
  /** Share of each block's tokens to predict; default 0.15. */
  maskProb?: number;
  /** Mask whole words (a token and its ## continuations) together; default false. */
  wholeWordMask?: boolean;
  /** Share of the corpus's blocks held out for the eval loss (at most 256 blocks); default 0.01. */
  evalFraction?: number;
  /** Evaluations during the run (evenly spaced, plus one at the end); default 10. */
  evals?: number;
  /** Data order, masking, dropout, fresh head; default 42. */
  seed?: number;
  onProgress?: (p: PretrainProgress) => void;
  /** Default 1000. */
  progressIntervalMs?: number;
  /** Stops between steps with ERR_ABORTED; the weights are those of the last completed step. */
  signal?: AbortSignal;
  /** Where `checkpoint-<step>/` directories go. */
  checkpointDir?: string;
  /** Minutes between checkpoints (and one at the end); default 10. */
  checkpointMinutes?: number;
  /** Also a checkpoint every this many steps. */
  checkpointSteps?: number;
  /** Checkpoints kept; default 2. */
  saveTotalLimit?: number;
  /** true: continue from the newest checkpoint in checkpointDir; a path: from that checkpoint. */
  resume?: boolean | string;
}

/** Progress of {@link Bert.pretrain}. */
export interface PretrainProgress {
  phase: 'prepare' | 'train' | 'eval' | 'checkpoint';
  /** What happens (prepare) or happened (checkpoint). */
  message?: string;
  step: number;
  /** Known (steps, epochs) or estimated from the step rate (minutes). */
  totalSteps: number;
  /** Mean training loss since the last report. */
  loss: number;
  lr: number;
  gradNorm: number;
  /** Held-out MLM loss (phase 'eval'). */
  evalLoss?: number;
  tokensPerSecond: number;
  sequencesPerSecond: number;
  elapsedSeconds: number;
  etaSeconds: number;
}

/** What {@link Bert.pretrain} returns. */
export interface PretrainResult {
  steps: number;
  /** Passes over the corpus's training blocks (fractional). */
  epochs: number;
  /** Mean loss of the last 5% of steps (at least the last one). */
  trainLoss: number;
  /** Held-out MLM loss at the end (NaN without held-out blocks). */
  evalLoss: number;
  /** exp(evalLoss). */
  evalPerplexity: number;
  history: { step: number; loss: number; lr: number; gradNorm: number }[];
  evalHistory: { step: number; seconds: number; loss: number }[];
  corpus: {
    documents: number;
    sentences: number;
    tokens: number;
    trainBlocks: number;
    evalBlocks: number;
    seconds: number;
  };
  /** A masked-LM head was added to a model without one. */
  headAdded: boolean;
  /** Seconds of the training loop (this run, resumed part only). */
  trainSeconds: number;
  seconds: number;
  tokensPerSecond: number;
  sequencesPerSecond: number;
}

/** The model side pretraining needs (supplied by {@link Bert}). */
export interface PretrainHost extends TrainerHost {
  readonly tokenizer: Tokenizer;
  /** Gives the model a masked-LM head when it has none; true when one was added. */
  ensureMlmHead(seed: number): Promise<boolean>;
  save(dir: string): Promise<void>;
}

const STATE_FILE = 'trainer_state.json';
const OPTIMIZER_FILE = 'optimizer.safetensors';

interface PretrainState {
  format: 'elmo-pretrain-state';
  version: 1;
  step: number;
  epoch: number;
  /** Blocks of the epoch's order consumed. */
  cursor: number;
  seed: number;
  totalSteps: number;
  warmupSteps: number;
  /** Seconds spent in the training loop before (for a minutes budget). */
  elapsedSeconds: number;
  /** Identifies the corpus and blocking the state belongs to. */
  data: { tokens: number; blocks: number; seqLen: number };
  history: PretrainResult['history'];
  evalHistory: PretrainResult['evalHistory'];
}

/** Tokenized corpus in blocks: block b is `tokens[starts[b] .. starts[b + 1]]` (no special tokens). */
export interface PretrainBlocks {
  tokens: Int32Array;
  starts: Int32Array;
  documents: number;
  sentences: number;
}

/** A growable Int32Array. */
class IntList {
  data = new Int32Array(1 << 16);
  length = 0;
  push(v: number): void {
    if (this.length === this.data.length) this.grow(this.length + 1);
    this.data[this.length++] = v;
  }
  append(src: Int32Array): void {
    if (this.length + src.length > this.data.length) this.grow(this.length + src.length);
    this.data.set(src, this.length);
    this.length += src.length;
  }
  grow(min: number): void {
    const next = new Int32Array(Math.max(min, this.data.length * 2));
    next.set(this.data.subarray(0, this.length));
    this.data = next;
  }
  /** A right-sized copy. */
  take(): Int32Array {
    return this.data.slice(0, this.length);
  }
}

/**
 * Reads, splits, tokenizes and blocks a corpus. A block holds consecutive sentences of one
 * document, at most `capacity` tokens; a sentence longer than that is cut into pieces.
 */
export async function buildBlocks(
  tokenizer: Tokenizer,
  source: CorpusSource,
  capacity: number,
  signal?: AbortSignal,
): Promise<PretrainBlocks> {
  const tokens = new IntList();
  const starts = new IntList();
  starts.push(0);
  let blockStart = 0;
  let doc = -1;
  let documents = 0;
  let sentences = 0;
  const flush = (): void => {
    if (tokens.length > blockStart) {
      starts.push(tokens.length);
      blockStart = tokens.length;
    }
  };
  for await (const line of readCorpus(source, signal)) {
    if (line.doc !== doc) {
      flush();
      doc = line.doc;
      documents++;
    }
    for (const sentence of splitSentences(line.text)) {
      const ids = tokenizer.encode(sentence, undefined, { addSpecialTokens: false }).ids;
      if (ids.length === 0) continue;
      sentences++;
      if (tokens.length - blockStart + ids.length > capacity) flush();
      for (let at = 0; at < ids.length; at += capacity) {
        const piece = ids.subarray(at, Math.min(ids.length, at + capacity));
        if (tokens.length - blockStart + piece.length > capacity) flush();
        tokens.append(piece);
      }
    }
  }
  flush();
  return { tokens: tokens.take(), starts: starts.take(), documents, sentences };
}

/** Special ids and which ids may replace a masked token (every id not a bracketed special). */
interface Vocab {
  cls: number;
  sep: number;
  mask: number;
  /** Ids a "random token" is drawn from. */
  randomIds: Int32Array;
  /** 1 where the token continues a word (starts with the continuation prefix). */
  continues: Uint8Array;
}

function vocabInfo(tokenizer: Tokenizer, vocabSize: number): Vocab {
  const need = (tok: string): number => {
    const id = tokenizer.tokenToId(tok);
    if (id === undefined)
      throw new InputError(`Expected the token ${tok} in the vocabulary for pretraining but it has none`);
    return id;
  };
  const random: number[] = [];
  const continues = new Uint8Array(vocabSize);
  for (let id = 0; id < tokenizer.vocabSize && id < vocabSize; id++) {
    const t = tokenizer.idToToken(id) ?? '';
    if (t.startsWith('##')) continues[id] = 1;
    if (!/^\[.*\]$/.test(t)) random.push(id);
  }
  if (random.length === 0)
    throw new InputError('Expected ordinary tokens in the vocabulary for pretraining but found only special ones');
  return {
    cls: need('[CLS]'),
    sep: need('[SEP]'),
    mask: need('[MASK]'),
    randomIds: Int32Array.from(random),
    continues,
  };
}

/** One batch of blocks, masked: what trainer.step takes for task 'mlm'. */
export interface MaskedBatch {
  ids: Int32Array;
  typeIds: Int32Array;
  offsets: Int32Array;
  labels: Int32Array;
  /** Masked positions (positions with a label). */
  count: number;
}

/**
 * Builds `[CLS] block [SEP]` sequences for the blocks `order[from..to)` and masks them with
 * `rng`: round(maskProb x length) positions per block (at least one), 80% [MASK], 10% a random
 * token, 10% unchanged; labels hold the original ids there and -100 elsewhere.
 */
export function maskBatch(
  blocks: PretrainBlocks,
  order: Int32Array,
  from: number,
  to: number,
  vocab: Vocab,
  rng: Rng,
  maskProb: number,
  wholeWord: boolean,
): MaskedBatch {
  let total = 0;
  for (let i = from; i < to; i++) {
    const b = order[i] ?? 0;
    total += (blocks.starts[b + 1] ?? 0) - (blocks.starts[b] ?? 0) + 2;
  }
  const ids = new Int32Array(total);
  const labels = new Int32Array(total).fill(IGNORE_INDEX);
  const offsets = new Int32Array(to - from + 1);
  const pick: number[] = [];
  let t = 0;
  let count = 0;
  for (let i = from; i < to; i++) {
    const b = order[i] ?? 0;
    const s = blocks.starts[b] ?? 0;
    const n = (blocks.starts[b + 1] ?? 0) - s;
    offsets[i - from] = t;
    ids[t] = vocab.cls;
    ids.set(blocks.tokens.subarray(s, s + n), t + 1);
    ids[t + n + 1] = vocab.sep;
    const want = Math.max(1, Math.round(maskProb * n));
    pick.length = 0;
    if (wholeWord) {
      // Word starts in a random order; a word is taken whole while it fits the budget.
      const words: number[] = [];
      for (let k = 0; k < n; k++) if (k === 0 || vocab.continues[ids[t + 1 + k] ?? 0] !== 1) words.push(k);
      for (let k = words.length - 1; k > 0; k--) {
        const j = rng.nextInt(k + 1);
        const tmp = words[k] ?? 0;
        words[k] = words[j] ?? 0;
        words[j] = tmp;
      }
      for (const w of words) {
        if (pick.length >= want) break;
        let end = w + 1;
        while (end < n && vocab.continues[ids[t + 1 + end] ?? 0] === 1) end++;
        if (pick.length + (end - w) > want && pick.length > 0) continue;
        for (let k = w; k < end; k++) pick.push(k);
      }
    } else {
      // A partial Fisher-Yates over the block's positions.
      const pos = Array.from({ length: n }, (_, k) => k);
      for (let k = 0; k < want; k++) {
        const j = k + rng.nextInt(n - k);
        const tmp = pos[k] ?? 0;
        pos[k] = pos[j] ?? 0;
        pos[j] = tmp;
        pick.push(pos[k] ?? 0);
      }
    }
    for (const k of pick) {
      const at = t + 1 + k;
      labels[at] = ids[at] ?? 0;
      const r = rng.nextFloat();
      if (r < 0.8) ids[at] = vocab.mask;
      else if (r < 0.9) ids[at] = vocab.randomIds[rng.nextInt(vocab.randomIds.length)] ?? vocab.mask;
    }
    count += pick.length;
    t += n + 2;
  }
  offsets[to - from] = t;
  return { ids, typeIds: new Int32Array(total), offsets, labels, count };
}

/** Batch boundaries over `order` by a token budget (each block costs its length + 2). */
function batchEnds(blocks: PretrainBlocks, order: Int32Array, maxTokens: number): Int32Array {
  const ends: number[] = [];
  let tokens = 0;
  for (let i = 0; i < order.length; i++) {
    const b = order[i] ?? 0;
    const n = (blocks.starts[b + 1] ?? 0) - (blocks.starts[b] ?? 0) + 2;
    if (tokens + n > maxTokens && tokens > 0) {
      ends.push(i);
      tokens = 0;
    }
    tokens += n;
  }
  if (order.length > 0) ends.push(order.length);
  return Int32Array.from(ends);
}

function defaultLearningRate(info: NativeModelConfig): number {
  if (info.hiddenSize <= 256) return 1e-3;
  if (info.hiddenSize <= 512) return 5e-4;
  return 1e-4;
}

function checkPositive(v: unknown, what: string, integer: boolean): number {
  const ok = typeof v === 'number' && Number.isFinite(v) && v > 0 && (!integer || Number.isSafeInteger(v));
  if (!ok) throw expected(InputError, integer ? 'an integer >= 1' : 'a number > 0', what, v);
  return v;
}

function checkShare(v: unknown, what: string, lo: number, hi: number): number {
  if (typeof v !== 'number' || !Number.isFinite(v) || v < lo || v > hi) {
    throw expected(InputError, `a number in [${String(lo)}, ${String(hi)}]`, what, v);
  }
  return v;
}

/** Pretrains the host's model with masked-LM (see {@link Bert.pretrain}). */
export async function pretrain(
  host: PretrainHost,
  source: CorpusSource,
  options: PretrainOptions = {},
): Promise<PretrainResult> {
  if (typeof options !== 'object' || (options as unknown) === null) {
    throw expected(InputError, 'an object', 'options', options);
  }
  const t0 = performance.now();
  checkCorpus(source);
  const o = options;
  const budgets = [o.steps, o.minutes, o.epochs].filter((v) => v !== undefined).length;
  if (budgets > 1)
    throw new InputError('Expected one of options.steps, options.minutes and options.epochs but received several');
  const steps = o.steps !== undefined ? checkPositive(o.steps, 'options.steps', true) : undefined;
  const minutes = o.minutes !== undefined ? checkPositive(o.minutes, 'options.minutes', false) : undefined;
  const epochs =
    o.epochs !== undefined
      ? checkPositive(o.epochs, 'options.epochs', true)
      : steps === undefined && minutes === undefined
        ? 1
        : undefined;
  const batchSize = o.batchSize !== undefined ? checkPositive(o.batchSize, 'options.batchSize', true) : 32;
  const maxPos = host.info.maxPositions;
  const seqLen = o.seqLen ?? Math.min(128, maxPos);
  if (!Number.isInteger(seqLen) || seqLen < 3 || seqLen > maxPos) {
    throw expected(InputError, `an integer in [3, ${String(maxPos)}]`, 'options.seqLen', seqLen);
  }
  const maskProb = o.maskProb !== undefined ? checkShare(o.maskProb, 'options.maskProb', 0.01, 0.9) : 0.15;
  const evalFraction = o.evalFraction !== undefined ? checkShare(o.evalFraction, 'options.evalFraction', 0, 0.5) : 0.01;
  const evals = o.evals !== undefined ? checkPositive(o.evals, 'options.evals', true) : 10;
  const seed = o.seed ?? 42;
  if (!Number.isSafeInteger(seed) || seed < 0) throw expected(InputError, 'a safe integer >= 0', 'options.seed', seed);
  const interval = o.progressIntervalMs ?? 1000;
  if (o.onProgress !== undefined && typeof o.onProgress !== 'function') {
    throw expected(InputError, 'a function', 'options.onProgress', o.onProgress);
  }
  const signal = o.signal;
  if (signal !== undefined && !(signal instanceof AbortSignal))
    throw expected(InputError, 'an AbortSignal', 'options.signal', signal);
  const ckptDir = o.checkpointDir;
  if (ckptDir !== undefined && (typeof ckptDir !== 'string' || ckptDir === '')) {
    throw expected(InputError, 'a directory path', 'options.checkpointDir', ckptDir);
  }
  const ckptMinutes =
    o.checkpointMinutes !== undefined ? checkPositive(o.checkpointMinutes, 'options.checkpointMinutes', false) : 10;
  const ckptSteps =
    o.checkpointSteps !== undefined ? checkPositive(o.checkpointSteps, 'options.checkpointSteps', true) : undefined;
  const keep = o.saveTotalLimit !== undefined ? checkPositive(o.saveTotalLimit, 'options.saveTotalLimit', true) : 2;
  const wholeWord = o.wholeWordMask ?? false;
  if (typeof wholeWord !== 'boolean') throw expected(InputError, 'a boolean', 'options.wholeWordMask', wholeWord);

  const emit = (p: PretrainProgress): void => {
    if (o.onProgress === undefined) return;
    try {
      o.onProgress(p);
    } catch {
      // A throwing progress callback must not break training.
    }
  };
  const idle = { step: 0, totalSteps: 0, loss: NaN, lr: NaN, gradNorm: NaN, tokensPerSecond: 0, sequencesPerSecond: 0 };
  const prepare = (message: string): void => {
    emit({ phase: 'prepare', message, ...idle, elapsedSeconds: (performance.now() - t0) / 1000, etaSeconds: 0 });
  };

  // ---- data --------------------------------------------------------------------------------------
  prepare('reading and tokenizing the corpus');
  const tc = performance.now();
  const blocks = await buildBlocks(host.tokenizer, source, seqLen - 2, signal);
  const nBlocks = blocks.starts.length - 1;
  if (nBlocks === 0) throw new InputError('Expected text in the corpus but it has none (empty or whitespace only)');
  const corpusSeconds = (performance.now() - tc) / 1000;
  const split = new Rng(seed, 0x5eed).shuffle(Int32Array.from({ length: nBlocks }, (_, i) => i));
  const nEval = nBlocks >= 20 ? Math.min(256, Math.round(evalFraction * nBlocks)) : 0;
  const evalIdx = split.slice(0, nEval).sort();
  const trainIdx = split.slice(nEval).sort();
  const vocab = vocabInfo(host.tokenizer, host.info.vocabSize);
  prepare(
    `${String(blocks.documents)} documents, ${String(blocks.sentences)} sentences, ${String(blocks.tokens.length)} tokens in ${String(nBlocks)} blocks (${String(nEval)} held out)`,
  );

  const headAdded = await host.ensureMlmHead(seed);
  if (headAdded) prepare('the model had no masked-LM head: a fresh one was added (tied to the word embeddings)');

  const maxTokens = batchSize * seqLen;
  const orderOf = (epoch: number): Int32Array => new Rng(seed, 1000 + epoch).shuffle(trainIdx.slice());
  const epochBatches = batchEnds(blocks, orderOf(0), maxTokens).length;
  let totalSteps = steps ?? (epochs !== undefined ? epochs * epochBatches : 1_000_000);
  const warmupRatio = o.warmupRatio !== undefined ? checkShare(o.warmupRatio, 'options.warmupRatio', 0, 1) : 0.06;
  let warmupSteps = o.warmupSteps ?? Math.round(warmupRatio * totalSteps);
  // A minutes budget starts with a provisional warmup, refitted once the step rate is known.
  if (minutes !== undefined && o.warmupSteps === undefined) warmupSteps = 1_000_000;
  const learningRate = o.learningRate ?? defaultLearningRate(host.info);
  const schedule = o.schedule ?? 'linear';
  const trainer = new Trainer(host, {
    task: 'mlm',
    learningRate,
    weightDecay: o.weightDecay ?? 0.01,
    warmupSteps,
    totalSteps,
    schedule,
    maxGradNorm: o.maxGradNorm ?? 1,
    ...(o.dropout !== undefined ? { dropout: o.dropout } : {}),
    seed,
  });
  const state: PretrainState = {
    format: 'elmo-pretrain-state',
    version: 1,
    step: 0,
    epoch: 0,
    cursor: 0,
    seed,
    totalSteps,
    warmupSteps,
    elapsedSeconds: 0,
    data: { tokens: blocks.tokens.length, blocks: nBlocks, seqLen },
    history: [],
    evalHistory: [],
  };

  // Held-out blocks with one fixed masking, evaluated in batches.
  const evalBatches: MaskedBatch[] = [];
  if (nEval > 0) {
    const ends = batchEnds(blocks, evalIdx, maxTokens);
    const rng = new Rng(seed, 0xe7a1);
    let from = 0;
    for (const end of ends) {
      evalBatches.push(maskBatch(blocks, evalIdx, from, end, vocab, rng, maskProb, wholeWord));
      from = end;
    }
  }
  const evalLoss = async (): Promise<number> => {
    let sum = 0;
    let n = 0;
    for (const b of evalBatches) {
      const r = await trainer.evalLoss(b);
      sum += r.loss * r.count;
      n += r.count;
    }
    return n > 0 ? sum / n : NaN;
  };

  try {
    if (o.resume !== undefined && o.resume !== false) {
      const dir = resumeDir(o.resume, ckptDir);
      const saved = readJsonState(dir, STATE_FILE) as Partial<PretrainState>;
      if (saved.format !== 'elmo-pretrain-state' || typeof saved.step !== 'number') {
        throw new CheckpointError(`${dir}: ${STATE_FILE} is not an elmo pretraining state`);
      }
      const d = saved.data;
      if (saved.seed !== seed || d?.tokens !== state.data.tokens || d.blocks !== nBlocks || d.seqLen !== seqLen) {
        throw new CheckpointError(
          `${dir}: the checkpoint was made with another corpus, seqLen or seed (its ${String(d?.tokens)} tokens in ${String(d?.blocks)} blocks of ${String(d?.seqLen)}, seed ${String(saved.seed)})`,
        );
      }
      await host.native.loadEncoder(path.join(dir, 'model.safetensors'), true).catch((err: unknown) => {
        throw err instanceof ElmoError ? new CheckpointError(`${dir}: ${err.message}`) : err;
      });
      await trainer.loadState(path.join(dir, OPTIMIZER_FILE));
      Object.assign(state, saved);
      totalSteps = state.totalSteps;
      warmupSteps = state.warmupSteps;
      if (steps !== undefined && steps !== totalSteps) {
        throw new CheckpointError(
          `${dir}: the checkpoint's run has ${String(totalSteps)} steps, this one ${String(steps)}`,
        );
      }
      await trainer.setSchedule({ learningRate, warmupSteps, totalSteps, schedule });
    }

    const clockStart = state.elapsedSeconds;
    // The training clock: wall time, except that a gap far longer than a step (the machine
    // suspended, a VM paused or migrated, the clock stepped) counts as one step's time, so that
    // it does not eat a minutes budget or skew the fitted schedule.
    let clock = state.elapsedSeconds;
    let tick = performance.now();
    let stepEma = 0;
    const elapsed = (): number => {
      const now = performance.now();
      const dt = (now - tick) / 1000;
      tick = now;
      const cap = stepEma > 0 ? Math.max(30, 20 * stepEma) : Infinity;
      clock += dt > cap ? stepEma : dt;
      return clock;
    };
    let stepStart = performance.now();
    const budgetSeconds = minutes !== undefined ? minutes * 60 : Infinity;
    let lastReport = performance.now();
    let lastCheckpoint = elapsed();
    let lossSum = 0;
    let lossN = 0;
    let seqs = 0;
    let toks = 0;
    let order = orderOf(state.epoch);
    let ends = batchEnds(blocks, order, maxTokens);
    let refitAt = state.step + 5;
    let refitFrom = { step: state.step, time: state.elapsedSeconds };
    const evalEvery = (): number => Math.max(1, Math.floor(totalSteps / evals));
    let nextEval = (Math.floor(state.step / evalEvery()) + 1) * evalEvery();
    const startStep = state.step;

    const report = (r: StepResult, force: boolean): void => {
      const now = performance.now();
      if (!force && now - lastReport < interval) return;
      const secs = elapsed() - clockStart;
      const rate = (state.step - startStep) / Math.max(secs, 1e-9);
      emit({
        phase: 'train',
        step: state.step,
        totalSteps,
        loss: lossN > 0 ? lossSum / lossN : NaN,
        lr: r.lr,
        gradNorm: r.gradNorm,
        tokensPerSecond: toks / Math.max(secs, 1e-9),
        sequencesPerSecond: seqs / Math.max(secs, 1e-9),
        elapsedSeconds: elapsed(),
        etaSeconds: rate > 0 ? Math.max(0, totalSteps - state.step) / rate : 0,
      });
      lossSum = 0;
      lossN = 0;
      lastReport = now;
    };
    const checkpoint = async (): Promise<void> => {
      if (ckptDir === undefined) return;
      state.elapsedSeconds = elapsed();
      const name = path.join(ckptDir, `checkpoint-${String(state.step)}`);
      await saveAtomic(name, async (tmp) => {
        await host.save(tmp);
        await trainer.saveState(path.join(tmp, OPTIMIZER_FILE));
        fs.writeFileSync(path.join(tmp, STATE_FILE), `${JSON.stringify(state)}\n`);
      });
      pruneCheckpoints(ckptDir, keep);
      lastCheckpoint = elapsed();
      emit({
        phase: 'checkpoint',
        message: name,
        ...idle,
        step: state.step,
        totalSteps,
        elapsedSeconds: elapsed(),
        etaSeconds: 0,
      });
    };
    const evaluate = async (): Promise<void> => {
      if (evalBatches.length === 0) return;
      const loss = await evalLoss();
      state.evalHistory.push({ step: state.step, seconds: elapsed(), loss });
      emit({
        phase: 'eval',
        evalLoss: loss,
        ...idle,
        step: state.step,
        totalSteps,
        elapsedSeconds: elapsed(),
        etaSeconds: 0,
      });
    };

    let last: StepResult | undefined;
    while (state.step < totalSteps && (state.step === startStep || elapsed() < budgetSeconds)) {
      if (signal?.aborted) {
        throw new AbortedError(`pretrain aborted after step ${String(state.step)}; the weights are those of that step`);
      }
      if (state.cursor >= (ends[ends.length - 1] ?? 0)) {
        state.epoch += 1;
        state.cursor = 0;
        order = orderOf(state.epoch);
        ends = batchEnds(blocks, order, maxTokens);
      }
      let end = 0;
      for (const e of ends) {
        if (e > state.cursor) {
          end = e;
          break;
        }
      }
      const batch = maskBatch(
        blocks,
        order,
        state.cursor,
        end,
        vocab,
        new Rng(seed, state.step + 1),
        maskProb,
        wholeWord,
      );
      let r: StepResult;
      stepStart = performance.now();
      try {
        r = await trainer.step(batch);
      } catch (err) {
        if (!(err instanceof NonFiniteError)) throw err;
        const newest = ckptDir !== undefined ? listCheckpoints(ckptDir).pop() : undefined;
        if (newest === undefined)
          throw new NonFiniteError(`${err.message}; no checkpoint to go back to: do not use these weights`);
        await host.native.loadEncoder(path.join(newest, 'model.safetensors'), true);
        throw new NonFiniteError(
          `${err.message}; the model now holds the weights of ${newest}, the last good checkpoint`,
        );
      }
      last = r;
      const stepSeconds = (performance.now() - stepStart) / 1000;
      stepEma = stepEma === 0 ? stepSeconds : 0.9 * stepEma + 0.1 * Math.min(stepSeconds, 20 * stepEma);
      if (state.step === startStep && elapsed() >= budgetSeconds && startStep === 0) {
        throw new InputError(
          `Expected options.minutes long enough for training but received ${String(minutes)} (${budgetSeconds.toFixed(2)} s): the first step alone took ${elapsed().toFixed(2)} s` +
            (warmupSteps > 0 ? '; it ran at learning rate 0, so the weights are unchanged' : ''),
        );
      }
      state.step = r.step;
      state.cursor = end;
      seqs += batch.offsets.length - 1;
      toks += batch.ids.length;
      lossSum += r.loss;
      lossN += 1;
      state.history.push({ step: r.step, loss: r.loss, lr: r.lr, gradNorm: r.gradNorm });
      // With a minutes budget, fit the schedule to the step rate of the last stretch (after 5
      // steps, then every 2% of the estimate), so that the decay ends with the budget.
      if (minutes !== undefined && state.step >= refitAt) {
        const now = elapsed();
        const rate = (state.step - refitFrom.step) / Math.max(1e-9, now - refitFrom.time);
        refitFrom = { step: state.step, time: now };
        totalSteps = Math.max(state.step + 1, Math.round(state.step + rate * (budgetSeconds - elapsed())));
        if (o.warmupSteps === undefined && state.warmupSteps >= 1_000_000) {
          warmupSteps = Math.max(state.step, Math.round(warmupRatio * totalSteps));
        }
        state.totalSteps = totalSteps;
        state.warmupSteps = warmupSteps;
        await trainer.setSchedule({ learningRate, warmupSteps, totalSteps, schedule });
        refitAt = state.step + Math.max(5, Math.round(totalSteps / 50));
        nextEval = Math.min(nextEval, (Math.floor(state.step / evalEvery()) + 1) * evalEvery());
      }
      report(r, false);
      if (state.step >= nextEval && state.step < totalSteps) {
        await evaluate();
        nextEval += evalEvery();
      }
      const due =
        elapsed() - lastCheckpoint >= ckptMinutes * 60 || (ckptSteps !== undefined && state.step % ckptSteps === 0);
      if (ckptDir !== undefined && due && state.step < totalSteps) await checkpoint();
    }
    if (last !== undefined) report(last, true);
    const trainSeconds = elapsed() - clockStart;
    state.totalSteps = state.step;
    await evaluate();
    await checkpoint();
    const h = state.history;
    const tail = h.slice(Math.max(0, h.length - Math.max(1, Math.round(h.length * 0.05))));
    const finalEval = state.evalHistory[state.evalHistory.length - 1]?.loss ?? NaN;
    return {
      steps: state.step,
      epochs: state.epoch + state.cursor / Math.max(1, trainIdx.length),
      trainLoss: tail.length > 0 ? tail.reduce((a, b) => a + b.loss, 0) / tail.length : NaN,
      evalLoss: finalEval,
      evalPerplexity: Math.exp(finalEval),
      history: state.history,
      evalHistory: state.evalHistory,
      corpus: {
        documents: blocks.documents,
        sentences: blocks.sentences,
        tokens: blocks.tokens.length,
        trainBlocks: trainIdx.length,
        evalBlocks: nEval,
        seconds: corpusSeconds,
      },
      headAdded,
      trainSeconds,
      seconds: (performance.now() - t0) / 1000,
      tokensPerSecond: trainSeconds > 0 ? toks / trainSeconds : 0,
      sequencesPerSecond: trainSeconds > 0 ? seqs / trainSeconds : 0,
    };
  } finally {
    await trainer.dispose().catch(() => undefined);
  }
}
