/**
 * The low-level training API: one optimizer step on a packed batch you built, in one native
 * call (forward, loss, backward, gradient clipping, AdamW, learning-rate schedule). This is
 * what custom training loops and exact parity tests use; {@link Bert.fineTune} is built on it.
 *
 * Conventions are Hugging Face's (transformers + `torch.optim.AdamW`), so that a step here and
 * a step there on the same batch agree (native/tests/test_trainer.cpp checks it): labels as
 * below with -100 ignored, the loss a mean over what counts, decoupled weight decay on
 * matrices and embeddings only (none on biases and LayerNorm), `clip_grad_norm_`, and the
 * schedules of `get_{constant,linear,cosine}_schedule_with_warmup` (step 0 of a warmup runs at
 * learning rate 0, as there).
 *
 * @example
 * ```ts
 * const trainer = model.trainer({ task: 'sequence', learningRate: 1e-3, warmupSteps: 10, totalSteps: 500 });
 * const batch = model.tokenizer.encodeBatch(['hi', 'bye']);
 * const { loss, gradNorm, lr } = await trainer.step({ ...batch, labels: Int32Array.of(0, 1) });
 * await trainer.dispose(); // frees the gradients and optimizer state
 * ```
 */
import { InputError, expected } from '../errors';
import type { NativeModel, NativeModelConfig, NativeTrainBatch, NativeTrainerOptions } from '../native';

/**
 * What a trainer optimizes: the data tasks of fine-tuning, masked-LM pretraining, and `'joint'`
 * (intent + emotion + slots of a {@link ChatModel} in one forward).
 */
export type TrainerTask = 'sequence' | 'multi-label' | 'regression' | 'token' | 'mlm' | 'joint';

/** Learning-rate schedules, each after a linear warmup from 0. */
export type LrSchedule = 'constant' | 'linear' | 'cosine';

/** Options of {@link Bert.trainer}. */
export interface TrainerOptions {
  /**
   * Default: from the model's head (`'sequence'`, `'multi-label'` or `'regression'` by its
   * `problem_type`; `'token'` for a token-classification head; `'mlm'` for a masked-LM head).
   */
  task?: TrainerTask;
  /** Peak learning rate; default 5e-5 (transformers' default; small models from scratch want ~1e-3). */
  learningRate?: number;
  /** Decoupled weight decay on matrices and embeddings; default 0. */
  weightDecay?: number;
  /** AdamW (beta1, beta2); default [0.9, 0.999]. */
  betas?: readonly [number, number];
  /** AdamW epsilon; default 1e-8. */
  eps?: number;
  /** Steps of linear warmup from 0; default 0. */
  warmupSteps?: number;
  /** Length of the schedule in optimizer steps; needed by `'linear'` and `'cosine'`. */
  totalSteps?: number;
  /** Default `'linear'` when `totalSteps` is given, else `'constant'`. */
  schedule?: LrSchedule;
  /** Clip the global gradient L2 norm to this; default 1; 0: no clipping. */
  maxGradNorm?: number;
  /** Hidden dropout while training; default the model config's `hidden_dropout_prob`. */
  dropout?: number;
  /** Attention-probability dropout; default the config's `attention_probs_dropout_prob`. */
  attentionDropout?: number;
  /** Seed of the dropout masks (Philox; the same bits on every CPU ISA and thread count). */
  seed?: number;
  /**
   * Task `'joint'`: how many of the classifier's first labels form the single-label (intent)
   * head; the others are the multi-label (emotion) head. Default: all of them.
   */
  jointIntents?: number;
  /** Task `'joint'`: weights of the intent, emotion and slot losses; default [1, 1, 1]. */
  lossWeights?: readonly [number, number, number];
  /**
   * Train only the model's LoRA adapters and its heads after the pooler (everything else
   * frozen), as peft does; the model must have adapters ({@link ChatModel.enableLora}).
   */
  lora?: boolean;
}

/**
 * One packed training batch, zero-copy: the arrays are read in place until the step's promise
 * settles (do not modify them before). Labels, Hugging Face conventions:
 * - `'sequence'`: `Int32Array` [B] class ids;
 * - `'multi-label'`: `Float32Array` [B, numLabels] of 0/1;
 * - `'regression'`: `Float32Array` [B, numLabels];
 * - `'token'`, `'mlm'`: `Int32Array` [T] per token, -100 where no loss is taken.
 */
export interface TrainBatch {
  ids: Int32Array;
  typeIds?: Int32Array;
  offsets: Int32Array;
  /** Every task but `'joint'`. */
  labels?: Int32Array | Float32Array;
  /** `'joint'`: [B] intent ids, -100 where a sequence has none. */
  intents?: Int32Array;
  /** `'joint'`: [B, intents] soft intent targets (distillation); a row starting below 0 has none. */
  intentProbs?: Float32Array;
  /** `'joint'`: [B, emotions] 0/1 targets; a row starting below 0 has none. */
  emotions?: Float32Array;
  /** `'joint'`: [T] slot tag ids, -100 where no loss is taken. */
  slots?: Int32Array;
}

/** What one optimizer step reports. */
export interface StepResult {
  /** Mean loss of the step, before the update. */
  loss: number;
  /** Global L2 norm of the gradient before clipping. */
  gradNorm: number;
  /** Learning rate this step used. */
  lr: number;
  /** Optimizer steps done, this one included. */
  step: number;
  /** What the loss is a mean over: sequences, label cells or labelled tokens. */
  count: number;
  /** `'joint'`: the mean loss of the intent, emotion and slot heads (0 where none had labels). */
  headLoss?: [number, number, number];
  /** `'joint'`: labelled sequences, sequences and tokens of each head. */
  headCount?: [number, number, number];
}

/** The model side a trainer needs (supplied by {@link Bert}). */
export interface TrainerHost {
  readonly native: NativeModel;
  readonly info: NativeModelConfig;
  checkLive(what: string): void;
}

/**
 * A model's optimizer: made by {@link Bert.trainer}, one per model at a time (a new one replaces
 * the old). Its calls queue behind the model's other operations, in order.
 */
export class Trainer {
  readonly #host: TrainerHost;
  readonly #ready: Promise<void>;
  readonly task: TrainerTask;
  #steps = 0;
  #disposed = false;

  /** @internal Use {@link Bert.trainer}. */
  constructor(host: TrainerHost, options: TrainerOptions = {}) {
    this.#host = host;
    const opts = checkTrainerOptions(options, host.info);
    this.task = opts.task;
    this.#ready = host.native.trainerCreate(opts);
    this.#ready.catch(() => undefined); // surfaced by the first call that awaits it
  }

  /** Optimizer steps done (including those of a loaded state). */
  get steps(): number {
    return this.#steps;
  }

  /**
   * One optimizer step. An array is one step over its micro-batches (gradient accumulation:
   * the loss is the mean over all of them, as one big batch). Labels are checked before
   * anything runs; a NaN or infinite loss rejects with `ERR_NONFINITE` naming the step, and
   * the weights stay those of the step before.
   */
  async step(batch: TrainBatch | readonly TrainBatch[]): Promise<StepResult> {
    this.#check('step');
    await this.#ready;
    const arg = Array.isArray(batch)
      ? (batch as readonly TrainBatch[]).map((b, i) => checkBatch(b, `batch[${String(i)}]`))
      : checkBatch(batch as TrainBatch, 'batch');
    const r = await this.#host.native.trainStep(arg);
    this.#steps = r.step;
    return r;
  }

  /** The loss on a batch without dropout or any update (evaluation). */
  async evalLoss(batch: TrainBatch): Promise<{ loss: number; count: number }> {
    this.#check('evalLoss');
    await this.#ready;
    return this.#host.native.evalLoss(checkBatch(batch, 'batch'));
  }

  /** Changes the schedule (e.g. once the number of steps is known). */
  async setSchedule(options: {
    learningRate: number;
    warmupSteps: number;
    totalSteps: number;
    schedule: LrSchedule;
  }): Promise<void> {
    this.#check('setSchedule');
    await this.#ready;
    const { learningRate, warmupSteps, totalSteps, schedule } = options;
    checkNumber(learningRate, 'learningRate', 0, 1e3);
    checkInt(warmupSteps, 'warmupSteps');
    checkInt(totalSteps, 'totalSteps');
    await this.#host.native.trainerSetSchedule(learningRate, warmupSteps, totalSteps, checkSchedule(schedule));
  }

  /** Writes the AdamW moments and the step count to `file` (safetensors, atomically). */
  async saveState(file: string): Promise<void> {
    this.#check('saveState');
    await this.#ready;
    if (typeof file !== 'string' || file === '') throw expected(InputError, 'a file path', 'file', file);
    await this.#host.native.trainerSaveState(file);
  }

  /** Reads what {@link saveState} wrote; refuses (`ERR_CHECKPOINT`) the state of another model. */
  async loadState(file: string): Promise<void> {
    this.#check('loadState');
    await this.#ready;
    if (typeof file !== 'string' || file === '') throw expected(InputError, 'a file path', 'file', file);
    this.#steps = await this.#host.native.trainerLoadState(file);
  }

  /**
   * Frees the gradients, the optimizer state and the model's training memory; the model's
   * weights are packed for fast inference again. The trained weights stay in the model.
   */
  async dispose(): Promise<void> {
    if (this.#disposed) return;
    this.#disposed = true;
    await this.#ready.catch(() => undefined);
    this.#host.checkLive('trainer.dispose');
    await this.#host.native.trainerDispose();
  }

  #check(what: string): void {
    this.#host.checkLive(`trainer.${what}`);
    if (this.#disposed) throw new InputError(`Expected a live trainer for ${what} but received a disposed trainer`);
  }
}

/** The task a model's head trains by default. */
export function defaultTask(info: NativeModelConfig): TrainerTask | undefined {
  if (info.heads.tokenClassifier) return 'token';
  if (info.heads.classifier) {
    if (info.problemType === 'multi_label_classification') return 'multi-label';
    if (info.problemType === 'regression') return 'regression';
    return 'sequence';
  }
  if (info.heads.mlm) return 'mlm';
  return undefined;
}

/** Checks the public options and turns them into the native ones (one place for all checks). */
export function checkTrainerOptions(
  options: TrainerOptions,
  info: NativeModelConfig,
): NativeTrainerOptions & { task: TrainerTask } {
  if (typeof options !== 'object' || options === null) throw expected(InputError, 'an object', 'options', options);
  const task = options.task ?? defaultTask(info);
  const tasks: readonly TrainerTask[] = ['sequence', 'multi-label', 'regression', 'token', 'mlm', 'joint'];
  if (task === undefined) {
    throw new InputError(
      'Expected a model with a head to train (classifier, token classifier or masked LM) but received a bare encoder',
    );
  }
  if (!tasks.includes(task))
    throw expected(InputError, `one of ${tasks.map((t) => `'${t}'`).join(', ')}`, 'options.task', task);
  const headOk =
    task === 'token'
      ? info.heads.tokenClassifier
      : task === 'mlm'
        ? info.heads.mlm
        : task === 'joint'
          ? info.heads.classifier || info.heads.slots
          : info.heads.classifier;
  if (!headOk && task === 'joint') {
    throw new InputError(`Expected a model with a sequence or slot classifier for task 'joint' but received neither`);
  }
  if (!headOk) {
    const head = task === 'token' ? 'token-classification' : task === 'mlm' ? 'masked-LM' : 'sequence-classification';
    throw new InputError(`Expected a model with a ${head} head for task '${task}' but received one without`);
  }
  const out: NativeTrainerOptions & { task: TrainerTask } = { task };
  if (task === 'joint') {
    const n = options.jointIntents ?? info.numLabels;
    if (!Number.isSafeInteger(n) || n < 0 || n > info.numLabels) {
      throw expected(InputError, `an integer in [0, ${String(info.numLabels)}]`, 'options.jointIntents', n);
    }
    out.jointIntents = n;
    if (options.lossWeights !== undefined) {
      const w = options.lossWeights as unknown;
      if (!Array.isArray(w) || w.length !== 3) {
        throw expected(InputError, 'three numbers [intent, emotion, slots]', 'options.lossWeights', w);
      }
      out.lossWeights = [
        checkNumber(w[0], 'options.lossWeights[0]', 0, 1e3),
        checkNumber(w[1], 'options.lossWeights[1]', 0, 1e3),
        checkNumber(w[2], 'options.lossWeights[2]', 0, 1e3),
      ];
    }
  }
  const lr = options.learningRate ?? 5e-5;
  checkNumber(lr, 'options.learningRate', 0, 1e3);
  out.learningRate = lr;
  if (options.weightDecay !== undefined)
    out.weightDecay = checkNumber(options.weightDecay, 'options.weightDecay', 0, 1e3);
  if (options.betas !== undefined) {
    const b = options.betas as unknown;
    if (!Array.isArray(b) || b.length !== 2) throw expected(InputError, 'a pair [beta1, beta2]', 'options.betas', b);
    out.beta1 = checkNumber(b[0], 'options.betas[0]', 0, 0.999999);
    out.beta2 = checkNumber(b[1], 'options.betas[1]', 0, 0.999999999);
  }
  if (options.eps !== undefined) out.eps = checkNumber(options.eps, 'options.eps', 0, 1);
  const warmup = options.warmupSteps ?? 0;
  out.warmupSteps = checkInt(warmup, 'options.warmupSteps');
  if (options.totalSteps !== undefined) out.totalSteps = checkInt(options.totalSteps, 'options.totalSteps');
  const schedule = options.schedule ?? (options.totalSteps !== undefined ? 'linear' : 'constant');
  out.schedule = checkSchedule(schedule);
  if (schedule !== 'constant' && !(options.totalSteps !== undefined && options.totalSteps > 0)) {
    throw expected(InputError, `totalSteps > 0 for schedule '${schedule}'`, 'options.totalSteps', options.totalSteps);
  }
  if (options.maxGradNorm !== undefined)
    out.maxGradNorm = checkNumber(options.maxGradNorm, 'options.maxGradNorm', 0, 1e9);
  if (options.dropout !== undefined) out.dropout = checkNumber(options.dropout, 'options.dropout', 0, 0.99);
  if (options.attentionDropout !== undefined) {
    out.attentionDropout = checkNumber(options.attentionDropout, 'options.attentionDropout', 0, 0.99);
  }
  if (options.lora !== undefined) {
    if (typeof options.lora !== 'boolean') throw expected(InputError, 'a boolean', 'options.lora', options.lora);
    if (options.lora && info.lora === null) {
      throw new InputError('Expected a model with LoRA adapters for options.lora but received one without');
    }
    out.lora = options.lora;
  }
  if (options.seed !== undefined) {
    if (!Number.isSafeInteger(options.seed) || options.seed < 0) {
      throw expected(InputError, 'a safe integer >= 0', 'options.seed', options.seed);
    }
    out.seed = options.seed;
  }
  return out;
}

function checkBatch(b: TrainBatch, what: string): NativeTrainBatch {
  if (typeof b !== 'object' || (b as unknown) === null) {
    throw expected(InputError, 'an object { ids, typeIds?, offsets, labels }', what, b);
  }
  if (!(b.ids instanceof Int32Array)) throw expected(InputError, 'an Int32Array', `${what}.ids`, b.ids);
  if (!(b.offsets instanceof Int32Array)) throw expected(InputError, 'an Int32Array', `${what}.offsets`, b.offsets);
  if (b.typeIds !== undefined && !(b.typeIds instanceof Int32Array)) {
    throw expected(InputError, 'an Int32Array', `${what}.typeIds`, b.typeIds);
  }
  const out: NativeTrainBatch = { ids: b.ids, typeIds: b.typeIds, offsets: b.offsets, labels: b.labels };
  for (const [key, type] of [
    ['intents', Int32Array],
    ['intentProbs', Float32Array],
    ['emotions', Float32Array],
    ['slots', Int32Array],
  ] as const) {
    const v = b[key];
    if (v === undefined) continue;
    if (!(v instanceof type)) throw expected(InputError, `an ${type.name}`, `${what}.${key}`, v);
    (out as unknown as Record<string, unknown>)[key] = v;
  }
  return out;
}

function checkNumber(v: unknown, what: string, lo: number, hi: number): number {
  if (typeof v !== 'number' || !Number.isFinite(v) || v < lo || v > hi) {
    throw expected(InputError, `a number in [${String(lo)}, ${String(hi)}]`, what, v);
  }
  return v;
}

function checkInt(v: unknown, what: string): number {
  if (!Number.isSafeInteger(v) || (v as number) < 0) throw expected(InputError, 'an integer >= 0', what, v);
  return v as number;
}

function checkSchedule(s: unknown): LrSchedule {
  if (s !== 'constant' && s !== 'linear' && s !== 'cosine') {
    throw expected(InputError, "one of 'constant', 'linear', 'cosine'", 'options.schedule', s);
  }
  return s;
}
