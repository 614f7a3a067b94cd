/**
 * The high-level training API behind {@link Bert.fineTune} and {@link Bert.evaluate}: examples
 * in, metrics out. What transformers' `Trainer` does, for a Node service:
 *
 * - examples from arrays or JSONL / CSV files streamed from disk (lib/train/data.ts), the task
 *   inferred from their shape, the label set from the data (or given);
 * - batches packed by a token budget, length-bucketed, no padding: each step computes only
 *   real tokens, which is where elmo is faster than a padded framework on chat data;
 * - AdamW with warmup and linear (or cosine) decay, clipping, dropout; one native call per step;
 * - evaluation after each epoch on `evalSet` (or a split of the training set that never cuts a
 *   conversation in two), early stopping on the eval metric, the best weights kept;
 * - checkpoints (`checkpointDir`): the model files, `optimizer.safetensors` and
 *   `trainer_state.json` in `checkpoint-<step>/`, written to a temporary directory and renamed
 *   into place; `resume` continues from the newest exactly (same data order, same dropout);
 * - progress through a coalesced callback; an `AbortSignal` stops between steps.
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';

import { AbortedError, CheckpointError, ElmoError, InputError, NonFiniteError, expected } from '../errors';
import type { NativeForwardOptions, NativeForwardResult, NativeModelConfig } from '../native';
import type { Tokenizer } from '../tokenizer';
import {
  IGNORE_INDEX,
  checkLabels,
  encodeExamples,
  inferTask,
  labelSet,
  packBatches,
  readExamples,
  splitByGroup,
  validateExamples,
} from './data';
import type { EncodedExample, Example, PackedBatch, TrainTask } from './data';
import { listCheckpoints, pruneCheckpoints, readJsonState, resumeDir, saveAtomic } from './checkpoint';
import { classificationMetrics, entityMetrics, multiLabelMetrics, regressionMetrics } from './metrics';
import type { ClassificationMetrics, EntityMetrics, MultiLabelMetrics, RegressionMetrics } from './metrics';
import { Trainer } from './trainer';
import type { LrSchedule, StepResult, TrainerHost } from './trainer';

/** Examples: an array, an (async) iterable, or a `.jsonl` / `.json` / `.csv` / `.tsv` file path. */
export type ExampleSource = Iterable<Example> | AsyncIterable<Example> | string;

/** Progress of {@link Bert.fineTune}, reported at most every `progressIntervalMs` and at each epoch's end. */
export interface FineTuneProgress {
  phase: 'train' | 'eval';
  /** Optimizer steps done. */
  step: number;
  totalSteps: number;
  /** 1-based epoch in progress. */
  epoch: number;
  epochs: number;
  /** Mean training loss over the steps since the last report. */
  loss: number;
  lr: number;
  gradNorm: number;
  sequencesPerSecond: number;
  tokensPerSecond: number;
  /** Estimated seconds left (training only). */
  etaSeconds: number;
  /** After an evaluation. */
  evalMetrics?: EvalMetrics;
}

/** Options of {@link Bert.fineTune}. */
export interface FineTuneOptions {
  /** Default: inferred from the examples (tokens + tags, labels array, numeric or string label). */
  task?: TrainTask;
  /** Label names in id order; default the model head's when it fits the data, else sorted from the data. */
  labels?: readonly string[];
  /**
   * Replace a classification head whose labels differ from the data's (default false: such a
   * head is refused with ERR_INPUT, so a checkpoint's head is never dropped by accident). A
   * model without a head for the task always gets a fresh one.
   */
  resetHead?: boolean;
  /** Default 5. */
  epochs?: number;
  /** Most sequences per batch; default 32. */
  batchSize?: number;
  /** Most tokens per batch (the sum of the real lengths); default batchSize x 128. */
  maxTokens?: number;
  /** Longest sequence (special tokens included); default the model's maxSeqLen. */
  maxSeqLen?: number;
  /**
   * Peak learning rate. Default by width: 3e-4 for hidden size <= 256 (the best of 1e-4, 3e-4,
   * 1e-3, 2e-3 for BERT-mini on BANKING77, docs/accuracy.md), 1e-4 up to 512, 5e-5 above (the
   * bert-base recipes; not measured here).
   */
  learningRate?: number;
  /** Default 0.01 (matrices and embeddings only). */
  weightDecay?: number;
  /** Default: warmupRatio of the total steps. */
  warmupSteps?: number;
  /** Default 0.06. */
  warmupRatio?: number;
  /** Default 'linear'. */
  schedule?: LrSchedule;
  /** Default 1. */
  maxGradNorm?: number;
  /** Hidden dropout; default the model config's. */
  dropout?: number;
  /** Micro-batches per optimizer step; default 1. */
  gradientAccumulationSteps?: number;
  /** Evaluated after each epoch. */
  evalSet?: ExampleSource;
  /** Without evalSet: hold out this share of the training examples, whole groups at a time. */
  evalSplit?: { fraction: number; group?: string };
  /** Eval metric for early stopping and the best weights; default per task (accuracy, microF1, f1, mse). */
  metricForBest?: string;
  /** Stop after this many evaluations without improvement; default: never. */
  earlyStoppingPatience?: number;
  /** Default true. */
  shuffle?: boolean;
  /** Data order, dropout, head initialization; default 42. */
  seed?: number;
  onProgress?: (p: FineTuneProgress) => void;
  /** Default 250. */
  progressIntervalMs?: number;
  /** Stops between steps with ERR_ABORTED; the weights are those of the last completed step. */
  signal?: AbortSignal;
  /** Where `checkpoint-<step>/` directories go (one per epoch, and `best/`). */
  checkpointDir?: string;
  /** Checkpoints kept besides best/; default 2. */
  saveTotalLimit?: number;
  /** true: continue from the newest checkpoint in checkpointDir; a path: from that checkpoint. */
  resume?: boolean | string;
  /** multi-label: the score at and above which a label is predicted; default 0.5. */
  threshold?: number;
}

/** Metrics of {@link Bert.evaluate}, by task. */
export type EvalMetrics =
  | ({ task: 'sequence' } & ClassificationMetrics)
  | ({ task: 'multi-label' } & MultiLabelMetrics)
  | ({ task: 'regression' } & RegressionMetrics)
  | ({ task: 'token' } & EntityMetrics);

/** What {@link Bert.fineTune} returns. */
export interface FineTuneResult {
  task: TrainTask;
  labels: string[];
  epochs: number;
  steps: number;
  /** Mean training loss of the last epoch. */
  trainLoss: number;
  /** Metrics of the kept weights on the eval set (absent without one). */
  evalMetrics?: EvalMetrics;
  /** The epoch whose weights were kept (the best on the eval metric, else the last). */
  bestEpoch: number;
  /** One entry per optimizer step. */
  history: { step: number; epoch: number; loss: number; lr: number; gradNorm: number }[];
  /** One entry per evaluation. */
  evalHistory: { epoch: number; step: number; metric: number; metrics: EvalMetrics }[];
  seconds: number;
  trainSequencesPerSecond: number;
  trainTokensPerSecond: number;
  stoppedEarly: boolean;
}

/** Options of {@link Bert.evaluate}. */
export interface EvaluateOptions {
  task?: TrainTask;
  batchSize?: number;
  maxTokens?: number;
  threshold?: number;
}

/** The model side that fine-tuning needs (supplied by {@link Bert}). */
export interface FineTuneHost extends TrainerHost {
  readonly tokenizer: Tokenizer;
  readonly maxSeqLen: number;
  forward(batch: PackedBatch, options: NativeForwardOptions): Promise<NativeForwardResult>;
  /** Makes the model's head fit the task and labels (a fresh head where needed). */
  ensureHead(task: TrainTask, labels: readonly string[], resetHead: boolean, seed: number): Promise<void>;
  save(dir: string): Promise<void>;
}

const STATE_FILE = 'trainer_state.json';
const OPTIMIZER_FILE = 'optimizer.safetensors';

interface TrainerState {
  format: 'elmo-trainer-state';
  version: 1;
  task: TrainTask;
  labels: string[];
  /** Optimizer steps done. */
  step: number;
  /** 0-based epoch in progress and batches of it done (the data position). */
  epoch: number;
  batchInEpoch: number;
  seed: number;
  totalSteps: number;
  bestMetric: number | null;
  bestEpoch: number;
  evalsWithoutImprovement: number;
  history: FineTuneResult['history'];
  evalHistory: FineTuneResult['evalHistory'];
}

/** Reads a source into an array (files streamed line by line). */
export async function collectExamples(source: ExampleSource, what: string): Promise<Example[]> {
  if (typeof source !== 'string' && (typeof source !== 'object' || (source as unknown) === null)) {
    throw expected(InputError, 'an array of examples, an iterable or a file path', what, source);
  }
  const out: Example[] = [];
  for await (const ex of readExamples(source)) out.push(ex);
  return out;
}

function defaultLearningRate(info: NativeModelConfig): number {
  if (info.hiddenSize <= 256) return 3e-4;
  if (info.hiddenSize <= 512) return 1e-4;
  return 5e-5;
}

function defaultMetric(task: TrainTask): string {
  return task === 'sequence' ? 'accuracy' : task === 'multi-label' ? 'microF1' : task === 'token' ? 'f1' : 'mse';
}

function metricValue(m: EvalMetrics, name: string): number {
  const v = (m as unknown as Record<string, unknown>)[name];
  if (typeof v !== 'number') {
    throw new InputError(
      `Expected a numeric metric of task '${m.task}' for options.metricForBest but received '${name}'`,
    );
  }
  return v;
}

const lowerIsBetter = (name: string): boolean => name === 'mse' || name === 'mae' || name === 'loss';

/** Fine-tunes the host's model (see {@link Bert.fineTune}). */
export async function fineTune(
  host: FineTuneHost,
  source: ExampleSource,
  options: FineTuneOptions = {},
): Promise<FineTuneResult> {
  if (typeof options !== 'object' || (options as unknown) === null) {
    throw expected(InputError, 'an object', 'options', options);
  }
  const t0 = performance.now();
  const seed = options.seed ?? 42;
  if (!Number.isSafeInteger(seed) || seed < 0) throw expected(InputError, 'a safe integer >= 0', 'options.seed', seed);
  const epochs = options.epochs ?? 5;
  if (!Number.isInteger(epochs) || epochs < 1) throw expected(InputError, 'an integer >= 1', 'options.epochs', epochs);
  const batchSize = options.batchSize ?? 32;
  if (!Number.isInteger(batchSize) || batchSize < 1)
    throw expected(InputError, 'an integer >= 1', 'options.batchSize', batchSize);
  const maxSeqLen = options.maxSeqLen ?? host.maxSeqLen;
  if (!Number.isInteger(maxSeqLen) || maxSeqLen < 3 || maxSeqLen > host.info.maxPositions) {
    throw expected(InputError, `an integer in [3, ${String(host.info.maxPositions)}]`, 'options.maxSeqLen', maxSeqLen);
  }
  const maxTokens = options.maxTokens ?? batchSize * 128;
  if (!Number.isInteger(maxTokens) || maxTokens < 1)
    throw expected(InputError, 'an integer >= 1', 'options.maxTokens', maxTokens);
  const accum = options.gradientAccumulationSteps ?? 1;
  if (!Number.isInteger(accum) || accum < 1) {
    throw expected(InputError, 'an integer >= 1', 'options.gradientAccumulationSteps', accum);
  }
  const interval = options.progressIntervalMs ?? 250;
  if (options.onProgress !== undefined && typeof options.onProgress !== 'function') {
    throw expected(InputError, 'a function', 'options.onProgress', options.onProgress);
  }
  const signal = options.signal;
  if (signal !== undefined && !(signal instanceof AbortSignal))
    throw expected(InputError, 'an AbortSignal', 'options.signal', signal);
  const patience = options.earlyStoppingPatience;
  if (patience !== undefined && (!Number.isInteger(patience) || patience < 1)) {
    throw expected(InputError, 'an integer >= 1', 'options.earlyStoppingPatience', patience);
  }
  const keep = options.saveTotalLimit ?? 2;
  if (!Number.isInteger(keep) || keep < 1)
    throw expected(InputError, 'an integer >= 1', 'options.saveTotalLimit', keep);

  // ---- data --------------------------------------------------------------------------------------
  let train = await collectExamples(source, 'examples');
  if (train.length === 0) throw new InputError('Expected at least one training example but received none');
  let evalExamples: Example[] | undefined;
  if (options.evalSet !== undefined) {
    evalExamples = await collectExamples(options.evalSet, 'options.evalSet');
    if (evalExamples.length === 0)
      throw new InputError('Expected at least one example in options.evalSet but received none');
  } else if (options.evalSplit !== undefined) {
    const s = options.evalSplit;
    if (typeof s !== 'object' || (s as unknown) === null)
      throw expected(InputError, 'an object { fraction, group? }', 'options.evalSplit', s);
    const split = splitByGroup(train, {
      fraction: s.fraction,
      seed,
      ...(s.group !== undefined ? { group: s.group } : {}),
    });
    train = split.train;
    evalExamples = split.eval;
    if (train.length === 0 || evalExamples.length === 0) {
      throw new InputError(
        `Expected options.evalSplit to leave examples on both sides but received ${String(train.length)} for training and ${String(evalExamples.length)} for evaluation`,
      );
    }
  }
  const task = options.task ?? inferTask(train);
  validateExamples(train, task);
  if (evalExamples) validateExamples(evalExamples, task);
  let labels: string[];
  if (task === 'regression') {
    labels = options.labels ? [...options.labels] : ['value'];
  } else if (options.labels !== undefined) {
    labels = labelSet(train, task, { labels: options.labels });
  } else {
    const fromData = labelSet(train, task);
    const head = host.info.labels;
    const headFits = head.length > 0 && fromData.every((l) => head.includes(l)) && headMatchesTask(host.info, task);
    labels = headFits ? [...head] : fromData;
  }
  if (evalExamples) {
    try {
      checkLabels(evalExamples, labels, task);
    } catch (err) {
      if (err instanceof InputError)
        throw new InputError(`options.evalSet: ${err.message} (a label unseen in training)`);
      throw err;
    }
  }
  await host.ensureHead(task, labels, options.resetHead ?? false, seed);

  const encoded = encodeExamples(host.tokenizer, train, { task, labels, maxSeqLen });
  const shuffle = options.shuffle ?? true;
  // An epoch's batches are a function of (seed, epoch): packed when the epoch starts, so that
  // only one epoch's copy of the data is held. The schedule needs every epoch's step count
  // first, hence one counting pass (packing is cheap next to a training step).
  const packEpoch = (e: number): PackedBatch[] =>
    packBatches(encoded, { maxTokens, maxBatchSize: batchSize, shuffle, seed, epoch: e });
  let totalSteps = 0;
  for (let e = 0; e < epochs; e++) totalSteps += Math.ceil(packEpoch(e).length / accum);
  const learningRate = options.learningRate ?? defaultLearningRate(host.info);
  const warmupSteps = options.warmupSteps ?? Math.round((options.warmupRatio ?? 0.06) * totalSteps);
  const trainer = new Trainer(host, {
    task,
    learningRate,
    weightDecay: options.weightDecay ?? 0.01,
    warmupSteps,
    totalSteps,
    schedule: options.schedule ?? 'linear',
    maxGradNorm: options.maxGradNorm ?? 1,
    ...(options.dropout !== undefined ? { dropout: options.dropout } : {}),
    seed,
  });

  const metricName = options.metricForBest ?? defaultMetric(task);
  const state: TrainerState = {
    format: 'elmo-trainer-state',
    version: 1,
    task,
    labels,
    step: 0,
    epoch: 0,
    batchInEpoch: 0,
    seed,
    totalSteps,
    bestMetric: null,
    bestEpoch: 0,
    evalsWithoutImprovement: 0,
    history: [],
    evalHistory: [],
  };
  const ckptDir = options.checkpointDir;
  if (ckptDir !== undefined) {
    if (typeof ckptDir !== 'string' || ckptDir === '')
      throw expected(InputError, 'a directory path', 'options.checkpointDir', ckptDir);
    fs.mkdirSync(ckptDir, { recursive: true });
  }
  const bestDir =
    ckptDir !== undefined ? path.join(ckptDir, 'best') : fs.mkdtempSync(path.join(os.tmpdir(), 'elmo-best-'));
  const ownBestDir = ckptDir === undefined;
  let haveBest = false;
  const encodedEval = evalExamples
    ? encodeExamples(host.tokenizer, evalExamples, { task, labels, maxSeqLen })
    : undefined;

  try {
    if (options.resume !== undefined && options.resume !== false) {
      const dir = resumeDir(options.resume, ckptDir);
      const saved = readState(dir);
      if (saved.task !== task || saved.labels.join('\u0000') !== labels.join('\u0000') || saved.seed !== seed) {
        throw new CheckpointError(
          `${dir}: the checkpoint was made for task '${saved.task}' with ${String(saved.labels.length)} labels and seed ${String(saved.seed)}, not this run's`,
        );
      }
      if (saved.totalSteps !== totalSteps) {
        throw new CheckpointError(
          `${dir}: the checkpoint's run has ${String(saved.totalSteps)} steps, this one ${String(totalSteps)} (other data, epochs or batch sizes)`,
        );
      }
      await host.native.loadEncoder(path.join(dir, 'model.safetensors'), true).catch((err: unknown) => {
        throw err instanceof ElmoError ? new CheckpointError(`${dir}: ${err.message}`) : err;
      });
      await trainer.loadState(path.join(dir, OPTIMIZER_FILE));
      Object.assign(state, saved);
      haveBest = ckptDir !== undefined && fs.existsSync(path.join(bestDir, 'model.safetensors'));
    }

    const report = makeReporter(options.onProgress, interval, totalSteps, epochs);
    let stoppedEarly = false;
    let epochLoss = 0;
    let epochCount = 0;
    let seqs = 0;
    let toks = 0;
    const trainStart = performance.now();
    for (let e = state.epoch; e < epochs && !stoppedEarly; e++) {
      const batches = packEpoch(e);
      epochLoss = 0;
      epochCount = 0;
      for (let i = state.batchInEpoch; i < batches.length; i += accum) {
        if (signal?.aborted) {
          throw new AbortedError(
            `fineTune aborted after step ${String(state.step)}; the weights are those of that step`,
          );
        }
        const group = batches.slice(i, i + accum);
        const r: StepResult = await stepOrRestore(
          host,
          trainer,
          ckptDir,
          group.length === 1 && group[0] !== undefined ? toTrainBatch(group[0]) : group.map(toTrainBatch),
        );
        state.step = r.step;
        state.epoch = e;
        state.batchInEpoch = i + group.length;
        for (const b of group) {
          seqs += b.offsets.length - 1;
          toks += b.tokens;
        }
        epochLoss += r.loss;
        epochCount += 1;
        state.history.push({ step: r.step, epoch: e + 1, loss: r.loss, lr: r.lr, gradNorm: r.gradNorm });
        const elapsed = (performance.now() - trainStart) / 1000;
        report.step(r, e + 1, seqs / elapsed, toks / elapsed);
      }
      state.epoch = e + 1;
      state.batchInEpoch = 0;
      report.flush();
      // Evaluate, keep the best weights, stop early.
      if (encodedEval && evalExamples) {
        const metrics = await evaluateEncoded(host, evalExamples, encodedEval, task, labels, {
          maxTokens,
          batchSize: Math.max(batchSize, 64),
          threshold: options.threshold ?? 0.5,
        });
        const value = metricValue(metrics, metricName);
        state.evalHistory.push({ epoch: e + 1, step: state.step, metric: value, metrics });
        const better =
          state.bestMetric === null ||
          (lowerIsBetter(metricName) ? value < state.bestMetric : value > state.bestMetric);
        if (better) {
          state.bestMetric = value;
          state.bestEpoch = e + 1;
          state.evalsWithoutImprovement = 0;
          await saveAtomic(bestDir, async (tmp) => host.save(tmp));
          haveBest = true;
        } else {
          state.evalsWithoutImprovement += 1;
          if (patience !== undefined && state.evalsWithoutImprovement >= patience) stoppedEarly = true;
        }
        report.evaluated(metrics, e + 1, state.step);
      } else {
        state.bestEpoch = e + 1;
      }
      if (ckptDir !== undefined) await writeCheckpoint(host, trainer, ckptDir, state, keep);
    }
    const trainSeconds = (performance.now() - trainStart) / 1000;
    await trainer.dispose();
    // The best weights back in the model (when the last epoch was not the best).
    let evalMetrics: EvalMetrics | undefined;
    if (encodedEval && evalExamples) {
      const last = state.evalHistory[state.evalHistory.length - 1];
      if (haveBest && last !== undefined && last.epoch !== state.bestEpoch) {
        await host.native.loadEncoder(path.join(bestDir, 'model.safetensors'), true);
      }
      evalMetrics = state.evalHistory.find((h) => h.epoch === state.bestEpoch)?.metrics;
    }
    return {
      task,
      labels,
      epochs: state.epoch,
      steps: state.step,
      trainLoss: epochCount > 0 ? epochLoss / epochCount : NaN,
      ...(evalMetrics !== undefined ? { evalMetrics } : {}),
      bestEpoch: state.bestEpoch,
      history: state.history,
      evalHistory: state.evalHistory,
      seconds: (performance.now() - t0) / 1000,
      trainSequencesPerSecond: trainSeconds > 0 ? seqs / trainSeconds : 0,
      trainTokensPerSecond: trainSeconds > 0 ? toks / trainSeconds : 0,
      stoppedEarly,
    };
  } finally {
    // Whatever happened, the model is left usable for inference (weights of the last step).
    await trainer.dispose().catch(() => undefined);
    if (ownBestDir) fs.rmSync(bestDir, { recursive: true, force: true });
  }
}

/**
 * One step; on ERR_NONFINITE the weights that produced the non-finite loss are not kept: the
 * newest checkpoint's weights go back into the model (when there is one), and the error says
 * which weights the model holds.
 */
async function stepOrRestore(
  host: FineTuneHost,
  trainer: Trainer,
  ckptDir: string | undefined,
  batch: Parameters<Trainer['step']>[0],
): Promise<StepResult> {
  try {
    return await trainer.step(batch);
  } catch (err) {
    if (!(err instanceof NonFiniteError)) throw err;
    const newest = ckptDir !== undefined ? listCheckpoints(ckptDir).pop() : undefined;
    if (newest === undefined) {
      throw new NonFiniteError(`${err.message}; no checkpoint to go back to: do not use these weights`);
    }
    await host.native.loadEncoder(path.join(newest, 'model.safetensors'), true);
    throw new NonFiniteError(`${err.message}; the model now holds the weights of ${newest}, the last good checkpoint`);
  }
}

function headMatchesTask(info: NativeModelConfig, task: TrainTask): boolean {
  if (task === 'token') return info.heads.tokenClassifier;
  if (!info.heads.classifier) return false;
  const want =
    task === 'multi-label'
      ? 'multi_label_classification'
      : task === 'regression'
        ? 'regression'
        : 'single_label_classification';
  return (info.problemType ?? 'single_label_classification') === want;
}

function toTrainBatch(b: PackedBatch): {
  ids: Int32Array;
  typeIds: Int32Array;
  offsets: Int32Array;
  labels: Int32Array | Float32Array;
} {
  return { ids: b.ids, typeIds: b.typeIds, offsets: b.offsets, labels: b.labels };
}

/** Evaluates examples on the host's model (see {@link Bert.evaluate}). */
export async function evaluate(
  host: FineTuneHost,
  source: ExampleSource,
  options: EvaluateOptions = {},
): Promise<EvalMetrics> {
  if (typeof options !== 'object' || (options as unknown) === null)
    throw expected(InputError, 'an object', 'options', options);
  const examples = await collectExamples(source, 'examples');
  if (examples.length === 0) throw new InputError('Expected at least one example to evaluate but received none');
  const info = host.info;
  const task = options.task ?? inferTask(examples);
  validateExamples(examples, task);
  if (!headMatchesTask(info, task)) {
    throw new InputError(
      `Expected a model with a head for task '${task}' for evaluate but received one without (fine-tune it first)`,
    );
  }
  const labels = task === 'regression' ? ['value'] : info.labels;
  checkLabels(examples, labels, task);
  const batchSize = options.batchSize ?? 64;
  const encoded = encodeExamples(host.tokenizer, examples, { task, labels, maxSeqLen: host.maxSeqLen });
  return evaluateEncoded(host, examples, encoded, task, labels, {
    batchSize,
    maxTokens: options.maxTokens ?? batchSize * 128,
    threshold: options.threshold ?? 0.5,
  });
}

async function evaluateEncoded(
  host: FineTuneHost,
  examples: readonly Example[],
  encoded: readonly EncodedExample[],
  task: TrainTask,
  labels: readonly string[],
  o: { batchSize: number; maxTokens: number; threshold: number },
): Promise<EvalMetrics> {
  const n = examples.length;
  const L = labels.length;
  const batches = packBatches(encoded, {
    maxTokens: o.maxTokens,
    maxBatchSize: o.batchSize,
    shuffle: false,
    seed: 0,
    epoch: 0,
  });
  if (task === 'sequence' || task === 'multi-label') {
    const scores = task === 'sequence' ? 'softmax' : 'sigmoid';
    const yPred = new Int32Array(n);
    const probs: Float32Array[] = new Array<Float32Array>(n);
    for (const b of batches) {
      const out = await host.forward(b, { hidden: false, scores });
      if (out.best === undefined || out.scores === undefined)
        throw new ElmoError('The native forward returned no scores');
      for (let k = 0; k < b.indices.length; k++) {
        const idx = b.indices[k] ?? 0;
        yPred[idx] = out.best[k] ?? 0;
        probs[idx] = out.scores.subarray(k * L, (k + 1) * L);
      }
    }
    if (task === 'sequence') {
      const yTrue = encoded.map((e) => e.label ?? 0);
      return { task, ...classificationMetrics(yTrue, yPred, labels) };
    }
    // Rows as they are (views of the native outputs and the encoded labels), no copies.
    const yTrue = encoded.map((e) => e.labelVector ?? new Float32Array(L));
    return {
      task,
      ...multiLabelMetrics(yTrue, probs, labels, o.threshold),
    };
  }
  if (task === 'regression') {
    const yPred = new Float64Array(n);
    for (const b of batches) {
      const out = await host.forward(b, { hidden: false });
      if (out.logits === undefined) throw new ElmoError('The native forward returned no logits');
      for (let k = 0; k < b.indices.length; k++) yPred[b.indices[k] ?? 0] = out.logits[k * L] ?? NaN;
    }
    const yTrue = encoded.map((e) => e.labelVector?.[0] ?? 0);
    return { task, ...regressionMetrics(yTrue, yPred) };
  }
  // token: the tag of each word is the prediction at its first sub-token; words cut off by
  // maxSeqLen are predicted 'O'.
  const predTags: string[][] = examples.map((ex) => (ex.tags ?? []).map(() => 'O'));
  for (const b of batches) {
    const out = await host.forward(b, { hidden: false, scores: 'softmax' });
    if (out.best === undefined) throw new ElmoError('The native forward returned no scores');
    const wordIds = b.wordIds;
    const tokenLabels = b.labels;
    if (wordIds === undefined) throw new ElmoError('token batches carry word ids');
    for (let k = 0; k < b.indices.length; k++) {
      const tags = predTags[b.indices[k] ?? 0] ?? [];
      for (let t = b.offsets[k] ?? 0; t < (b.offsets[k + 1] ?? 0); t++) {
        const w = wordIds[t] ?? -1;
        if (w >= 0 && tokenLabels[t] !== IGNORE_INDEX && w < tags.length) tags[w] = labels[out.best[t] ?? 0] ?? 'O';
      }
    }
  }
  const trueTags = examples.map((ex) => [...(ex.tags ?? [])]);
  return { task, ...entityMetrics(trueTags, predTags) };
}

// ---- progress ----------------------------------------------------------------------------------

function makeReporter(
  cb: ((p: FineTuneProgress) => void) | undefined,
  intervalMs: number,
  totalSteps: number,
  epochs: number,
): {
  step(r: StepResult, epoch: number, seqPerSec: number, tokPerSec: number): void;
  flush(): void;
  evaluated(m: EvalMetrics, epoch: number, step: number): void;
} {
  let last = 0;
  let lossSum = 0;
  let n = 0;
  let pending: FineTuneProgress | undefined;
  const t0 = performance.now();
  const emit = (p: FineTuneProgress): void => {
    if (cb === undefined) return;
    try {
      cb(p);
    } catch {
      // A throwing progress callback must not break training.
    }
  };
  return {
    step(r, epoch, seqPerSec, tokPerSec) {
      lossSum += r.loss;
      n += 1;
      const now = performance.now();
      const elapsed = (now - t0) / 1000;
      pending = {
        phase: 'train',
        step: r.step,
        totalSteps,
        epoch,
        epochs,
        loss: lossSum / n,
        lr: r.lr,
        gradNorm: r.gradNorm,
        sequencesPerSecond: seqPerSec,
        tokensPerSecond: tokPerSec,
        etaSeconds: r.step > 0 ? (elapsed / r.step) * Math.max(0, totalSteps - r.step) : 0,
      };
      if (now - last >= intervalMs) {
        emit(pending);
        pending = undefined;
        lossSum = 0;
        n = 0;
        last = now;
      }
    },
    flush() {
      if (pending) emit(pending);
      pending = undefined;
      lossSum = 0;
      n = 0;
    },
    evaluated(m, epoch, step) {
      emit({
        phase: 'eval',
        step,
        totalSteps,
        epoch,
        epochs,
        loss: NaN,
        lr: NaN,
        gradNorm: NaN,
        sequencesPerSecond: 0,
        tokensPerSecond: 0,
        etaSeconds: 0,
        evalMetrics: m,
      });
    },
  };
}

// ---- checkpoints ---------------------------------------------------------------------------------

async function writeCheckpoint(
  host: FineTuneHost,
  trainer: Trainer,
  dir: string,
  state: TrainerState,
  keep: number,
): Promise<void> {
  const name = `checkpoint-${String(state.step)}`;
  await saveAtomic(path.join(dir, name), async (tmp) => {
    await host.save(tmp);
    await trainer.saveState(path.join(tmp, OPTIMIZER_FILE));
    fs.writeFileSync(path.join(tmp, STATE_FILE), `${JSON.stringify(state, null, 1)}\n`);
  });
  pruneCheckpoints(dir, keep);
}

function readState(dir: string): TrainerState {
  const s = readJsonState(dir, STATE_FILE) as Partial<TrainerState>;
  if (s.format !== 'elmo-trainer-state' || typeof s.step !== 'number' || typeof s.epoch !== 'number') {
    throw new CheckpointError(`${dir}: ${STATE_FILE} is not an elmo trainer state`);
  }
  return s as TrainerState;
}
