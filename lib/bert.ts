/**
 * The model API (DESIGN.md §4): a Hugging Face BERT checkpoint loaded with one call, run on the
 * native core off the JS thread, with PyTorch's numbers.
 *
 * `lib/` owns validation, tokenization and file handling; every per-element computation
 * (the encoder, pooling, softmax / sigmoid, arg-max) runs in native code on the model's own
 * thread (bindings/model.cpp).
 *
 * @example
 * ```ts
 * import { Bert } from 'elmo-chat';
 *
 * const model = await Bert.load('models/intent', { device: 'auto' });
 * const [best] = await model.predict(['where is my card?']);
 * console.log(best?.label, best?.score);
 * const vectors = await model.embed(['hello', 'hi there'], { pooling: 'mean' }); // [2, H]
 * model.dispose();
 * ```
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';

import { resolveDevice } from './devices';
import type { DeviceKind, DeviceRequest } from './devices';
import { CheckpointError, DisposedError, ElmoError, InputError, describeValue, expected } from './errors';
import { native } from './native';
import type {
  NativeCreateConfig,
  NativeForwardOptions,
  NativeForwardResult,
  NativeModel,
  NativeModelConfig,
  NativeProblemType,
} from './native';
import { Tokenizer, TokenizerError } from './tokenizer';
import type { TokenizerInput, TokenizerOptions } from './tokenizer';
import type { TrainTask } from './train/data';
import { evaluate, fineTune } from './train/fine-tune';
import { pretrain } from './train/pretrain';
import type { PretrainHost, PretrainOptions, PretrainResult } from './train/pretrain';
import type { CorpusSource } from './train/corpus';
import type {
  EvalMetrics,
  EvaluateOptions,
  ExampleSource,
  FineTuneHost,
  FineTuneOptions,
  FineTuneResult,
} from './train/fine-tune';
import { Trainer } from './train/trainer';
import type { TrainerOptions } from './train/trainer';
import { writeFileAtomic } from './fs-atomic';

// Node defines Symbol.dispose as the registered symbol 'nodejs.dispose', but a vm context (a
// jest test, a REPL sandbox) may lack it; the same registered symbol there keeps `using` and
// `[Symbol.dispose]()` working and equal across realms.
if (typeof Symbol.dispose !== 'symbol') {
  Object.defineProperty(Symbol, 'dispose', { value: Symbol.for('nodejs.dispose') });
}

/** One model input: a text, or a pair of texts encoded as `[CLS] A [SEP] B [SEP]`. */
export type BertInput = TokenizerInput;

/** Classification problem types, spelled as `config.json`'s `problem_type`. */
export type ProblemType = NativeProblemType;

/**
 * Architecture of a model made with {@link Bert.create} (the `config.json` fields of
 * Hugging Face, camelCased; `numLayers` is `num_hidden_layers`, `maxPositions` is
 * `max_position_embeddings`).
 */
export type BertConfig = NativeCreateConfig;

/** What a loaded or created model reports about itself (see {@link Bert.config}). */
export type BertModelInfo = NativeModelConfig;

/** Options shared by {@link Bert.load} and {@link Bert.create}. */
export interface BertRunOptions {
  /** `'auto'` (default): CUDA when compiled in and a device answers, else the CPU. */
  device?: DeviceRequest;
  /**
   * Longest sequence in tokens, special tokens included. Default and upper bound: the
   * model's `max_position_embeddings`.
   */
  maxSeqLen?: number;
  /**
   * `true` (default): texts longer than `maxSeqLen` tokens are cut (longest segment first,
   * as Hugging Face). `false`: such a text is refused with `ERR_INPUT`.
   */
  truncation?: boolean;
  /** CPU threads of this model's pool; default ELMO_NUM_THREADS or the machine's cores. */
  threads?: number;
  /**
   * Matrix-product precision. `'fp32'` (default): exact fp32 everywhere.
   *
   * `'bf16'`: the model keeps a bf16 copy of each linear layer's weight (encoder, pooler,
   * classifier, MLM transform) beside the fp32 weights, which stay the master copy (`save()`
   * writes them). Every linear layer multiplies activations rounded to bf16 by that copy and
   * sums in fp32; LayerNorm, softmax, GELU and the embeddings stay fp32. Outputs move by about
   * bf16 rounding (docs/api.md, "Precision"). Where it runs:
   * - CPUs with AVX512_BF16 (Intel Cooper Lake, Sapphire Rapids and later; AMD Zen 4 and later):
   *   native bf16 dot products (`vdpbf16ps`: two products per fp32 lane per instruction) and
   *   half the weight bytes read.
   * - AVX2-only CPUs: the bf16 weights are widened to fp32 in registers and multiplied with fp32
   *   FMA, so speed is about that of `'fp32'`; large batches gain nothing, small ones read half
   *   the weight bytes. The numbers are the same as on AVX512_BF16 up to fp32 summation order.
   * - CUDA: the tensor cores, with attention's q/k/v in bf16 too.
   *
   * `devices().cpu.bf16Kernel` tells which CPU kernel runs.
   *
   * `'int8'` (CPU only, inference only): dynamic quantization. Each encoder layer's four linear
   * layers also keep an int8 copy of their weight (one scale per output row) and quantize their
   * input per row at each call (one scale per token); the int8 products are summed exactly in
   * int32 and scaled back to fp32. LayerNorm, attention, softmax, GELU, the pooler and the
   * heads stay fp32; `save()` writes the fp32 weights. AVX-512 VNNI CPUs use `vpdpbusd`, AVX2
   * CPUs `vpmaddubsw`. Accuracy and speed: docs/api.md, "Precision". `devices().cpu.int8Kernel`
   * tells which kernel runs. A model loaded as int8 cannot be trained (ERR_INPUT).
   */
  precision?: 'fp32' | 'bf16' | 'int8';
  /**
   * CPU forwards (`forward`, `forwardIds`, `predict`, `embed`) estimated to take at most this
   * many milliseconds run on the calling thread, as onnxruntime-node runs every call, and their
   * promise is already settled when it is returned; longer ones run on the model's own thread
   * while the event loop goes on. Default 1; 0: every call on the model's thread. Handing a call
   * over and back costs two thread wake-ups (tens of microseconds on a VM), a few percent of a
   * small model's forward. The estimate divides the call's FLOPs by the rate this model's
   * forwards have reached so far, so a model's first forward always runs on its thread. CUDA
   * forwards always run on the model's thread.
   */
  inlineMaxMs?: number;
}

/** Options of {@link Bert.load}. */
export type BertLoadOptions = BertRunOptions;

/** Options of {@link Bert.create}. */
export interface BertCreateOptions extends BertRunOptions {
  /** The tokenizer the model will use; its vocabulary must fit in `config.vocabSize`. */
  tokenizer: Tokenizer;
  /** Seed of the initial weights (deterministic); default 0. */
  seed?: number | bigint;
  /**
   * Add a masked-LM head (decoder tied to the word embeddings); without labels the model then has
   * no pooler, as transformers' BertForMaskedLM. Default false.
   */
  mlm?: boolean;
}

/** A packed batch of token ids, as {@link Tokenizer.encodeBatch} returns it. */
export interface PackedIds {
  /** `[T]` token ids of all sequences back to back. */
  ids: Int32Array;
  /** `[T]` segment ids; absent: all 0. */
  typeIds?: Int32Array;
  /** `[B + 1]` sequence b is rows `offsets[b] .. offsets[b + 1]`. */
  offsets: Int32Array;
}

/** What {@link Bert.forward} returns. Each array is its own buffer, owned by the caller. */
export interface BertOutput {
  /** `[T, H]` last hidden state, packed rows (no padding): row t belongs to the b with offsets[b] <= t < offsets[b+1]. */
  hidden: Float32Array;
  /** `[B + 1]` sequence boundaries in `hidden`. */
  offsets: Int32Array;
  /** `[B, H]` pooler output (tanh(dense([CLS]))); absent when the checkpoint has no pooler (e.g. BertForMaskedLM). */
  pooled?: Float32Array;
  /** `[B, numLabels]` classifier logits; absent without a classification head. */
  logits?: Float32Array;
}

/** One result of {@link Bert.predict}. */
export interface Prediction {
  /** The label with the highest score. */
  label: string;
  /** Its score. */
  score: number;
  /** `[numLabels]` softmax probabilities (single-label) or per-label sigmoids (multi-label). */
  scores: Float32Array;
}

/** Options of {@link Bert.embed}. */
export interface EmbedOptions {
  /** `'mean'` (default): average of each sequence's token rows; `'cls'`: its [CLS] row. */
  pooling?: 'cls' | 'mean';
}

/** Tokenizer files kept from a loaded checkpoint, written back unchanged by save(). */
interface TokenizerFiles {
  [file: string]: string;
}

const TOKENIZER_FILES = ['tokenizer.json', 'vocab.txt', 'tokenizer_config.json', 'special_tokens_map.json'];

/**
 * A BERT encoder with its tokenizer: Hugging Face layout and numbers, run by the native core
 * on the CPU or a CUDA device. Operations return promises and run off the JS thread, one at a
 * time per model (a second concurrent call rejects with `ERR_BUSY`). Call {@link dispose}
 * (or use `using`) to free the weights and the model's thread.
 *
 * @example
 * ```ts
 * using model = await Bert.load('models/intent');
 * const out = await model.forward(['hello', ['how are you?', 'fine, thanks']]);
 * // out.hidden: Float32Array [T, H], out.offsets: Int32Array [3], out.logits: [2, L]
 * ```
 */
// Set by Bert's static block: the dialogue layer's access to a model's private state.
let jointHostOf: ((model: Bert) => JointHost) | undefined;

export class Bert {
  #model: NativeModel;
  readonly #tokenizer: Tokenizer;
  #info: NativeModelConfig;
  readonly #options: BertRunOptions;
  readonly #maxSeqLen: number;
  readonly #truncation: boolean;
  readonly #tokenizerFiles: TokenizerFiles | undefined;
  #disposed = false;

  private constructor(
    model: NativeModel,
    tokenizer: Tokenizer,
    options: BertRunOptions,
    tokenizerFiles: TokenizerFiles | undefined,
  ) {
    const info = model.config;
    if (info === null) throw new InputError('Expected a model with weights for Bert but received an empty model');
    this.#model = model;
    this.#tokenizer = tokenizer;
    this.#info = info;
    this.#tokenizerFiles = tokenizerFiles;
    this.#options = options;
    const maxSeqLen = options.maxSeqLen ?? info.maxPositions;
    if (!Number.isInteger(maxSeqLen) || maxSeqLen < 3 || maxSeqLen > info.maxPositions) {
      throw expected(
        InputError,
        `an integer in [3, ${String(info.maxPositions)}] (the model's max_position_embeddings)`,
        'options.maxSeqLen',
        maxSeqLen,
      );
    }
    this.#maxSeqLen = maxSeqLen;
    this.#truncation = options.truncation ?? true;
  }

  /**
   * Loads a Hugging Face checkpoint directory: `config.json`, `model.safetensors` (f32, f16 or
   * bf16 weights) and `tokenizer.json` or `vocab.txt` (with `tokenizer_config.json` when
   * present). Reading the weights runs on the model's thread.
   *
   * Rejects with `ERR_CHECKPOINT` for a missing or malformed directory or file (the message
   * names the file and tensor), {@link DeviceUnavailableError} for `device: 'cuda'` where no
   * CUDA device can be had, and `ERR_INPUT` for bad options.
   *
   * @example
   * ```ts
   * const model = await Bert.load('./bert-intent', { device: 'cpu', maxSeqLen: 128 });
   * ```
   */
  static async load(dir: string, options: BertLoadOptions = {}): Promise<Bert> {
    if (typeof dir !== 'string' || dir === '') throw expected(InputError, 'a directory path', 'dir', dir);
    checkRunOptions(options);
    checkModelDir(dir);
    const { tokenizer, files } = loadTokenizer(dir);
    const model = newNativeModel(options);
    try {
      await model.load(dir);
      return new Bert(model, tokenizer, options, files);
    } catch (err) {
      model.dispose();
      throw err;
    }
  }

  /**
   * A model with fresh weights, initialized as `transformers` does (normal(0, 0.02) matrices
   * and embeddings, zero biases, unit LayerNorm), deterministic in `seed`. With labels, it
   * has a sequence-classification head. Synchronous.
   *
   * @example
   * ```ts
   * const tokenizer = Tokenizer.fromVocab('vocab.txt');
   * const model = Bert.create(
   *   { vocabSize: tokenizer.vocabSize, hiddenSize: 128, numLayers: 2, numHeads: 2,
   *     intermediateSize: 512, maxPositions: 128, typeVocabSize: 2, labels: ['greet', 'bye'] },
   *   { tokenizer, device: 'cpu', seed: 42 },
   * );
   * ```
   */
  static create(config: BertConfig, options: BertCreateOptions): Bert {
    if (typeof config !== 'object' || config === null) throw expected(InputError, 'an object', 'config', config);
    if (typeof options !== 'object' || options === null) throw expected(InputError, 'an object', 'options', options);
    if (!(options.tokenizer instanceof Tokenizer)) {
      throw expected(InputError, 'a Tokenizer', 'options.tokenizer', options.tokenizer);
    }
    checkRunOptions(options);
    for (const key of [
      'vocabSize',
      'hiddenSize',
      'numLayers',
      'numHeads',
      'intermediateSize',
      'maxPositions',
      'typeVocabSize',
    ] as const) {
      const v = config[key];
      if (!Number.isInteger(v) || v < 1) throw expected(InputError, 'a positive integer', `config.${key}`, v);
    }
    if (config.hiddenSize % config.numHeads !== 0) {
      throw expected(
        InputError,
        `a multiple of config.numHeads (${String(config.numHeads)})`,
        'config.hiddenSize',
        config.hiddenSize,
      );
    }
    if (options.tokenizer.vocabSize > config.vocabSize) {
      throw new InputError(
        `Expected config.vocabSize of at least ${String(options.tokenizer.vocabSize)} (the tokenizer's vocabulary) ` +
          `but received number ${String(config.vocabSize)}`,
      );
    }
    const labels = config.labels;
    if (labels !== undefined && (!Array.isArray(labels) || labels.some((l) => typeof l !== 'string'))) {
      throw expected(InputError, 'an array of strings', 'config.labels', labels);
    }
    const numLabels = config.numLabels ?? labels?.length ?? 0;
    const problemType = config.problemType ?? (numLabels > 0 ? 'single_label_classification' : undefined);
    if (options.mlm !== undefined && typeof options.mlm !== 'boolean') {
      throw expected(InputError, 'a boolean', 'options.mlm', options.mlm);
    }
    const model = newNativeModel(options);
    try {
      model.create(
        {
          ...config,
          numLabels,
          ...(labels !== undefined ? { labels } : {}),
          ...(problemType !== undefined ? { problemType } : {}),
        },
        // A masked-LM model has no pooler, as transformers' BertForMaskedLM; fine-tuning adds one.
        { pooler: numLabels > 0 || options.mlm !== true, classifier: numLabels > 0, mlm: options.mlm ?? false },
        options.seed ?? 0,
      );
      return new Bert(model, options.tokenizer, options, undefined);
    } catch (err) {
      model.dispose();
      throw err;
    }
  }

  /**
   * Fresh weights with the architecture (layers, widths, positions, dropout, vocabulary) and the
   * tokenizer of `model`, and no head: the from-scratch side of a pretraining comparison.
   *
   * @example
   * ```ts
   * const pretrained = await Bert.load('encoder');
   * const scratch = Bert.createLike(pretrained, { seed: 42 });
   * ```
   */
  static createLike(model: Bert, options: Omit<BertCreateOptions, 'tokenizer'> = {}): Bert {
    if (!(model instanceof Bert)) throw expected(InputError, 'a Bert model', 'model', model);
    model.#checkLive('createLike');
    const c = model.#info;
    return Bert.create(
      {
        vocabSize: c.vocabSize,
        hiddenSize: c.hiddenSize,
        numLayers: c.numLayers,
        numHeads: c.numHeads,
        intermediateSize: c.intermediateSize,
        maxPositions: c.maxPositions,
        typeVocabSize: c.typeVocabSize,
        layerNormEps: c.layerNormEps,
        hiddenDropout: c.hiddenDropout,
        attentionDropout: c.attentionDropout,
        initializerRange: c.initializerRange,
        padTokenId: c.padTokenId,
      },
      { ...options, tokenizer: model.#tokenizer },
    );
  }

  /** The tokenizer the model reads its inputs with (same ids as Hugging Face). */
  get tokenizer(): Tokenizer {
    return this.#tokenizer;
  }

  /** Architecture, heads, labels and parameter count. */
  get config(): BertModelInfo {
    return structuredClone(this.#info);
  }

  /** Label names in id order; empty without a classification head. */
  get labels(): readonly string[] {
    return this.#info.labels;
  }

  /** Where the model runs: `'cpu'` or `'cuda'`. */
  get device(): DeviceKind {
    return this.#model.device;
  }

  /** Matrix-product precision the model was loaded with (`options.precision`; default `'fp32'`). */
  get precision(): 'fp32' | 'bf16' | 'int8' {
    return this.#options.precision ?? 'fp32';
  }

  /** Longest sequence in tokens (special tokens included). */
  get maxSeqLen(): number {
    return this.#maxSeqLen;
  }

  /**
   * A trainer for custom training loops: one optimizer step per call on a packed batch you
   * built (see {@link Trainer}). One per model; a new one replaces the old. Its calls queue
   * behind the model's other operations.
   *
   * @example
   * ```ts
   * const trainer = model.trainer({ learningRate: 1e-3, warmupSteps: 10, totalSteps: 1000 });
   * const batch = model.tokenizer.encodeBatch(['where is my card?', 'hi']);
   * const { loss } = await trainer.step({ ...batch, labels: Int32Array.of(3, 0) });
   * await trainer.dispose();
   * ```
   */
  trainer(options: TrainerOptions = {}): Trainer {
    this.#checkLive('trainer');
    return new Trainer(this.#host(), options);
  }

  /**
   * Fine-tunes the model on labelled examples and returns the training and eval metrics.
   * Examples: `{ text, label }` (classes), `{ text, labels: [...] }` (multi-label),
   * `{ text, label: number }` (regression), `{ text, pair }`, `{ text, context: [...] }`
   * (earlier turns, left-truncated, as segment A), `{ tokens, tags }` (BIO tagging); an array
   * or a `.jsonl` / `.csv` file streamed from disk. A model without a head for the task gets a
   * fresh one (its labels from the data). Calls to the model made meanwhile queue behind it.
   *
   * @example
   * ```ts
   * const result = await model.fineTune('data/train.jsonl', {
   *   evalSet: 'data/dev.jsonl', epochs: 5, learningRate: 1e-3,
   *   onProgress: (p) => console.log(p.step, p.loss),
   * });
   * console.log(result.evalMetrics); // accuracy, macroF1, perLabel, confusion, ...
   * await model.save('models/intent');
   * ```
   */
  async fineTune(examples: ExampleSource, options: FineTuneOptions = {}): Promise<FineTuneResult> {
    this.#checkLive('fineTune');
    return fineTune(this.#host(), examples, options);
  }

  /**
   * Pretrains the model with masked-LM on unlabelled text: files, directories (their `.txt` /
   * `.md` files), `.jsonl` / `.csv` example files (their texts), or `{ texts }`. Sentences of a
   * document are packed into blocks of `seqLen`, masked afresh at each step (15%, 80/10/10,
   * whole words optionally), and the vocabulary projection runs on the masked rows only. The
   * budget is `steps`, `minutes` or `epochs`. A model without a masked-LM head gets one (said
   * in progress and in `headAdded`); `save()` then writes a `BertForMaskedLM` checkpoint that
   * transformers loads and {@link fineTune} starts from.
   *
   * @example
   * ```ts
   * const tokenizer = await Tokenizer.train('corpus/', { vocabSize: 8000 });
   * const model = Bert.create({ vocabSize: tokenizer.vocabSize, hiddenSize: 256, numLayers: 4, numHeads: 4,
   *   intermediateSize: 1024, maxPositions: 128, typeVocabSize: 2 }, { tokenizer, mlm: true });
   * const r = await model.pretrain(['corpus/', 'data/train.jsonl'], { minutes: 20, seqLen: 64 });
   * console.log(r.steps, r.evalLoss);
   * await model.save('models/pretrained');
   * ```
   */
  async pretrain(corpus: CorpusSource, options: PretrainOptions = {}): Promise<PretrainResult> {
    this.#checkLive('pretrain');
    return pretrain(this.#host(), corpus, options);
  }

  /**
   * Metrics of the model on labelled examples: accuracy, macro-F1, per-label precision /
   * recall / F1 and the confusion matrix (classes); micro / macro F1 at a threshold
   * (multi-label); entity-level precision / recall / F1 as seqeval computes them (BIO tags);
   * MSE, MAE, R² (regression).
   */
  async evaluate(examples: ExampleSource, options: EvaluateOptions = {}): Promise<EvalMetrics> {
    this.#checkLive('evaluate');
    return evaluate(this.#host(), examples, options);
  }

  /** true while an operation (forward, save, ...) runs. */
  get busy(): boolean {
    return this.#model.busy;
  }

  /** true after {@link dispose}. */
  get disposed(): boolean {
    return this.#disposed;
  }

  /**
   * Writes `dir/config.json` (with the label names), `dir/model.safetensors` (f32, Hugging
   * Face names, loadable by `transformers`) and the tokenizer files (those the checkpoint was
   * loaded with, or `vocab.txt` for a created model). Every file is written to a temporary
   * name and renamed into place, so a reader never sees a half-written file.
   *
   * @example
   * ```ts
   * await model.save('./bert-intent-v2');
   * const again = await Bert.load('./bert-intent-v2');
   * ```
   */
  async save(dir: string): Promise<void> {
    this.#checkLive('save');
    if (typeof dir !== 'string' || dir === '') throw expected(InputError, 'a directory path', 'dir', dir);
    try {
      fs.mkdirSync(dir, { recursive: true });
    } catch (err) {
      throw new CheckpointError(`Cannot create the model directory '${dir}': ${(err as Error).message}`);
    }
    await this.#model.save(dir);
    // A loaded checkpoint's tokenizer files go back unchanged; a created model's tokenizer
    // writes its own (vocab.txt, tokenizer.json, tokenizer_config.json, special_tokens_map.json).
    if (this.#tokenizerFiles === undefined) this.#tokenizer.save(dir);
    else for (const [name, text] of Object.entries(this.#tokenizerFiles)) writeFileAtomic(path.join(dir, name), text);
  }

  /**
   * Runs the encoder over texts or text pairs. Texts are tokenized into one packed batch
   * (no padding) and cut to {@link maxSeqLen} tokens (or refused, with `truncation: false`).
   *
   * @returns `hidden` [T, H] packed rows with `offsets` [B + 1], `pooled` [B, H], and
   * `logits` [B, numLabels] when the model has a classification head.
   * @example
   * ```ts
   * const { hidden, offsets, logits } = await model.forward(['hi', ['context', 'reply']]);
   * const firstTokenOfSecond = hidden.subarray(offsets[1]! * H, (offsets[1]! + 1) * H);
   * ```
   */
  async forward(inputs: readonly BertInput[]): Promise<BertOutput> {
    this.#checkLive('forward');
    const batch = this.#encode(inputs);
    return this.#run(batch, {});
  }

  /**
   * The lower-level {@link forward}: token ids already packed (as {@link Tokenizer.encodeBatch}
   * returns them, or from a fixture). The arrays are read in place until the promise
   * settles; do not modify them before. Sequences longer than the model's
   * `max_position_embeddings` and ids outside the vocabulary reject with `ERR_INPUT`.
   *
   * @example
   * ```ts
   * const out = await model.forwardIds({
   *   ids: Int32Array.of(101, 7592, 102), offsets: Int32Array.of(0, 3),
   * });
   * ```
   */
  async forwardIds(batch: PackedIds): Promise<BertOutput> {
    this.#checkLive('forwardIds');
    if (typeof batch !== 'object' || batch === null) throw expected(InputError, 'an object', 'batch', batch);
    checkInt32(batch.ids, 'batch.ids');
    checkInt32(batch.offsets, 'batch.offsets');
    if (batch.typeIds !== undefined) checkInt32(batch.typeIds, 'batch.typeIds');
    return this.#run({ ids: batch.ids, typeIds: batch.typeIds ?? null, offsets: batch.offsets }, {});
  }

  /**
   * Classifies texts (or pairs) with the model's classification head. Single-label models
   * score with a softmax over the labels; `multi_label_classification` models with an
   * independent sigmoid per label. `label` is the arg-max either way.
   *
   * @example
   * ```ts
   * const [p] = await model.predict(['I lost my card']);
   * // p.label === 'lost_card', p.score === 0.93, p.scores: Float32Array [numLabels]
   * ```
   */
  async predict(inputs: readonly BertInput[]): Promise<Prediction[]> {
    this.#checkLive('predict');
    const info = this.#info;
    if (!info.heads.classifier) {
      throw new InputError(
        'Expected a model with a sequence-classification head for predict but received a model without one',
      );
    }
    if (info.problemType === 'regression') {
      throw new InputError(
        "Expected a classification model for predict but received problem_type 'regression' (use forward() for its outputs)",
      );
    }
    const batch = this.#encode(inputs);
    const scores = info.problemType === 'multi_label_classification' ? 'sigmoid' : 'softmax';
    const out = await this.#native(batch, { hidden: false, scores });
    const all = out.scores;
    const best = out.best;
    if (all === undefined || best === undefined) throw new ElmoError('The native forward returned no scores');
    const L = info.numLabels;
    const results: Prediction[] = [];
    for (let b = 0; b < best.length; b++) {
      const k = best[b] ?? 0;
      const row = all.subarray(b * L, (b + 1) * L);
      results.push({ label: info.labels[k] ?? `LABEL_${String(k)}`, score: row[k] ?? NaN, scores: row });
    }
    return results;
  }

  /**
   * Sentence embeddings `[B, H]` (row b at `b * H`): the mean of each sequence's last hidden
   * rows over its real tokens (default), or its [CLS] row. Pooling runs in native code.
   *
   * @example
   * ```ts
   * const E = await model.embed(['hello', 'hi there'], { pooling: 'mean' });
   * const H = model.config.hiddenSize; // E.subarray(0, H) is the first text's vector
   * ```
   */
  async embed(inputs: readonly BertInput[], options: EmbedOptions = {}): Promise<Float32Array> {
    this.#checkLive('embed');
    if (typeof options !== 'object' || options === null) throw expected(InputError, 'an object', 'options', options);
    const pooling = options.pooling ?? 'mean';
    if (pooling !== 'cls' && pooling !== 'mean') {
      throw expected(InputError, "'cls' or 'mean'", 'options.pooling', pooling);
    }
    const batch = this.#encode(inputs);
    const out = await this.#native(batch, { hidden: false, pooling });
    if (out.embeddings === undefined) throw new ElmoError('The native forward returned no embeddings');
    return out.embeddings;
  }

  /**
   * Frees the weights, the activation memory and the model's thread. Idempotent. Called
   * while an operation runs, it lets that operation finish (its promise settles normally)
   * and frees everything afterwards; any later call rejects with `ERR_DISPOSED`. Arrays
   * returned earlier stay valid (they own their memory).
   */
  dispose(): void {
    this.#disposed = true;
    this.#model.dispose();
  }

  /** Same as {@link dispose}, for `using model = await Bert.load(...)`. */
  [Symbol.dispose](): void {
    this.dispose();
  }

  // ---------------------------------------------------------------------------------------------

  /** What lib/train needs of the model (its native object is replaced when a head is reset). */
  #host(): FineTuneHost & PretrainHost {
    // eslint-disable-next-line @typescript-eslint/no-this-alias
    const self = this;
    return {
      get native() {
        return self.#model;
      },
      get info() {
        return self.#info;
      },
      tokenizer: this.#tokenizer,
      maxSeqLen: this.#maxSeqLen,
      checkLive: (what) => {
        self.#checkLive(what);
      },
      forward: (batch, options) => self.#model.forward(batch.ids, batch.typeIds, batch.offsets, options),
      ensureHead: (task, labels, resetHead, seed) => self.#ensureHead(task, labels, resetHead, seed),
      ensureMlmHead: (seed) => self.#ensureMlmHead(seed),
      save: (dir) => self.save(dir),
    };
  }

  /**
   * Gives the model the head `task` needs with `labels`. A head that already fits is kept; one
   * of another label set is refused unless `resetHead`; otherwise a fresh model with the same
   * encoder weights and a new head (initialized as transformers does) replaces the native one.
   */
  async #ensureHead(task: TrainTask, labels: readonly string[], resetHead: boolean, seed: number): Promise<void> {
    const info = this.#info;
    const problemType: NativeProblemType =
      task === 'multi-label'
        ? 'multi_label_classification'
        : task === 'regression'
          ? 'regression'
          : 'single_label_classification';
    const token = task === 'token';
    const hasHead = token ? info.heads.tokenClassifier : info.heads.classifier;
    const numLabels = task === 'regression' ? Math.max(1, labels.length) : labels.length;
    if (hasHead) {
      const sameKind = token || (info.problemType ?? 'single_label_classification') === problemType;
      const sameLabels =
        info.labels.length === numLabels && (task === 'regression' || info.labels.every((l, i) => l === labels[i]));
      if (sameKind && sameLabels) return;
      if (!resetHead) {
        throw new InputError(
          `Expected the labels of the model's head [${info.labels.join(', ')}] (${info.problemType ?? 'single_label_classification'}) ` +
            `for fine-tuning but received [${labels.slice(0, 12).join(', ')}${labels.length > 12 ? ', ...' : ''}] (${token ? 'token' : problemType}); ` +
            'pass resetHead: true to replace the head',
        );
      }
    }
    if (numLabels < 1) throw new InputError('Expected at least one label to fine-tune a classifier but received none');
    await this.#replaceHeads(
      {
        numLabels,
        labels: task === 'regression' ? Array.from({ length: numLabels }, (_, i) => `LABEL_${String(i)}`) : [...labels],
        ...(token ? {} : { problemType }),
      },
      { pooler: !token, classifier: !token, tokenClassifier: token, mlm: false },
      seed,
    );
  }

  /** Adds a masked-LM head (tied to the word embeddings) to a model without one; true when added. */
  async #ensureMlmHead(seed: number): Promise<boolean> {
    if (this.#info.heads.mlm) return false;
    await this.#replaceHeads(
      { numLabels: 0 },
      { pooler: false, classifier: false, tokenClassifier: false, mlm: true },
      seed,
    );
    return true;
  }

  /**
   * Replaces the native model by a fresh one with the same encoder weights and the given heads
   * (initialized as transformers does, from `seed`).
   */
  async #replaceHeads(
    head: { numLabels: number; labels?: string[]; problemType?: NativeProblemType; numSlotLabels?: number },
    heads: { pooler: boolean; classifier: boolean; tokenClassifier: boolean; mlm: boolean; slots?: boolean },
    seed: number,
  ): Promise<void> {
    const info = this.#info;
    const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'elmo-head-'));
    const fresh = newNativeModel(this.#options);
    try {
      await this.#model.save(tmp);
      fresh.create(
        {
          vocabSize: info.vocabSize,
          hiddenSize: info.hiddenSize,
          numLayers: info.numLayers,
          numHeads: info.numHeads,
          intermediateSize: info.intermediateSize,
          maxPositions: info.maxPositions,
          typeVocabSize: info.typeVocabSize,
          layerNormEps: info.layerNormEps,
          hiddenDropout: info.hiddenDropout,
          attentionDropout: info.attentionDropout,
          initializerRange: info.initializerRange,
          padTokenId: info.padTokenId,
          ...head,
        },
        heads,
        seed,
      );
      await fresh.loadEncoder(path.join(tmp, 'model.safetensors'));
    } catch (err) {
      fresh.dispose();
      throw err;
    } finally {
      fs.rmSync(tmp, { recursive: true, force: true });
    }
    const info2 = fresh.config;
    if (info2 === null) throw new ElmoError('A fresh model reported no config');
    this.#model.dispose();
    this.#model = fresh;
    this.#info = info2;
  }

  /** What the dialogue layer (lib/chat) needs of the model: see {@link jointHost}. */
  #jointHost(): JointHost {
    // eslint-disable-next-line @typescript-eslint/no-this-alias
    const self = this;
    // Not a spread of #host(): its `native` and `info` are getters, read afresh after a head change.
    return Object.assign(this.#host(), {
      refreshInfo: () => {
        const info = self.#model.config;
        if (info !== null) self.#info = info;
      },
      setJointHeads: async (labels: readonly string[], numSlotLabels: number, seed: number) => {
        const info = self.#info;
        const same =
          info.heads.slots === numSlotLabels > 0 &&
          info.numSlotLabels === numSlotLabels &&
          info.heads.classifier === labels.length > 0 &&
          info.labels.length === labels.length &&
          info.labels.every((l, i) => l === labels[i]);
        if (same) return;
        await self.#replaceHeads(
          { numLabels: labels.length, labels: [...labels], problemType: 'single_label_classification', numSlotLabels },
          { pooler: true, classifier: labels.length > 0, tokenClassifier: false, mlm: false, slots: numSlotLabels > 0 },
          seed,
        );
      },
    });
  }

  static {
    jointHostOf = (model) => model.#jointHost();
  }

  #checkLive(what: string): void {
    if (this.#disposed) {
      throw new DisposedError(`Expected a live model for ${what} but received a disposed model`);
    }
  }

  /** Validates and tokenizes inputs into one packed batch. */
  #encode(inputs: readonly BertInput[]): { ids: Int32Array; typeIds: Int32Array; offsets: Int32Array } {
    if (!Array.isArray(inputs) || inputs.length === 0) {
      throw expected(InputError, 'a non-empty array of strings or [string, string] pairs', 'inputs', inputs);
    }
    const pairs = this.#info.typeVocabSize > 1;
    for (let b = 0; b < inputs.length; b++) {
      const item: unknown = inputs[b];
      if (typeof item === 'string') continue;
      if (Array.isArray(item) && item.length === 2 && typeof item[0] === 'string' && typeof item[1] === 'string') {
        if (pairs) continue;
        throw new InputError(
          `Expected a single text (the model's type_vocab_size is ${String(this.#info.typeVocabSize)}) ` +
            `for inputs[${String(b)}] but received a [string, string] pair`,
        );
      }
      throw expected(InputError, 'a string or a [string, string] pair', `inputs[${String(b)}]`, item);
    }
    let batch;
    try {
      batch = this.#tokenizer.encodeBatch(inputs, {
        maxSeqLen: this.#maxSeqLen,
        truncation: this.#truncation ? 'longest_first' : false,
      });
    } catch (err) {
      if (err instanceof TokenizerError) throw new InputError(err.message);
      throw err;
    }
    if (!this.#truncation) {
      const off = batch.offsets;
      for (let b = 0; b + 1 < off.length; b++) {
        const n = (off[b + 1] ?? 0) - (off[b] ?? 0);
        if (n > this.#maxSeqLen) {
          throw new InputError(
            `Expected at most ${String(this.#maxSeqLen)} tokens (maxSeqLen) for inputs[${String(b)}] but received ` +
              `${describeValue(inputs[b])} of ${String(n)} tokens (truncation is off)`,
          );
        }
      }
    }
    return batch;
  }

  async #run(
    batch: { ids: Int32Array; typeIds: Int32Array | null; offsets: Int32Array },
    options: NativeForwardOptions,
  ): Promise<BertOutput> {
    const out = await this.#native(batch, options);
    if (out.hidden === undefined) throw new ElmoError('The native forward returned no hidden state');
    const result: BertOutput = { hidden: out.hidden, offsets: batch.offsets };
    if (out.pooled !== undefined) result.pooled = out.pooled;
    if (out.logits !== undefined) result.logits = out.logits;
    return result;
  }

  #native(
    batch: { ids: Int32Array; typeIds: Int32Array | null; offsets: Int32Array },
    options: NativeForwardOptions,
  ): Promise<NativeForwardResult> {
    return this.#model.forward(batch.ids, batch.typeIds, batch.offsets, options);
  }
}

// ---- helpers ------------------------------------------------------------------------------------

/** A model as the dialogue layer drives it: the training host, plus replacing the heads by joint ones. */
export interface JointHost extends FineTuneHost {
  /**
   * Gives the model a sequence classifier over `labels` (intents then emotions, `[]`: none)
   * and a slot classifier of `numSlotLabels` rows (0: none), fresh, over the same encoder
   * weights; a model that already has exactly these heads is kept as it is.
   */
  setJointHeads(labels: readonly string[], numSlotLabels: number, seed: number): Promise<void>;
  /** Reads the native model's architecture again (after adapters were added or removed). */
  refreshInfo(): void;
}

/** @internal The dialogue layer's access to a model (not part of the public API). */
export function jointHost(model: Bert): JointHost {
  if (!(model instanceof Bert) || jointHostOf === undefined) throw expected(InputError, 'a Bert model', 'model', model);
  return jointHostOf(model);
}

function checkRunOptions(options: BertRunOptions): void {
  if (typeof options !== 'object' || options === null) throw expected(InputError, 'an object', 'options', options);
  const { maxSeqLen, truncation, threads, precision, inlineMaxMs } = options;
  if (precision !== undefined && precision !== 'fp32' && precision !== 'bf16' && precision !== 'int8') {
    throw expected(InputError, "one of 'fp32', 'bf16', 'int8'", 'options.precision', precision);
  }
  if (maxSeqLen !== undefined && (!Number.isInteger(maxSeqLen) || maxSeqLen < 3)) {
    throw expected(InputError, 'an integer >= 3', 'options.maxSeqLen', maxSeqLen);
  }
  if (truncation !== undefined && typeof truncation !== 'boolean') {
    throw expected(InputError, 'a boolean', 'options.truncation', truncation);
  }
  if (threads !== undefined && (!Number.isInteger(threads) || threads < 0 || threads > 1024)) {
    throw expected(InputError, 'an integer in [0, 1024]', 'options.threads', threads);
  }
  if (
    inlineMaxMs !== undefined &&
    (typeof inlineMaxMs !== 'number' || !Number.isFinite(inlineMaxMs) || inlineMaxMs < 0)
  ) {
    throw expected(InputError, 'a finite number >= 0', 'options.inlineMaxMs', inlineMaxMs);
  }
}

function newNativeModel(options: BertRunOptions): NativeModel {
  const device = resolveDevice(options.device ?? 'auto');
  return new (native().NativeModel)({
    device,
    ...(options.threads !== undefined ? { threads: options.threads } : {}),
    ...(options.precision !== undefined ? { precision: options.precision } : {}),
    ...(options.inlineMaxMs !== undefined ? { inlineMaxMs: options.inlineMaxMs } : {}),
  });
}

function checkInt32(v: unknown, what: string): void {
  if (!(v instanceof Int32Array)) throw expected(InputError, 'an Int32Array', what, v);
}

/** Refuses a directory that cannot be a checkpoint before anything is read. */
function checkModelDir(dir: string): void {
  let stat: fs.Stats;
  try {
    stat = fs.statSync(dir);
  } catch {
    throw new CheckpointError(
      `Expected a model directory (config.json, model.safetensors, tokenizer.json or vocab.txt) for dir but received '${dir}', which does not exist`,
    );
  }
  if (!stat.isDirectory()) {
    throw new CheckpointError(`Expected a model directory for dir but received '${dir}', which is not a directory`);
  }
  for (const file of ['config.json', 'model.safetensors']) {
    if (!fs.existsSync(path.join(dir, file))) {
      throw new CheckpointError(`Expected a model directory with ${file} for dir but received '${dir}' (no ${file})`);
    }
  }
}

/** tokenizer.json, else vocab.txt with the options of tokenizer_config.json when present. */
function loadTokenizer(dir: string): { tokenizer: Tokenizer; files: TokenizerFiles } {
  const files: TokenizerFiles = {};
  for (const name of TOKENIZER_FILES) {
    const file = path.join(dir, name);
    if (fs.existsSync(file)) files[name] = fs.readFileSync(file, 'utf8');
  }
  const json = files['tokenizer.json'];
  const vocab = files['vocab.txt'];
  try {
    if (json !== undefined) return { tokenizer: Tokenizer.fromTokenizerJson(json), files };
    if (vocab !== undefined) {
      return { tokenizer: Tokenizer.fromVocab(vocab, vocabOptions(files['tokenizer_config.json'])), files };
    }
  } catch (err) {
    if (err instanceof TokenizerError || err instanceof ElmoError) {
      throw new CheckpointError(`${dir}: cannot read the tokenizer: ${err.message}`);
    }
    throw err;
  }
  throw new CheckpointError(
    `Expected a model directory with tokenizer.json or vocab.txt for dir but received '${dir}' (neither file)`,
  );
}

/** BertTokenizer options from tokenizer_config.json (do_lower_case, strip_accents, ...). */
function vocabOptions(text: string | undefined): TokenizerOptions {
  if (text === undefined) return {};
  let cfg: Record<string, unknown>;
  try {
    cfg = JSON.parse(text) as Record<string, unknown>;
  } catch (err) {
    throw new CheckpointError(`tokenizer_config.json: ${(err as Error).message}`);
  }
  const out: TokenizerOptions = {};
  if (typeof cfg.do_lower_case === 'boolean') out.lowercase = cfg.do_lower_case;
  if (typeof cfg.strip_accents === 'boolean' || cfg.strip_accents === null) out.stripAccents = cfg.strip_accents;
  if (typeof cfg.tokenize_chinese_chars === 'boolean') out.handleChineseChars = cfg.tokenize_chinese_chars;
  for (const [key, opt] of [
    ['unk_token', 'unkToken'],
    ['cls_token', 'clsToken'],
    ['sep_token', 'sepToken'],
    ['pad_token', 'padToken'],
    ['mask_token', 'maskToken'],
  ] as const) {
    const v = cfg[key];
    if (typeof v === 'string') out[opt] = v;
  }
  return out;
}
