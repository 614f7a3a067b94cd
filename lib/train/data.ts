/**
 * Training data: examples in, packed batches out.
 *
 *   readExamples (JSONL / JSON / CSV / TSV files, or any iterable)
 *     -> inferTask + labelSet (or a fixed label list, checked by checkLabels)
 *     -> encodeExamples (tokenize, truncate, map labels to ids)
 *     -> packBatches per epoch (length-bucketed, seeded, no padding)
 *
 * plus splitByGroup for a train/eval split that never puts one group (a conversation, a user)
 * on both sides.
 *
 * Batches are packed the way the model takes them: sequences back to back, sequence b at
 * `ids[offsets[b] .. offsets[b + 1]]`, with no padding token anywhere.
 *
 * @example
 * ```ts
 * const examples: Example[] = [];
 * for await (const ex of readExamples('banking77/train.csv')) examples.push(ex);
 * const task = inferTask(examples); // 'sequence'
 * const labels = labelSet(examples, task);
 * const encoded = encodeExamples(tokenizer, examples, { task, labels, maxSeqLen: 128 });
 * for (let epoch = 0; epoch < 3; epoch++) {
 *   for (const batch of packBatches(encoded, { maxTokens: 8192, maxBatchSize: 64, shuffle: true, seed: 1, epoch })) {
 *     // batch.ids, batch.offsets, batch.labels ...
 *   }
 * }
 * ```
 */
import { createReadStream } from 'fs';
import { readFile, stat } from 'fs/promises';
import { extname } from 'path';
import { createInterface } from 'readline';

import { parse as parseCsv } from 'csv-parse';

import { InputError, describeValue, expected } from '../errors';
import type { Tokenizer } from '../tokenizer';
import { Rng } from './rng';

/**
 * What a model is trained to predict:
 * - `'sequence'`: one class per text (or text pair), from `label`;
 * - `'multi-label'`: any subset of the classes per text, from `labels`;
 * - `'regression'`: one number per text, from a numeric `label`;
 * - `'token'`: one tag per word (BIO named entities), from `tokens` and `tags`.
 */
export type TrainTask = 'sequence' | 'multi-label' | 'regression' | 'token';

/** One training or evaluation example. Fields other than those below are kept and ignored. */
export interface Example {
  /** The text to classify (all tasks but `'token'`). */
  text?: string;
  /** The class name (`'sequence'`), or the target value (`'regression'`). */
  label?: string | number;
  /** The class names that apply (`'multi-label'`); may be empty. */
  labels?: readonly string[];
  /** A second text, encoded as segment B: `[CLS] text [SEP] pair [SEP]`. */
  pair?: string;
  /** Earlier turns of a conversation, oldest first; `text` is the current turn. */
  context?: readonly string[];
  /** The words of a `'token'` example. */
  tokens?: readonly string[];
  /** One tag per word of `tokens` (e.g. `B-PER`, `I-PER`, `O`). */
  tags?: readonly string[];
  /** What keeps examples together in {@link splitByGroup} (a conversation id, a user). */
  group?: string | number;
  [k: string]: unknown;
}

/** Options of {@link labelSet}. */
export interface LabelSetOptions {
  /**
   * A fixed list of label names (e.g. the labels of a checkpoint being fine-tuned further),
   * returned as is after {@link checkLabels} has checked that every example's labels are in it.
   */
  labels?: readonly string[];
}

/** Options of {@link encodeExamples}. */
export interface EncodeExamplesOptions {
  task: TrainTask;
  /** Label names; an example's label is its index here. Ignored for `'regression'`. */
  labels: readonly string[];
  /** Longest encoded sequence, special tokens included (at least 2). */
  maxSeqLen: number;
  /**
   * At most this many tokens of `context` (the earlier turns), on top of the `maxSeqLen` limit.
   * Default: as many as fit.
   */
  contextMaxTokens?: number;
}

/** One example, tokenized and with its label as ids. */
export interface EncodedExample {
  /** Token ids, `[CLS] ... [SEP]` included. */
  ids: Int32Array; // (T)
  /** Segment per token: 0 for `[CLS] A [SEP]`, 1 for `B [SEP]`. */
  typeIds: Int32Array; // (T)
  /** `'sequence'`: the index of the label in `labels`. */
  label?: number;
  /** `'multi-label'`: 0/1 per label (L); `'regression'`: the target value (1). */
  labelVector?: Float32Array;
  /**
   * `'token'`: the tag id on each word's first sub-token, {@link IGNORE_INDEX} on special tokens
   * and on the other sub-tokens of a word (they carry no loss).
   */
  tokenLabels?: Int32Array; // (T)
  /** `'token'`: the index of the word each token comes from, -1 for special tokens. */
  wordIds?: Int32Array; // (T)
  /** Position of the example in the array given to {@link encodeExamples}. */
  index: number;
}

/** Options of {@link packBatches}. */
export interface PackOptions {
  /** Most tokens in a batch (the sum of its sequence lengths). A longer sequence gets a batch alone. */
  maxTokens: number;
  /** Most sequences in a batch. */
  maxBatchSize: number;
  /** Shuffle the examples before bucketing, and the batches after (seeded by seed and epoch). */
  shuffle: boolean;
  seed: number;
  /** The epoch: each gives another order from the same seed. */
  epoch: number;
}

/** Sequences packed back to back: sequence b is tokens `offsets[b] .. offsets[b + 1]`. */
export interface PackedBatch {
  ids: Int32Array; // (T)
  typeIds: Int32Array; // (T)
  offsets: Int32Array; // (B + 1)
  /**
   * `'sequence'`: Int32 (B) label ids; `'multi-label'` and `'regression'`: Float32 (B, L) with
   * L = 1 for regression; `'token'`: Int32 (T) tag ids, {@link IGNORE_INDEX} where no loss is
   * taken. Empty when the examples carry no labels.
   */
  labels: Int32Array | Float32Array;
  /** `'token'`: word index per token, -1 on special tokens. */
  wordIds?: Int32Array; // (T)
  /** {@link EncodedExample.index} of each sequence. */
  indices: Int32Array; // (B)
  /** Number of tokens, T = offsets[B]. */
  tokens: number;
}

/** Options of {@link splitByGroup}. */
export interface SplitOptions {
  /** Share of the examples for evaluation, in [0, 1]; rounded up to whole groups. */
  fraction: number;
  seed: number;
  /** The field that holds the group (default `'group'`). Examples without it are groups of one. */
  group?: string;
}

/** The label id of sub-tokens and special tokens that carry no loss (as PyTorch's `ignore_index`). */
export const IGNORE_INDEX = -100;

const TASKS: readonly TrainTask[] = ['sequence', 'multi-label', 'regression', 'token'];

// ------------------------------------------------------------------------------------------------
// Reading

/**
 * Streams examples from a file, or passes through an iterable of them (checking that each is an
 * object). Errors surface while iterating, as {@link InputError}s that name the file and line.
 *
 * Files, by extension:
 * - `.jsonl`: one JSON object per line; blank lines are skipped.
 * - `.json`: the same, or one JSON array of objects (when the file starts with `[`).
 * - `.csv`, `.tsv`: a header row, then one example per row. Columns map to fields by name:
 *   `text`, `pair`, `label` (or `category`, as in BANKING77's `text,category`), `labels` (the
 *   class names separated by `|`, e.g. `billing|refund`), `group`; other columns are kept as
 *   string fields. Empty cells are left out. Values stay strings: a `label` column is a
 *   classification label, unless the task is given as `'regression'`. TSV has no quoting
 *   (a `"` is an ordinary character), as in GLUE's files. `context`, `tokens` and `tags` need
 *   JSON.
 *
 * @example
 * ```ts
 * for await (const ex of readExamples('data/train.jsonl')) console.log(ex.text, ex.label);
 * ```
 */
export async function* readExamples(
  source: Iterable<Example> | AsyncIterable<Example> | string,
): AsyncGenerator<Example, void, undefined> {
  if (typeof source === 'string') {
    yield* readFileExamples(source);
    return;
  }
  const s = source as unknown as Record<PropertyKey, unknown> | null;
  if (
    typeof s !== 'object' ||
    s === null ||
    (typeof s[Symbol.iterator] !== 'function' && typeof s[Symbol.asyncIterator] !== 'function')
  ) {
    throw expected(InputError, 'a file path or an iterable of examples', 'source', source);
  }
  let i = 0;
  for await (const ex of source) {
    if (!isRecord(ex)) throw expected(InputError, 'an example object', `example ${i}`, ex);
    yield ex;
    i++;
  }
}

async function* readFileExamples(path: string): AsyncGenerator<Example, void, undefined> {
  const ext = extname(path).toLowerCase();
  if (ext !== '.jsonl' && ext !== '.json' && ext !== '.csv' && ext !== '.tsv') {
    throw new InputError(`Expected a .jsonl, .json, .csv or .tsv file for examples but received "${path}"`);
  }
  try {
    const st = await stat(path);
    if (!st.isFile()) throw new Error('not a file');
  } catch (e) {
    throw new InputError(`Cannot read examples from "${path}": ${(e as Error).message}`);
  }
  if (ext === '.csv' || ext === '.tsv') yield* readCsv(path, ext === '.tsv' ? '\t' : ',');
  else yield* readJsonLines(path, ext === '.json');
}

async function* readJsonLines(path: string, allowArray: boolean): AsyncGenerator<Example, void, undefined> {
  const input = createReadStream(path, { encoding: 'utf8' });
  const lines = createInterface({ input, crlfDelay: Infinity });
  let n = 0;
  try {
    for await (let line of lines) {
      n++;
      if (n === 1 && line.charCodeAt(0) === 0xfeff) line = line.slice(1);
      const trimmed = line.trim();
      if (trimmed === '') continue;
      if (allowArray && trimmed.startsWith('[')) {
        lines.close();
        input.destroy();
        yield* await readJsonArray(path);
        return;
      }
      allowArray = false;
      let value: unknown;
      try {
        value = JSON.parse(trimmed);
      } catch (e) {
        throw new InputError(
          `Expected a JSON object for ${path}:${n} but received ${describeValue(trimmed)} (${(e as Error).message})`,
        );
      }
      if (!isRecord(value)) throw expected(InputError, 'a JSON object', `${path}:${n}`, value);
      yield value;
    }
  } finally {
    lines.close();
    input.destroy();
  }
}

async function readJsonArray(path: string): Promise<Example[]> {
  let value: unknown;
  try {
    value = JSON.parse(await readFile(path, 'utf8'));
  } catch (e) {
    throw new InputError(`Expected a JSON array of examples in ${path} but it does not parse: ${(e as Error).message}`);
  }
  if (!Array.isArray(value)) throw expected(InputError, 'a JSON array of examples', path, value);
  value.forEach((v: unknown, i) => {
    if (!isRecord(v)) throw expected(InputError, 'an example object', `${path} [${i}]`, v);
  });
  return value as Example[];
}

async function* readCsv(path: string, delimiter: string): AsyncGenerator<Example, void, undefined> {
  const input = createReadStream(path);
  const parser = input.pipe(
    parseCsv({
      columns: true,
      bom: true,
      delimiter,
      quote: delimiter === '\t' ? false : '"',
      skip_empty_lines: true,
      info: true,
    }),
  );
  let hasLabelColumn: boolean | undefined;
  try {
    for await (const raw of parser as AsyncIterable<{ record: Record<string, string>; info: { lines: number } }>) {
      const row = raw.record;
      hasLabelColumn ??= Object.prototype.hasOwnProperty.call(row, 'label');
      const ex: Example = {};
      for (const [key, value] of Object.entries(row)) {
        if (value === '') continue;
        if (key === 'labels') {
          ex.labels = value
            .split('|')
            .map((l) => l.trim())
            .filter((l) => l !== '');
        } else if (key === 'category' && !hasLabelColumn) {
          ex.label = value;
        } else {
          ex[key] = value;
        }
      }
      if (Object.prototype.hasOwnProperty.call(row, 'labels')) ex.labels ??= [];
      yield ex;
    }
  } catch (e) {
    if (e instanceof InputError) throw e;
    const line = (e as { lines?: unknown }).lines;
    const where = typeof line === 'number' ? `${path}:${line}` : path;
    throw new InputError(`Malformed ${delimiter === '\t' ? 'TSV' : 'CSV'} at ${where}: ${(e as Error).message}`);
  } finally {
    input.destroy();
  }
}

// ------------------------------------------------------------------------------------------------
// Tasks and labels

/**
 * The task the examples are for, from the first example's fields: `tokens`/`tags` make it
 * `'token'`, a `labels` array `'multi-label'`, a numeric `label` `'regression'`, any other
 * `label` `'sequence'`. Then every example is checked for that task ({@link validateExamples}).
 * A CSV `label` column is text: pass `'regression'` explicitly for numeric targets read from CSV.
 */
export function inferTask(examples: readonly Example[]): TrainTask {
  if (!Array.isArray(examples) || examples.length === 0) {
    throw expected(InputError, 'a non-empty array of examples', 'examples', examples);
  }
  const first: unknown = examples[0];
  if (!isRecord(first)) throw expected(InputError, 'an example object', 'examples[0]', first);
  let task: TrainTask;
  if (first.tokens !== undefined || first.tags !== undefined) task = 'token';
  else if (Array.isArray(first.labels)) task = 'multi-label';
  else if (typeof first.label === 'number') task = 'regression';
  else if (first.label !== undefined) task = 'sequence';
  else {
    throw expected(InputError, 'a label, a labels array, or tokens and tags', 'examples[0]', first);
  }
  validateExamples(examples, task);
  return task;
}

/**
 * Checks that every example has the fields of `task` and none of another task's (mixed shapes):
 * a string `text` (optional string `pair`, or optional `context` array of strings, not both) and
 * a `label` (string or number; for `'regression'` a finite number or numeric string) or a
 * `labels` array of strings; for `'token'`, `tokens` and as many non-empty `tags`. Throws an
 * {@link InputError} naming the example index and field.
 */
export function validateExamples(examples: readonly Example[], task: TrainTask): void {
  checkTask(task);
  checkArray(examples, 'an array of examples', 'examples');
  for (let i = 0; i < examples.length; i++) validateExample(examples[i], i, task);
}

function validateExample(ex: unknown, i: number, task: TrainTask): void {
  const at = `examples[${i}]`;
  if (!isRecord(ex)) throw expected(InputError, 'an example object', at, ex);
  const mixed = (field: string): never => {
    throw expected(InputError, `no ${field} in a ${task} task (the examples mix shapes)`, `${at}.${field}`, ex[field]);
  };
  if (task === 'token') {
    const { tokens, tags } = ex;
    if (!isStringArray(tokens)) throw expected(InputError, 'an array of words', `${at}.tokens`, tokens);
    if (!isStringArray(tags) || tags.some((t) => t === '')) {
      throw expected(InputError, 'an array of non-empty tags', `${at}.tags`, tags);
    }
    if (tags.length !== tokens.length) {
      throw expected(InputError, `${tokens.length} tags (one per token)`, `${at}.tags`, tags);
    }
    if (ex.label !== undefined) mixed('label');
    if (ex.labels !== undefined) mixed('labels');
    return;
  }
  if (typeof ex.text !== 'string') throw expected(InputError, 'a string', `${at}.text`, ex.text);
  if (ex.pair !== undefined && typeof ex.pair !== 'string') {
    throw expected(InputError, 'a string', `${at}.pair`, ex.pair);
  }
  if (ex.context !== undefined) {
    if (!isStringArray(ex.context)) throw expected(InputError, 'an array of strings', `${at}.context`, ex.context);
    if (ex.pair !== undefined) {
      throw expected(InputError, 'either a pair or a context, not both', `${at}.pair`, ex.pair);
    }
  }
  if (ex.tokens !== undefined) mixed('tokens');
  if (ex.tags !== undefined) mixed('tags');
  const label = ex.label;
  switch (task) {
    case 'sequence':
      if (ex.labels !== undefined) mixed('labels');
      if (typeof label !== 'string' && !(typeof label === 'number' && Number.isFinite(label))) {
        throw expected(InputError, 'a label (string or number)', `${at}.label`, label);
      }
      return;
    case 'multi-label':
      if (label !== undefined) mixed('label');
      if (!isStringArray(ex.labels)) throw expected(InputError, 'an array of label names', `${at}.labels`, ex.labels);
      return;
    case 'regression':
      if (ex.labels !== undefined) mixed('labels');
      if (regressionTarget(label) === undefined) {
        throw expected(InputError, 'a finite number (or numeric string)', `${at}.label`, label);
      }
      return;
    default:
      return;
  }
}

/**
 * The label names of the examples, unique and sorted (numerically when every name is an
 * integer, else by code unit): the `label` values for `'sequence'`, the `labels` entries for
 * `'multi-label'`, the tags (`'O'` included) for `'token'`, none for `'regression'`. With
 * `options.labels`, that list instead, once {@link checkLabels} has passed.
 *
 * @example
 * ```ts
 * labelSet([{ tokens: ['Ann'], tags: ['B-PER'] }, { tokens: ['hi'], tags: ['O'] }], 'token');
 * // ['B-PER', 'O']
 * ```
 */
export function labelSet(examples: readonly Example[], task: TrainTask, options: LabelSetOptions = {}): string[] {
  validateExamples(examples, task);
  checkObject(options, 'options');
  if (options.labels !== undefined) {
    checkLabels(examples, options.labels, task);
    return [...options.labels];
  }
  const names = new Set<string>();
  for (const ex of examples) for (const name of labelNames(ex, task)) names.add(name);
  const list = [...names];
  if (list.every((s) => /^-?(0|[1-9]\d{0,14})$/.test(s))) return list.sort((a, b) => Number(a) - Number(b));
  return list.sort();
}

/**
 * Checks that `labels` is a list of unique names and that every label of every example is in
 * it; throws an {@link InputError} naming the first unknown label and its example otherwise.
 * (A `'regression'` task has no label names: only the list itself is checked.)
 */
export function checkLabels(examples: readonly Example[], labels: readonly string[], task: TrainTask): void {
  checkTask(task);
  if (!isStringArray(labels)) throw expected(InputError, 'an array of label names', 'labels', labels);
  const known = new Set(labels);
  if (known.size !== labels.length) {
    const dup = labels.find((l, i) => labels.indexOf(l) !== i);
    throw new InputError(`Expected unique label names for labels but "${String(dup)}" appears more than once`);
  }
  checkArray(examples, 'an array of examples', 'examples');
  examples.forEach((ex, i) => {
    for (const name of labelNames(ex, task)) {
      if (!known.has(name)) {
        const field = task === 'token' ? 'tags' : task === 'multi-label' ? 'labels' : 'label';
        const shown = labels.length <= 10 ? labels.join(', ') : `${labels.slice(0, 10).join(', ')}, ...`;
        throw new InputError(
          `Unknown label "${name}" in examples[${i}].${field}: not among the ${labels.length} labels (${shown})`,
        );
      }
    }
  });
}

function labelNames(ex: Example, task: TrainTask): readonly string[] {
  switch (task) {
    case 'sequence':
      return ex.label === undefined ? [] : [String(ex.label)];
    case 'multi-label':
      return ex.labels ?? [];
    case 'token':
      return ex.tags ?? [];
    default:
      return [];
  }
}

// ------------------------------------------------------------------------------------------------
// Encoding

/**
 * Tokenizes the examples and turns their labels into ids. Checks the examples for the task and
 * their labels against `labels` first.
 *
 * Layouts (maxSeqLen counts the special tokens):
 * - a text: `[CLS] text [SEP]`, truncated at the end;
 * - with `pair`: `[CLS] text [SEP] pair [SEP]`, longest-first truncation as Hugging Face;
 * - with `context` (earlier turns, oldest first): `[CLS] turn1 [SEP] turn2 [SEP] text [SEP]`,
 *   the turns as segment A (type 0) and the text as segment B (type 1). The text is kept whole
 *   and the context cut from the left, token by token, so that the newest context stays; when
 *   no context fits (or it is empty) the example is laid out as a plain text, truncated if it
 *   alone is too long;
 * - `'token'`: each word tokenized on its own (a word with no pieces becomes `[UNK]`), then
 *   `[CLS] pieces [SEP]` truncated at the end: the tag of a word goes on its first piece, and a
 *   word cut off entirely carries no label.
 *
 * @example
 * ```ts
 * const enc = encodeExamples(tok, [{ text: 'lost my card', label: 'card_lost' }], {
 *   task: 'sequence', labels: ['card_lost', 'refund'], maxSeqLen: 128,
 * });
 * enc[0].label; // 0
 * ```
 */
export function encodeExamples(
  tokenizer: Tokenizer,
  examples: readonly Example[],
  options: EncodeExamplesOptions,
): EncodedExample[] {
  checkObject(options, 'options');
  const { task, labels, maxSeqLen, contextMaxTokens } = options;
  checkTask(task);
  if (!Number.isInteger(maxSeqLen) || maxSeqLen < 2) {
    throw expected(InputError, 'an integer of at least 2', 'options.maxSeqLen', maxSeqLen);
  }
  if (contextMaxTokens !== undefined && (!Number.isInteger(contextMaxTokens) || contextMaxTokens < 0)) {
    throw expected(InputError, 'a non-negative integer', 'options.contextMaxTokens', contextMaxTokens);
  }
  if (typeof tokenizer !== 'object' || tokenizer === null || typeof tokenizer.encode !== 'function') {
    throw expected(InputError, 'a Tokenizer', 'tokenizer', tokenizer);
  }
  validateExamples(examples, task);
  checkLabels(examples, labels, task);
  const enc = new ExampleEncoder(tokenizer, maxSeqLen, contextMaxTokens ?? Infinity);
  const labelId = new Map(labels.map((l, i) => [l, i]));
  const L = labels.length;
  return examples.map((ex, index): EncodedExample => {
    if (task === 'token') return { ...enc.words(ex.tokens ?? [], ex.tags ?? [], labelId), index };
    const text = ex.text ?? '';
    const { ids, typeIds } =
      ex.context !== undefined && ex.context.length > 0
        ? enc.withContext(text, ex.context)
        : tokenizer.encode(text, ex.pair, { maxSeqLen });
    switch (task) {
      case 'sequence':
        return { ids, typeIds, label: labelId.get(String(ex.label)) as number, index };
      case 'multi-label': {
        const v = new Float32Array(L);
        for (const name of ex.labels ?? []) v[labelId.get(name) as number] = 1;
        return { ids, typeIds, labelVector: v, index };
      }
      default:
        return { ids, typeIds, labelVector: Float32Array.of(regressionTarget(ex.label) as number), index };
    }
  });
}

/** Tokenizes words and conversation turns with the tokenizer's [CLS]/[SEP]. */
class ExampleEncoder {
  private readonly cls: number;
  private readonly sep: number;
  private readonly unk: number | undefined;
  /** Word pieces of each word seen, without special tokens. */
  private readonly pieces = new Map<string, Int32Array>();

  constructor(
    private readonly tok: Tokenizer,
    private readonly maxSeqLen: number,
    private readonly contextMaxTokens: number,
  ) {
    const empty = tok.encode('');
    if (empty.ids.length !== 2) {
      throw new InputError(
        `Expected a tokenizer whose template is [CLS] text [SEP] but an empty text encodes to ${empty.ids.length} tokens`,
      );
    }
    this.cls = empty.ids[0] as number;
    this.sep = empty.ids[1] as number;
    this.unk = tok.tokenToId('[UNK]');
  }

  private piecesOf(text: string): Int32Array {
    let p = this.pieces.get(text);
    if (p === undefined) {
      p = this.tok.encode(text, undefined, { addSpecialTokens: false }).ids;
      // Words repeat: the cache saves most tokenizer calls. Turns rarely do; don't keep them.
      if (text.length <= 64) this.pieces.set(text, p);
    }
    return p;
  }

  /** `[CLS] A [SEP] text [SEP]` with A the newest context tokens that fit, or `[CLS] text [SEP]`. */
  withContext(text: string, context: readonly string[]): { ids: Int32Array; typeIds: Int32Array } {
    const b = this.piecesOf(text);
    const roomA = Math.min(this.contextMaxTokens, this.maxSeqLen - 3 - b.length);
    if (roomA <= 0) return this.single(b);
    // Turns from the newest back until they fill the room: older ones are never tokenized.
    // A = turns[k-1] [SEP] ... [SEP] turns[0] (turns[0] the newest), nA tokens long.
    const turns: Int32Array[] = [];
    let nA = 0;
    for (let t = context.length - 1; t >= 0 && nA < roomA; t--) {
      const p = this.piecesOf(context[t] as string);
      if (p.length === 0) continue;
      nA += p.length + (turns.length > 0 ? 1 : 0);
      turns.push(p);
    }
    if (turns.length === 0) return this.single(b);
    // Drop `cut` tokens from the left. The oldest turn was taken while nA < roomA, so cut is at
    // most its length; when it is exactly that, A would open on the joiner: drop that too.
    let oldest = turns.length - 1;
    let cut = Math.max(0, nA - roomA);
    let lenA = nA - cut;
    if (cut === (turns[oldest] as Int32Array).length) {
      oldest--;
      cut = 0;
      lenA--;
    }
    const total = lenA + b.length + 3;
    const ids = new Int32Array(total);
    const typeIds = new Int32Array(total);
    let at = 0;
    ids[at++] = this.cls;
    for (let t = oldest; t >= 0; t--) {
      const p = (turns[t] as Int32Array).subarray(t === oldest ? cut : 0);
      ids.set(p, at);
      at += p.length;
      ids[at++] = this.sep; // the joiner, and after the newest turn the end of segment A
    }
    typeIds.fill(1, at);
    ids.set(b, at);
    ids[total - 1] = this.sep;
    return { ids, typeIds };
  }

  /** `[CLS] text [SEP]`, the text cut to fit. */
  private single(b: Int32Array): { ids: Int32Array; typeIds: Int32Array } {
    const n = Math.min(b.length, this.maxSeqLen - 2);
    const ids = new Int32Array(n + 2);
    ids[0] = this.cls;
    ids.set(b.subarray(0, n), 1);
    ids[n + 1] = this.sep;
    return { ids, typeIds: new Int32Array(n + 2) };
  }

  /** `[CLS] pieces of each word [SEP]`, with the word's tag on its first piece. */
  words(
    words: readonly string[],
    tags: readonly string[],
    labelId: ReadonlyMap<string, number>,
  ): Omit<EncodedExample, 'index'> {
    const limit = this.maxSeqLen - 1; // room left for [SEP]
    let n = 1;
    for (const w of words) {
      if (n >= limit) break;
      n += Math.max(1, this.piecesOf(w).length);
    }
    n = Math.min(n, limit) + 1;
    const ids = new Int32Array(n);
    const wordIds = new Int32Array(n).fill(-1);
    const tokenLabels = new Int32Array(n).fill(IGNORE_INDEX);
    ids[0] = this.cls;
    let at = 1;
    for (let w = 0; w < words.length && at < n - 1; w++) {
      let p = this.piecesOf(words[w] as string);
      if (p.length === 0) {
        if (this.unk === undefined) throw new InputError('The tokenizer has no [UNK] token for a word without pieces');
        p = Int32Array.of(this.unk);
      }
      const take = Math.min(p.length, n - 1 - at);
      ids.set(p.subarray(0, take), at);
      wordIds.fill(w, at, at + take);
      tokenLabels[at] = labelId.get(tags[w] as string) as number;
      at += take;
    }
    ids[n - 1] = this.sep;
    return { ids, typeIds: new Int32Array(n), tokenLabels, wordIds };
  }
}

function regressionTarget(label: unknown): number | undefined {
  if (typeof label === 'number') return Number.isFinite(label) ? label : undefined;
  if (typeof label === 'string' && label.trim() !== '') {
    const v = Number(label);
    return Number.isFinite(v) ? v : undefined;
  }
  return undefined;
}

// ------------------------------------------------------------------------------------------------
// Packing

/** How many batches' worth of examples are sorted by length together. */
const BUCKET_BATCHES = 50;

/**
 * Cuts the encoded examples into packed batches for one epoch, every example exactly once.
 *
 * Length bucketing: the examples (shuffled when `shuffle`) are taken in chunks of about 50
 * batches' worth, each chunk is sorted by length, and batches are cut in that order so that a
 * batch's total length stays within `maxTokens` and its size within `maxBatchSize`; then the
 * batch order is shuffled. Batches hold sequences of similar length without any padding, and the
 * order still changes every epoch. The result depends only on the examples and (seed, epoch).
 *
 * @example
 * ```ts
 * const batches = packBatches(encoded, { maxTokens: 4096, maxBatchSize: 32, shuffle: true, seed: 7, epoch });
 * ```
 */
export function packBatches(encoded: readonly EncodedExample[], options: PackOptions): PackedBatch[] {
  checkArray(encoded, 'an array of encoded examples', 'encoded');
  checkObject(options, 'options');
  const { maxTokens, maxBatchSize, shuffle, seed, epoch } = options;
  checkCount(maxTokens, 'options.maxTokens');
  checkCount(maxBatchSize, 'options.maxBatchSize');
  if (typeof shuffle !== 'boolean') throw expected(InputError, 'a boolean', 'options.shuffle', shuffle);
  if (!Number.isSafeInteger(seed)) throw expected(InputError, 'a safe integer', 'options.seed', seed);
  if (!Number.isSafeInteger(epoch) || epoch < 0) {
    throw expected(InputError, 'a non-negative integer', 'options.epoch', epoch);
  }
  const kind = labelKind(encoded);
  const n = encoded.length;
  const lengths = new Int32Array(n);
  for (let i = 0; i < n; i++) lengths[i] = (encoded[i] as EncodedExample).ids.length;

  const rng = new Rng(seed, epoch);
  const order = Array.from({ length: n }, (_, i) => i);
  if (shuffle) rng.shuffle(order);
  const batches: number[][] = [];
  const chunkTokens = BUCKET_BATCHES * maxTokens;
  const chunkSize = BUCKET_BATCHES * maxBatchSize;
  for (let start = 0; start < n;) {
    let end = start;
    let tokens = 0;
    while (end < n && tokens < chunkTokens && end - start < chunkSize)
      tokens += lengths[order[end++] as number] as number;
    // Stable: equal lengths keep their (shuffled) order.
    const chunk = order.slice(start, end).sort((a, b) => (lengths[a] as number) - (lengths[b] as number));
    let batch: number[] = [];
    let batchTokens = 0;
    for (const i of chunk) {
      const len = lengths[i] as number;
      if (batch.length > 0 && (batchTokens + len > maxTokens || batch.length >= maxBatchSize)) {
        batches.push(batch);
        batch = [];
        batchTokens = 0;
      }
      batch.push(i);
      batchTokens += len;
    }
    if (batch.length > 0) batches.push(batch);
    start = end;
  }
  if (shuffle) rng.shuffle(batches);
  return batches.map((b) => buildBatch(encoded, b, kind));
}

type LabelKind = { kind: 'class' } | { kind: 'vector'; width: number } | { kind: 'token' } | { kind: 'none' };

/** The label layout of the examples, which must all have the same one. */
function labelKind(encoded: readonly EncodedExample[]): LabelKind {
  const kindOf = (e: EncodedExample): LabelKind => {
    if (e.tokenLabels !== undefined) return { kind: 'token' };
    if (e.labelVector !== undefined) return { kind: 'vector', width: e.labelVector.length };
    if (e.label !== undefined) return { kind: 'class' };
    return { kind: 'none' };
  };
  let first: LabelKind | undefined;
  encoded.forEach((e: unknown, i) => {
    if (!isRecord(e) || !(e.ids instanceof Int32Array) || !(e.typeIds instanceof Int32Array)) {
      throw expected(InputError, 'an encoded example (ids, typeIds)', `encoded[${i}]`, e);
    }
    const ex = e as unknown as EncodedExample;
    if (
      ex.typeIds.length !== ex.ids.length ||
      (ex.tokenLabels !== undefined && ex.tokenLabels.length !== ex.ids.length)
    ) {
      throw new InputError(`Expected typeIds and tokenLabels as long as ids for encoded[${i}]`);
    }
    const k = kindOf(ex);
    first ??= k;
    if (k.kind !== first.kind || (k.kind === 'vector' && first.kind === 'vector' && k.width !== first.width)) {
      throw new InputError(`Expected the label layout of encoded[0] for encoded[${i}] but it differs (mixed tasks)`);
    }
  });
  return first ?? { kind: 'none' };
}

function buildBatch(encoded: readonly EncodedExample[], members: readonly number[], kind: LabelKind): PackedBatch {
  const B = members.length;
  const offsets = new Int32Array(B + 1);
  const indices = new Int32Array(B);
  for (let b = 0; b < B; b++) {
    const e = encoded[members[b] as number] as EncodedExample;
    offsets[b + 1] = (offsets[b] as number) + e.ids.length;
    indices[b] = e.index;
  }
  const T = offsets[B] as number;
  const ids = new Int32Array(T);
  const typeIds = new Int32Array(T);
  let labels: Int32Array | Float32Array;
  let wordIds: Int32Array | undefined;
  switch (kind.kind) {
    case 'class':
      labels = new Int32Array(B);
      break;
    case 'vector':
      labels = new Float32Array(B * kind.width);
      break;
    case 'token':
      labels = new Int32Array(T);
      wordIds = new Int32Array(T).fill(-1);
      break;
    default:
      labels = new Int32Array(0);
  }
  for (let b = 0; b < B; b++) {
    const e = encoded[members[b] as number] as EncodedExample;
    const at = offsets[b] as number;
    ids.set(e.ids, at);
    typeIds.set(e.typeIds, at);
    if (kind.kind === 'class') labels[b] = e.label as number;
    else if (kind.kind === 'vector') labels.set(e.labelVector as Float32Array, b * kind.width);
    else if (kind.kind === 'token') {
      labels.set(e.tokenLabels as Int32Array, at);
      if (e.wordIds !== undefined) wordIds?.set(e.wordIds, at);
    }
  }
  const batch: PackedBatch = { ids, typeIds, offsets, labels, indices, tokens: T };
  if (wordIds !== undefined) batch.wordIds = wordIds;
  return batch;
}

// ------------------------------------------------------------------------------------------------
// Splitting

/**
 * Splits examples into a training and an evaluation set, keeping each group (same value of the
 * `group` field) whole on one side: the groups are shuffled (seeded) and taken for evaluation
 * until they hold `fraction` of the examples, rounded up. Examples without a group value are
 * groups of their own, so without any groups the split is per example. Unless `fraction` is 1,
 * at least one group stays for training. Both sides keep the input order.
 *
 * @example
 * ```ts
 * const { train, eval: evalSet } = splitByGroup(examples, { fraction: 0.1, seed: 1, group: 'conversation' });
 * ```
 */
export function splitByGroup<T extends Example>(
  examples: readonly T[],
  options: SplitOptions,
): { train: T[]; eval: T[] } {
  checkArray(examples, 'an array of examples', 'examples');
  checkObject(options, 'options');
  const { fraction, seed } = options;
  const key = options.group ?? 'group';
  if (typeof fraction !== 'number' || !(fraction >= 0 && fraction <= 1)) {
    throw expected(InputError, 'a number in [0, 1]', 'options.fraction', fraction);
  }
  if (!Number.isSafeInteger(seed)) throw expected(InputError, 'a safe integer', 'options.seed', seed);
  if (typeof key !== 'string') throw expected(InputError, 'a field name', 'options.group', key);

  // Groups in order of first appearance: the split then depends on the examples, not on Map order.
  const byValue = new Map<string | number, number[]>();
  const groups: number[][] = [];
  examples.forEach((ex: unknown, i) => {
    if (!isRecord(ex)) throw expected(InputError, 'an example object', `examples[${i}]`, ex);
    const v = ex[key];
    if (v === undefined || v === null) {
      groups.push([i]);
      return;
    }
    if (typeof v !== 'string' && !(typeof v === 'number' && Number.isFinite(v))) {
      throw expected(InputError, 'a string or number', `examples[${i}].${key}`, v);
    }
    let g = byValue.get(v);
    if (g === undefined) {
      byValue.set(v, (g = []));
      groups.push(g);
    }
    g.push(i);
  });
  const order = new Rng(seed).shuffle(Array.from({ length: groups.length }, (_, i) => i));
  const target = Math.ceil(fraction * examples.length);
  const maxGroups = fraction < 1 && groups.length > 1 ? groups.length - 1 : groups.length;
  const isEval = new Uint8Array(examples.length);
  let taken = 0;
  for (let k = 0; k < maxGroups && taken < target; k++) {
    for (const i of groups[order[k] as number] as number[]) isEval[i] = 1;
    taken += (groups[order[k] as number] as number[]).length;
  }
  const train: T[] = [];
  const evalSet: T[] = [];
  examples.forEach((ex, i) => (isEval[i] === 1 ? evalSet : train).push(ex));
  return { train, eval: evalSet };
}

/**
 * A seeded sample of at most `k` examples per class (few-shot sets): for `'sequence'` by
 * `label`, for `'multi-label'` by the first of `labels` (an example without labels counts as
 * the class ''). Examples keep their input order; a class with fewer than k keeps all.
 *
 * @example
 * ```ts
 * const tenShot = samplePerLabel(train, 10, { seed: 1 }); // 10 utterances per intent
 * ```
 */
export function samplePerLabel<T extends Example>(examples: readonly T[], k: number, options: { seed: number }): T[] {
  checkArray(examples, 'an array of examples', 'examples');
  checkCount(k, 'k');
  checkObject(options, 'options');
  if (!Number.isSafeInteger(options.seed)) throw expected(InputError, 'a safe integer', 'options.seed', options.seed);
  const byClass = new Map<string, number[]>();
  examples.forEach((ex, i) => {
    const key =
      ex.label !== undefined ? String(ex.label) : Array.isArray(ex.labels) ? String(ex.labels[0] ?? '') : undefined;
    if (key === undefined) {
      throw new InputError(`Expected a label or labels on examples[${String(i)}] to sample per label but it has none`);
    }
    let list = byClass.get(key);
    if (list === undefined) byClass.set(key, (list = []));
    list.push(i);
  });
  const keep = new Uint8Array(examples.length);
  const rng = new Rng(options.seed, 0x5a3e);
  for (const key of [...byClass.keys()].sort()) {
    const list = byClass.get(key) ?? [];
    for (const i of rng.shuffle(list.slice()).slice(0, k)) keep[i] = 1;
  }
  return examples.filter((_, i) => keep[i] === 1);
}

// ------------------------------------------------------------------------------------------------
// Helpers

function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/** Throws unless v is an array; unlike Array.isArray, does not narrow a typed array to any[]. */
function checkArray(v: unknown, expectation: string, what: string): void {
  if (!Array.isArray(v)) throw expected(InputError, expectation, what, v);
}

function checkObject(v: unknown, what: string): void {
  if (!isRecord(v)) throw expected(InputError, 'an object', what, v);
}

function isStringArray(v: unknown): v is readonly string[] {
  return Array.isArray(v) && v.every((s) => typeof s === 'string');
}

function checkTask(task: unknown): asserts task is TrainTask {
  if (!TASKS.includes(task as TrainTask)) {
    throw expected(InputError, `one of ${TASKS.map((t) => `'${t}'`).join(', ')}`, 'task', task);
  }
}

function checkCount(v: unknown, what: string): void {
  if (typeof v !== 'number' || !Number.isInteger(v) || v < 1) throw expected(InputError, 'a positive integer', what, v);
}
