/**
 * Pruning a fine-tuned BERT classifier: fewer attention heads and a narrower feed-forward
 * network, each followed (in {@link prune}) by a short recovery fine-tune.
 *
 * - **FFN neurons** ({@link pruneFfn}): neuron j of a layer computes
 *   `W_out[:, j] · gelu(W_in[j, :] · x + b_in[j])`; its importance is
 *   `‖(W_in[j, :], b_in[j])‖₂ · ‖W_out[:, j]‖₂`, the size of that rank-one path (a neuron with a
 *   zero input row and bias, or a zero output column, scores 0 and contributes nothing). Each
 *   layer keeps its own most important neurons, the same number in every layer, since a
 *   Hugging Face config has one `intermediate_size`: the checkpoint is simply a smaller BERT, and
 *   the engine runs it at the smaller width (real speed, every runtime loads it).
 * - **Attention heads** ({@link headImportance}, {@link selectHeads}, {@link pruneHeads}): the
 *   importance of a head is the increase of the mean cross-entropy on labelled examples when
 *   that head alone is masked (its output columns of the attention output projection zeroed):
 *   the ablation that Michel et al. (2019, "Are Sixteen Heads Really Better than One?")
 *   approximate with a gradient. Heads are ranked globally, least important first; every layer
 *   keeps at least one. transformers 5 cannot express a layer with fewer heads, so in the
 *   checkpoint a pruned head keeps its place in full-size tensors with its query, key and value
 *   rows (and biases) and its attention-output columns zeroed, and `config.json` lists it under
 *   `elmo_pruned_heads` (`{"0": [1, 3]}`): transformers computes the model without the head.
 *   elmo removes the listed heads when it loads such a checkpoint (each layer runs its kept
 *   heads only: less work, fewer parameters), trains the narrower layers, and writes the
 *   full-size tensors with the zeros back when it saves.
 *
 * In an engine that keeps the zeroed heads (transformers), fine-tuning leaves them at zero: with
 * a head's value rows and output columns zero, every gradient of its parameters is exactly zero
 * (its output is zero, and so is the gradient flowing into it), and AdamW moves a zero weight
 * with a zero gradient nowhere.
 *
 * The weights are edited on the TypeScript side through safetensors files (lib/safetensors.ts):
 * norms and row / column gathers, one pass over each matrix, once per pruning. Every function
 * returns a new {@link Bert} and leaves its input model as it was.
 *
 * @example
 * ```ts
 * import { Bert, prune } from 'elmo-chat';
 *
 * const model = await Bert.load('models/banking77');
 * const r = await prune(model, { data: 'train.csv', heads: 0.25, ffn: 0.5, recoverEpochs: 1, evalSet: 'dev.csv' });
 * console.log(r.parameters, r.eval?.pruned.accuracy, r.eval?.recovered?.accuracy);
 * await r.model.save('models/banking77-pruned'); // transformers 5 loads it
 * ```
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';

import { Bert, jointHost } from './bert';
import type { BertRunOptions } from './bert';
import { CheckpointError, DisposedError, InputError, describeValue, expected } from './errors';
import { writeFileAtomic } from './fs-atomic';
import { isPlainObject, openSafetensors, readSafetensors, writeSafetensors } from './safetensors';
import type { F32Tensor } from './safetensors';
import { checkLabels, encodeExamples, inferTask, packBatches, validateExamples } from './train/data';
import type { PackedBatch } from './train/data';
import { collectExamples } from './train/fine-tune';
import type { EvalMetrics, ExampleSource, FineTuneOptions, FineTuneProgress, FineTuneResult } from './train/fine-tune';
import { Rng } from './train/rng';

/** The `config.json` key that lists a checkpoint's pruned heads: `{"<layer>": [head, ...]}`. */
export const PRUNED_HEADS_KEY = 'elmo_pruned_heads';

/**
 * Attention heads by layer, `{ 0: [1, 3], 2: [0] }`: 0-based layer and head indices. As
 * `elmo_pruned_heads` in `config.json` the layer keys are strings (`{"0": [1, 3]}`).
 */
export type PrunedHeads = Readonly<Record<number, readonly number[]>>;

/** Options shared by the functions that make a new model. */
export interface PruneRunOptions {
  /**
   * How the new model runs (device, threads, precision, ...); default the device and
   * `maxSeqLen` of the model pruned.
   */
  runOptions?: BertRunOptions;
}

/** Options of {@link pruneFfn}: exactly one of `keep` and `sparsity`. */
export interface PruneFfnOptions extends PruneRunOptions {
  /** Neurons kept in every layer, in [1, intermediate_size]. */
  keep?: number;
  /** Share of each layer's neurons removed, in [0, 1); the count kept is rounded, at least 1. */
  sparsity?: number;
}

/** Options of {@link headImportance}. */
export interface HeadImportanceOptions extends PruneRunOptions {
  /** At most this many examples (a seeded sample when there are more); default 1000. */
  maxExamples?: number;
  /** Sequences per forward; default 64. */
  batchSize?: number;
  /** The sample's seed; default 42. */
  seed?: number;
  /** After each head measured. */
  onProgress?: (p: { done: number; total: number }) => void;
}

/** One head's ablation: the model's numbers with that head alone masked. */
export interface HeadScore {
  layer: number;
  head: number;
  /** Mean cross-entropy with the head masked. */
  loss: number;
  /** Accuracy with the head masked. */
  accuracy: number;
  /** `loss - baseLoss`: how much the model needs the head (negative: better without it). */
  importance: number;
}

/** What {@link headImportance} measured. */
export interface HeadImportanceResult {
  /** Examples measured on. */
  examples: number;
  /** Mean cross-entropy of the model as it is. */
  baseLoss: number;
  baseAccuracy: number;
  /** Every head, by layer then head. */
  heads: HeadScore[];
}

/** Options of {@link selectHeads}: at most one of `count` and `sparsity`. */
export interface SelectHeadsOptions {
  /** Heads to prune in all. */
  count?: number;
  /** Share of all heads to prune, in [0, 1); the count is rounded. */
  sparsity?: number;
  /** Heads every layer keeps, at least 1 (the default). */
  minPerLayer?: number;
}

/** Progress of {@link prune}. */
export type PruneProgress =
  | { phase: 'importance'; done: number; total: number }
  | { phase: 'recover'; fineTune: FineTuneProgress }
  | { phase: 'evaluate'; stage: 'before' | 'pruned' | 'recovered' };

/** Options of {@link prune}. */
export interface PruneOptions extends PruneRunOptions {
  /**
   * Labelled training examples (an array, or a `.jsonl` / `.csv` file): the head importance is
   * measured on a sample of them and the recovery fine-tune trains on them. Required unless
   * the heads are given and `recoverEpochs` is 0.
   */
  data?: ExampleSource;
  /** Share of all heads to prune, least important first (default 0), or the heads themselves. */
  heads?: number | PrunedHeads;
  /** Share of each layer's FFN neurons to prune (default 0). */
  ffn?: number;
  /** Heads every layer keeps when `heads` is a share, at least 1 (the default). */
  minHeadsPerLayer?: number;
  /** Examples the head importance is measured on (see {@link HeadImportanceOptions.maxExamples}); default 1000. */
  importanceExamples?: number;
  /** Epochs of the recovery fine-tune; default 1, 0 for none. */
  recoverEpochs?: number;
  /** Further options of the recovery fine-tune (learning rate, batch size, ...). */
  recover?: Omit<FineTuneOptions, 'epochs' | 'onProgress'>;
  /** Evaluated before pruning, after pruning and after recovery (accuracy and the rest). */
  evalSet?: ExampleSource;
  /** Sample and fine-tune seed; default 42. */
  seed?: number;
  onProgress?: (p: PruneProgress) => void;
}

/** What {@link prune} returns. */
export interface PruneResult {
  /** The pruned (and recovered) model, new: dispose it when done. The input model is unchanged. */
  model: Bert;
  /** Every pruned head of the new model (those the input had already included). */
  heads: PrunedHeads;
  /** Pruned heads, and all heads of the model. */
  headsPruned: number;
  headsTotal: number;
  intermediateSize: { before: number; after: number };
  /**
   * Parameters before and after, as elmo holds them (pruned heads removed). The checkpoint's
   * attention tensors keep their full size, with zeros.
   */
  parameters: { before: number; after: number };
  /** The head ablation, when heads were chosen by importance. */
  importance?: HeadImportanceResult;
  /** The recovery fine-tune, when there was one. */
  recovery?: FineTuneResult;
  /** With `evalSet`: metrics before pruning, after pruning, and after recovery. */
  eval?: { before: EvalMetrics; pruned: EvalMetrics; recovered?: EvalMetrics };
  seconds: number;
}

// ------------------------------------------------------------------------------------------------
// Public API

/**
 * Measures how much the model needs each attention head: the mean cross-entropy and accuracy of
 * a single-label classifier on labelled examples with each head masked in turn (its columns of
 * the attention output projection zeroed), against the model as it is. Runs `1 + layers x heads`
 * evaluations on a copy of the model.
 *
 * Rejects with `ERR_INPUT` for a model without a single-label classification head, examples of
 * another task or with labels the head does not have, and bad options.
 *
 * @example
 * ```ts
 * const imp = await headImportance(model, 'train.csv', { maxExamples: 1000 });
 * const heads = selectHeads(imp, { sparsity: 0.25 }); // { 0: [2], 3: [0, 1], ... }
 * ```
 */
export async function headImportance(
  model: Bert,
  examples: ExampleSource,
  options: HeadImportanceOptions = {},
): Promise<HeadImportanceResult> {
  checkModel(model, 'headImportance');
  checkObject(options, 'options');
  const maxExamples = options.maxExamples ?? 1000;
  checkInteger(maxExamples, 1, undefined, 'options.maxExamples');
  const batchSize = options.batchSize ?? 64;
  checkInteger(batchSize, 1, undefined, 'options.batchSize');
  const seed = options.seed ?? 42;
  checkInteger(seed, 0, undefined, 'options.seed');
  if (options.onProgress !== undefined && typeof options.onProgress !== 'function') {
    throw expected(InputError, 'a function', 'options.onProgress', options.onProgress);
  }
  const run = runOptionsOf(model, options.runOptions);
  const info = model.config;
  if (!info.heads.classifier || (info.problemType ?? 'single_label_classification') !== 'single_label_classification') {
    throw new InputError(
      'Expected a model with a single-label sequence-classification head for headImportance but received one without',
    );
  }
  const all = await collectExamples(examples, 'examples');
  if (all.length === 0)
    throw new InputError('Expected at least one labelled example for headImportance but received none');
  const task = inferTask(all);
  if (task !== 'sequence') {
    throw new InputError(
      `Expected single-label examples ({ text, label }) for headImportance but received '${task}' examples`,
    );
  }
  validateExamples(all, task);
  checkLabels(all, info.labels, task);
  let sample = all;
  if (all.length > maxExamples) {
    const order = new Rng(seed, 0).shuffle(Array.from({ length: all.length }, (_, i) => i));
    sample = order
      .slice(0, maxExamples)
      .sort((a, b) => a - b)
      .map((i) => all[i] ?? (all[0] as (typeof all)[number]));
  }
  const encoded = encodeExamples(model.tokenizer, sample, { task, labels: info.labels, maxSeqLen: model.maxSeqLen });
  const batches = packBatches(encoded, {
    maxTokens: batchSize * 128,
    maxBatchSize: batchSize,
    shuffle: false,
    seed: 0,
    epoch: 0,
  });
  const labelOf = Int32Array.from(encoded, (e) => e.label ?? 0);

  const L = info.numLayers;
  const NH = info.numHeads;
  const H = info.hiddenSize;
  const d = H / NH;
  return withSavedModel(model, async (dir) => {
    const scratch = await Bert.load(dir, run);
    const file = path.join(dir, 'model.safetensors');
    const st = openSafetensors(file);
    let fd: number | undefined;
    try {
      const host = jointHost(scratch);
      const measure = async (): Promise<{ loss: number; accuracy: number }> =>
        lossAndAccuracy((b) => host.forward(b, { hidden: false, scores: 'softmax' }), batches, labelOf, info.numLabels);
      const base = await measure();
      const prefix = st.byName.has('bert.embeddings.word_embeddings.weight') ? 'bert.' : '';
      fd = fs.openSync(file, 'r+');
      const heads: HeadScore[] = [];
      for (let l = 0; l < L; l++) {
        const name = `${prefix}encoder.layer.${String(l)}.attention.output.dense.weight`;
        const entry = st.byName.get(name);
        if (entry === undefined || entry.end - entry.begin !== H * H * 4) {
          throw new CheckpointError(`${file}: ${name} is missing or not [${String(H)}, ${String(H)}]`);
        }
        const at = st.header.dataStart + entry.begin;
        const original = new Float32Array(H * H);
        readAll(st.fd, original, at, file);
        for (let h = 0; h < NH; h++) {
          // The head masked: its d input columns of the output projection zeroed, in place in
          // the file, which the scratch model reads back; then the original tensor restored.
          const masked = Float32Array.from(original);
          zeroColumns(masked, H, H, h * d, (h + 1) * d);
          writeAt(fd, masked, at);
          await host.native.loadEncoder(file, true);
          const m = await measure();
          heads.push({ layer: l, head: h, loss: m.loss, accuracy: m.accuracy, importance: m.loss - base.loss });
          options.onProgress?.({ done: heads.length, total: L * NH });
        }
        writeAt(fd, original, at);
      }
      return { examples: sample.length, baseLoss: base.loss, baseAccuracy: base.accuracy, heads };
    } finally {
      if (fd !== undefined) fs.closeSync(fd);
      fs.closeSync(st.fd);
      scratch.dispose();
    }
  });
}

/**
 * The heads to prune: the least important first (by {@link HeadScore.importance}, ties by
 * layer then head), skipping a head whose layer would keep fewer than `minPerLayer`. Heads the
 * model had already pruned measure an importance of exactly 0 and count like the others, so
 * `count` and `sparsity` are of all heads. Synchronous.
 *
 * @example
 * ```ts
 * const heads = selectHeads(await headImportance(model, dev), { count: 4, minPerLayer: 1 });
 * ```
 */
export function selectHeads(importance: HeadImportanceResult, options: SelectHeadsOptions): PrunedHeads {
  if (!isPlainObject(importance) || !Array.isArray(importance.heads)) {
    throw expected(InputError, 'the result of headImportance', 'importance', importance);
  }
  checkObject(options, 'options');
  const scores = importance.heads;
  const perLayer = new Map<number, number>();
  for (const s of scores) perLayer.set(s.layer, (perLayer.get(s.layer) ?? 0) + 1);
  const minPerLayer = options.minPerLayer ?? 1;
  checkInteger(minPerLayer, 1, undefined, 'options.minPerLayer');
  if (options.count !== undefined && options.sparsity !== undefined) {
    throw new InputError('Expected one of options.count and options.sparsity for selectHeads but received both');
  }
  let count = 0;
  if (options.count !== undefined) {
    checkInteger(options.count, 0, scores.length, 'options.count');
    count = options.count;
  } else if (options.sparsity !== undefined) {
    checkShare(options.sparsity, 'options.sparsity');
    count = Math.round(options.sparsity * scores.length);
  }
  const order = [...scores].sort((a, b) => a.importance - b.importance || a.layer - b.layer || a.head - b.head);
  const left = new Map(perLayer);
  const picked = new Map<number, number[]>();
  for (const s of order) {
    if (count === 0) break;
    const n = left.get(s.layer) ?? 0;
    if (n <= minPerLayer) continue;
    left.set(s.layer, n - 1);
    picked.set(s.layer, [...(picked.get(s.layer) ?? []), s.head]);
    count -= 1;
  }
  return toRecord(picked);
}

/**
 * A copy of the model without the given attention heads: their query, key and value rows and
 * biases and their columns of the attention output projection set to zero (the tensors keep
 * their shapes, which is what transformers 5 loads), and `config.json` listing every pruned head
 * under `elmo_pruned_heads` (merged with those the model had). The outputs are those of the
 * model with the heads masked; the new model holds only the kept heads (elmo removes the listed
 * ones at load), so it runs faster. The input model is unchanged.
 *
 * Rejects with `ERR_INPUT` for a layer or head index outside the model, and for a layer that
 * would keep no head.
 *
 * @example
 * ```ts
 * const pruned = await pruneHeads(model, { 0: [1, 3], 2: [0] });
 * await pruned.save('models/pruned'); // config.json: "elmo_pruned_heads": {"0": [1, 3], "2": [0]}
 * ```
 */
export async function pruneHeads(model: Bert, heads: PrunedHeads, options: PruneRunOptions = {}): Promise<Bert> {
  checkModel(model, 'pruneHeads');
  checkObject(options, 'options');
  const run = runOptionsOf(model, options.runOptions);
  const info = model.config;
  const spec = normalizeHeads(heads, info.numLayers, info.numHeads, 'heads');
  return withSavedModel(model, async (dir) => {
    const cfg = readConfig(dir);
    const merged = normalizeHeads(
      cfg[PRUNED_HEADS_KEY] ?? {},
      info.numLayers,
      info.numHeads,
      `the model's config.json ${PRUNED_HEADS_KEY}`,
      CheckpointError,
    );
    for (const [l, hs] of spec) {
      const all = [...new Set([...(merged.get(l) ?? []), ...hs])].sort((a, b) => a - b);
      if (all.length >= info.numHeads) {
        throw new InputError(
          `Expected at least one head left in layer ${String(l)} for pruneHeads but received heads [${hs.join(', ')}], ` +
            `which with the pruned [${(merged.get(l) ?? []).join(', ')}] are all ${String(info.numHeads)} of it`,
        );
      }
      merged.set(l, all);
    }
    const file = path.join(dir, 'model.safetensors');
    const st = readSafetensors(file);
    const w = new LayerWeights(st.tensors, file, info.hiddenSize, info.intermediateSize);
    for (const [l, hs] of spec) for (const h of hs) w.zeroHead(l, h, info.numHeads);
    writeSafetensors(file, st);
    if (merged.size > 0) cfg[PRUNED_HEADS_KEY] = toRecord(merged);
    writeConfig(dir, cfg);
    return Bert.load(dir, run);
  });
}

/**
 * A copy of the model with a narrower feed-forward network: in every layer the `keep` neurons
 * of largest `‖(W_in[j, :], b_in[j])‖₂ · ‖W_out[:, j]‖₂` (in their original order), so that
 * `intermediate_size` becomes `keep`. Keeping all neurons gives the same model. The input
 * model is unchanged.
 *
 * Rejects with `ERR_INPUT` unless exactly one of `keep` (an integer in [1, intermediate_size])
 * and `sparsity` (in [0, 1)) is given.
 *
 * @example
 * ```ts
 * const narrow = await pruneFfn(model, { sparsity: 0.5 }); // intermediate_size 1024 -> 512
 * ```
 */
export async function pruneFfn(model: Bert, options: PruneFfnOptions): Promise<Bert> {
  checkModel(model, 'pruneFfn');
  checkObject(options, 'options');
  const run = runOptionsOf(model, options.runOptions);
  const info = model.config;
  const I = info.intermediateSize;
  if ((options.keep === undefined) === (options.sparsity === undefined)) {
    throw new InputError(
      `Expected exactly one of options.keep and options.sparsity for pruneFfn but received ${options.keep === undefined ? 'neither' : 'both'}`,
    );
  }
  let keep: number;
  if (options.keep !== undefined) {
    checkInteger(options.keep, 1, I, 'options.keep');
    keep = options.keep;
  } else {
    checkShare(options.sparsity, 'options.sparsity');
    keep = Math.max(1, Math.round(I * (1 - (options.sparsity ?? 0))));
  }
  return withSavedModel(model, async (dir) => {
    const file = path.join(dir, 'model.safetensors');
    const st = readSafetensors(file);
    const w = new LayerWeights(st.tensors, file, info.hiddenSize, I);
    for (let l = 0; l < info.numLayers; l++) w.keepNeurons(l, topNeurons(w.neuronScores(l), keep));
    writeSafetensors(file, st);
    const cfg = readConfig(dir);
    cfg.intermediate_size = keep;
    writeConfig(dir, cfg);
    return Bert.load(dir, run);
  });
}

/**
 * The pruned heads a checkpoint directory lists in its `config.json` (`{}` when none).
 * Synchronous. A malformed list is an `ERR_CHECKPOINT`.
 *
 * @example
 * ```ts
 * readPrunedHeads('models/pruned'); // { 0: [1, 3], 2: [0] }
 * ```
 */
export function readPrunedHeads(dir: string): PrunedHeads {
  if (typeof dir !== 'string' || dir === '') throw expected(InputError, 'a directory path', 'dir', dir);
  const cfg = readConfig(dir);
  const L = cfg.num_hidden_layers;
  const NH = cfg.num_attention_heads;
  if (typeof L !== 'number' || typeof NH !== 'number') {
    throw new CheckpointError(`${path.join(dir, 'config.json')}: no num_hidden_layers or num_attention_heads`);
  }
  const raw = cfg[PRUNED_HEADS_KEY] ?? {};
  return toRecord(normalizeHeads(raw, L, NH, `${path.join(dir, 'config.json')}: ${PRUNED_HEADS_KEY}`, CheckpointError));
}

/**
 * Prunes heads and FFN neurons of a fine-tuned single-label classifier, then fine-tunes it
 * briefly on `data` to recover: the heads by importance ({@link headImportance} on a sample of
 * `data`, {@link selectHeads}), the FFN by weight magnitude ({@link pruneFfn}), the recovery
 * with {@link Bert.fineTune}. With `evalSet`, the metrics before pruning, after pruning and
 * after recovery. Returns a new model; the input model is unchanged.
 *
 * @example
 * ```ts
 * const r = await prune(model, {
 *   data: 'train.csv', evalSet: 'dev.csv', heads: 0.25, ffn: 0.5, recoverEpochs: 1,
 *   recover: { learningRate: 3e-4 },
 * });
 * console.log(r.headsPruned, r.intermediateSize, r.eval?.recovered?.accuracy);
 * await r.model.save('models/pruned');
 * r.model.dispose();
 * ```
 */
export async function prune(model: Bert, options: PruneOptions): Promise<PruneResult> {
  const t0 = performance.now();
  checkModel(model, 'prune');
  checkObject(options, 'options');
  const run = runOptionsOf(model, options.runOptions);
  const info = model.config;
  const seed = options.seed ?? 42;
  checkInteger(seed, 0, undefined, 'options.seed');
  const ffn = options.ffn ?? 0;
  checkShare(ffn, 'options.ffn');
  const recoverEpochs = options.recoverEpochs ?? 1;
  checkInteger(recoverEpochs, 0, undefined, 'options.recoverEpochs');
  const minPerLayer = options.minHeadsPerLayer ?? 1;
  checkInteger(minPerLayer, 1, info.numHeads, 'options.minHeadsPerLayer');
  const headsOption = options.heads ?? 0;
  let given: PrunedHeads | undefined;
  if (typeof headsOption === 'number') checkShare(headsOption, 'options.heads');
  else {
    normalizeHeads(headsOption, info.numLayers, info.numHeads, 'options.heads');
    given = headsOption;
  }
  if (options.recover !== undefined) checkObject(options.recover, 'options.recover');
  if (options.onProgress !== undefined && typeof options.onProgress !== 'function') {
    throw expected(InputError, 'a function', 'options.onProgress', options.onProgress);
  }
  const needData = recoverEpochs > 0 || (typeof headsOption === 'number' && headsOption > 0);
  if (needData && options.data === undefined) {
    throw new InputError(
      'Expected labelled examples in options.data for prune (head importance and recovery read them) but received undefined',
    );
  }
  const emit = (p: PruneProgress): void => {
    try {
      options.onProgress?.(p);
    } catch {
      // A throwing progress callback must not break pruning.
    }
  };
  const evaluate = async (m: Bert, stage: 'before' | 'pruned' | 'recovered'): Promise<EvalMetrics | undefined> => {
    if (options.evalSet === undefined) return undefined;
    emit({ phase: 'evaluate', stage });
    return m.evaluate(options.evalSet);
  };

  const before = await evaluate(model, 'before');
  let importance: HeadImportanceResult | undefined;
  let spec: PrunedHeads = given ?? {};
  if (typeof headsOption === 'number' && headsOption > 0 && options.data !== undefined) {
    importance = await headImportance(model, options.data, {
      runOptions: run,
      seed,
      ...(options.importanceExamples !== undefined ? { maxExamples: options.importanceExamples } : {}),
      onProgress: (p) => emit({ phase: 'importance', ...p }),
    });
    spec = selectHeads(importance, { sparsity: headsOption, minPerLayer });
  }

  // Heads first (on the full-width model), then the FFN; `current` is always a model of ours.
  let current = await pruneHeads(model, spec, { runOptions: run });
  try {
    if (ffn > 0) current = await replace(current, pruneFfn(current, { sparsity: ffn, runOptions: run }));
    const pruned = await evaluate(current, 'pruned');
    let recovery: FineTuneResult | undefined;
    if (recoverEpochs > 0 && options.data !== undefined) {
      recovery = await current.fineTune(options.data, {
        seed,
        ...options.recover,
        epochs: recoverEpochs,
        onProgress: (p) => emit({ phase: 'recover', fineTune: p }),
      });
    }
    const recovered = recovery !== undefined ? await evaluate(current, 'recovered') : undefined;
    // Every pruned head of the result, those the input model had included (its config's list).
    const heads = prunedHeadsOf(current);
    const headsPruned = [...heads.values()].reduce((s, hs) => s + hs.length, 0);
    return {
      model: current,
      heads: toRecord(heads),
      headsPruned,
      headsTotal: info.numLayers * info.numHeads,
      intermediateSize: { before: info.intermediateSize, after: current.config.intermediateSize },
      parameters: { before: info.numParameters, after: current.config.numParameters },
      ...(importance !== undefined ? { importance } : {}),
      ...(recovery !== undefined ? { recovery } : {}),
      ...(before !== undefined && pruned !== undefined
        ? { eval: { before, pruned, ...(recovered !== undefined ? { recovered } : {}) } }
        : {}),
      seconds: (performance.now() - t0) / 1000,
    };
  } catch (err) {
    current.dispose();
    throw err;
  }
}

// ------------------------------------------------------------------------------------------------
// Weight surgery
//
// Tensors as Hugging Face names them (prefix "bert." in task models):
//   encoder.layer.{l}.attention.self.{query,key,value}.weight  [H, H] (out, in), .bias [H]
//   encoder.layer.{l}.attention.output.dense.weight            [H, H], .bias [H]
//   encoder.layer.{l}.intermediate.dense.weight                [I, H], .bias [I]
//   encoder.layer.{l}.output.dense.weight                      [H, I], .bias [H]
// Head h owns rows h·d .. (h+1)·d of query / key / value and the same columns of the attention
// output projection (d = H / heads).

/** The encoder tensors of a checkpoint held in memory, edited in place. */
class LayerWeights {
  readonly #tensors: Map<string, F32Tensor>;
  readonly #file: string;
  readonly #prefix: string;
  readonly #H: number;
  readonly #I: number;

  constructor(tensors: ReadonlyMap<string, F32Tensor>, file: string, H: number, I: number) {
    this.#tensors = tensors as Map<string, F32Tensor>;
    this.#file = file;
    this.#prefix = tensors.has('bert.embeddings.word_embeddings.weight') ? 'bert.' : '';
    this.#H = H;
    this.#I = I;
  }

  /** The tensor `encoder.layer.{l}.{name}`, checked to have `numel` values. */
  get(l: number, name: string, numel: number): F32Tensor {
    const full = `${this.#prefix}encoder.layer.${String(l)}.${name}`;
    const t = this.#tensors.get(full);
    if (t === undefined) throw new CheckpointError(`${this.#file}: ${full} is missing`);
    if (t.data.length !== numel) {
      throw new CheckpointError(
        `${this.#file}: ${full} has ${String(t.data.length)} values, expected ${String(numel)}`,
      );
    }
    return t;
  }

  set(l: number, name: string, t: F32Tensor): void {
    this.#tensors.set(`${this.#prefix}encoder.layer.${String(l)}.${name}`, t);
  }

  /** Zeroes head h of layer l: its q, k, v rows and biases and its attention-output columns. */
  zeroHead(l: number, h: number, numHeads: number): void {
    const H = this.#H;
    const d = H / numHeads;
    for (const p of ['query', 'key', 'value']) {
      this.get(l, `attention.self.${p}.weight`, H * H).data.fill(0, h * d * H, (h + 1) * d * H);
      this.get(l, `attention.self.${p}.bias`, H).data.fill(0, h * d, (h + 1) * d);
    }
    zeroColumns(this.get(l, 'attention.output.dense.weight', H * H).data, H, H, h * d, (h + 1) * d);
  }

  /** `[I]` importance of layer l's FFN neurons: ‖(W_in[j, :], b_in[j])‖₂ · ‖W_out[:, j]‖₂. */
  neuronScores(l: number): Float64Array {
    const H = this.#H;
    const I = this.#I;
    const win = this.get(l, 'intermediate.dense.weight', I * H).data; // (I, H)
    const bin = this.get(l, 'intermediate.dense.bias', I).data; // (I)
    const wout = this.get(l, 'output.dense.weight', H * I).data; // (H, I)
    const outSq = new Float64Array(I); // column sums of squares of W_out, row by row
    for (let r = 0; r < H; r++) {
      for (let j = 0; j < I; j++) outSq[j] = (outSq[j] ?? 0) + (wout[r * I + j] ?? 0) ** 2;
    }
    return Float64Array.from({ length: I }, (_, j) => {
      let inSq = (bin[j] ?? 0) ** 2;
      for (let k = j * H; k < (j + 1) * H; k++) inSq += (win[k] ?? 0) ** 2;
      return Math.sqrt(inSq) * Math.sqrt(outSq[j] ?? 0);
    });
  }

  /** Keeps the neurons `keep` (ascending) of layer l: rows of W_in and b_in, columns of W_out. */
  keepNeurons(l: number, keep: readonly number[]): void {
    const H = this.#H;
    const I = this.#I;
    const n = keep.length;
    const win = this.get(l, 'intermediate.dense.weight', I * H).data;
    const bin = this.get(l, 'intermediate.dense.bias', I).data;
    const wout = this.get(l, 'output.dense.weight', H * I).data;
    this.set(l, 'intermediate.dense.weight', { shape: [n, H], data: gatherRows(win, H, keep) });
    this.set(l, 'intermediate.dense.bias', { shape: [n], data: gatherRows(bin, 1, keep) });
    const out = new Float32Array(H * n); // columns `keep` of W_out [H, I]
    for (let r = 0; r < H; r++) keep.forEach((j, i) => (out[r * n + i] = wout[r * I + j] ?? 0));
    this.set(l, 'output.dense.weight', { shape: [H, n], data: out });
  }
}

/** Rows `rows` of `w [*, C]`, in that order, as a new `[rows.length, C]` array. */
function gatherRows(w: Float32Array, C: number, rows: readonly number[]): Float32Array {
  const out = new Float32Array(rows.length * C);
  rows.forEach((r, i) => out.set(w.subarray(r * C, (r + 1) * C), i * C));
  return out;
}

/** Sets columns `c0 .. c1` of `w [R, C]` to zero. */
function zeroColumns(w: Float32Array, R: number, C: number, c0: number, c1: number): void {
  for (let r = 0; r < R; r++) w.fill(0, r * C + c0, r * C + c1);
}

/** The `keep` highest scores' indices, ascending (ties: the lower index first). */
function topNeurons(scores: Float64Array, keep: number): number[] {
  const order = Array.from({ length: scores.length }, (_, j) => j);
  order.sort((a, b) => (scores[b] ?? 0) - (scores[a] ?? 0) || a - b);
  return order.slice(0, keep).sort((a, b) => a - b);
}

// ------------------------------------------------------------------------------------------------
// Helpers

/** Mean cross-entropy and accuracy of a single-label classifier over packed batches. */
async function lossAndAccuracy(
  forward: (b: PackedBatch) => Promise<{ scores?: Float32Array; best?: Int32Array }>,
  batches: readonly PackedBatch[],
  labelOf: Int32Array,
  numLabels: number,
): Promise<{ loss: number; accuracy: number }> {
  let loss = 0;
  let correct = 0;
  let n = 0;
  for (const b of batches) {
    const out = await forward(b);
    if (out.scores === undefined || out.best === undefined) throw new CheckpointError('The forward returned no scores');
    b.indices.forEach((idx, k) => {
      const y = labelOf[idx] ?? 0;
      // fp32 probabilities: one below ~1e-38 (a logit gap above ~87) counts as 1e-38.
      loss -= Math.log(Math.max(out.scores?.[k * numLabels + y] ?? 0, 1e-38));
      if (out.best?.[k] === y) correct += 1;
      n += 1;
    });
  }
  return { loss: loss / n, accuracy: correct / n };
}

/** The pruned heads the model's config lists. */
function prunedHeadsOf(model: Bert): Map<number, number[]> {
  return new Map(Object.entries(model.config.prunedHeads).map(([l, hs]) => [Number(l), [...hs]]));
}

/** Awaits `next`, then disposes `old` (or disposes `old` and rethrows). */
async function replace(old: Bert, next: Promise<Bert>): Promise<Bert> {
  try {
    return await next;
  } finally {
    old.dispose();
  }
}

/** Saves the model to a temporary directory, runs `fn` on it, removes it. */
async function withSavedModel<T>(model: Bert, fn: (dir: string) => Promise<T> | T): Promise<T> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'elmo-prune-'));
  try {
    await model.save(dir);
    return await fn(dir);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

function readConfig(dir: string): Record<string, unknown> {
  const file = path.join(dir, 'config.json');
  let value: unknown;
  try {
    value = JSON.parse(fs.readFileSync(file, 'utf8'));
  } catch (err) {
    throw new CheckpointError(`Cannot read ${file}: ${(err as Error).message}`);
  }
  if (!isPlainObject(value)) throw new CheckpointError(`${file}: not a JSON object`);
  return value;
}

function writeConfig(dir: string, cfg: Record<string, unknown>): void {
  writeFileAtomic(path.join(dir, 'config.json'), `${JSON.stringify(cfg, null, 2)}\n`);
}

function readAll(fd: number, into: Float32Array, position: number, file: string): void {
  const bytes = new Uint8Array(into.buffer, into.byteOffset, into.byteLength);
  for (let at = 0; at < bytes.length;) {
    const n = fs.readSync(fd, bytes, at, bytes.length - at, position + at);
    if (n === 0) throw new CheckpointError(`${file}: truncated at byte ${String(position + at)}`);
    at += n;
  }
}

function writeAt(fd: number, data: Float32Array, position: number): void {
  const bytes = new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
  for (let at = 0; at < bytes.length;) at += fs.writeSync(fd, bytes, at, bytes.length - at, position + at);
}

/**
 * A head list checked against the model (`layers`, `heads` per layer): layer keys integers in
 * [0, layers), heads arrays of integers in [0, heads); duplicates merged, sorted.
 */
function normalizeHeads(
  spec: unknown,
  layers: number,
  heads: number,
  what: string,
  ErrorClass: typeof InputError | typeof CheckpointError = InputError,
): Map<number, number[]> {
  if (!isPlainObject(spec)) throw expected(ErrorClass, 'an object { layer: [head, ...] }', what, spec);
  const out = new Map<number, number[]>();
  for (const [key, list] of Object.entries(spec)) {
    const l = Number(key);
    if (!/^\d+$/.test(key) || l >= layers) {
      throw new ErrorClass(
        `Expected a layer index in [0, ${String(layers)}) as a key of ${what} but received ${describeValue(key)}`,
      );
    }
    if (!Array.isArray(list)) throw expected(ErrorClass, 'an array of head indices', `${what}[${key}]`, list);
    for (const h of list as unknown[]) {
      if (!Number.isInteger(h) || (h as number) < 0 || (h as number) >= heads) {
        throw expected(ErrorClass, `a head index in [0, ${String(heads)})`, `${what}[${key}]`, h);
      }
    }
    const hs = [...new Set(list as number[])].sort((a, b) => a - b);
    if (hs.length > 0) out.set(l, hs);
  }
  return out;
}

function toRecord(heads: ReadonlyMap<number, readonly number[]>): Record<number, number[]> {
  const out: Record<number, number[]> = {};
  for (const l of [...heads.keys()].sort((a, b) => a - b)) {
    const hs = heads.get(l) ?? [];
    if (hs.length > 0) out[l] = [...hs].sort((a, b) => a - b);
  }
  return out;
}

function runOptionsOf(model: Bert, given: BertRunOptions | undefined): BertRunOptions {
  if (given !== undefined) {
    checkObject(given, 'options.runOptions');
    return given;
  }
  return { device: model.device, maxSeqLen: model.maxSeqLen };
}

function checkModel(model: unknown, what: string): asserts model is Bert {
  if (!(model instanceof Bert)) throw expected(InputError, 'a Bert model', 'model', model);
  if (model.disposed) throw new DisposedError(`Expected a live model for ${what} but received a disposed model`);
}

function checkObject(v: unknown, what: string): void {
  if (!isPlainObject(v)) throw expected(InputError, 'an object', what, v);
}

/** An integer in [lo, hi] (hi absent: >= lo). */
function checkInteger(v: unknown, lo: number, hi: number | undefined, what: string): asserts v is number {
  if (!Number.isSafeInteger(v) || (v as number) < lo || (hi !== undefined && (v as number) > hi)) {
    const range = hi === undefined ? `an integer >= ${String(lo)}` : `an integer in [${String(lo)}, ${String(hi)}]`;
    throw expected(InputError, range, what, v);
  }
}

function checkShare(v: unknown, what: string): asserts v is number {
  if (typeof v !== 'number' || !(v >= 0 && v < 1)) throw expected(InputError, 'a number in [0, 1)', what, v);
}
