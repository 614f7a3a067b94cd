/**
 * WordPiece vocabulary training: the algorithm of Hugging Face `tokenizers`' `WordPieceTrainer`
 * (which is its BPE trainer with a "##" continuation prefix), on the words that
 * {@link Tokenizer.wordSplitter} makes of the corpus, that is on exactly what encoding sees.
 *
 *   1. Count words. Files are streamed in 1 MiB chunks cut at line ends; words are counted in a
 *      hash table over their UTF-16 code units, so no string is made per occurrence.
 *   2. Vocabulary = special tokens, then the alphabet (every character of every word, or the
 *      `limitAlphabet` most frequent), sorted by code point, then "##c" for each character seen
 *      inside a word, sorted by code point.
 *   3. Each distinct word becomes a run of symbol ids in one Int32Array: its first character,
 *      then "##" characters. Pair counts (weighted by word counts) live in an open-addressing
 *      table keyed by (a, b); a max-heap orders pairs by (count desc, a asc, b asc).
 *   4. Repeatedly pop the best pair, merge it in the words listed with its heap entry, adjust
 *      the counts of the neighbouring pairs, and push an entry for each pair the merges created
 *      (with the words it appeared in). An entry whose count went stale is pushed back with the
 *      current count (lazy invalidation). Stop at `vocabSize` tokens, or when the best pair is
 *      seen fewer than `minFrequency` times. The merged token is A + B without B's "##".
 *
 * Step 4 follows the Rust trainer's bookkeeping exactly (each heap entry carries its own word
 * list; a merged pair's count is not reset), so the vocabulary is the one `tokenizers` learns
 * whenever the ids it compares on ties are the same. They differ in one place: `tokenizers`
 * numbers the "##c" tokens in hash-map order (it changes from run to run), this trainer by code
 * point; equal-count pairs that only the id of a "##c" token orders can then be merged in
 * another order. The output here is a pure function of the corpus and the options.
 */
import * as fs from 'fs';
import * as path from 'path';

import { AbortedError } from '../errors';
import { TokenizerError, invalid } from './errors';
import { Tokenizer } from './tokenizer';
import type { WordSplitter } from './tokenizer';

/**
 * What {@link Tokenizer.train} learns from:
 * - a path, or an array of paths, of files or directories. A file is read whatever its name;
 *   a directory is walked recursively (in name order, hidden entries skipped) for files whose
 *   name ends with one of {@link TrainOptions.extensions} (`.txt` and `.md` by default). Files
 *   must be UTF-8 text; they are streamed, never read whole.
 * - `{ texts }`: an iterable or async iterable of strings (lines, documents: any length), for
 *   in-memory data or a custom reader.
 */
export type TrainCorpus = string | readonly string[] | { texts: Iterable<string> | AsyncIterable<string> };

/** Options of {@link Tokenizer.train}. */
export interface TrainOptions {
  /**
   * Tokens in the vocabulary, special tokens included (default 8000: a small vocabulary fits
   * the small models trained from scratch here; BERT's is 30522). The result has exactly this
   * many tokens, or fewer when the corpus runs out of pairs seen `minFrequency` times. It must
   * be at least the initial vocabulary (specials + alphabet + "##" characters); the error says
   * how large that is.
   */
  vocabSize?: number;
  /** Lowercase the text, as the tokenizer will when encoding (default true). */
  lowercase?: boolean;
  /** Strip accents; `null` (default) follows `lowercase`. */
  stripAccents?: boolean | null;
  /** Put spaces around CJK ideographs (default true). */
  handleChineseChars?: boolean;
  /** Remove control characters, map whitespace to a space (default true). */
  cleanText?: boolean;
  /**
   * A pair of tokens must occur at least this many times (counting word frequencies) to be
   * merged (default 2). As in `tokenizers`, this applies to pairs: rare words still bring
   * their characters into the alphabet (use `limitAlphabet` to cap it).
   */
  minFrequency?: number;
  /**
   * Special tokens, given the first ids in this order (default `[PAD]`, `[UNK]`, `[CLS]`,
   * `[SEP]`, `[MASK]`: ids 0-4). Must include `[UNK]`, `[CLS]` and `[SEP]`; others become
   * tokens matched whole when encoding.
   */
  specialTokens?: readonly string[];
  /** Keep only the most frequent characters of the alphabet (default: all). */
  limitAlphabet?: number;
  /** Prefix of word-continuation pieces (default "##"). */
  continuingSubwordPrefix?: string;
  /** File name endings read from directories (default `['.txt', '.md']`). */
  extensions?: readonly string[];
  /** Called every `progressIntervalMs` while counting and merging, and once at the end. */
  onProgress?: (progress: TrainProgress) => void;
  /** Milliseconds between `onProgress` calls (default 200). */
  progressIntervalMs?: number;
  /** Stops training; the promise then rejects with `ERR_ABORTED`. */
  signal?: AbortSignal;
}

/** Where {@link Tokenizer.train} is. */
export interface TrainProgress {
  /** `count`: reading the corpus; `merge`: learning merges; `done`: finished (the last call). */
  phase: 'count' | 'merge' | 'done';
  /** Bytes read (files) or texts read (`{ texts }`) so far. */
  read: number;
  /** Bytes of all the files; 0 for `{ texts }` (unknown). */
  totalBytes: number;
  /** Files of the corpus (0 for `{ texts }`). */
  files: number;
  /** Words read, and distinct words, so far. */
  words: number;
  distinctWords: number;
  /** Tokens in the vocabulary so far, and the target `vocabSize`. */
  vocabSize: number;
  targetVocabSize: number;
  /** Specials + alphabet + "##" characters: the vocabulary before any merge (0 while counting). */
  initialVocabSize: number;
  /** Merges done (a merge may produce a token already in the vocabulary). */
  merges: number;
  elapsedSeconds: number;
}

/** Why a corpus was refused. */
export type CorpusErrorReason = 'not-found' | 'unreadable' | 'empty' | 'binary';

/**
 * The corpus of {@link Tokenizer.train} cannot be used (code `ERR_INPUT`): `reason` says why,
 * `path` names the file or directory when there is one, and `cause` holds the file-system error
 * (`cause.code` is `'ENOENT'` for a missing path).
 */
export class CorpusError extends TokenizerError {
  readonly reason: CorpusErrorReason;
  readonly path: string | undefined;

  constructor(message: string, reason: CorpusErrorReason, file?: string, cause?: unknown) {
    super(message);
    this.name = 'CorpusError';
    this.reason = reason;
    this.path = file;
    if (cause !== undefined) Object.defineProperty(this, 'cause', { value: cause, configurable: true });
  }
}

const DEFAULT_SPECIALS = ['[PAD]', '[UNK]', '[CLS]', '[SEP]', '[MASK]'] as const;
const DEFAULT_EXTENSIONS = ['.txt', '.md'] as const;
const CHUNK_BYTES = 1 << 20;
/** Work between two returns to the event loop (abort, progress). */
const SLICE_MS = 50;
/** A file is binary when more than this share of its characters are invalid UTF-8 sequences. */
const MAX_INVALID_SHARE = 0.01;
/** Largest vocabulary: ids must fit the 26 bits each half of a pair key gets. */
const MAX_VOCAB = 1 << 24;

interface Settings {
  vocabSize: number;
  minFrequency: number;
  specials: string[];
  limitAlphabet: number | undefined;
  prefix: string;
  extensions: string[];
  normalizer: { lowercase: boolean; stripAccents: boolean | null; handleChineseChars: boolean; cleanText: boolean };
  onProgress: ((p: TrainProgress) => void) | undefined;
  intervalMs: number;
  signal: AbortSignal | undefined;
}

/**
 * {@link Tokenizer.train}.
 *
 * @param continuationOrder for tests: the "##c" tokens in the order to number them (as a run of
 *   `tokenizers` numbered them, read from its vocab.txt); the others follow by code point.
 */
export async function trainWordPiece(
  corpus: TrainCorpus,
  options: TrainOptions = {},
  continuationOrder: readonly string[] = [],
): Promise<Tokenizer> {
  const s = settingsOf(options);
  const run = new Run(s);
  run.checkAbort();
  const counter = new WordCounter();
  const split = Tokenizer.wordSplitter(s.normalizer);
  await countCorpus(corpus, s, run, counter, split);
  if (counter.size === 0) {
    throw new CorpusError('Expected a corpus with words but received one that is empty or only whitespace', 'empty');
  }
  const tokens = await learnVocab(counter, s, run, continuationOrder);
  run.progress.phase = 'done';
  run.progress.vocabSize = tokens.length;
  run.report(true);
  return Tokenizer.fromVocab(`${tokens.join('\n')}\n`, {
    lowercase: s.normalizer.lowercase,
    stripAccents: s.normalizer.stripAccents,
    handleChineseChars: s.normalizer.handleChineseChars,
    cleanText: s.normalizer.cleanText,
    continuingSubwordPrefix: s.prefix,
    specialTokens: s.specials,
  });
}

// ------------------------------------------------------------------------------------------------
// Options

function settingsOf(o: TrainOptions): Settings {
  if (typeof o !== 'object' || o === null) throw invalid('an object', 'options', o);
  const vocabSize = intOption(o.vocabSize, 'options.vocabSize', 8000, 1, MAX_VOCAB);
  const minFrequency = intOption(o.minFrequency, 'options.minFrequency', 2, 0, Number.MAX_SAFE_INTEGER);
  const limitAlphabet =
    o.limitAlphabet === undefined ? undefined : intOption(o.limitAlphabet, 'options.limitAlphabet', 0, 1, MAX_VOCAB);
  const specials = o.specialTokens ?? DEFAULT_SPECIALS;
  if (!Array.isArray(specials)) throw invalid('an array of strings', 'options.specialTokens', specials);
  specials.forEach((t: unknown, i) => {
    if (typeof t !== 'string' || t === '' || /[\n\r]/.test(t)) {
      throw invalid('a non-empty string without line breaks', `options.specialTokens[${i}]`, t);
    }
    if (specials.indexOf(t) !== i) throw invalid('distinct tokens', 'options.specialTokens', t);
  });
  for (const role of ['[UNK]', '[CLS]', '[SEP]']) {
    if (!specials.includes(role)) {
      throw new TokenizerError(
        `Expected options.specialTokens to include ${role} (with [UNK] and [CLS], [SEP]) but received [${specials.join(', ')}]`,
      );
    }
  }
  const prefix = o.continuingSubwordPrefix ?? '##';
  if (typeof prefix !== 'string' || /\s/.test(prefix)) {
    throw invalid('a string without whitespace', 'options.continuingSubwordPrefix', prefix);
  }
  const extensions = o.extensions ?? DEFAULT_EXTENSIONS;
  if (!Array.isArray(extensions) || !extensions.every((e) => typeof e === 'string' && e !== '')) {
    throw invalid('an array of file name endings such as ".txt"', 'options.extensions', extensions);
  }
  const bool = (v: unknown, what: string, dflt: boolean): boolean => {
    if (v === undefined) return dflt;
    if (typeof v !== 'boolean') throw invalid('a boolean', what, v);
    return v;
  };
  const strip = o.stripAccents ?? null;
  if (strip !== null && typeof strip !== 'boolean') throw invalid('a boolean or null', 'options.stripAccents', strip);
  if (o.onProgress !== undefined && typeof o.onProgress !== 'function') {
    throw invalid('a function', 'options.onProgress', o.onProgress);
  }
  const signal = o.signal;
  if (signal !== undefined && (typeof signal !== 'object' || signal === null || !('aborted' in signal))) {
    throw invalid('an AbortSignal', 'options.signal', signal);
  }
  return {
    vocabSize,
    minFrequency,
    specials: [...(specials as readonly string[])],
    limitAlphabet,
    prefix,
    extensions: [...(extensions as readonly string[])],
    normalizer: {
      lowercase: bool(o.lowercase, 'options.lowercase', true),
      stripAccents: strip,
      handleChineseChars: bool(o.handleChineseChars, 'options.handleChineseChars', true),
      cleanText: bool(o.cleanText, 'options.cleanText', true),
    },
    onProgress: o.onProgress,
    intervalMs: intOption(o.progressIntervalMs, 'options.progressIntervalMs', 200, 0, Number.MAX_SAFE_INTEGER),
    signal,
  };
}

function intOption(v: unknown, what: string, dflt: number, min: number, max: number): number {
  if (v === undefined) return dflt;
  if (typeof v !== 'number' || !Number.isInteger(v) || v < min || v > max) {
    throw invalid(`an integer in [${min}, ${max}]`, what, v);
  }
  return v;
}

/** Progress, abort and the event loop: one per training run. */
class Run {
  readonly progress: TrainProgress;
  private readonly start = performance.now();
  private lastReport = -Infinity;
  private lastYield = performance.now();

  constructor(private readonly s: Settings) {
    this.progress = {
      phase: 'count',
      read: 0,
      totalBytes: 0,
      files: 0,
      words: 0,
      distinctWords: 0,
      vocabSize: 0,
      targetVocabSize: s.vocabSize,
      initialVocabSize: 0,
      merges: 0,
      elapsedSeconds: 0,
    };
  }

  checkAbort(): void {
    if (this.s.signal?.aborted === true) throw new AbortedError('Tokenizer.train was aborted through its signal');
  }

  /** Calls onProgress when the interval has passed (or `force`). */
  report(force = false): void {
    const cb = this.s.onProgress;
    if (cb === undefined) return;
    const now = performance.now();
    if (!force && now - this.lastReport < this.s.intervalMs) return;
    this.lastReport = now;
    this.progress.elapsedSeconds = (now - this.start) / 1000;
    cb({ ...this.progress });
  }

  /** After a slice of work: report, return to the event loop when due, and honour the signal. */
  async pause(): Promise<void> {
    this.report();
    const now = performance.now();
    if (now - this.lastYield >= SLICE_MS) {
      await new Promise<void>((resolve) => setImmediate(resolve));
      this.lastYield = performance.now();
    }
    this.checkAbort();
  }
}

// ------------------------------------------------------------------------------------------------
// Word counting

/**
 * Distinct words and their counts: an open-addressing hash table over UTF-16 code units, the
 * units of every distinct word stored back to back in one pool.
 */
class WordCounter {
  size = 0;
  /** Sum of all counts. */
  total = 0;
  pool = new Uint16Array(1 << 20);
  poolUsed = 0;
  start = new Int32Array(1 << 14);
  length = new Int32Array(1 << 14);
  hash = new Int32Array(1 << 14);
  count = new Float64Array(1 << 14);
  private table = new Int32Array(1 << 15).fill(-1);
  private mask = (1 << 15) - 1;

  add(units: Uint16Array, n: number): void {
    let h = 0x811c9dc5 | 0; // FNV-1a over code units
    for (let i = 0; i < n; i++) h = Math.imul(h ^ (units[i] as number), 0x01000193);
    const table = this.table;
    const mask = this.mask;
    this.total++;
    for (let slot = h & mask; ; slot = (slot + 1) & mask) {
      const id = table[slot] as number;
      if (id < 0) {
        table[slot] = this.insert(units, n, h);
        if (this.size * 2 > mask) this.grow();
        return;
      }
      if (this.hash[id] === h && this.length[id] === n && this.same(id, units, n)) {
        this.count[id] = (this.count[id] as number) + 1;
        return;
      }
    }
  }

  private same(id: number, units: Uint16Array, n: number): boolean {
    const pool = this.pool;
    const s = this.start[id] as number;
    for (let i = 0; i < n; i++) if (pool[s + i] !== units[i]) return false;
    return true;
  }

  private insert(units: Uint16Array, n: number, h: number): number {
    const id = this.size++;
    if (id === this.start.length) {
      const cap = id * 2;
      this.start = grown(this.start, cap);
      this.length = grown(this.length, cap);
      this.hash = grown(this.hash, cap);
      this.count = grown(this.count, cap);
    }
    if (this.poolUsed + n > this.pool.length) {
      let cap = this.pool.length * 2;
      while (cap < this.poolUsed + n) cap *= 2;
      this.pool = grown(this.pool, cap);
    }
    this.pool.set(units.subarray(0, n), this.poolUsed);
    this.start[id] = this.poolUsed;
    this.length[id] = n;
    this.hash[id] = h;
    this.count[id] = 1;
    this.poolUsed += n;
    return id;
  }

  private grow(): void {
    const size = this.table.length * 2;
    const table = new Int32Array(size).fill(-1);
    const mask = size - 1;
    for (let id = 0; id < this.size; id++) {
      let slot = (this.hash[id] as number) & mask;
      while ((table[slot] as number) >= 0) slot = (slot + 1) & mask;
      table[slot] = id;
    }
    this.table = table;
    this.mask = mask;
  }
}

function grown<T extends Int32Array | Uint16Array | Float64Array>(a: T, cap: number): T {
  const next = new (a.constructor as new (n: number) => T)(cap);
  next.set(a);
  return next;
}

async function countCorpus(
  corpus: TrainCorpus,
  s: Settings,
  run: Run,
  counter: WordCounter,
  split: WordSplitter,
): Promise<void> {
  const onWord = (units: Uint16Array, n: number): void => counter.add(units, n);
  const p = run.progress;
  const sync = (): void => {
    p.words = counter.total;
    p.distinctWords = counter.size;
  };
  if (typeof corpus === 'object' && corpus !== null && !Array.isArray(corpus) && 'texts' in corpus) {
    const texts: unknown = corpus.texts;
    if (
      typeof texts !== 'object' ||
      texts === null ||
      !(Symbol.iterator in texts || Symbol.asyncIterator in texts) ||
      typeof texts === 'string'
    ) {
      throw invalid('an iterable or async iterable of strings', 'corpus.texts', texts);
    }
    let i = 0;
    for await (const text of texts as Iterable<unknown> | AsyncIterable<unknown>) {
      if (typeof text !== 'string') throw invalid('a string', `corpus.texts[${i}]`, text);
      split(text, onWord);
      p.read = ++i;
      if ((i & 255) === 0) {
        sync();
        await run.pause();
      }
    }
    sync();
    return;
  }
  const given: unknown = typeof corpus === 'string' ? [corpus] : corpus;
  if (!Array.isArray(given) || given.length === 0 || !given.every((x) => typeof x === 'string' && x !== '')) {
    throw invalid('a path, an array of paths or { texts }', 'corpus', corpus);
  }
  const paths = given as readonly string[];
  const files: { file: string; size: number }[] = [];
  for (const root of paths) await collectFiles(root, s.extensions, files, true);
  if (files.length === 0) {
    throw new CorpusError(
      `Expected ${s.extensions.join(' / ')} files in the corpus but found none under ${paths.join(', ')}`,
      'empty',
      paths[0],
    );
  }
  p.files = files.length;
  p.totalBytes = files.reduce((a, f) => a + f.size, 0);
  for (const { file } of files) {
    await countFile(file, split, onWord, run, sync);
  }
  sync();
}

/** Appends `root` (a file) or the matching files under it (a directory, walked in name order). */
async function collectFiles(
  root: string,
  extensions: readonly string[],
  out: { file: string; size: number }[],
  named: boolean,
): Promise<void> {
  let st: fs.Stats;
  try {
    st = await fs.promises.stat(root);
  } catch (err) {
    throw fsError(err, root);
  }
  if (st.isFile()) {
    if (named || extensions.some((e) => root.toLowerCase().endsWith(e.toLowerCase()))) {
      out.push({ file: root, size: st.size });
    }
    return;
  }
  if (!st.isDirectory()) return;
  let names: string[];
  try {
    names = await fs.promises.readdir(root);
  } catch (err) {
    throw fsError(err, root);
  }
  names.sort();
  for (const name of names) {
    if (name.startsWith('.')) continue;
    await collectFiles(path.join(root, name), extensions, out, false);
  }
}

function fsError(err: unknown, file: string): CorpusError {
  const code = (err as NodeJS.ErrnoException).code;
  if (code === 'ENOENT' || code === 'ENOTDIR') {
    return new CorpusError(
      `Expected an existing file or directory in the corpus but received '${file}'`,
      'not-found',
      file,
      err,
    );
  }
  return new CorpusError(`Cannot read '${file}': ${(err as Error).message}`, 'unreadable', file, err);
}

/**
 * Streams one file through the splitter, cut at line ends so that no word spans two pieces.
 * Refuses binary files: any NUL byte, or too many invalid UTF-8 sequences.
 */
async function countFile(
  file: string,
  split: WordSplitter,
  onWord: (units: Uint16Array, n: number) => void,
  run: Run,
  sync: () => void,
): Promise<void> {
  const decoder = new TextDecoder('utf-8');
  let carry = '';
  let chars = 0;
  let invalidSeqs = 0;
  const binary = (why: string): CorpusError =>
    new CorpusError(`Expected UTF-8 text but '${file}' looks binary (${why})`, 'binary', file);
  let stream: fs.ReadStream | undefined;
  try {
    stream = fs.createReadStream(file, { highWaterMark: CHUNK_BYTES });
    for await (const chunk of stream as AsyncIterable<Buffer>) {
      if (chunk.includes(0)) throw binary('NUL bytes');
      const text = decoder.decode(chunk, { stream: true });
      chars += text.length;
      // U+FFFD in the output that was not U+FFFD (EF BF BD) in the input: an invalid sequence.
      invalidSeqs += countOf(text, '\uFFFD') - countBytes(chunk, REPLACEMENT_BYTES);
      if (invalidSeqs > 8 && invalidSeqs > MAX_INVALID_SHARE * chars) {
        throw binary(`${invalidSeqs} invalid UTF-8 sequences in its first ${chars} characters`);
      }
      const cut = text.lastIndexOf('\n');
      if (cut < 0) {
        carry += text;
      } else {
        split(carry + text.slice(0, cut + 1), onWord);
        carry = text.slice(cut + 1);
      }
      run.progress.read += chunk.length;
      sync();
      await run.pause();
    }
    split(carry + decoder.decode(), onWord);
  } catch (err) {
    if (err instanceof TokenizerError || err instanceof AbortedError) throw err;
    throw fsError(err, file);
  } finally {
    stream?.destroy();
  }
}

const REPLACEMENT_BYTES = Buffer.from([0xef, 0xbf, 0xbd]);

function countOf(text: string, ch: string): number {
  let n = 0;
  for (let i = text.indexOf(ch); i >= 0; i = text.indexOf(ch, i + 1)) n++;
  return n;
}

function countBytes(buf: Buffer, seq: Buffer): number {
  let n = 0;
  for (let i = buf.indexOf(seq); i >= 0; i = buf.indexOf(seq, i + seq.length)) n++;
  return n;
}

// ------------------------------------------------------------------------------------------------
// Merges

/** Pairs of token ids (a, b): ids, counts, and an open-addressing index by (a, b). */
class PairTable {
  size = 0;
  a = new Int32Array(1 << 16);
  b = new Int32Array(1 << 16);
  count = new Float64Array(1 << 16);
  private table = new Int32Array(1 << 17).fill(-1);
  private mask = (1 << 17) - 1;

  /** The id of pair (a, b), created with count 0 when new. */
  id(a: number, b: number): number {
    const mask = this.mask;
    for (let slot = pairHash(a, b) & mask; ; slot = (slot + 1) & mask) {
      const p = this.table[slot] as number;
      if (p < 0) {
        const id = this.size++;
        if (id === this.a.length) {
          this.a = grown(this.a, id * 2);
          this.b = grown(this.b, id * 2);
          this.count = grown(this.count, id * 2);
        }
        this.a[id] = a;
        this.b[id] = b;
        this.count[id] = 0;
        this.table[slot] = id;
        if (this.size * 2 > mask) this.grow();
        return id;
      }
      if (this.a[p] === a && this.b[p] === b) return p;
    }
  }

  private grow(): void {
    const size = this.table.length * 2;
    const table = new Int32Array(size).fill(-1);
    const mask = size - 1;
    for (let p = 0; p < this.size; p++) {
      let slot = pairHash(this.a[p] as number, this.b[p] as number) & mask;
      while ((table[slot] as number) >= 0) slot = (slot + 1) & mask;
      table[slot] = p;
    }
    this.table = table;
    this.mask = mask;
  }
}

function pairHash(a: number, b: number): number {
  let h = Math.imul(a, 0x9e3779b1) ^ Math.imul(b + 0x632be5ab, 0x85ebca77);
  h ^= h >>> 15;
  return Math.imul(h, 0x2c1b3c6d) ^ (h >>> 13);
}

/**
 * The merge queue: entries (pair, count, words) in a binary max-heap ordered by count desc,
 * then pair ids (a, b) asc, as the Rust trainer's `Merge` ordering; then by entry id, so that
 * the order is total. Entry slots are recycled.
 */
class MergeQueue {
  private heap = new Int32Array(1 << 16);
  size = 0;
  private entCount = new Float64Array(1 << 16);
  private entPair = new Int32Array(1 << 16);
  private entWords: (number[] | undefined)[] = [];
  private free: number[] = [];
  private nextEntry = 0;

  constructor(private readonly pairs: PairTable) {}

  /** Adds an entry; `words` becomes the queue's. */
  push(pair: number, count: number, words: number[]): void {
    let e = this.free.pop();
    if (e === undefined) {
      e = this.nextEntry++;
      if (e === this.entCount.length) {
        this.entCount = grown(this.entCount, e * 2);
        this.entPair = grown(this.entPair, e * 2);
      }
    }
    this.entCount[e] = count;
    this.entPair[e] = pair;
    this.entWords[e] = words;
    this.pushEntry(e);
  }

  /** The best entry (removed from the heap, its slot still reserved), or -1 when empty. */
  pop(): number {
    if (this.size === 0) return -1;
    const heap = this.heap;
    const top = heap[0] as number;
    const last = heap[--this.size] as number;
    if (this.size > 0) {
      let i = 0;
      const n = this.size;
      for (;;) {
        const l = 2 * i + 1;
        if (l >= n) break;
        const r = l + 1;
        const c = r < n && this.before(heap[r] as number, heap[l] as number) ? r : l;
        if (!this.before(heap[c] as number, last)) break;
        heap[i] = heap[c] as number;
        i = c;
      }
      heap[i] = last;
    }
    return top;
  }

  countOf(e: number): number {
    return this.entCount[e] as number;
  }

  pairOf(e: number): number {
    return this.entPair[e] as number;
  }

  wordsOf(e: number): number[] {
    return this.entWords[e] ?? [];
  }

  /** Puts a popped entry back with a new count. */
  repush(e: number, count: number): void {
    this.entCount[e] = count;
    this.pushEntry(e);
  }

  /** Frees a popped entry. */
  release(e: number): void {
    this.entWords[e] = undefined;
    this.free.push(e);
  }

  private pushEntry(e: number): void {
    if (this.size === this.heap.length) this.heap = grown(this.heap, this.size * 2);
    const heap = this.heap;
    let i = this.size++;
    while (i > 0) {
      const parent = (i - 1) >> 1;
      if (!this.before(e, heap[parent] as number)) break;
      heap[i] = heap[parent] as number;
      i = parent;
    }
    heap[i] = e;
  }

  /** Entry x comes out before entry y. */
  private before(x: number, y: number): boolean {
    const cx = this.entCount[x] as number;
    const cy = this.entCount[y] as number;
    if (cx !== cy) return cx > cy;
    const px = this.entPair[x] as number;
    const py = this.entPair[y] as number;
    const pairs = this.pairs;
    if (px !== py) {
      const ax = pairs.a[px] as number;
      const ay = pairs.a[py] as number;
      if (ax !== ay) return ax < ay;
      return (pairs.b[px] as number) < (pairs.b[py] as number);
    }
    return x < y;
  }
}

/** Decodes the code points of a word (lone surrogates pass as themselves). */
function codePointsOf(units: Uint16Array, start: number, n: number, out: number[]): void {
  out.length = 0;
  const end = start + n;
  for (let i = start; i < end; i++) {
    const u = units[i] as number;
    if (u >= 0xd800 && u < 0xdc00 && i + 1 < end) {
      const v = units[i + 1] as number;
      if (v >= 0xdc00 && v < 0xe000) {
        out.push(0x10000 + ((u - 0xd800) << 10) + (v - 0xdc00));
        i++;
        continue;
      }
    }
    out.push(u);
  }
}

/** Steps 2-4 of the file comment; returns the tokens by id. */
async function learnVocab(
  counter: WordCounter,
  s: Settings,
  run: Run,
  continuationOrder: readonly string[],
): Promise<string[]> {
  const p = run.progress;
  p.phase = 'merge';
  const tokens: string[] = [];
  const vocab = new Map<string, number>();
  const addToken = (t: string): number => {
    let id = vocab.get(t);
    if (id === undefined) {
      id = tokens.length;
      tokens.push(t);
      vocab.set(t, id);
    }
    return id;
  };
  for (const t of s.specials) addToken(t);

  // The alphabet: characters weighted by word counts, limited to the most frequent, by code point.
  const nWords = counter.size;
  const cps: number[] = [];
  const charCount = new Map<number, number>();
  for (let w = 0; w < nWords; w++) {
    codePointsOf(counter.pool, counter.start[w] as number, counter.length[w] as number, cps);
    const c = counter.count[w] as number;
    for (const cp of cps) charCount.set(cp, (charCount.get(cp) ?? 0) + c);
  }
  let alphabet = [...charCount.entries()];
  if (s.limitAlphabet !== undefined && alphabet.length > s.limitAlphabet) {
    // Least frequent first, higher code point first among equals; drop the excess.
    alphabet.sort((x, y) => x[1] - y[1] || y[0] - x[0]);
    alphabet = alphabet.slice(alphabet.length - s.limitAlphabet);
  }
  alphabet.sort((x, y) => x[0] - y[0]);
  for (const [cp] of alphabet) addToken(String.fromCodePoint(cp));

  // "##c" for every kept character that appears after the first position of a word.
  const isKept = (cp: number): boolean => vocab.has(String.fromCodePoint(cp));
  const inner = new Set<number>();
  let nSymbols = 0;
  for (let w = 0; w < nWords; w++) {
    codePointsOf(counter.pool, counter.start[w] as number, counter.length[w] as number, cps);
    for (let k = 0; k < cps.length; k++) {
      const cp = cps[k] as number;
      if (!isKept(cp)) continue;
      nSymbols++;
      if (k > 0) inner.add(cp);
    }
  }
  const innerTokens = new Set([...inner].sort((x, y) => x - y).map((cp) => s.prefix + String.fromCodePoint(cp)));
  for (const t of continuationOrder) if (innerTokens.has(t)) addToken(t);
  for (const t of innerTokens) addToken(t);
  const initial = tokens.length;
  p.initialVocabSize = initial;
  p.vocabSize = initial;
  run.report(true);
  if (initial > s.vocabSize) {
    throw new TokenizerError(
      `Expected options.vocabSize of at least ${initial} (${s.specials.length} special tokens + ${alphabet.length} ` +
        `characters + ${inner.size} "${s.prefix}" characters) but received ${s.vocabSize}; ` +
        `use a larger vocabSize or a smaller limitAlphabet`,
    );
  }

  // Words as symbol runs: sym[wStart[w] .. wStart[w] + wLen[w]).
  const sym = new Int32Array(nSymbols);
  const wStart = new Int32Array(nWords);
  const wLen = new Int32Array(nWords);
  const wCount = counter.count;
  let at = 0;
  for (let w = 0; w < nWords; w++) {
    codePointsOf(counter.pool, counter.start[w] as number, counter.length[w] as number, cps);
    wStart[w] = at;
    for (let k = 0; k < cps.length; k++) {
      const ch = String.fromCodePoint(cps[k] as number);
      const id = vocab.get(k === 0 ? ch : s.prefix + ch);
      if (id === undefined || !vocab.has(ch)) continue;
      sym[at++] = id;
    }
    wLen[w] = at - (wStart[w] as number);
  }

  // Initial pair counts, and the words each pair occurs in.
  const pairs = new PairTable();
  const queue = new MergeQueue(pairs);
  {
    const where: number[][] = [];
    for (let w = 0; w < nWords; w++) {
      const s0 = wStart[w] as number;
      const end = s0 + (wLen[w] as number);
      const c = wCount[w] as number;
      for (let i = s0; i + 1 < end; i++) {
        const pid = pairs.id(sym[i] as number, sym[i + 1] as number);
        pairs.count[pid] = (pairs.count[pid] as number) + c;
        const list = (where[pid] ??= []);
        if (list[list.length - 1] !== w) list.push(w);
      }
    }
    for (let pid = 0; pid < pairs.size; pid++) {
      const count = pairs.count[pid] as number;
      if (count > 0) queue.push(pid, count, where[pid] ?? []);
    }
  }

  // The merge loop.
  let wtuPairs: number[] = []; // pairs that gained occurrences this step, in first-seen order
  const wtu = new Map<number, number[]>(); // ... and the words they gained them in
  const change = (a: number, b: number, delta: number, w: number): void => {
    const pid = pairs.id(a, b);
    pairs.count[pid] = (pairs.count[pid] as number) + delta;
    if (delta > 0) {
      let list = wtu.get(pid);
      if (list === undefined) {
        wtu.set(pid, (list = []));
        wtuPairs.push(pid);
      }
      if (list[list.length - 1] !== w) list.push(w);
    }
  };
  let steps = 0;
  while (tokens.length < s.vocabSize) {
    const e = queue.pop();
    if (e < 0) break;
    const pid = queue.pairOf(e);
    const current = pairs.count[pid] as number;
    if (queue.countOf(e) !== current) {
      queue.repush(e, current);
      continue;
    }
    if (current < 1 || current < s.minFrequency) break;
    const a = pairs.a[pid] as number;
    const b = pairs.b[pid] as number;
    const tokenB = tokens[b] as string;
    const merged = (tokens[a] as string) + (tokenB.startsWith(s.prefix) ? tokenB.slice(s.prefix.length) : tokenB);
    const n = addToken(merged);

    for (const w of queue.wordsOf(e)) {
      // Merge every (a, b) of word w left to right, compacting in place; neighbours' pair counts
      // move to the pairs with the new token.
      const s0 = wStart[w] as number;
      const end = s0 + (wLen[w] as number);
      const c = wCount[w] as number;
      let out = s0;
      for (let r = s0; r < end;) {
        if (sym[r] === a && r + 1 < end && sym[r + 1] === b) {
          if (out > s0) {
            const prev = sym[out - 1] as number;
            change(prev, a, -c, w);
            change(prev, n, c, w);
          }
          sym[out++] = n;
          r += 2;
          if (r < end) {
            const next = sym[r] as number;
            change(b, next, -c, w);
            change(n, next, c, w);
          }
        } else {
          sym[out++] = sym[r++] as number;
        }
      }
      wLen[w] = out - s0;
    }
    queue.release(e);
    for (const q of wtuPairs) {
      const count = pairs.count[q] as number;
      if (count > 0) queue.push(q, count, wtu.get(q) ?? []);
    }
    wtu.clear();
    wtuPairs = [];
    p.merges++;
    p.vocabSize = tokens.length;
    if ((++steps & 63) === 0) await run.pause();
  }
  return tokens;
}
