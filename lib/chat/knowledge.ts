/**
 * A knowledge base of question/answer entries searched by meaning: each entry's question is
 * embedded once, and a query is scored against every entry by cosine similarity.
 *
 * The scoring is native: the vectors are kept in blocks of {@link BLOCK_ROWS} rows, and a block
 * of queries times a block of rows is one {@link ops.gemm} (so the scratch memory stays bounded
 * at any size, and adding entries never copies the full matrix); the rows' L2 norms come from the
 * LayerNorm kernel's statistics. Only the top-k selection runs in JS, as a k-sized heap over each
 * score row (no sort of the whole row).
 *
 * @example
 * ```ts
 * const kb = await KnowledgeBase.build(faq, {
 *   embed: (texts) => model.embed(texts, { pooling: 'mean' }),
 *   fingerprint: 'support-encoder@3',
 * });
 * const [best] = await kb.search('how do I block my card?', { k: 3, minScore: 0.6 });
 * // best.entry.answer, best.score
 * await kb.save('kb/');
 * const again = await KnowledgeBase.load('kb/', { embed, fingerprint: 'support-encoder@3' });
 * ```
 */
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';

import { CheckpointError, InputError, expected } from '../errors';
import { writeFileAtomic } from '../fs-atomic';
import { ops } from '../tensor';

/** One question/answer pair of a {@link KnowledgeBase}. */
export interface KnowledgeEntry {
  /** Unique within the knowledge base. */
  id: string;
  /** The text that is embedded and matched against queries. */
  question: string;
  /** What the service says back when this entry is the answer. */
  answer: string;
  tags?: string[];
  /** The intent this entry belongs to; `search(..., { intent })` keeps only such entries. */
  intent?: string;
}

/**
 * Embeds texts into one row each: `[texts.length, H]` row-major. In practice
 * `(texts) => model.embed(texts, { pooling: 'mean' })`.
 */
export type EmbedFunction = (texts: string[]) => Promise<Float32Array>;

/** Options of {@link KnowledgeBase.build}. */
export interface KnowledgeBaseOptions {
  embed: EmbedFunction;
  /** The embedding size H; taken from the first embedding when absent. */
  dims?: number;
  /**
   * Names the embedding model (e.g. a model version). Saved with the knowledge base; loading with
   * another fingerprint is an error, since vectors of two models cannot be compared.
   */
  fingerprint?: string;
  /** Texts per `embed` call. Default 64. */
  batchSize?: number;
}

/** Options of {@link KnowledgeBase.load}. */
export interface KnowledgeLoadOptions {
  embed: EmbedFunction;
  /** When given, must equal the saved fingerprint (`ERR_CHECKPOINT` otherwise). */
  fingerprint?: string;
  /** Texts per `embed` call. Default 64. */
  batchSize?: number;
}

/** Options of {@link KnowledgeBase.search}. */
export interface KnowledgeSearchOptions {
  /** How many hits at most, an integer >= 1. Default 5. */
  k?: number;
  /** Hits scoring below this cosine similarity are left out. */
  minScore?: number;
  /** Only entries with this intent. */
  intent?: string;
}

/** One search result: the entry and its cosine similarity to the query, in [-1, 1]. */
export interface KnowledgeHit {
  entry: Readonly<KnowledgeEntry>;
  score: number;
}

/** The files of a saved knowledge base: `knowledge.json` names the vectors file. */
const INDEX_FILE = 'knowledge.json';
const FORMAT = 'elmo-knowledge';
const VERSION = 1;
/** Query rows per GEMM. */
const QUERY_BLOCK = 64;
/**
 * Entries per storage block: the scores of a query block against one storage block are
 * `QUERY_BLOCK x BLOCK_ROWS` floats (4 MiB).
 */
export const BLOCK_ROWS = 16384;
/** Rows per LayerNorm call when taking norms. */
const NORM_ROWS = 4096;
/** Tiny LayerNorm epsilon, taken back out of the variance it is added to. */
const NORM_EPS = 1e-30;
const MAX_K = 1_000_000;

interface SavedIndex {
  format: typeof FORMAT;
  version: number;
  count: number;
  dims: number;
  fingerprint?: string;
  vectors: string;
  sha256: string;
  entries: KnowledgeEntry[];
}

/**
 * FAQ-style entries searched by cosine similarity of their questions' embeddings. See the module
 * documentation for an example.
 */
export class KnowledgeBase {
  readonly #embed: EmbedFunction;
  readonly #batchSize: number;
  readonly #fingerprint: string | undefined;
  #dims: number;
  #entries: Readonly<KnowledgeEntry>[] = [];
  readonly #rowOf = new Map<string, number>();
  /**
   * The entries' embeddings, as embedded: row r is row `r % BLOCK_ROWS` of block
   * `floor(r / BLOCK_ROWS)`, each block `[capacity, dims]`; every block but the last is full and
   * holds BLOCK_ROWS rows, the last grows (doubling) up to BLOCK_ROWS.
   */
  #blocks: Float32Array[] = [];
  /** `[capacity]`: 1 / |row| (0 for a zero row). */
  #invNorms = new Float32Array(0);

  private constructor(embed: EmbedFunction, dims: number, fingerprint: string | undefined, batchSize: number) {
    this.#embed = embed;
    this.#dims = dims;
    this.#fingerprint = fingerprint;
    this.#batchSize = batchSize;
  }

  /**
   * Embeds every entry's question (in batches of `batchSize`) and returns the knowledge base.
   * Rejects with `ERR_INPUT` for a malformed entry, a repeated id, or an `embed` result of the
   * wrong type, size or with non-finite values.
   */
  static async build(entries: readonly KnowledgeEntry[], options: KnowledgeBaseOptions): Promise<KnowledgeBase> {
    const o = checkOptions(options, 'options');
    let dims = 0;
    if (options.dims !== undefined) {
      if (!Number.isInteger(options.dims) || options.dims < 1) {
        throw expected(InputError, 'a positive integer', 'options.dims', options.dims);
      }
      dims = options.dims;
    }
    const fingerprint = options.fingerprint;
    if (fingerprint !== undefined && typeof fingerprint !== 'string') {
      throw expected(InputError, 'a string', 'options.fingerprint', fingerprint);
    }
    const kb = new KnowledgeBase(o.embed, dims, fingerprint, o.batchSize);
    await kb.add(entries);
    return kb;
  }

  /**
   * Reads a knowledge base written by {@link KnowledgeBase.save}. A missing or malformed file, a
   * vectors file that does not match the entries (count, dims, checksum) or another fingerprint
   * rejects with `ERR_CHECKPOINT` naming what differs.
   */
  static async load(dir: string, options: KnowledgeLoadOptions): Promise<KnowledgeBase> {
    if (typeof dir !== 'string' || dir === '') throw expected(InputError, 'a directory path', 'dir', dir);
    const o = checkOptions(options, 'options');
    if (options.fingerprint !== undefined && typeof options.fingerprint !== 'string') {
      throw expected(InputError, 'a string', 'options.fingerprint', options.fingerprint);
    }
    const indexPath = path.join(dir, INDEX_FILE);
    let text: string;
    try {
      text = await fs.promises.readFile(indexPath, 'utf8');
    } catch (err) {
      throw new CheckpointError(`Cannot read ${indexPath}: ${(err as Error).message}`);
    }
    let index: SavedIndex;
    try {
      index = JSON.parse(text) as SavedIndex;
    } catch (err) {
      throw new CheckpointError(`${indexPath} is not valid JSON: ${(err as Error).message}`);
    }
    const bad = (what: string, received: unknown): CheckpointError =>
      new CheckpointError(`${indexPath}: expected ${what} but received ${JSON.stringify(received) ?? 'nothing'}`);
    if (typeof index !== 'object' || index === null) throw bad('an object', index);
    if (index.format !== FORMAT) throw bad("format 'elmo-knowledge'", index.format);
    if (index.version !== VERSION) throw bad(`version ${VERSION}`, index.version);
    if (!Number.isInteger(index.count) || index.count < 0) throw bad('a count >= 0', index.count);
    if (!Number.isInteger(index.dims) || index.dims < 0 || (index.count > 0 && index.dims < 1)) {
      throw bad('dims >= 1', index.dims);
    }
    if (index.fingerprint !== undefined && typeof index.fingerprint !== 'string') {
      throw bad('a string fingerprint', index.fingerprint);
    }
    if (options.fingerprint !== undefined && options.fingerprint !== index.fingerprint) {
      throw new CheckpointError(
        `${indexPath} was built with embedding model '${index.fingerprint ?? '(none)'}' ` +
          `but '${options.fingerprint}' was asked for; rebuild it with this model`,
      );
    }
    if (!Array.isArray(index.entries)) throw bad('an array of entries', index.entries);
    if (index.entries.length !== index.count) {
      throw new CheckpointError(`${indexPath} says count ${index.count} but holds ${index.entries.length} entries`);
    }
    if (typeof index.vectors !== 'string' || path.basename(index.vectors) !== index.vectors) {
      throw bad('a file name for vectors', index.vectors);
    }
    const vectorsPath = path.join(dir, index.vectors);
    let bytes: Buffer;
    try {
      bytes = await fs.promises.readFile(vectorsPath);
    } catch (err) {
      throw new CheckpointError(`Cannot read ${vectorsPath}: ${(err as Error).message}`);
    }
    const want = index.count * index.dims * 4;
    if (bytes.byteLength !== want) {
      throw new CheckpointError(
        `${vectorsPath} holds ${bytes.byteLength} bytes but ${index.count} entries x ${index.dims} dims ` +
          `of f32 take ${want}`,
      );
    }
    if (sha256(bytes) !== index.sha256) {
      throw new CheckpointError(`${vectorsPath} does not match the checksum in ${indexPath} (corrupted file)`);
    }
    const kb = new KnowledgeBase(o.embed, index.dims, index.fingerprint, o.batchSize);
    const entries = index.entries.map((e, i) => {
      try {
        return checkEntry(e, `entries[${i}]`);
      } catch (err) {
        throw new CheckpointError(`${indexPath}: ${(err as Error).message}`);
      }
    });
    // A view of the file's bytes where they are aligned (a large file has its own buffer), else a copy.
    const floats = index.count * index.dims;
    const vectors =
      bytes.byteOffset % 4 === 0
        ? new Float32Array(bytes.buffer, bytes.byteOffset, floats)
        : new Float32Array(new Uint8Array(bytes).buffer, 0, floats);
    try {
      kb.#checkNewIds(entries);
      kb.#append(entries, vectors);
    } catch (err) {
      throw new CheckpointError(`${indexPath}: ${(err as Error).message}`);
    }
    return kb;
  }

  /** Number of entries. */
  get size(): number {
    return this.#entries.length;
  }

  /** The embedding size H (0 while no embedding has been seen). */
  get dims(): number {
    return this.#dims;
  }

  /** The embedding model's fingerprint given at build time, if any. */
  get fingerprint(): string | undefined {
    return this.#fingerprint;
  }

  /** Whether an entry has this id. */
  has(id: string): boolean {
    return this.#rowOf.has(id);
  }

  /** The entry with this id, or undefined. */
  get(id: string): Readonly<KnowledgeEntry> | undefined {
    const row = this.#rowOf.get(id);
    return row === undefined ? undefined : this.#entries[row];
  }

  /** The entries in insertion order (a copy of the list; the entries are frozen). */
  entries(): Readonly<KnowledgeEntry>[] {
    return this.#entries.slice();
  }

  /**
   * Embeds and adds entries. Ids must be new (`ERR_INPUT` for a repeated id). Nothing is added
   * when embedding fails.
   */
  async add(entries: readonly KnowledgeEntry[]): Promise<void> {
    if (!Array.isArray(entries)) throw expected(InputError, 'an array of entries', 'entries', entries);
    const checked = entries.map((e, i) => checkEntry(e, `entries[${i}]`));
    this.#checkNewIds(checked);
    if (checked.length === 0) return;
    const vectors = await this.#embedAll(checked.map((e) => e.question));
    // Checked again: another add() may have taken an id while this one was embedding.
    this.#checkNewIds(checked);
    this.#append(checked, vectors);
  }

  /** Removes the entries with these ids (unknown ids are skipped); returns how many were removed. */
  remove(ids: readonly string[]): number {
    const list: unknown = ids;
    if (!Array.isArray(list)) throw expected(InputError, 'an array of ids', 'ids', ids);
    const drop = new Set<number>();
    for (const id of ids) {
      const row = this.#rowOf.get(id);
      if (row !== undefined) drop.add(row);
    }
    if (drop.size === 0) return 0;
    const kept: Readonly<KnowledgeEntry>[] = [];
    this.#rowOf.clear();
    for (let row = 0; row < this.#entries.length; row++) {
      if (drop.has(row)) continue;
      const to = kept.length;
      if (to !== row) {
        this.#moveRow(row, to);
        this.#invNorms[to] = this.#invNorms[row] ?? 0;
      }
      const entry = this.#entries[row];
      if (entry === undefined) continue;
      kept.push(entry);
      this.#rowOf.set(entry.id, to);
    }
    this.#entries = kept;
    this.#blocks.length = Math.ceil(kept.length / BLOCK_ROWS);
    return drop.size;
  }

  /**
   * The `k` entries most similar to the query (a text, embedded here, or a vector of `dims`
   * floats), best first; ties go to the entry added first. An empty knowledge base gives `[]`.
   */
  async search(query: string | Float32Array, options: KnowledgeSearchOptions = {}): Promise<KnowledgeHit[]> {
    checkSearchOptions(options);
    if (typeof query === 'string') {
      if (this.size === 0) return [];
      const hits = await this.searchMany([query], options);
      return hits[0] ?? [];
    }
    if (!isF32(query)) throw expected(InputError, 'a string or a Float32Array', 'query', query);
    if (this.size === 0) return [];
    if (query.length !== this.#dims) {
      throw expected(InputError, `a Float32Array of ${this.#dims} floats (dims)`, 'query', query);
    }
    return this.searchVectors(query, options)[0] ?? [];
  }

  /**
   * {@link KnowledgeBase.search} for many queries at once: texts (embedded in batches) or the
   * query vectors `[q, dims]` in one Float32Array. One list of hits per query.
   */
  async searchMany(
    queries: readonly string[] | Float32Array,
    options: KnowledgeSearchOptions = {},
  ): Promise<KnowledgeHit[][]> {
    checkSearchOptions(options);
    if (isF32(queries)) return this.searchVectors(queries, options);
    if (!Array.isArray(queries))
      throw expected(InputError, 'an array of strings or a Float32Array', 'queries', queries);
    queries.forEach((q, i) => {
      if (typeof q !== 'string') throw expected(InputError, 'a string', `queries[${i}]`, q);
    });
    if (queries.length === 0) return [];
    if (this.size === 0) return queries.map(() => []);
    return this.searchVectors(await this.#embedAll(queries), options);
  }

  /**
   * The synchronous core of the searches: `vectors` holds `q` query rows of `dims` floats.
   * Runs one GEMM per block of queries and block of entries, then a k-sized heap per query.
   */
  searchVectors(vectors: Float32Array, options: KnowledgeSearchOptions = {}): KnowledgeHit[][] {
    const { k, minScore, intent } = checkSearchOptions(options);
    if (!isF32(vectors)) throw expected(InputError, 'a Float32Array', 'vectors', vectors);
    const H = this.#dims;
    const n = this.#entries.length;
    if (n === 0) return H > 0 && vectors.length % H === 0 ? Array.from({ length: vectors.length / H }, () => []) : [];
    if (vectors.length % H !== 0) {
      throw expected(InputError, `a Float32Array of q x ${H} floats (dims)`, 'vectors', vectors);
    }
    const q = vectors.length / H;
    const qInv = inverseNorms(vectors, q, H, 'the query vectors');
    const allowed = intent === undefined ? null : this.#entries.map((e) => e.intent === intent);
    const heaps = Array.from({ length: q }, () => new TopK(Math.min(k, n)));
    const floor = minScore ?? -Infinity;

    const rowsPerBlock = Math.min(q, QUERY_BLOCK);
    const scores = new Float32Array(rowsPerBlock * Math.min(n, BLOCK_ROWS));
    for (let q0 = 0; q0 < q; q0 += rowsPerBlock) {
      const m = Math.min(rowsPerBlock, q - q0);
      const a = vectors.subarray(q0 * H, (q0 + m) * H);
      for (let base = 0; base < n; base += BLOCK_ROWS) {
        const c = Math.min(BLOCK_ROWS, n - base);
        const block = this.#blocks[base / BLOCK_ROWS] ?? new Float32Array(c * H);
        const out = scores.subarray(0, m * c);
        // out [m, c] = queries [m, H] · entries [c, H]ᵀ
        ops.gemm({ out, a, b: block.subarray(0, c * H), m, n: c, k: H, op: 'nt' });
        for (let i = 0; i < m; i++) {
          const heap = heaps[q0 + i];
          const scale = qInv[q0 + i] ?? 0;
          if (heap === undefined) continue;
          heap.scan(out.subarray(i * c, (i + 1) * c), this.#invNorms, base, scale, floor, allowed);
        }
      }
    }
    return heaps.map((heap) =>
      heap.sorted().map(({ row, score }) => ({ entry: this.#entries[row] as Readonly<KnowledgeEntry>, score })),
    );
  }

  /**
   * Writes `knowledge.json` (the entries, dims, count, fingerprint, checksum) and the embeddings as
   * one little-endian f32 file, each atomically; the vectors file is written first under a name
   * derived from its checksum, so a crash at any point leaves a loadable knowledge base.
   */
  async save(dir: string): Promise<void> {
    if (typeof dir !== 'string' || dir === '') throw expected(InputError, 'a directory path', 'dir', dir);
    try {
      await fs.promises.mkdir(dir, { recursive: true });
    } catch (err) {
      throw new CheckpointError(`Cannot create ${dir}: ${(err as Error).message}`);
    }
    const H = this.#dims;
    const n = this.#entries.length;
    const parts = this.#blocks.map((block, b) => {
      const data = block.subarray(0, Math.min(BLOCK_ROWS, n - b * BLOCK_ROWS) * H);
      return new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
    });
    const hash = createHash('sha256');
    for (const part of parts) hash.update(part);
    const digest = hash.digest('hex');
    const vectorsName = `knowledge-${digest.slice(0, 16)}.f32`;
    writeBytesAtomic(path.join(dir, vectorsName), parts);
    const index: SavedIndex = {
      format: FORMAT,
      version: VERSION,
      count: n,
      dims: H,
      ...(this.#fingerprint === undefined ? {} : { fingerprint: this.#fingerprint }),
      vectors: vectorsName,
      sha256: digest,
      entries: this.#entries.map((e) => ({ ...e })),
    };
    writeFileAtomic(path.join(dir, INDEX_FILE), `${JSON.stringify(index)}\n`);
    // Vectors files of earlier saves are no longer named by the index.
    for (const name of await fs.promises.readdir(dir)) {
      if (name !== vectorsName && /^knowledge-[0-9a-f]{16}\.f32$/.test(name)) {
        await fs.promises.rm(path.join(dir, name), { force: true });
      }
    }
  }

  #checkNewIds(entries: readonly KnowledgeEntry[]): void {
    const seen = new Set<string>();
    for (const e of entries) {
      if (this.#rowOf.has(e.id) || seen.has(e.id)) {
        throw new InputError(`Expected unique entry ids but received '${e.id}' twice`);
      }
      seen.add(e.id);
    }
  }

  /** Embeds texts in batches; checks each result's type, size and (through the norms) values. */
  async #embedAll(texts: readonly string[]): Promise<Float32Array> {
    const parts: Float32Array[] = [];
    let dims = this.#dims;
    for (let i = 0; i < texts.length; i += this.#batchSize) {
      const batch = texts.slice(i, i + this.#batchSize);
      const out: unknown = await this.#embed(batch);
      if (!isF32(out)) {
        throw expected(InputError, 'a Float32Array', `the result of embed (${batch.length} texts)`, out);
      }
      if (dims === 0) {
        if (out.length === 0 || out.length % batch.length !== 0) {
          throw expected(
            InputError,
            `a multiple of ${batch.length} floats (one row per text)`,
            'the result of embed',
            out,
          );
        }
        dims = out.length / batch.length;
      }
      if (out.length !== batch.length * dims) {
        throw expected(
          InputError,
          `${batch.length} x ${dims} floats (texts x dims)`,
          `the result of embed (${batch.length} texts)`,
          out,
        );
      }
      parts.push(out);
    }
    if (this.#dims === 0) this.#dims = dims;
    if (parts.length === 1 && parts[0] !== undefined) return parts[0];
    const all = new Float32Array(texts.length * dims);
    let at = 0;
    for (const p of parts) {
      all.set(p, at);
      at += p.length;
    }
    return all;
  }

  /** Copies the vector of row `from` over row `to` (`to < from`). */
  #moveRow(from: number, to: number): void {
    const H = this.#dims;
    const src = this.#blocks[Math.floor(from / BLOCK_ROWS)];
    const dst = this.#blocks[Math.floor(to / BLOCK_ROWS)];
    if (src === undefined || dst === undefined) return;
    const f = (from % BLOCK_ROWS) * H;
    const t = (to % BLOCK_ROWS) * H;
    if (src === dst) dst.copyWithin(t, f, f + H);
    else dst.set(src.subarray(f, f + H), t);
  }

  /** Appends rows (entries and their `[entries.length, dims]` vectors) after checking the vectors. */
  #append(entries: readonly Readonly<KnowledgeEntry>[], vectors: Float32Array): void {
    const H = this.#dims;
    const n = this.#entries.length;
    const add = entries.length;
    const inv = inverseNorms(vectors, add, H, 'the embeddings');
    if (n + add > this.#invNorms.length) {
      const grownInv = new Float32Array(Math.max(n + add, this.#invNorms.length * 2, 64));
      grownInv.set(this.#invNorms.subarray(0, n));
      this.#invNorms = grownInv;
    }
    this.#invNorms.set(inv, n);
    // Fill the last block, then new ones; only a partly filled last block is ever copied.
    for (let done = 0; done < add;) {
      const row = n + done;
      const b = Math.floor(row / BLOCK_ROWS);
      const at = row - b * BLOCK_ROWS;
      const take = Math.min(add - done, BLOCK_ROWS - at);
      let block = this.#blocks[b];
      if (block === undefined || block.length < (at + take) * H) {
        const capacity = Math.min(BLOCK_ROWS, Math.max(at + take, 2 * ((block?.length ?? 0) / H), 64));
        const grown = new Float32Array(capacity * H);
        if (block !== undefined) grown.set(block.subarray(0, at * H));
        this.#blocks[b] = grown;
        block = grown;
      }
      block.set(vectors.subarray(done * H, (done + take) * H), at * H);
      done += take;
    }
    for (const e of entries) {
      this.#rowOf.set(e.id, this.#entries.length);
      this.#entries.push(e);
    }
  }
}

/** A k-sized min-heap of (score, row): the root is the worst hit kept so far. */
class TopK {
  readonly #k: number;
  readonly #scores: Float64Array;
  readonly #rows: Int32Array;
  #size = 0;

  constructor(k: number) {
    this.#k = k;
    this.#scores = new Float64Array(k);
    this.#rows = new Int32Array(k);
  }

  /**
   * Offers every entry of one score row: `dots[j]` is the dot product with row `base + j`, the
   * cosine is `dots[j] · scale · invNorms[base + j]`. Rows come in increasing order, so an equal
   * score never displaces a kept one: ties keep the earlier row.
   */
  scan(
    dots: Float32Array,
    invNorms: Float32Array,
    base: number,
    scale: number,
    floor: number,
    allowed: readonly boolean[] | null,
  ): void {
    const k = this.#k;
    const scores = this.#scores;
    for (let j = 0; j < dots.length; j++) {
      const row = base + j;
      const s = (dots[j] ?? 0) * scale * (invNorms[row] ?? 0);
      if (s < floor || (this.#size === k && s <= (scores[0] ?? Infinity))) continue;
      if (allowed !== null && allowed[row] !== true) continue;
      if (this.#size < k) this.#push(s, row);
      else this.#replaceRoot(s, row);
    }
  }

  /** The kept hits, best first (ties: earlier row first). */
  sorted(): { row: number; score: number }[] {
    const out: { row: number; score: number }[] = [];
    for (let i = 0; i < this.#size; i++) {
      out.push({ row: this.#rows[i] ?? 0, score: Math.max(-1, Math.min(1, this.#scores[i] ?? 0)) });
    }
    return out.sort((a, b) => b.score - a.score || a.row - b.row);
  }

  /** Whether slot i holds a worse hit than slot j (lower score; equal score, later row). */
  #worse(i: number, j: number): boolean {
    const si = this.#scores[i] ?? 0;
    const sj = this.#scores[j] ?? 0;
    return si < sj || (si === sj && (this.#rows[i] ?? 0) > (this.#rows[j] ?? 0));
  }

  #swap(i: number, j: number): void {
    const s = this.#scores[i] ?? 0;
    const r = this.#rows[i] ?? 0;
    this.#scores[i] = this.#scores[j] ?? 0;
    this.#rows[i] = this.#rows[j] ?? 0;
    this.#scores[j] = s;
    this.#rows[j] = r;
  }

  #push(score: number, row: number): void {
    let i = this.#size++;
    this.#scores[i] = score;
    this.#rows[i] = row;
    while (i > 0) {
      const parent = (i - 1) >> 1;
      if (!this.#worse(i, parent)) break;
      this.#swap(i, parent);
      i = parent;
    }
  }

  #replaceRoot(score: number, row: number): void {
    this.#scores[0] = score;
    this.#rows[0] = row;
    let i = 0;
    for (;;) {
      const l = 2 * i + 1;
      const r = l + 1;
      let worst = i;
      if (l < this.#size && this.#worse(l, worst)) worst = l;
      if (r < this.#size && this.#worse(r, worst)) worst = r;
      if (worst === i) return;
      this.#swap(i, worst);
      i = worst;
    }
  }
}

/**
 * 1 / |row| for `rows` rows of `dims` floats (0 for a zero row), from the LayerNorm kernel's
 * per-row statistics: |x|² = dims · (var + mean²) with var = 1/rstd² − eps. Throws `ERR_INPUT`
 * naming the first row with a non-finite value.
 */
function inverseNorms(x: Float32Array, rows: number, dims: number, what: string): Float32Array {
  const inv = new Float32Array(rows);
  const chunk = NORM_ROWS;
  const scratch = new Float32Array(Math.min(rows, chunk) * dims);
  const weight = new Float32Array(dims);
  const bias = new Float32Array(dims);
  const mean = new Float32Array(Math.min(rows, chunk));
  const rstd = new Float32Array(Math.min(rows, chunk));
  for (let r0 = 0; r0 < rows; r0 += chunk) {
    const c = Math.min(chunk, rows - r0);
    ops.layernormForward({
      out: scratch.subarray(0, c * dims),
      inp: x.subarray(r0 * dims, (r0 + c) * dims),
      weight,
      bias,
      rows: c,
      cols: dims,
      eps: NORM_EPS,
      mean: mean.subarray(0, c),
      rstd: rstd.subarray(0, c),
    });
    for (let i = 0; i < c; i++) {
      const mu = mean[i] ?? NaN;
      const r = rstd[i] ?? NaN;
      const sq = dims * (1 / (r * r) - NORM_EPS + mu * mu);
      if (!Number.isFinite(sq)) {
        throw new InputError(`Expected finite values in ${what} but row ${r0 + i} has a NaN or infinity`);
      }
      inv[r0 + i] = sq > 1e-24 ? 1 / Math.sqrt(sq) : 0;
    }
  }
  return inv;
}

function checkOptions(
  options: { embed: EmbedFunction; batchSize?: number } | undefined,
  what: string,
): { embed: EmbedFunction; batchSize: number } {
  if (typeof options !== 'object' || options === null) throw expected(InputError, 'an options object', what, options);
  if (typeof options.embed !== 'function') {
    throw expected(InputError, 'a function (texts) => Promise<Float32Array>', `${what}.embed`, options.embed);
  }
  const batchSize = options.batchSize ?? 64;
  if (!Number.isInteger(batchSize) || batchSize < 1) {
    throw expected(InputError, 'a positive integer', `${what}.batchSize`, options.batchSize);
  }
  return { embed: options.embed, batchSize };
}

function checkSearchOptions(options: KnowledgeSearchOptions): {
  k: number;
  minScore: number | undefined;
  intent: string | undefined;
} {
  if (typeof options !== 'object' || options === null)
    throw expected(InputError, 'an options object', 'options', options);
  const k = options.k ?? 5;
  if (!Number.isInteger(k) || k < 1 || k > MAX_K) {
    throw expected(InputError, `an integer in [1, ${MAX_K}]`, 'options.k', options.k);
  }
  const { minScore, intent } = options;
  if (minScore !== undefined && (typeof minScore !== 'number' || Number.isNaN(minScore))) {
    throw expected(InputError, 'a number', 'options.minScore', minScore);
  }
  if (intent !== undefined && typeof intent !== 'string') {
    throw expected(InputError, 'a string', 'options.intent', intent);
  }
  return { k, minScore, intent };
}

/** Validates one entry and returns a frozen copy holding only the known fields. */
function checkEntry(e: unknown, what: string): Readonly<KnowledgeEntry> {
  if (typeof e !== 'object' || e === null) throw expected(InputError, 'an entry object', what, e);
  const { id, question, answer, tags, intent } = e as Record<string, unknown>;
  if (typeof id !== 'string' || id === '') throw expected(InputError, 'a non-empty string', `${what}.id`, id);
  if (typeof question !== 'string' || question.trim() === '') {
    throw expected(InputError, 'a non-empty string', `${what}.question`, question);
  }
  if (typeof answer !== 'string') throw expected(InputError, 'a string', `${what}.answer`, answer);
  const entry: KnowledgeEntry = { id, question, answer };
  if (tags !== undefined) {
    if (!Array.isArray(tags) || !tags.every((t) => typeof t === 'string')) {
      throw expected(InputError, 'an array of strings', `${what}.tags`, tags);
    }
    entry.tags = Object.freeze(tags.slice()) as string[];
  }
  if (intent !== undefined) {
    if (typeof intent !== 'string') throw expected(InputError, 'a string', `${what}.intent`, intent);
    entry.intent = intent;
  }
  return Object.freeze(entry);
}

/**
 * Whether a value is a Float32Array, from this realm or another (the addon's arrays in a jest or
 * vm context are not `instanceof` this realm's class).
 */
function isF32(value: unknown): value is Float32Array {
  return ArrayBuffer.isView(value) && Object.prototype.toString.call(value) === '[object Float32Array]';
}

function sha256(bytes: Uint8Array): string {
  return createHash('sha256').update(bytes).digest('hex');
}

/**
 * Writes the parts, in order, to a temporary file next to `file` and renames it into place
 * (`ERR_CHECKPOINT` on failure).
 */
function writeBytesAtomic(file: string, parts: readonly Uint8Array[]): void {
  const tmp = `${file}.tmp-${String(process.pid)}-${Math.random().toString(36).slice(2)}`;
  try {
    const fd = fs.openSync(tmp, 'w');
    try {
      for (const part of parts) {
        for (let at = 0; at < part.byteLength;) at += fs.writeSync(fd, part, at);
      }
      fs.fsyncSync(fd);
    } finally {
      fs.closeSync(fd);
    }
    fs.renameSync(tmp, file);
  } catch (err) {
    fs.rmSync(tmp, { force: true });
    throw new CheckpointError(`Cannot write ${file}: ${(err as Error).message}`);
  }
}
