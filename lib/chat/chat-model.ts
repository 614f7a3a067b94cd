/**
 * `ChatModel`: one BERT encoder with an intent head (single-label), an emotion head (multi-label)
 * and a slot head (BIO tags per word), trained jointly and run in one forward pass per turn.
 *
 * On disk a chat model is a Hugging Face directory plus `chat.json`:
 * - `bert.*`: the encoder (`BertModel` weights; transformers reads them);
 * - `bert.pooler.*`, `classifier.*`: one sequence classifier of `intents + emotions` rows, the
 *   intents first (`id2label` names them `intent:<name>` and `emotion:<name>`), so
 *   `BertForSequenceClassification` loads it too;
 * - `slot_classifier.*`: `[num_slot_labels, hidden]` applied to every token's last hidden
 *   state (as `BertForTokenClassification`'s `classifier`), tags in `chat.json`;
 * - `chat.json`: the label sets, the slot tags, thresholds and how the model was trained.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';

import { Bert, jointHost } from '../bert';
import type { BertLoadOptions, JointHost } from '../bert';
import { AbortedError, CheckpointError, DisposedError, InputError, expected } from '../errors';
import { writeFileAtomic } from '../fs-atomic';
import { readSafetensors, writeSafetensors } from '../safetensors';
import { classificationMetrics, entityMetrics, multiLabelMetrics } from '../train/metrics';
import { Rng } from '../train/rng';
import { calibrateThreshold } from './calibrate';
import type { CalibrateOptions, CalibrationReport } from './calibrate';
import type { Scored, Slot, Understanding } from './types';
import { TurnEncoder } from './encode';
import type { EncodedTurn, WordSpan } from './encode';

/** The label sets of a chat model; each head is present when its list is non-empty. */
export interface ChatLabels {
  intents?: readonly string[];
  emotions?: readonly string[];
  /** Slot names (`city`, `date`); the tags are `O` and `B-`/`I-` of each. */
  slots?: readonly string[];
}

/** A slot in a training example: a character span of the text. */
export interface SlotSpan {
  name: string;
  start: number;
  /** Exclusive. */
  end: number;
}

/** One training or evaluation turn; every label is optional, so datasets of one head mix. */
export interface ChatExample {
  text: string;
  /** Earlier turns of the conversation, oldest first. */
  context?: readonly string[];
  intent?: string;
  /** The full set of emotions of the turn ([] = none of them). */
  emotions?: readonly string[];
  /** The full set of slots of the turn ([] = none). */
  slots?: readonly SlotSpan[];
  /**
   * Soft intent targets, one probability per intent of the model in its order (summing to 1):
   * what {@link ChatModel.distill} trains on. Takes the place of `intent`.
   */
  intentProbs?: readonly number[];
  /** Soft emotion targets in [0, 1], one per emotion of the model. Takes the place of `emotions`. */
  emotionProbs?: readonly number[];
}

/** Options of {@link ChatModel.create} and {@link ChatModel.load}. */
export interface ChatModelOptions extends BertLoadOptions {
  /**
   * Most tokens of earlier turns read before the turn (segment A); default 64. Fine-tuning on
   * examples without any `context` sets it to 0 (a model trained without context reads none).
   */
  contextMaxTokens?: number;
  /** Seed of fresh heads ({@link ChatModel.create}); default 0. */
  seed?: number;
}

/** Options of {@link ChatModel.fineTune}. */
export interface ChatFineTuneOptions {
  /** Default 3. */
  epochs?: number;
  /** Sequences per step; default 32. */
  batchSize?: number;
  /** Peak learning rate; default 5e-5 (a small model from scratch wants ~1e-3). */
  learningRate?: number;
  /** Fraction of the steps spent warming up linearly; default 0.1. */
  warmupRatio?: number;
  /** Default 0.01. */
  weightDecay?: number;
  /** Default 1. */
  maxGradNorm?: number;
  /** Hidden dropout while training; default the model's. */
  dropout?: number;
  /** Weights of the three losses in their sum; default 1 each. */
  lossWeights?: { intent?: number; emotion?: number; slots?: number };
  /** Seed of the shuffling and the dropout masks; default 42. */
  seed?: number;
  /**
   * Train only the active LoRA adapter and the heads ({@link ChatModel.enableLora}), the encoder
   * frozen; default false.
   */
  lora?: boolean;
  /** Evaluated after the last epoch. */
  evalSet?: readonly ChatExample[] | string;
  /** Stops between steps (`ERR_ABORTED`; the weights are those of the last step). */
  signal?: AbortSignal;
  onProgress?: (p: ChatProgress) => void;
}

/** Progress of {@link ChatModel.fineTune}, after each step. */
export interface ChatProgress {
  step: number;
  totalSteps: number;
  epoch: number;
  loss: number;
  /** Mean loss of each head in the step (0 where the step had no labels for it). */
  headLoss: { intent: number; emotion: number; slots: number };
  lr: number;
  seconds: number;
}

/** Metrics of {@link ChatModel.evaluate}, per head on the examples that carry its labels. */
export interface ChatMetrics {
  count: number;
  intent?: { accuracy: number; macroF1: number; count: number };
  emotions?: { microF1: number; macroF1: number; threshold: number; count: number };
  /** Entity-level (seqeval, strict spans) over words. */
  slots?: { precision: number; recall: number; f1: number; count: number };
  /** Turns per second of the evaluation's forwards. */
  turnsPerSecond: number;
}

/** What {@link ChatModel.fineTune} returns. */
export interface ChatFineTuneResult {
  steps: number;
  epochs: number;
  seconds: number;
  /** Mean loss of the last epoch, and of each head. */
  loss: number;
  headLoss: { intent: number; emotion: number; slots: number };
  history: { epoch: number; loss: number; seconds: number }[];
  evalMetrics?: ChatMetrics;
}

/** chat.json */
interface ChatMeta {
  format: 'elmo-chat';
  version: 1;
  intents: string[];
  emotions: string[];
  slots: string[];
  slotTags: string[];
  /** Below it the best intent's score marks the turn out of scope; 0: never. */
  outOfScopeThreshold: number;
  /** Emotions at or above it are reported. */
  emotionThreshold: number;
  contextMaxTokens: number;
  training?: Record<string, unknown>;
}

const META_FILE = 'chat.json';
const IGNORE = -100;

/** A turn's inputs for {@link ChatModel.understandMany}. */
export interface TurnInput {
  text: string;
  context?: readonly string[];
}

/** The raw outputs for one turn, before thresholds: probabilities per label. */
interface RawTurn {
  enc: EncodedTurn;
  intentProbs: Float32Array;
  emotionProbs: Float32Array;
  /** Per kept word: the best tag id and its probability. */
  wordTags: Int32Array;
  wordScores: Float32Array;
  /** [words, slotTags] the tag distribution of each kept word (its first piece's). */
  wordTagProbs: Float32Array;
}

/** The probabilities of one turn before any threshold: what {@link ChatModel.scores} returns. */
export interface TurnScores {
  /** Softmax over {@link ChatModel.intents}, in their order. */
  intentProbs: Float32Array;
  /** Sigmoid per emotion of {@link ChatModel.emotions}. */
  emotionProbs: Float32Array;
  /** The turn's words the model read (character spans), in order. */
  words: WordSpan[];
  /** `[words.length, slotTags.length]` row-major: each word's softmax over {@link ChatModel.slotTags}. */
  wordTagProbs: Float32Array;
  truncated: boolean;
}

/**
 * Intent, emotions and slots of a conversation turn in one forward pass.
 *
 * @example
 * ```ts
 * const chat = await ChatModel.create('assets/support-encoder', chatLabels(train));
 * await chat.fineTune(train, { epochs: 5, learningRate: 1e-3 });
 * const u = await chat.understand('my card never arrived, I am furious', { context: ['hi, how can I help?'] });
 * // u.intent: { label: 'card_arrival', score: 0.91 }, u.emotions: [{ label: 'anger', score: 0.8 }], u.slots: [...]
 * await chat.save('models/support-chat');
 * ```
 */
export class ChatModel {
  readonly #bert: Bert;
  readonly #host: JointHost;
  readonly #meta: ChatMeta;
  #encoder: TurnEncoder;
  #disposed = false;
  /** LoRA adapters held in memory by name, the active one, and the heads of the model without one. */
  readonly #adapters = new Map<string, Adapter>();
  #active: string | null = null;
  #baseHeads: Record<string, Float32Array> | null = null;
  /** Serializes the calls that may switch adapters, so a forward runs with the adapter it asked for. */
  #lock: Promise<unknown> = Promise.resolve();

  private constructor(bert: Bert, meta: ChatMeta) {
    this.#bert = bert;
    this.#host = jointHost(bert);
    this.#meta = meta;
    this.#encoder = new TurnEncoder(bert.tokenizer, bert.maxSeqLen, meta.contextMaxTokens);
  }

  /**
   * A chat model over an encoder (a directory, or a {@link Bert} the chat model then owns) with
   * fresh heads for `labels`: the encoder's weights are kept, its heads replaced.
   */
  static async create(encoder: string | Bert, labels: ChatLabels, options: ChatModelOptions = {}): Promise<ChatModel> {
    const meta = makeMeta(labels, options);
    const loadOptions = bertOptions(options);
    const bert = typeof encoder === 'string' ? await Bert.load(encoder, loadOptions) : encoder;
    if (!(bert instanceof Bert)) throw expected(InputError, 'a model directory or a Bert', 'encoder', encoder);
    try {
      const names = [...meta.intents.map((l) => `intent:${l}`), ...meta.emotions.map((l) => `emotion:${l}`)];
      await jointHost(bert).setJointHeads(names, meta.slotTags.length, options.seed ?? 0);
      return new ChatModel(bert, meta);
    } catch (err) {
      if (typeof encoder === 'string') bert.dispose();
      throw err;
    }
  }

  /** A chat model saved by {@link save}. */
  static async load(dir: string, options: ChatModelOptions = {}): Promise<ChatModel> {
    if (typeof dir !== 'string' || dir === '') throw expected(InputError, 'a directory path', 'dir', dir);
    const meta = readMeta(dir);
    if (options.contextMaxTokens !== undefined)
      meta.contextMaxTokens = checkCount(options.contextMaxTokens, 'options.contextMaxTokens', 0);
    const loadOptions = bertOptions(options);
    const bert = await Bert.load(dir, loadOptions);
    try {
      const info = bert.config;
      const names = [...meta.intents.map((l) => `intent:${l}`), ...meta.emotions.map((l) => `emotion:${l}`)];
      const same = info.labels.length === names.length && info.labels.every((l, i) => l === names[i]);
      if ((names.length > 0 && !same) || info.numSlotLabels !== meta.slotTags.length) {
        throw new CheckpointError(
          `${path.join(dir, META_FILE)}: its labels (${String(names.length)} classes, ${String(meta.slotTags.length)} slot tags) ` +
            `do not match model.safetensors (${String(info.labels.length)}, ${String(info.numSlotLabels)})`,
        );
      }
      return new ChatModel(bert, meta);
    } catch (err) {
      bert.dispose();
      throw err;
    }
  }

  get intents(): readonly string[] {
    return this.#meta.intents;
  }
  get emotions(): readonly string[] {
    return this.#meta.emotions;
  }
  /** Slot names. */
  get slots(): readonly string[] {
    return this.#meta.slots;
  }
  /** The BIO tags of the slot head, `O` first. */
  get slotTags(): readonly string[] {
    return this.#meta.slotTags;
  }
  /** The encoder with its heads. */
  get model(): Bert {
    return this.#bert;
  }
  /** Turns whose best intent scores below it are out of scope (0: never); saved with the model. */
  get outOfScopeThreshold(): number {
    return this.#meta.outOfScopeThreshold;
  }
  set outOfScopeThreshold(v: number) {
    this.#meta.outOfScopeThreshold = checkUnit(v, 'outOfScopeThreshold');
  }
  /** The peak learning rate of the model's first fine-tuning here (refinements keep it). */
  get trainedLearningRate(): number | undefined {
    const lr = this.#meta.training?.baseLearningRate;
    return typeof lr === 'number' ? lr : undefined;
  }
  /** Emotions scoring at or above it are reported; default 0.5. */
  get emotionThreshold(): number {
    return this.#meta.emotionThreshold;
  }
  set emotionThreshold(v: number) {
    this.#meta.emotionThreshold = checkUnit(v, 'emotionThreshold');
  }

  /**
   * What the user meant, felt and named in one turn. `context`: earlier turns, oldest first
   * (segment A, cut from the left). A turn longer than the model reads is cut and
   * `truncated` says so; an empty or blank turn is an `ERR_INPUT`.
   */
  async understand(
    text: string,
    options: { context?: readonly string[]; adapter?: string | null } = {},
  ): Promise<Understanding> {
    if (typeof options !== 'object' || (options as unknown) === null)
      throw expected(InputError, 'an object', 'options', options);
    const [u] = await this.understandMany(
      [{ text, ...(options.context !== undefined ? { context: options.context } : {}) }],
      options.adapter !== undefined ? { adapter: options.adapter } : {},
    );
    return u as Understanding;
  }

  /**
   * {@link understand} for several turns in one forward pass. `adapter`: the LoRA adapter to
   * answer with (a name given to {@link loadAdapter} or {@link enableLora}, or null for none);
   * default the active one. Calls naming different adapters run one after the other.
   */
  async understandMany(
    turns: readonly TurnInput[],
    options: { adapter?: string | null } = {},
  ): Promise<Understanding[]> {
    const raw = await this.#withAdapter(options.adapter, () => this.#raw(turns, 'turns'));
    return raw.map((r, b) => this.#decode(r, (turns[b] as TurnInput).text));
  }

  // ---- LoRA adapters ---------------------------------------------------------------------------

  /**
   * Adds a fresh LoRA adapter on every layer's query and value projections (rank `rank`, scale
   * `alpha / rank`; A as peft initializes it, B zero, so the model answers as before) and makes
   * it active: `fineTune(examples, { lora: true })` then trains it and the heads only, the
   * encoder frozen. `name` (default `'default'`) is what {@link useAdapter} and
   * `understand(..., { adapter })` call it.
   */
  async enableLora(options: { rank?: number; alpha?: number; seed?: number; name?: string } = {}): Promise<void> {
    this.#checkLive('enableLora');
    const rank = options.rank ?? 8;
    const alpha = options.alpha ?? 2 * rank;
    const name = options.name ?? 'default';
    if (!Number.isSafeInteger(rank) || rank < 1) throw expected(InputError, 'an integer >= 1', 'options.rank', rank);
    if (typeof alpha !== 'number' || !(alpha > 0)) throw expected(InputError, 'a number > 0', 'options.alpha', alpha);
    if (typeof name !== 'string' || name === '') throw expected(InputError, 'a non-empty name', 'options.name', name);
    await this.#serial(async () => {
      await this.#detach();
      await this.#host.native.loraEnable(rank, alpha, options.seed ?? 0);
      this.#host.refreshInfo();
      this.#active = name;
      this.#adapters.set(name, { rank, alpha, tensors: await this.#host.native.loraTensors() });
    });
  }

  /** The adapters held in memory, and which one is active (null: the model without one). */
  get adapters(): { names: string[]; active: string | null } {
    return { names: [...this.#adapters.keys()], active: this.#active };
  }

  /** Makes an adapter held in memory active, or (null) none: the base weights and heads back. */
  async useAdapter(name: string | null): Promise<void> {
    this.#checkLive('useAdapter');
    await this.#serial(() => this.#switchTo(name));
  }

  /**
   * Writes the active adapter in peft's format: `adapter_config.json` (LORA, `r`,
   * `lora_alpha`, `target_modules` query and value, the heads as `modules_to_save`) and
   * `adapter_model.safetensors` (`base_model.model.<name>`); `PeftModel.from_pretrained` loads
   * it onto this model's base checkpoint. Written atomically.
   */
  async saveAdapter(dir: string): Promise<void> {
    this.#checkLive('saveAdapter');
    if (typeof dir !== 'string' || dir === '') throw expected(InputError, 'a directory path', 'dir', dir);
    await this.#serial(async () => {
      const info = this.#host.info.lora;
      if (info === null || this.#active === null)
        throw new InputError('Expected an active adapter to save but the model has none');
      const tensors = await this.#host.native.loraTensors();
      const heads = [
        ...new Set(
          Object.keys(tensors)
            .filter((n) => !n.includes('.lora_'))
            .map((n) => n.split('.')[0] as string),
        ),
      ];
      const map = new Map<string, { shape: number[]; data: Float32Array }>();
      for (const [name, data] of Object.entries(tensors))
        map.set(`base_model.model.${name}`, { shape: this.#shapeOf(name, data), data: new Float32Array(data) });
      fs.mkdirSync(dir, { recursive: true });
      writeSafetensors(path.join(dir, 'adapter_model.safetensors'), { tensors: map, metadata: { format: 'pt' } });
      const config = {
        peft_type: 'LORA',
        task_type: 'SEQ_CLS',
        r: info.rank,
        lora_alpha: info.alpha,
        lora_dropout: 0,
        target_modules: ['query', 'value'],
        modules_to_save: heads,
        bias: 'none',
        fan_in_fan_out: false,
        inference_mode: true,
        init_lora_weights: true,
        use_rslora: false,
        use_dora: false,
        layers_to_transform: null,
        layers_pattern: null,
        rank_pattern: {},
        alpha_pattern: {},
        base_model_name_or_path: null,
        revision: null,
      };
      writeFileAtomic(path.join(dir, 'adapter_config.json'), `${JSON.stringify(config, null, 2)}\n`);
    });
  }

  /**
   * Reads an adapter in peft's format (LoRA on query and value, the heads of this model as
   * modules to save) into memory under `name` (default: the directory's name); it becomes
   * active with {@link useAdapter} or `understand(..., { adapter: name })`. Anything else is a
   * `CheckpointError` naming what does not fit.
   */
  async loadAdapter(dir: string, name: string = path.basename(path.resolve(dir))): Promise<void> {
    this.#checkLive('loadAdapter');
    const cfgFile = path.join(dir, 'adapter_config.json');
    let cfg: Record<string, unknown>;
    try {
      cfg = JSON.parse(await fs.promises.readFile(cfgFile, 'utf8')) as Record<string, unknown>;
    } catch (err) {
      throw new CheckpointError(`${cfgFile}: ${(err as Error).message}`);
    }
    const targets = cfg.target_modules;
    const okTargets =
      Array.isArray(targets) && targets.length === 2 && targets.includes('query') && targets.includes('value');
    if (cfg.peft_type !== 'LORA' || !okTargets || cfg.use_dora === true || cfg.use_rslora === true) {
      throw new CheckpointError(`${cfgFile}: only LoRA on query and value (no DoRA, no rsLoRA) is supported`);
    }
    const rank = cfg.r;
    const alpha = cfg.lora_alpha;
    if (!Number.isSafeInteger(rank) || (rank as number) < 1 || typeof alpha !== 'number' || !(alpha > 0)) {
      throw new CheckpointError(`${cfgFile}: r and lora_alpha must be positive`);
    }
    const file = readSafetensors(path.join(dir, 'adapter_model.safetensors'));
    const tensors: Record<string, Float32Array> = {};
    const H = this.#host.info.hiddenSize;
    for (const [key, t] of file.tensors) {
      const n = key.replace(/^base_model\.model\./, '');
      tensors[n] = t.data;
      if (n.includes('.lora_A.') && (t.shape[0] !== rank || t.shape[1] !== H)) {
        throw new CheckpointError(
          `${dir}: ${key} is [${t.shape.join(', ')}], expected [${String(rank)}, ${String(H)}]`,
        );
      }
    }
    this.#adapters.set(name, { rank: rank as number, alpha, tensors });
  }

  /**
   * Makes the active adapter part of the model for good: the merged weights become the base,
   * and {@link save} writes a plain checkpoint with them (transformers reads it as any BERT).
   * Other adapters held in memory were trained on the old base and are dropped.
   */
  async mergeAdapter(): Promise<void> {
    this.#checkLive('mergeAdapter');
    await this.#serial(async () => {
      if (this.#active === null) throw new InputError('Expected an active adapter to merge but the model has none');
      await this.#host.native.loraDisable(true);
      this.#host.refreshInfo();
      this.#active = null;
      this.#adapters.clear();
      this.#baseHeads = null;
    });
  }

  /** Runs `fn` after every earlier adapter-dependent call. */
  #serial<T>(fn: () => Promise<T>): Promise<T> {
    const run = this.#lock.then(fn);
    this.#lock = run.catch(() => undefined);
    return run;
  }

  /** `fn` with `adapter` active (undefined: whatever is active), serialized when adapters exist. */
  #withAdapter<T>(adapter: string | null | undefined, fn: () => Promise<T>): Promise<T> {
    if (adapter === undefined && this.#adapters.size === 0) return fn();
    return this.#serial(async () => {
      if (adapter !== undefined && adapter !== this.#active) await this.#switchTo(adapter);
      return fn();
    });
  }

  async #switchTo(name: string | null): Promise<void> {
    if (name === this.#active) return;
    if (name === null) {
      await this.#detach();
      return;
    }
    const a = this.#adapters.get(name);
    if (a === undefined)
      throw new InputError(
        `Expected one of the adapters [${[...this.#adapters.keys()].join(', ')}] but received '${name}'`,
      );
    await this.#detach();
    this.#baseHeads ??= await this.#host.native.loraTensors();
    await this.#host.native.loraEnable(a.rank, a.alpha, 0);
    this.#host.refreshInfo();
    await this.#host.native.loraLoad(a.tensors);
    this.#active = name;
  }

  /** No adapter: the active one's tensors kept in memory, the base weights and heads back. */
  async #detach(): Promise<void> {
    if (this.#active === null) {
      this.#baseHeads ??= await this.#host.native.loraTensors();
      return;
    }
    const a = this.#adapters.get(this.#active);
    if (a !== undefined) a.tensors = await this.#host.native.loraTensors();
    await this.#host.native.loraDisable(false);
    this.#host.refreshInfo();
    if (this.#baseHeads !== null) await this.#host.native.loraLoad(this.#baseHeads);
    this.#active = null;
  }

  #shapeOf(name: string, data: Float32Array): number[] {
    const info = this.#host.info;
    const H = info.hiddenSize;
    const r = info.lora?.rank ?? 0;
    if (name.includes('.lora_A.')) return [r, H];
    if (name.includes('.lora_B.')) return [H, r];
    if (name.endsWith('.bias')) return [data.length];
    return [data.length / H, H];
  }

  /**
   * The raw probabilities of each head for several turns in one forward pass, before any
   * threshold or decoding: for ensembles, calibration and analysis. Same inputs as
   * {@link understandMany}.
   */
  async scores(turns: readonly TurnInput[]): Promise<TurnScores[]> {
    const raw = await this.#raw(turns, 'turns');
    return raw.map((r) => ({
      intentProbs: r.intentProbs.slice(),
      emotionProbs: r.emotionProbs.slice(),
      words: r.enc.words,
      wordTagProbs: r.wordTagProbs,
      truncated: r.enc.truncated,
    }));
  }

  /**
   * Trains the three heads and the encoder jointly on examples carrying any subset of `intent`,
   * `emotions` and `slots` (an array, or a `.jsonl` file of them). Each head's loss is the mean
   * over the examples that label it; the step's loss is their weighted sum.
   */
  async fineTune(
    examples: readonly ChatExample[] | string,
    options: ChatFineTuneOptions = {},
  ): Promise<ChatFineTuneResult> {
    this.#checkLive('fineTune');
    if (typeof options !== 'object' || (options as unknown) === null)
      throw expected(InputError, 'an object', 'options', options);
    const train = await readChatExamples(examples, 'examples');
    if (train.length === 0) throw new InputError('Expected at least one example for fineTune but received none');
    // A model that never sees context in training reads none afterwards: context it was not
    // trained on only moves its predictions.
    if (this.#meta.contextMaxTokens > 0 && !train.some((ex) => (ex.context?.length ?? 0) > 0)) {
      this.#meta.contextMaxTokens = 0;
      this.#encoder = new TurnEncoder(this.#bert.tokenizer, this.#bert.maxSeqLen, 0);
    }
    const data = train.map((ex, i) => this.#encodeExample(ex, `examples[${String(i)}]`));
    const epochs = checkCount(options.epochs ?? 3, 'options.epochs', 1);
    const batchSize = checkCount(options.batchSize ?? 32, 'options.batchSize', 1);
    const seed = options.seed ?? 42;
    if (!Number.isSafeInteger(seed)) throw expected(InputError, 'a safe integer', 'options.seed', seed);
    const warmupRatio = options.warmupRatio ?? 0.1;
    if (typeof warmupRatio !== 'number' || !(warmupRatio >= 0 && warmupRatio <= 1)) {
      throw expected(InputError, 'a number in [0, 1]', 'options.warmupRatio', warmupRatio);
    }
    const w = options.lossWeights ?? {};
    const perEpoch = Math.ceil(data.length / batchSize);
    const totalSteps = perEpoch * epochs;
    const evalSet =
      options.evalSet !== undefined ? await readChatExamples(options.evalSet, 'options.evalSet') : undefined;
    const trainer = this.#bert.trainer({
      task: 'joint',
      jointIntents: this.#meta.intents.length,
      lossWeights: [w.intent ?? 1, w.emotion ?? 1, w.slots ?? 1],
      learningRate: options.learningRate ?? 5e-5,
      weightDecay: options.weightDecay ?? 0.01,
      warmupSteps: Math.round(totalSteps * warmupRatio),
      totalSteps,
      schedule: 'linear',
      maxGradNorm: options.maxGradNorm ?? 1,
      ...(options.dropout !== undefined ? { dropout: options.dropout } : {}),
      ...(options.lora === true ? { lora: true } : {}),
      seed,
    });
    const t0 = performance.now();
    const history: ChatFineTuneResult['history'] = [];
    let loss = 0;
    const head = { intent: 0, emotion: 0, slots: 0 };
    try {
      for (let epoch = 0; epoch < epochs; epoch++) {
        const order = new Rng(seed, epoch).shuffle(Array.from({ length: data.length }, (_, i) => i));
        let sum = 0;
        const hs = [0, 0, 0];
        const hn = [0, 0, 0];
        for (let s = 0; s < perEpoch; s++) {
          if (options.signal?.aborted === true)
            throw new AbortedError(`fineTune: aborted after step ${String(trainer.steps)}`);
          const batch = this.#pack(
            order.slice(s * batchSize, (s + 1) * batchSize).map((i) => data[i] as EncodedExample),
          );
          const r = await trainer.step(batch);
          sum += r.loss;
          const hl = r.headLoss ?? [0, 0, 0];
          const hc = r.headCount ?? [0, 0, 0];
          for (let k = 0; k < 3; k++) {
            if ((hc[k] ?? 0) > 0) {
              hs[k] = (hs[k] ?? 0) + (hl[k] ?? 0);
              hn[k] = (hn[k] ?? 0) + 1;
            }
          }
          options.onProgress?.({
            step: r.step,
            totalSteps,
            epoch: epoch + (s + 1) / perEpoch,
            loss: r.loss,
            headLoss: { intent: hl[0] ?? 0, emotion: hl[1] ?? 0, slots: hl[2] ?? 0 },
            lr: r.lr,
            seconds: (performance.now() - t0) / 1000,
          });
        }
        loss = sum / perEpoch;
        const mean = (k: number): number => ((hn[k] ?? 0) > 0 ? (hs[k] ?? 0) / (hn[k] ?? 1) : 0);
        head.intent = mean(0);
        head.emotion = mean(1);
        head.slots = mean(2);
        history.push({ epoch: epoch + 1, loss, seconds: (performance.now() - t0) / 1000 });
      }
    } finally {
      await trainer.dispose();
    }
    if (this.#active !== null) {
      const a = this.#adapters.get(this.#active);
      if (a !== undefined) a.tensors = await this.#host.native.loraTensors();
    }
    const seconds = (performance.now() - t0) / 1000;
    // The first fine-tuning's rate stays the model's own (later ones are refinements of it).
    const first = this.#meta.training?.baseLearningRate ?? this.#meta.training?.learningRate;
    this.#meta.training = {
      examples: data.length,
      epochs,
      batchSize,
      learningRate: options.learningRate ?? 5e-5,
      baseLearningRate: typeof first === 'number' ? first : (options.learningRate ?? 5e-5),
      seconds: Math.round(seconds * 10) / 10,
      finishedAt: new Date().toISOString(),
    };
    const result: ChatFineTuneResult = { steps: totalSteps, epochs, seconds, loss, headLoss: head, history };
    if (evalSet !== undefined && evalSet.length > 0) result.evalMetrics = await this.evaluate(evalSet);
    return result;
  }

  /** Intent accuracy and macro-F1, emotion micro/macro-F1, slot entity F1 on labelled examples. */
  async evaluate(
    examples: readonly ChatExample[] | string,
    options: { batchSize?: number } = {},
  ): Promise<ChatMetrics> {
    this.#checkLive('evaluate');
    const data = await readChatExamples(examples, 'examples');
    if (data.length === 0) throw new InputError('Expected at least one example for evaluate but received none');
    data.forEach((ex, i) => {
      this.#checkLabels(ex, `examples[${String(i)}]`);
    });
    const batchSize = checkCount(options.batchSize ?? 64, 'options.batchSize', 1);
    const m = this.#meta;
    const acc = new ChatMetricsAccumulator(m.intents, m.emotions, m.slotTags, m.emotionThreshold);
    const t0 = performance.now();
    for (let at = 0; at < data.length; at += batchSize) {
      const part = data.slice(at, at + batchSize);
      const raw = await this.#raw(part, 'examples');
      raw.forEach((r, b) => {
        acc.add(part[b] as ChatExample, {
          intent: argmax(r.intentProbs),
          emotionProbs: r.emotionProbs,
          words: r.enc.words,
          tags: Array.from(r.wordTags, (t) => m.slotTags[t] ?? 'O'),
        });
      });
    }
    return acc.result(data.length, (performance.now() - t0) / 1000);
  }

  /**
   * Knowledge distillation: trains this model (the student, e.g. a smaller encoder) on what
   * `teacher` (a model with the same intents, emotions and slots) says of `examples`: its intent
   * distribution softened by `temperature` and its emotion probabilities (soft targets), and its
   * slot tags (hard, per word). `alpha` mixes in the examples' own intent labels where they have
   * them (`alpha` of the one-hot, `1 - alpha` of the teacher); default 0, the teacher alone. The
   * texts need no labels at all.
   */
  async distill(
    teacher: ChatModel,
    examples: readonly ChatExample[] | string,
    options: ChatFineTuneOptions & { temperature?: number; alpha?: number } = {},
  ): Promise<ChatFineTuneResult> {
    this.#checkLive('distill');
    if (!(teacher instanceof ChatModel)) throw expected(InputError, 'a ChatModel', 'teacher', teacher);
    teacher.#checkLive('distill');
    const m = this.#meta;
    const t = teacher.#meta;
    const same = (a: readonly string[], b: readonly string[]): boolean =>
      a.length === b.length && a.every((x, i) => x === b[i]);
    if (!same(m.intents, t.intents) || !same(m.emotions, t.emotions) || !same(m.slotTags, t.slotTags)) {
      throw new InputError("Expected a teacher with the student's intents, emotions and slots (in the same order)");
    }
    const { temperature = 1, alpha = 0, ...fineTune } = options;
    if (typeof temperature !== 'number' || !(temperature > 0)) {
      throw expected(InputError, 'a number > 0', 'options.temperature', temperature);
    }
    if (typeof alpha !== 'number' || !(alpha >= 0 && alpha <= 1)) {
      throw expected(InputError, 'a number in [0, 1]', 'options.alpha', alpha);
    }
    const data = await readChatExamples(examples, 'examples');
    const soft: ChatExample[] = [];
    for (let at = 0; at < data.length; at += 64) {
      const part = data.slice(at, at + 64);
      const raw = await teacher.#raw(part, 'examples');
      raw.forEach((r, b) => {
        const ex = part[b] as ChatExample;
        const out: ChatExample = { text: ex.text, ...(ex.context !== undefined ? { context: ex.context } : {}) };
        if (m.intents.length > 0) {
          const p = temper(r.intentProbs, temperature);
          const gold = ex.intent !== undefined ? m.intents.indexOf(ex.intent) : -1;
          out.intentProbs = Array.from(p, (x, i) => (gold >= 0 ? alpha * (i === gold ? 1 : 0) + (1 - alpha) * x : x));
        }
        if (m.emotions.length > 0) out.emotionProbs = Array.from(r.emotionProbs);
        if (m.slotTags.length > 0) {
          const tags = Array.from(r.wordTags, (id) => m.slotTags[id] ?? 'O');
          out.slots = decodeSlots(ex.text, r.enc.words, tags, r.wordScores).map((s) => ({
            name: s.name,
            start: s.start,
            end: s.end,
          }));
        }
        soft.push(out);
      });
    }
    return this.fineTune(soft, fineTune);
  }

  /**
   * Calibrates {@link outOfScopeThreshold} on held-out turns: those whose `intent` is one of the
   * model's are in scope (their best score, and whether it was right), those labelled with any
   * other intent (e.g. `'oos'`) out of scope. With out-of-scope turns the threshold maximizes
   * the F1 of out-of-scope detection (or another objective); without, it keeps 95% of the
   * correctly understood turns. Sets the threshold and returns the report (coverage, recall,
   * accuracy kept, expected calibration error).
   */
  async calibrate(
    examples: readonly ChatExample[] | string,
    options: Omit<CalibrateOptions, 'inScope' | 'outOfScope'> = {},
  ): Promise<CalibrationReport> {
    this.#checkLive('calibrate');
    const m = this.#meta;
    if (m.intents.length === 0) throw new InputError('Expected a chat model with an intent head to calibrate');
    const data = (await readChatExamples(examples, 'examples')).filter((ex) => ex.intent !== undefined);
    const inScope: { score: number; correct: boolean }[] = [];
    const outOfScope: number[] = [];
    for (let at = 0; at < data.length; at += 64) {
      const part = data.slice(at, at + 64);
      const raw = await this.#raw(part, 'examples');
      raw.forEach((r, b) => {
        const best = argmax(r.intentProbs);
        const score = r.intentProbs[best] as number;
        const want = (part[b] as ChatExample).intent as string;
        if (m.intents.includes(want)) inScope.push({ score, correct: m.intents[best] === want });
        else outOfScope.push(score);
      });
    }
    if (inScope.length === 0) throw new InputError("Expected held-out turns with the model's intents to calibrate on");
    const report = calibrateThreshold({ ...options, inScope, ...(outOfScope.length > 0 ? { outOfScope } : {}) });
    this.#meta.outOfScopeThreshold = report.threshold;
    return report;
  }

  /**
   * Writes the model (`config.json`, `model.safetensors`, the tokenizer files) and `chat.json`,
   * each file atomically. For a swap that readers never see half-done, save into a new
   * directory and switch to it (as the feedback loop's model versions do).
   */
  async save(dir: string): Promise<void> {
    this.#checkLive('save');
    await this.#bert.save(dir);
    writeFileAtomic(path.join(dir, META_FILE), `${JSON.stringify(this.#meta, null, 2)}\n`);
  }

  /** Frees the model. Idempotent. */
  dispose(): void {
    this.#disposed = true;
    this.#bert.dispose();
  }

  [Symbol.dispose](): void {
    this.dispose();
  }

  get disposed(): boolean {
    return this.#disposed;
  }

  // ---------------------------------------------------------------------------------------------

  #checkLive(what: string): void {
    if (this.#disposed || this.#bert.disposed) {
      throw new DisposedError(`Expected a live chat model for ${what} but received a disposed one`);
    }
  }

  /** Unknown labels are an error naming the example (the feedback loop filters them first). */
  #checkLabels(ex: ChatExample, at: string): void {
    const m = this.#meta;
    if (ex.intent !== undefined && m.intents.length > 0 && !m.intents.includes(ex.intent)) {
      throw new InputError(
        `Expected one of the model's ${String(m.intents.length)} intents for ${at}.intent but received '${ex.intent}'`,
      );
    }
    for (const e of ex.emotions ?? []) {
      if (m.emotions.length > 0 && !m.emotions.includes(e)) {
        throw new InputError(`Expected one of the model's emotions for ${at}.emotions but received '${e}'`);
      }
    }
    const probs = (v: readonly number[] | undefined, n: number, what: string, sumOne: boolean): void => {
      if (v === undefined) return;
      const sum = v.reduce((a, b) => a + b, 0);
      if (v.length !== n || v.some((x) => !(x >= 0 && x <= 1)) || (sumOne && Math.abs(sum - 1) > 1e-3)) {
        throw expected(
          InputError,
          `${String(n)} probabilities in [0, 1]${sumOne ? ' summing to 1' : ''}`,
          `${at}.${what}`,
          v,
        );
      }
    };
    probs(ex.intentProbs, m.intents.length, 'intentProbs', true);
    probs(ex.emotionProbs, m.emotions.length, 'emotionProbs', false);
    for (const s of ex.slots ?? []) {
      if (m.slots.length > 0 && !m.slots.includes(s.name)) {
        throw new InputError(`Expected one of the model's slots for ${at}.slots but received '${s.name}'`);
      }
    }
  }

  #encodeExample(ex: ChatExample, at: string): EncodedExample {
    this.#checkLabels(ex, at);
    const m = this.#meta;
    const enc = this.#encoder.encode(ex.text, ex.context ?? []);
    const intent = ex.intent !== undefined && m.intents.length > 0 ? m.intents.indexOf(ex.intent) : IGNORE;
    const intentProbs = ex.intentProbs !== undefined ? Float32Array.from(ex.intentProbs) : undefined;
    let emotions: Float32Array | undefined;
    if (m.emotions.length > 0) {
      emotions = new Float32Array(m.emotions.length);
      if (ex.emotionProbs !== undefined) emotions.set(ex.emotionProbs);
      else if (ex.emotions === undefined) emotions[0] = -1;
      else for (const e of ex.emotions) emotions[m.emotions.indexOf(e)] = 1;
    }
    let slots: Int32Array | undefined;
    if (m.slotTags.length > 0 && ex.slots !== undefined) {
      slots = new Int32Array(enc.ids.length).fill(IGNORE);
      const tags = wordTags(enc.words, ex.slots);
      tags.forEach((t, w) => {
        const id = m.slotTags.indexOf(t);
        (slots as Int32Array)[enc.firstPiece[w] as number] = id < 0 ? 0 : id;
      });
    }
    return { enc, intent, intentProbs, emotions, slots };
  }

  /** A packed joint batch of encoded examples. */
  #pack(items: readonly EncodedExample[]): {
    ids: Int32Array;
    typeIds: Int32Array;
    offsets: Int32Array;
    intents?: Int32Array;
    intentProbs?: Float32Array;
    emotions?: Float32Array;
    slots?: Int32Array;
  } {
    const m = this.#meta;
    const Li = m.intents.length;
    const B = items.length;
    const offsets = new Int32Array(B + 1);
    items.forEach((it, b) => (offsets[b + 1] = (offsets[b] as number) + it.enc.ids.length));
    const T = offsets[B] as number;
    const ids = new Int32Array(T);
    const typeIds = new Int32Array(T);
    const Le = m.emotions.length;
    // Soft intent targets for the whole batch as soon as one example has them (hard ones one-hot).
    const soft = Li > 0 && items.some((it) => it.intentProbs !== undefined);
    const intents = Li > 0 && !soft ? new Int32Array(B) : undefined;
    const intentProbs = soft ? new Float32Array(B * Li) : undefined;
    const emotions = Le > 0 ? new Float32Array(B * Le) : undefined;
    const anySlots = m.slotTags.length > 0 && items.some((it) => it.slots !== undefined);
    const slots = anySlots ? new Int32Array(T).fill(IGNORE) : undefined;
    items.forEach((it, b) => {
      const at = offsets[b] as number;
      ids.set(it.enc.ids, at);
      typeIds.set(it.enc.typeIds, at);
      if (intents) intents[b] = it.intent;
      if (intentProbs) {
        if (it.intentProbs) intentProbs.set(it.intentProbs, b * Li);
        else if (it.intent !== IGNORE) intentProbs[b * Li + it.intent] = 1;
        else intentProbs[b * Li] = -1;
      }
      if (emotions && it.emotions) emotions.set(it.emotions, b * Le);
      if (slots && it.slots) slots.set(it.slots, at);
    });
    return {
      ids,
      typeIds,
      offsets,
      ...(intents ? { intents } : {}),
      ...(intentProbs ? { intentProbs } : {}),
      ...(emotions ? { emotions } : {}),
      ...(slots ? { slots } : {}),
    };
  }

  /** One forward over the turns: each head's probabilities per turn. */
  async #raw(turns: readonly TurnInput[], what: string): Promise<RawTurn[]> {
    this.#checkLive('understand');
    if (!nonEmptyArray(turns)) throw expected(InputError, 'a non-empty array of turns', what, turns);
    const encs = turns.map((t, i) => {
      const at = `${what}[${String(i)}]`;
      if (typeof t !== 'object' || (t as unknown) === null)
        throw expected(InputError, 'an object { text, context? }', at, t);
      if (typeof t.text !== 'string' || t.text.trim() === '')
        throw expected(InputError, 'a non-empty turn', `${at}.text`, t.text);
      const ctx = t.context ?? [];
      if (!Array.isArray(ctx) || ctx.some((c) => typeof c !== 'string')) {
        throw expected(InputError, 'an array of strings', `${at}.context`, t.context);
      }
      return this.#encoder.encode(t.text, ctx);
    });
    const m = this.#meta;
    const B = encs.length;
    const offsets = new Int32Array(B + 1);
    encs.forEach((e, b) => (offsets[b + 1] = (offsets[b] as number) + e.ids.length));
    const ids = new Int32Array(offsets[B] as number);
    const typeIds = new Int32Array(offsets[B] as number);
    encs.forEach((e, b) => {
      ids.set(e.ids, offsets[b]);
      typeIds.set(e.typeIds, offsets[b]);
    });
    const Li = m.intents.length;
    const L = Li + m.emotions.length;
    const S = m.slotTags.length;
    const out = await this.#host.native.forward(ids, typeIds, offsets, {
      hidden: false,
      scores: 'joint',
      jointIntents: Li,
    });
    const scores = out.scores ?? new Float32Array(0);
    return encs.map((enc, b): RawTurn => {
      const nW = enc.words.length;
      const wordTagIds = new Int32Array(nW);
      const wordScores = new Float32Array(nW);
      const wordTagProbs = new Float32Array(nW * S);
      if (S > 0 && out.slotBest !== undefined && out.slotScores !== undefined) {
        for (let w = 0; w < nW; w++) {
          const pos = (offsets[b] as number) + (enc.firstPiece[w] as number);
          const t = out.slotBest[pos] as number;
          wordTagIds[w] = t;
          wordScores[w] = out.slotScores[pos * S + t] as number;
          wordTagProbs.set(out.slotScores.subarray(pos * S, (pos + 1) * S), w * S);
        }
      }
      return {
        enc,
        intentProbs: scores.subarray(b * L, b * L + Li),
        emotionProbs: scores.subarray(b * L + Li, (b + 1) * L),
        wordTags: wordTagIds,
        wordScores,
        wordTagProbs,
      };
    });
  }

  #decode(r: RawTurn, text: string): Understanding {
    const m = this.#meta;
    const intents: Scored[] = m.intents
      .map((label, i) => ({ label, score: r.intentProbs[i] as number }))
      .sort((a, b) => b.score - a.score);
    const best = intents[0] ?? null;
    const emotions: Scored[] = m.emotions
      .map((label, i) => ({ label, score: r.emotionProbs[i] as number }))
      .filter((e) => e.score >= m.emotionThreshold)
      .sort((a, b) => b.score - a.score);
    const slots = decodeSlots(
      text,
      r.enc.words,
      Array.from(r.wordTags, (t) => m.slotTags[t] ?? 'O'),
      r.wordScores,
    );
    return {
      intent: best,
      intents,
      emotions,
      slots,
      outOfScope: best !== null && best.score < m.outOfScopeThreshold,
      truncated: r.enc.truncated,
    };
  }
}

/** A LoRA adapter held in memory: its rank and alpha, its A / B tensors and its heads. */
interface Adapter {
  rank: number;
  alpha: number;
  tensors: Record<string, Float32Array>;
}

interface EncodedExample {
  enc: EncodedTurn;
  intent: number;
  intentProbs: Float32Array | undefined;
  emotions: Float32Array | undefined;
  slots: Int32Array | undefined;
}

/**
 * The metrics of {@link ChatModel.evaluate} (and of ensembles) from predictions added one turn
 * at a time: each head on the examples that carry its labels.
 */
export class ChatMetricsAccumulator {
  readonly #iTrue: number[] = [];
  readonly #iPred: number[] = [];
  readonly #eTrue: number[][] = [];
  readonly #eScore: Float32Array[] = [];
  readonly #sTrue: string[][] = [];
  readonly #sPred: string[][] = [];

  constructor(
    private readonly intents: readonly string[],
    private readonly emotions: readonly string[],
    private readonly slotTags: readonly string[],
    private readonly emotionThreshold: number,
  ) {}

  /** One turn: the best intent's index, the emotion probabilities, the words and their tags. */
  add(
    ex: ChatExample,
    pred: { intent: number; emotionProbs: Float32Array; words: readonly WordSpan[]; tags: readonly string[] },
  ): void {
    if (ex.intent !== undefined && this.intents.length > 0) {
      this.#iTrue.push(this.intents.indexOf(ex.intent));
      this.#iPred.push(pred.intent);
    }
    if (ex.emotions !== undefined && this.emotions.length > 0) {
      this.#eTrue.push(this.emotions.map((e) => (ex.emotions?.includes(e) === true ? 1 : 0)));
      this.#eScore.push(pred.emotionProbs);
    }
    if (ex.slots !== undefined && this.slotTags.length > 0) {
      this.#sTrue.push(wordTags(pred.words, ex.slots));
      this.#sPred.push([...pred.tags]);
    }
  }

  /** The metrics of what was added; `seconds` the time the forwards took. */
  result(count: number, seconds: number): ChatMetrics {
    const out: ChatMetrics = { count, turnsPerSecond: count / Math.max(seconds, 1e-9) };
    if (this.#iTrue.length > 0) {
      const c = classificationMetrics(this.#iTrue, this.#iPred, this.intents);
      out.intent = { accuracy: c.accuracy, macroF1: c.macroF1, count: this.#iTrue.length };
    }
    if (this.#eTrue.length > 0) {
      const e = multiLabelMetrics(this.#eTrue, this.#eScore, this.emotions, this.emotionThreshold);
      out.emotions = {
        microF1: e.microF1,
        macroF1: e.macroF1,
        threshold: this.emotionThreshold,
        count: this.#eTrue.length,
      };
    }
    if (this.#sTrue.length > 0) {
      const sm = entityMetrics(this.#sTrue, this.#sPred);
      out.slots = { precision: sm.precision, recall: sm.recall, f1: sm.f1, count: this.#sTrue.length };
    }
    return out;
  }
}

/** The label sets found in examples, sorted (the `ChatLabels` to create a model with). */
export function chatLabels(examples: readonly ChatExample[]): Required<ChatLabels> {
  const intents = new Set<string>();
  const emotions = new Set<string>();
  const slots = new Set<string>();
  for (const ex of examples) {
    if (ex.intent !== undefined) intents.add(ex.intent);
    for (const e of ex.emotions ?? []) emotions.add(e);
    for (const s of ex.slots ?? []) slots.add(s.name);
  }
  const sorted = (s: Set<string>): string[] => [...s].sort();
  return { intents: sorted(intents), emotions: sorted(emotions), slots: sorted(slots) };
}

/** BIO tags of the words from character spans: a word inside a span is B- (first) or I-. */
export function wordTags(words: readonly { start: number; end: number }[], spans: readonly SlotSpan[]): string[] {
  const tags = new Array<string>(words.length).fill('O');
  for (const s of spans) {
    let first = true;
    words.forEach((w, i) => {
      if (w.start >= s.start && w.end <= s.end) {
        tags[i] = `${first ? 'B' : 'I'}-${s.name}`;
        first = false;
      }
    });
  }
  return tags;
}

/** Slots from word tags (BIO; an I- that does not continue its type starts a slot, as seqeval). */
export function decodeSlots(
  text: string,
  words: readonly { start: number; end: number }[],
  tags: readonly string[],
  scores: ArrayLike<number>,
): Slot[] {
  const out: Slot[] = [];
  let cur: { name: string; first: number; last: number; sum: number } | undefined;
  const close = (): void => {
    if (cur === undefined) return;
    const start = (words[cur.first] as { start: number }).start;
    const end = (words[cur.last] as { end: number }).end;
    out.push({
      name: cur.name,
      value: text.slice(start, end),
      start,
      end,
      score: cur.sum / (cur.last - cur.first + 1),
    });
    cur = undefined;
  };
  tags.forEach((tag, i) => {
    const score = scores[i] ?? 0;
    if (tag === 'O' || tag.length < 3 || tag[1] !== '-') {
      close();
      return;
    }
    const name = tag.slice(2);
    if (tag[0] === 'I' && cur?.name === name) {
      cur.last = i;
      cur.sum += score;
      return;
    }
    close();
    cur = { name, first: i, last: i, sum: score };
  });
  close();
  return out;
}

function makeMeta(labels: ChatLabels, options: ChatModelOptions): ChatMeta {
  if (typeof labels !== 'object' || (labels as unknown) === null)
    throw expected(InputError, 'an object { intents, emotions, slots }', 'labels', labels);
  if (typeof options !== 'object' || (options as unknown) === null)
    throw expected(InputError, 'an object', 'options', options);
  const list = (v: unknown, what: string): string[] => {
    if (v === undefined) return [];
    if (!Array.isArray(v) || v.some((x) => typeof x !== 'string' || x === '')) {
      throw expected(InputError, 'an array of non-empty strings', what, v);
    }
    const out = v as string[];
    if (new Set(out).size !== out.length)
      throw new InputError(`Expected distinct names for ${what} but received a repeated one`);
    return [...out];
  };
  const intents = list(labels.intents, 'labels.intents');
  const emotions = list(labels.emotions, 'labels.emotions');
  const slots = list(labels.slots, 'labels.slots');
  if (intents.length === 1) throw new InputError('Expected at least 2 intents (or none) but received 1');
  if (intents.length + emotions.length + slots.length === 0) {
    throw new InputError('Expected at least one head (intents, emotions or slots) but received no labels');
  }
  const slotTags = slots.length > 0 ? ['O', ...slots.flatMap((s) => [`B-${s}`, `I-${s}`])] : [];
  return {
    format: 'elmo-chat',
    version: 1,
    intents,
    emotions,
    slots,
    slotTags,
    outOfScopeThreshold: 0,
    emotionThreshold: 0.5,
    contextMaxTokens: checkCount(options.contextMaxTokens ?? 64, 'options.contextMaxTokens', 0),
  };
}

function readMeta(dir: string): ChatMeta {
  const file = path.join(dir, META_FILE);
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch (err) {
    throw new CheckpointError(
      `${file}: cannot read (${(err as NodeJS.ErrnoException).code ?? 'error'}): not a chat model directory`,
    );
  }
  let m: unknown;
  try {
    m = JSON.parse(text);
  } catch (err) {
    throw new CheckpointError(`${file}: not JSON (${(err as Error).message})`);
  }
  const o = m as Partial<ChatMeta>;
  const strings = (v: unknown): v is string[] => Array.isArray(v) && v.every((x) => typeof x === 'string');
  if (
    typeof m !== 'object' ||
    m === null ||
    o.format !== 'elmo-chat' ||
    !strings(o.intents) ||
    !strings(o.emotions) ||
    !strings(o.slots) ||
    !strings(o.slotTags) ||
    typeof o.outOfScopeThreshold !== 'number' ||
    typeof o.emotionThreshold !== 'number' ||
    typeof o.contextMaxTokens !== 'number'
  ) {
    throw new CheckpointError(
      `${file}: not an elmo-chat description (format, intents, emotions, slots, slotTags, thresholds)`,
    );
  }
  return o as ChatMeta;
}

/** Examples from an array or a `.jsonl` file (one example per line), checked for shape. */
export async function readChatExamples(source: readonly ChatExample[] | string, what: string): Promise<ChatExample[]> {
  let items: unknown[];
  if (typeof source === 'string') {
    let text: string;
    try {
      text = await fs.promises.readFile(source, 'utf8');
    } catch (err) {
      throw new InputError(`Cannot read ${what} '${source}': ${(err as Error).message}`);
    }
    items = [];
    text.split('\n').forEach((line, i) => {
      if (line.trim() === '') return;
      try {
        items.push(JSON.parse(line));
      } catch {
        throw new InputError(`${source}:${String(i + 1)}: not a JSON object`);
      }
    });
  } else if (Array.isArray(source)) {
    items = source as unknown[];
  } else {
    throw expected(InputError, 'an array of examples or a .jsonl path', what, source);
  }
  items.forEach((ex, i) => {
    checkExample(ex, `${what}[${String(i)}]`);
  });
  return items as ChatExample[];
}

function checkExample(ex: unknown, at: string): void {
  if (typeof ex !== 'object' || ex === null)
    throw expected(InputError, 'an object { text, intent?, emotions?, slots? }', at, ex);
  const e = ex as Record<string, unknown>;
  if (typeof e.text !== 'string' || e.text.trim() === '')
    throw expected(InputError, 'a non-empty text', `${at}.text`, e.text);
  const text = e.text;
  if (e.context !== undefined && (!Array.isArray(e.context) || e.context.some((c) => typeof c !== 'string'))) {
    throw expected(InputError, 'an array of strings', `${at}.context`, e.context);
  }
  if (e.intent !== undefined && (typeof e.intent !== 'string' || e.intent === '')) {
    throw expected(InputError, 'a non-empty string', `${at}.intent`, e.intent);
  }
  for (const key of ['intentProbs', 'emotionProbs'] as const) {
    const v = e[key];
    if (v !== undefined && (!Array.isArray(v) || v.some((x) => typeof x !== 'number'))) {
      throw expected(InputError, 'an array of numbers', `${at}.${key}`, v);
    }
  }
  if (e.emotions !== undefined && (!Array.isArray(e.emotions) || e.emotions.some((x) => typeof x !== 'string'))) {
    throw expected(InputError, 'an array of strings', `${at}.emotions`, e.emotions);
  }
  if (e.slots !== undefined) {
    if (!Array.isArray(e.slots)) throw expected(InputError, 'an array of { name, start, end }', `${at}.slots`, e.slots);
    e.slots.forEach((s: unknown, k) => {
      const sl = s as Partial<SlotSpan> | null;
      const ok =
        typeof sl === 'object' &&
        sl !== null &&
        typeof sl.name === 'string' &&
        sl.name !== '' &&
        Number.isInteger(sl.start) &&
        Number.isInteger(sl.end) &&
        (sl.start as number) >= 0 &&
        (sl.start as number) < (sl.end as number) &&
        (sl.end as number) <= text.length;
      if (!ok) {
        throw expected(
          InputError,
          `{ name, start, end } with 0 <= start < end <= ${String(text.length)}`,
          `${at}.slots[${String(k)}]`,
          s,
        );
      }
    });
  }
}

/** The options of the encoder's Bert.load: the chat model's own ones removed. */
function bertOptions(options: ChatModelOptions): BertLoadOptions {
  const out: Record<string, unknown> = { ...options };
  delete out.contextMaxTokens;
  delete out.seed;
  return out;
}

function nonEmptyArray(v: unknown): boolean {
  return Array.isArray(v) && v.length > 0;
}

/** softmax(z / T) from softmax(z): p^(1/T), renormalized (sums in double). */
function temper(p: ArrayLike<number>, T: number): Float64Array {
  const out = new Float64Array(p.length);
  let sum = 0;
  for (let i = 0; i < p.length; i++) sum += out[i] = Math.pow(Math.max(p[i] as number, 1e-30), 1 / T);
  for (let i = 0; i < p.length; i++) out[i] = (out[i] as number) / sum;
  return out;
}

function argmax(v: ArrayLike<number>): number {
  let k = 0;
  for (let i = 1; i < v.length; i++) if ((v[i] as number) > (v[k] as number)) k = i;
  return k;
}

function checkCount(v: unknown, what: string, min: number): number {
  if (!Number.isSafeInteger(v) || (v as number) < min)
    throw expected(InputError, `an integer >= ${String(min)}`, what, v);
  return v as number;
}

function checkUnit(v: unknown, what: string): number {
  if (typeof v !== 'number' || !(v >= 0 && v <= 1)) throw expected(InputError, 'a number in [0, 1]', what, v);
  return v;
}
