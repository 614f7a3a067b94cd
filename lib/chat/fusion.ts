/**
 * Model fusion for chat models: one model out of several, or several answering as one.
 *
 * - **Weight soups** ({@link averageChatModels}, {@link greedySoup}): chat models fine-tuned from
 *   the same base (same architecture, label sets and tokenizer) averaged tensor by tensor into one
 *   model of the same size, which costs one model's inference. Averaging works when the
 *   ingredients stayed in one basin of the loss: fine-tuned from the same encoder *and* the same
 *   fresh heads (`ChatModel.create` with the same `seed`), differing in data order, dropout
 *   draws or learning rate. The greedy recipe (Wortsman et al. 2022, "Model soups") adds an
 *   ingredient only when the held-out score does not drop.
 * - **Logit ensembles** ({@link ChatEnsemble}): chat models with the same label sets, of any
 *   size or architecture, run one after another on each turn; their probabilities are averaged
 *   (intents, emotions, and each word's slot tags: words are the tokenizer-independent spans of
 *   `wordSpans`) and decoded as `ChatModel` decodes them. Costs the sum of the members.
 *
 * The weights are read and written by a small safetensors reader and writer of F32 tensors
 * ({@link readSafetensors}, {@link writeSafetensors}) that validates every header strictly.
 * The averages and means run through the native GEMM (`out[1, P] = w[1, N] · X[N, P]`), chunk
 * by chunk, never through a loop over tensor elements in JS.
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';

import { CheckpointError, DisposedError, InputError, expected } from '../errors';
import { writeFileAtomic } from '../fs-atomic';
import { encodeHeader, isPlainObject, openSafetensors, readExactly, writeAll, writeBytesAtomic } from '../safetensors';
import type { StEntry, StFile } from '../safetensors';
import { ops } from '../tensor';
import { ChatMetricsAccumulator, ChatModel, decodeSlots, readChatExamples } from './chat-model';
import type { ChatExample, ChatMetrics, ChatModelOptions, TurnInput, TurnScores } from './chat-model';
import type { Scored, Understanding } from './types';

// ------------------------------------------------------------------------------------------------
// Weight averaging

const WEIGHTS_FILE = 'model.safetensors';
const CONFIG_FILE = 'config.json';
const META_FILE = 'chat.json';
/** The tokenizer files a model directory may hold (those `Bert.save` writes). */
const TOKENIZER_FILES = ['tokenizer.json', 'vocab.txt', 'tokenizer_config.json', 'special_tokens_map.json'];
/** config.json keys that fix the encoder's shape and function. */
const ARCH_KEYS = [
  'model_type',
  'vocab_size',
  'hidden_size',
  'num_hidden_layers',
  'num_attention_heads',
  'intermediate_size',
  'max_position_embeddings',
  'type_vocab_size',
  'hidden_act',
  'position_embedding_type',
  'layer_norm_eps',
  'num_slot_labels',
];
const LABEL_KEYS = ['intents', 'emotions', 'slots', 'slotTags'] as const;
/** Floats per ingredient read and averaged per GEMM. */
const CHUNK_FLOATS = 1 << 18;

/** Options of {@link averageChatModels}. */
export interface AverageOptions {
  /**
   * One non-negative weight per directory (not all 0), normalized to sum to 1; default uniform.
   */
  weights?: readonly number[];
}

/** What {@link averageChatModels} wrote. */
export interface AverageReport {
  /** The new chat model directory. */
  dir: string;
  /** The ingredients' directories, in the order given. */
  ingredients: string[];
  /** The normalized weights, one per ingredient. */
  weights: number[];
  /** Tensors averaged. */
  tensors: number;
  /** Values per model (every tensor's elements). */
  parameters: number;
  seconds: number;
}

/** A chat model directory opened for averaging: its files read, its weights' header validated. */
interface Ingredient {
  dir: string;
  /** How errors name it: `dirs[1] ('models/b')`. */
  at: string;
  meta: Record<string, unknown> & Record<(typeof LABEL_KEYS)[number], string[]>;
  configText: string;
  config: Record<string, unknown>;
  tokenizer: Map<string, Buffer>;
  weights: StFile;
}

function readJsonFile(file: string): { text: string; value: Record<string, unknown> } {
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch (err) {
    throw new CheckpointError(
      `Cannot read ${file} (${(err as NodeJS.ErrnoException).code ?? 'error'}): not a chat model directory`,
    );
  }
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (err) {
    throw new CheckpointError(`${file}: not JSON (${(err as Error).message})`);
  }
  if (!isPlainObject(value)) throw new CheckpointError(`${file}: not a JSON object`);
  return { text, value };
}

function openIngredient(dir: string, at: string): Ingredient {
  const meta = readJsonFile(path.join(dir, META_FILE)).value;
  const strings = (v: unknown): v is string[] => Array.isArray(v) && v.every((x) => typeof x === 'string');
  if (meta.format !== 'elmo-chat' || !LABEL_KEYS.every((k) => strings(meta[k]))) {
    throw new CheckpointError(
      `${path.join(dir, META_FILE)}: not an elmo-chat description (format, intents, emotions, slots, slotTags)`,
    );
  }
  const config = readJsonFile(path.join(dir, CONFIG_FILE));
  const tokenizer = new Map<string, Buffer>();
  for (const name of TOKENIZER_FILES) {
    const file = path.join(dir, name);
    if (fs.existsSync(file)) {
      try {
        tokenizer.set(name, fs.readFileSync(file));
      } catch (err) {
        throw new CheckpointError(`Cannot read ${file}: ${(err as Error).message}`);
      }
    }
  }
  if (!tokenizer.has('tokenizer.json') && !tokenizer.has('vocab.txt')) {
    throw new CheckpointError(`${dir}: no tokenizer (neither tokenizer.json nor vocab.txt)`);
  }
  const weights = openSafetensors(path.join(dir, WEIGHTS_FILE));
  return {
    dir,
    at,
    meta: meta as Ingredient['meta'],
    configText: config.text,
    config: config.value,
    tokenizer,
    weights,
  };
}

function closeIngredients(list: readonly Ingredient[]): void {
  for (const m of list) fs.closeSync(m.weights.fd);
}

/** The first place two label lists differ, in words. */
function listDifference(a: readonly string[], b: readonly string[]): string {
  const k = a.findIndex((x, i) => x !== b[i]);
  if (k >= 0 && k < b.length) return `at position ${String(k)}: '${a[k] ?? ''}' against '${b[k] ?? ''}'`;
  return `${String(a.length)} of them against ${String(b.length)}`;
}

function mismatch(what: string, a: Ingredient, b: Ingredient, detail: string): InputError {
  return new InputError(
    `Expected chat models fine-tuned from one base (same architecture, label sets and tokenizer) for dirs ` +
      `but their ${what} differ: ${b.at} against ${a.at}, ${detail}`,
  );
}

/** Same label sets, architecture (config and every tensor's name and shape) and tokenizer files. */
function checkCompatible(list: readonly Ingredient[]): void {
  const first = list[0] as Ingredient;
  for (const m of list.slice(1)) {
    for (const key of LABEL_KEYS) {
      const a = first.meta[key];
      const b = m.meta[key];
      if (a.length !== b.length || a.some((x, i) => x !== b[i])) {
        throw mismatch('label sets', first, m, `${key} ${listDifference(b, a)}`);
      }
    }
    for (const key of ARCH_KEYS) {
      const a = JSON.stringify(first.config[key]);
      const b = JSON.stringify(m.config[key]);
      if (a !== b)
        throw mismatch('architectures', first, m, `config.json ${key} ${b ?? 'absent'} against ${a ?? 'absent'}`);
    }
    for (const e of first.weights.header.entries) {
      const o = m.weights.byName.get(e.name);
      if (o === undefined) throw mismatch('architectures', first, m, `it has no tensor '${e.name}'`);
      if (o.shape.length !== e.shape.length || o.shape.some((d, i) => d !== e.shape[i])) {
        throw mismatch(
          'architectures',
          first,
          m,
          `tensor '${e.name}' of shape ${JSON.stringify(o.shape)} against ${JSON.stringify(e.shape)}`,
        );
      }
    }
    const extra = m.weights.header.entries.find((e) => !first.weights.byName.has(e.name));
    if (extra !== undefined)
      throw mismatch('architectures', first, m, `its tensor '${extra.name}' is not in the other`);
    for (const name of new Set([...first.tokenizer.keys(), ...m.tokenizer.keys()])) {
      const a = first.tokenizer.get(name);
      const b = m.tokenizer.get(name);
      if (a === undefined || b === undefined) {
        throw mismatch('tokenizers', first, m, `${name} is in ${a === undefined ? m.at : first.at} only`);
      }
      if (!a.equals(b)) throw mismatch('tokenizers', first, m, `${name} differs`);
    }
  }
}

/** Weights normalized to sum to 1 (Float64), default uniform. */
function normalizeWeights(weights: readonly number[] | undefined, n: number, what: string): number[] {
  if (weights === undefined) return new Array<number>(n).fill(1 / n);
  const untyped: unknown = weights;
  if (
    !Array.isArray(untyped) ||
    untyped.length !== n ||
    untyped.some((w) => typeof w !== 'number' || !Number.isFinite(w) || w < 0)
  ) {
    throw expected(InputError, `${String(n)} finite non-negative numbers`, what, weights);
  }
  const sum = weights.reduce((a, b) => a + b, 0);
  if (!(sum > 0)) throw expected(InputError, 'weights that are not all 0', what, weights);
  return weights.map((w) => w / sum);
}

function checkDirs(dirs: unknown, what: string): asserts dirs is readonly string[] {
  if (!Array.isArray(dirs) || dirs.length === 0 || dirs.some((d) => typeof d !== 'string' || d === '')) {
    throw expected(InputError, 'a non-empty array of chat model directories', what, dirs);
  }
}

/**
 * Streams the weighted average of the ingredients' tensors into `fd` as a safetensors file laid
 * out as the first ingredient's: chunk by chunk, `X[N, c]` holds each ingredient's next `c`
 * values and one GEMM `out[1, c] = w[1, N] · X[N, c]` averages them.
 */
function averageInto(fd: number, list: readonly Ingredient[], weights: readonly number[]): void {
  const N = list.length;
  const first = (list[0] as Ingredient).weights.header;
  writeAll(
    fd,
    encodeHeader(
      first.entries.map((e) => ({ name: e.name, shape: e.shape, bytes: e.end - e.begin })),
      first.metadata,
    ),
  );
  // Files written alike (the usual case: one writer, one architecture) average as one flat run
  // of floats; otherwise tensor by tensor, each found by name.
  const sameLayout = list.every((m) =>
    m.weights.header.entries.every((e, k) => e.name === first.entries[k]?.name && e.begin === first.entries[k]?.begin),
  );
  const runs: { src: number[]; floats: number }[] = sameLayout
    ? [{ src: list.map((m) => m.weights.header.dataStart), floats: first.dataBytes / 4 }]
    : first.entries.map((e) => ({
        src: list.map((m) => m.weights.header.dataStart + (m.weights.byName.get(e.name) as StEntry).begin),
        floats: (e.end - e.begin) / 4,
      }));
  const chunk = Math.min(CHUNK_FLOATS, Math.max(1, ...runs.map((r) => r.floats)));
  const X = new Float32Array(N * chunk);
  const out = new Float32Array(chunk);
  const w = Float32Array.from(weights);
  for (const run of runs) {
    for (let at = 0; at < run.floats; at += chunk) {
      const c = Math.min(chunk, run.floats - at);
      list.forEach((m, i) => {
        readExactly(
          m.weights.fd,
          new Uint8Array(X.buffer, i * c * 4, c * 4),
          (run.src[i] as number) + at * 4,
          m.weights.file,
        );
      });
      const o = out.subarray(0, c);
      ops.gemm({ out: o, a: w, b: X.subarray(0, N * c), m: 1, n: c, k: N });
      writeAll(fd, new Uint8Array(o.buffer, o.byteOffset, c * 4));
    }
  }
}

/**
 * Averages chat models fine-tuned from the same base into a new chat model directory: every
 * tensor of `model.safetensors` is the weighted mean of the ingredients' (the native GEMM, chunk
 * by chunk: memory stays at a few chunks whatever the model's size). `config.json` and the
 * tokenizer files are the first ingredient's, `chat.json` too (its thresholds included:
 * recalibrate the soup) with `training` recording the soup. `model.safetensors` and each other
 * file are written atomically; write into a new directory (`outDir` may be an ingredient's: all
 * is read before anything is replaced).
 *
 * The ingredients must have the same label sets (in the same order), the same architecture
 * (config.json and every tensor's name and shape) and the same tokenizer files; otherwise an
 * `ERR_INPUT` names what differs. A malformed file is an `ERR_CHECKPOINT`.
 *
 * Synchronous: file I/O and the GEMMs run on the calling thread (four 4.8 M-parameter models
 * average in about 0.2 s on a shared 2-core machine).
 *
 * @example
 * ```ts
 * // three fine-tunes of one encoder, same head seed, other data orders
 * averageChatModels(['runs/seed1', 'runs/seed2', 'runs/seed3'], 'models/soup');
 * using soup = await ChatModel.load('models/soup');
 * ```
 */
export function averageChatModels(
  dirs: readonly string[],
  outDir: string,
  options: AverageOptions = {},
): AverageReport {
  checkDirs(dirs, 'dirs');
  if (typeof outDir !== 'string' || outDir === '') throw expected(InputError, 'a directory path', 'outDir', outDir);
  checkOptions(options);
  const weights = normalizeWeights(options.weights, dirs.length, 'options.weights');
  const t0 = performance.now();
  const list: Ingredient[] = [];
  try {
    dirs.forEach((d, i) => list.push(openIngredient(d, `dirs[${String(i)}] ('${d}')`)));
    checkCompatible(list);
    const first = list[0] as Ingredient;
    try {
      fs.mkdirSync(outDir, { recursive: true });
    } catch (err) {
      throw new CheckpointError(`Cannot create the model directory '${outDir}': ${(err as Error).message}`);
    }
    writeBytesAtomic(path.join(outDir, WEIGHTS_FILE), (fd) => {
      averageInto(fd, list, weights);
    });
    writeFileAtomic(path.join(outDir, CONFIG_FILE), first.configText);
    for (const [name, bytes] of first.tokenizer) {
      writeBytesAtomic(path.join(outDir, name), (fd) => {
        writeAll(fd, bytes);
      });
    }
    const meta = {
      ...first.meta,
      training: {
        method: 'weight-average',
        ingredients: dirs.map((d) => path.basename(path.resolve(d))),
        weights,
        finishedAt: new Date().toISOString(),
      },
    };
    writeFileAtomic(path.join(outDir, META_FILE), `${JSON.stringify(meta, null, 2)}\n`);
    const entries = first.weights.header.entries;
    return {
      dir: outDir,
      ingredients: [...dirs],
      weights,
      tensors: entries.length,
      parameters: first.weights.header.dataBytes / 4,
      seconds: (performance.now() - t0) / 1000,
    };
  } finally {
    closeIngredients(list);
  }
}

/**
 * The single number a soup step compares: the mean of the heads' main metrics on the held-out
 * set (intent accuracy, emotion macro-F1, slot F1), those of the heads the examples label.
 */
export function chatScore(m: ChatMetrics): number {
  const parts: number[] = [];
  if (m.intent) parts.push(m.intent.accuracy);
  if (m.emotions) parts.push(m.emotions.macroF1);
  if (m.slots) parts.push(m.slots.f1);
  return parts.length > 0 ? parts.reduce((a, b) => a + b, 0) / parts.length : 0;
}

/** Options of {@link greedySoup}. */
export interface GreedySoupOptions {
  /** How the ingredients and candidate soups are loaded to be evaluated (device, ...). */
  load?: ChatModelOptions;
  /** Turns per forward while evaluating; default 64. */
  batchSize?: number;
  /** An ingredient is kept when the soup's score does not drop by more than this; default 0. */
  tolerance?: number;
  /** Scratch space for the candidate soups; default a fresh directory under the system's temp. */
  workDir?: string;
  /** After each ingredient was tried. */
  onStep?: (step: GreedySoupStep) => void;
}

/** One ingredient evaluated alone on the held-out set. */
export interface SoupIngredient {
  dir: string;
  score: number;
  metrics: ChatMetrics;
}

/** One step of {@link greedySoup}: the soup with `dir` added, evaluated. */
export interface GreedySoupStep {
  dir: string;
  /** The held-out score of the soup with the ingredient (the ingredient's own for the first). */
  score: number;
  kept: boolean;
  /** The soup's score after the step. */
  soupScore: number;
  metrics: ChatMetrics;
}

/** What {@link greedySoup} returns. */
export interface GreedySoupReport {
  /** Where the soup was written. */
  dir: string;
  /** Every ingredient alone, best first (the order they were tried in). */
  ingredients: SoupIngredient[];
  steps: GreedySoupStep[];
  /** The ingredients in the soup (uniformly averaged), in the order they were added. */
  kept: string[];
  /** The soup's held-out score and metrics. */
  score: number;
  metrics: ChatMetrics;
  seconds: number;
}

/**
 * The greedy soup: evaluates each ingredient on `heldOut`, sorts them by score ({@link chatScore}),
 * starts from the best and adds each next one to the uniform average when the held-out score of
 * the average does not drop (by more than `tolerance`); writes the final soup to `outDir` (as
 * {@link averageChatModels}; the best ingredient alone when nothing else was kept). Ties keep
 * the order of `dirs`. Costs one evaluation per ingredient and one per later ingredient's
 * candidate soup.
 *
 * Choose the ingredients' hyperparameters and the soup on held-out data that the final test
 * set does not include: the recipe selects on what it is given.
 *
 * @example
 * ```ts
 * const r = await greedySoup(dirs, validation, 'models/soup');
 * console.log(r.kept, r.score, r.steps.map((s) => [s.dir, s.kept, s.score]));
 * ```
 */
export async function greedySoup(
  dirs: readonly string[],
  heldOut: readonly ChatExample[] | string,
  outDir: string,
  options: GreedySoupOptions = {},
): Promise<GreedySoupReport> {
  checkDirs(dirs, 'dirs');
  if (typeof outDir !== 'string' || outDir === '') throw expected(InputError, 'a directory path', 'outDir', outDir);
  checkOptions(options);
  const tolerance = options.tolerance ?? 0;
  if (typeof tolerance !== 'number' || !(tolerance >= 0)) {
    throw expected(InputError, 'a number >= 0', 'options.tolerance', tolerance);
  }
  const batchSize = options.batchSize ?? 64;
  const t0 = performance.now();
  // Refuse incompatible ingredients before spending an evaluation on any.
  const opened: Ingredient[] = [];
  try {
    dirs.forEach((d, i) => opened.push(openIngredient(d, `dirs[${String(i)}] ('${d}')`)));
    checkCompatible(opened);
  } finally {
    closeIngredients(opened);
  }
  const data = await readChatExamples(heldOut, 'heldOut');
  if (data.length === 0)
    throw new InputError('Expected at least one held-out example for greedySoup but received none');
  const evaluate = async (dir: string): Promise<ChatMetrics> => {
    const chat = await ChatModel.load(dir, options.load ?? {});
    try {
      return await chat.evaluate(data, { batchSize });
    } finally {
      chat.dispose();
    }
  };
  const ingredients: SoupIngredient[] = [];
  for (const dir of dirs) {
    const metrics = await evaluate(dir);
    ingredients.push({ dir, score: chatScore(metrics), metrics });
  }
  const order = ingredients.map((x, i) => ({ x, i })).sort((a, b) => b.x.score - a.x.score || a.i - b.i);
  const sorted = order.map((o) => o.x);
  const best = sorted[0] as SoupIngredient;
  const kept = [best.dir];
  let score = best.score;
  let metrics = best.metrics;
  const steps: GreedySoupStep[] = [{ dir: best.dir, score, kept: true, soupScore: score, metrics }];
  options.onStep?.(steps[0] as GreedySoupStep);
  const work = options.workDir ?? fs.mkdtempSync(path.join(os.tmpdir(), 'elmo-soup-'));
  try {
    for (const next of sorted.slice(1)) {
      const candidate = path.join(work, `candidate-${String(steps.length)}`);
      averageChatModels([...kept, next.dir], candidate);
      const m = await evaluate(candidate);
      fs.rmSync(candidate, { recursive: true, force: true });
      const s = chatScore(m);
      const keep = s >= score - tolerance;
      if (keep) {
        kept.push(next.dir);
        score = s;
        metrics = m;
      }
      const step: GreedySoupStep = { dir: next.dir, score: s, kept: keep, soupScore: score, metrics: m };
      steps.push(step);
      options.onStep?.(step);
    }
  } finally {
    if (options.workDir === undefined) fs.rmSync(work, { recursive: true, force: true });
  }
  averageChatModels(kept, outDir);
  return { dir: outDir, ingredients: sorted, steps, kept, score, metrics, seconds: (performance.now() - t0) / 1000 };
}

// ------------------------------------------------------------------------------------------------
// Logit ensembles

/** Options of {@link ChatEnsemble.create}. */
export interface ChatEnsembleOptions {
  /** One non-negative weight per member (not all 0), normalized to sum to 1; default uniform. */
  weights?: readonly number[];
  /** Default: the first member's. */
  outOfScopeThreshold?: number;
  /** Default: the first member's. */
  emotionThreshold?: number;
}

/**
 * Several chat models with the same label sets answering as one: each turn goes through every
 * member (one after another), and the ensemble averages their probabilities (weighted, default
 * uniform): the intent distribution, each emotion's probability and, word by word, the slot tag
 * distribution. Words are the turn's `wordSpans`, the same for every tokenizer, so the members
 * may differ in size, architecture, tokenizer and length limit; a word only some members read
 * (the others cut the turn before it) is averaged over those. The averages are then decoded as
 * {@link ChatModel} decodes its own: the intents by score, the emotions at the threshold, the
 * best tag of each word into BIO slots (`decodeSlots`).
 *
 * The ensemble does not own models given to {@link ChatEnsemble.create}; those it loaded
 * ({@link ChatEnsemble.load}) it frees on {@link dispose}.
 *
 * @example
 * ```ts
 * using ensemble = await ChatEnsemble.load(['models/a', 'models/b', 'models/c']);
 * const u = await ensemble.understand('book a table for two in paris');
 * const m = await ensemble.evaluate(test); // same shape as ChatModel.evaluate
 * ```
 */
export class ChatEnsemble {
  readonly #members: readonly ChatModel[];
  readonly #weights: Float32Array;
  readonly #owned: boolean;
  #outOfScopeThreshold: number;
  #emotionThreshold: number;
  #disposed = false;

  private constructor(members: readonly ChatModel[], weights: Float32Array, owned: boolean, o: ChatEnsembleOptions) {
    const first = members[0] as ChatModel;
    this.#members = members;
    this.#weights = weights;
    this.#owned = owned;
    this.#outOfScopeThreshold = checkUnit(
      o.outOfScopeThreshold ?? first.outOfScopeThreshold,
      'options.outOfScopeThreshold',
    );
    this.#emotionThreshold = checkUnit(o.emotionThreshold ?? first.emotionThreshold, 'options.emotionThreshold');
  }

  /** An ensemble of live chat models with the same intents, emotions and slot tags (in order). */
  static create(models: readonly ChatModel[], options: ChatEnsembleOptions = {}): ChatEnsemble {
    return ChatEnsemble.#make(models, options, false);
  }

  /** Loads each directory as a {@link ChatModel} (with `options`) into an ensemble that owns them. */
  static async load(
    dirs: readonly string[],
    options: ChatModelOptions & ChatEnsembleOptions = {},
  ): Promise<ChatEnsemble> {
    checkDirs(dirs, 'dirs');
    checkOptions(options);
    const { weights, outOfScopeThreshold, emotionThreshold, ...load } = options;
    const models: ChatModel[] = [];
    try {
      for (const d of dirs) models.push(await ChatModel.load(d, load));
      return ChatEnsemble.#make(
        models,
        {
          ...(weights !== undefined ? { weights } : {}),
          ...(outOfScopeThreshold !== undefined ? { outOfScopeThreshold } : {}),
          ...(emotionThreshold !== undefined ? { emotionThreshold } : {}),
        },
        true,
      );
    } catch (err) {
      for (const m of models) m.dispose();
      throw err;
    }
  }

  static #make(models: readonly ChatModel[], options: ChatEnsembleOptions, owned: boolean): ChatEnsemble {
    const untyped: unknown = models;
    if (!Array.isArray(untyped) || untyped.length === 0 || untyped.some((m) => !(m instanceof ChatModel))) {
      throw expected(InputError, 'a non-empty array of ChatModels', 'models', models);
    }
    checkOptions(options);
    models.forEach((m, i) => {
      if (m.disposed)
        throw new DisposedError(`Expected live chat models for models but models[${String(i)}] is disposed`);
    });
    const first = models[0] as ChatModel;
    models.forEach((m, i) => {
      for (const key of ['intents', 'emotions', 'slotTags'] as const) {
        const a = first[key];
        const b = m[key];
        if (a.length !== b.length || a.some((x, k) => x !== b[k])) {
          throw new InputError(
            `Expected chat models with the same label sets for models but models[${String(i)}]'s ${key} differ ` +
              `from models[0]'s ${listDifference(b, a)}`,
          );
        }
      }
    });
    const w = normalizeWeights(options.weights, models.length, 'options.weights');
    return new ChatEnsemble([...models], Float32Array.from(w), owned, options);
  }

  /** The members, in order. */
  get members(): readonly ChatModel[] {
    return this.#members;
  }
  /** The normalized weights of the members. */
  get weights(): readonly number[] {
    return Array.from(this.#weights);
  }
  get intents(): readonly string[] {
    return (this.#members[0] as ChatModel).intents;
  }
  get emotions(): readonly string[] {
    return (this.#members[0] as ChatModel).emotions;
  }
  /** Slot names. */
  get slots(): readonly string[] {
    return (this.#members[0] as ChatModel).slots;
  }
  /** The BIO tags of the slot head, `O` first. */
  get slotTags(): readonly string[] {
    return (this.#members[0] as ChatModel).slotTags;
  }
  /** Parameters of all the members together. */
  get parameters(): number {
    return this.#members.reduce((s, m) => s + m.model.config.numParameters, 0);
  }
  /** Turns whose best (averaged) intent scores below it are out of scope (0: never). */
  get outOfScopeThreshold(): number {
    return this.#outOfScopeThreshold;
  }
  set outOfScopeThreshold(v: number) {
    this.#outOfScopeThreshold = checkUnit(v, 'outOfScopeThreshold');
  }
  /** Emotions whose averaged probability is at or above it are reported. */
  get emotionThreshold(): number {
    return this.#emotionThreshold;
  }
  set emotionThreshold(v: number) {
    this.#emotionThreshold = checkUnit(v, 'emotionThreshold');
  }

  /**
   * The averaged probabilities of each head for several turns (the members' `scores`, weighted):
   * `words` are those of the member that read the most of the turn, and `truncated` holds when
   * every member cut the turn.
   */
  async scores(turns: readonly TurnInput[]): Promise<TurnScores[]> {
    this.#checkLive('scores');
    const per: TurnScores[][] = [];
    for (const m of this.#members) per.push(await m.scores(turns));
    return this.#mean(per);
  }

  /** What the members together understand of one turn; see {@link ChatModel.understand}. */
  async understand(text: string, options: { context?: readonly string[] } = {}): Promise<Understanding> {
    checkOptions(options);
    const [u] = await this.understandMany([
      { text, ...(options.context !== undefined ? { context: options.context } : {}) },
    ]);
    return u as Understanding;
  }

  /** {@link understand} for several turns, each member one forward over them all. */
  async understandMany(turns: readonly TurnInput[]): Promise<Understanding[]> {
    const scores = await this.scores(turns);
    return scores.map((s, b) => this.#decode(s, (turns[b] as TurnInput).text));
  }

  /**
   * Intent accuracy and macro-F1, emotion micro/macro-F1 (at {@link emotionThreshold}) and slot
   * entity F1 of the ensemble on labelled examples, as {@link ChatModel.evaluate} reports them;
   * `turnsPerSecond` counts every member's forwards.
   */
  async evaluate(
    examples: readonly ChatExample[] | string,
    options: { batchSize?: number } = {},
  ): Promise<ChatMetrics> {
    this.#checkLive('evaluate');
    checkOptions(options);
    const data = await readChatExamples(examples, 'examples');
    if (data.length === 0) throw new InputError('Expected at least one example for evaluate but received none');
    data.forEach((ex, i) => {
      this.#checkLabels(ex, `examples[${String(i)}]`);
    });
    const batchSize = options.batchSize ?? 64;
    if (!Number.isSafeInteger(batchSize) || batchSize < 1) {
      throw expected(InputError, 'an integer >= 1', 'options.batchSize', batchSize);
    }
    const acc = new ChatMetricsAccumulator(this.intents, this.emotions, this.slotTags, this.#emotionThreshold);
    const t0 = performance.now();
    for (let at = 0; at < data.length; at += batchSize) {
      const part = data.slice(at, at + batchSize);
      const scores = await this.scores(part);
      scores.forEach((s, b) => {
        acc.add(part[b] as ChatExample, {
          intent: argmax(s.intentProbs, 0, this.intents.length),
          emotionProbs: s.emotionProbs,
          words: s.words,
          tags: this.slotTags.length > 0 ? this.#bestTags(s).tags : [],
        });
      });
    }
    return acc.result(data.length, (performance.now() - t0) / 1000);
  }

  /** Frees the members the ensemble loaded (not those given to {@link create}). Idempotent. */
  dispose(): void {
    if (this.#disposed) return;
    this.#disposed = true;
    if (this.#owned) for (const m of this.#members) m.dispose();
  }

  [Symbol.dispose](): void {
    this.dispose();
  }

  get disposed(): boolean {
    return this.#disposed;
  }

  // ---------------------------------------------------------------------------------------------

  #checkLive(what: string): void {
    if (this.#disposed)
      throw new DisposedError(`Expected a live chat ensemble for ${what} but received a disposed one`);
    this.#members.forEach((m, i) => {
      if (m.disposed) {
        throw new DisposedError(`Expected live members for ${what} but the ensemble's member ${String(i)} is disposed`);
      }
    });
  }

  #checkLabels(ex: ChatExample, at: string): void {
    if (ex.intent !== undefined && this.intents.length > 0 && !this.intents.includes(ex.intent)) {
      throw new InputError(
        `Expected one of the model's ${String(this.intents.length)} intents for ${at}.intent but received '${ex.intent}'`,
      );
    }
    for (const e of ex.emotions ?? []) {
      if (this.emotions.length > 0 && !this.emotions.includes(e)) {
        throw new InputError(`Expected one of the model's emotions for ${at}.emotions but received '${e}'`);
      }
    }
    for (const s of ex.slots ?? []) {
      if (this.slots.length > 0 && !this.slots.includes(s.name)) {
        throw new InputError(`Expected one of the model's slots for ${at}.slots but received '${s.name}'`);
      }
    }
  }

  /**
   * The weighted mean of the members' scores of a batch. The words every member read, and the
   * intent and emotion probabilities, of all the turns go in one `[N, D]` matrix averaged by one
   * GEMM; the words past the shortest reading of a turn (it was cut) are averaged span by span
   * over the members that read them, with their weights renormalized.
   */
  #mean(per: readonly TurnScores[][]): TurnScores[] {
    const N = per.length;
    const first = per[0] as TurnScores[];
    const B = first.length;
    const Li = this.intents.length;
    const Le = this.emotions.length;
    const S = this.slotTags.length;
    const read = (i: number, b: number): TurnScores => (per[i] as TurnScores[])[b] as TurnScores;
    const counts = first.map((_, b) => per.map((_m, i) => read(i, b).words.length));
    const common = counts.map((c) => Math.min(...c));
    const at = new Int32Array(B + 1);
    for (let b = 0; b < B; b++) at[b + 1] = (at[b] as number) + Li + Le + (common[b] as number) * S;
    const D = at[B] as number;
    const X = new Float32Array(N * D);
    for (let i = 0; i < N; i++) {
      for (let b = 0; b < B; b++) {
        const s = read(i, b);
        const o = i * D + (at[b] as number);
        X.set(s.intentProbs, o);
        X.set(s.emotionProbs, o + Li);
        X.set(s.wordTagProbs.subarray(0, (common[b] as number) * S), o + Li + Le);
      }
    }
    const mean = new Float32Array(D);
    if (D > 0) ops.gemm({ out: mean, a: this.#weights, b: X, m: 1, n: D, k: N });
    return first.map((_, b): TurnScores => {
      const c = counts[b] as number[];
      const most = c.indexOf(Math.max(...c));
      const W = c[most] as number;
      const o = at[b] as number;
      const wordTagProbs = new Float32Array(W * S);
      wordTagProbs.set(mean.subarray(o + Li + Le, at[b + 1]));
      // Words [from, to) read by the same members: one GEMM over those members.
      for (let from = common[b] as number; from < W;) {
        const readers = c.map((n, i) => (n > from ? i : -1)).filter((i) => i >= 0);
        const to = Math.min(...readers.map((i) => c[i] as number));
        const n = (to - from) * S;
        const sub = new Float32Array(readers.length * n);
        readers.forEach((i, r) => {
          sub.set(read(i, b).wordTagProbs.subarray(from * S, to * S), r * n);
        });
        const w = Float32Array.from(readers, (i) => this.#weights[i] as number);
        const sum = w.reduce((a, x) => a + x, 0);
        const wn = sum > 0 ? w.map((x) => x / sum) : w.fill(1 / readers.length);
        ops.gemm({ out: wordTagProbs.subarray(from * S, to * S), a: wn, b: sub, m: 1, n, k: readers.length });
        from = to;
      }
      return {
        intentProbs: mean.slice(o, o + Li),
        emotionProbs: mean.slice(o + Li, o + Li + Le),
        words: read(most, b).words,
        wordTagProbs,
        truncated: c.every((_n, i) => read(i, b).truncated),
      };
    });
  }

  /** Each word's best tag and its probability. */
  #bestTags(s: TurnScores): { tags: string[]; scores: Float32Array } {
    const S = this.slotTags.length;
    const W = s.words.length;
    const tags = new Array<string>(W).fill('O');
    const scores = new Float32Array(W);
    if (S === 0) return { tags, scores };
    for (let w = 0; w < W; w++) {
      const t = argmax(s.wordTagProbs, w * S, S);
      tags[w] = this.slotTags[t] ?? 'O';
      scores[w] = s.wordTagProbs[w * S + t] as number;
    }
    return { tags, scores };
  }

  #decode(s: TurnScores, text: string): Understanding {
    const intents: Scored[] = this.intents
      .map((label, i) => ({ label, score: s.intentProbs[i] as number }))
      .sort((a, b) => b.score - a.score);
    const best = intents[0] ?? null;
    const emotions: Scored[] = this.emotions
      .map((label, i) => ({ label, score: s.emotionProbs[i] as number }))
      .filter((e) => e.score >= this.#emotionThreshold)
      .sort((a, b) => b.score - a.score);
    const { tags, scores } = this.#bestTags(s);
    return {
      intent: best,
      intents,
      emotions,
      slots: decodeSlots(text, s.words, tags, scores),
      outOfScope: best !== null && best.score < this.#outOfScopeThreshold,
      truncated: s.truncated,
    };
  }
}

/** Index of the largest of `v[from .. from + n)`, relative to `from` (the first on ties). */
function argmax(v: ArrayLike<number>, from: number, n: number): number {
  let k = 0;
  for (let i = 1; i < n; i++) if ((v[from + i] as number) > (v[from + k] as number)) k = i;
  return k;
}

function checkOptions(options: unknown): void {
  if (!isPlainObject(options)) throw expected(InputError, 'an object', 'options', options);
}

function checkUnit(v: unknown, what: string): number {
  if (typeof v !== 'number' || !(v >= 0 && v <= 1)) throw expected(InputError, 'a number in [0, 1]', what, v);
  return v;
}
