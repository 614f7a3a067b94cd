// KnowledgeBase: exact top-k against a float64 brute force on random vectors (ties, k > n,
// removed ids, chunked scoring), input errors, save/load and damaged files, and one end-to-end
// search with a small real model.
import * as fs from 'node:fs';
import * as path from 'node:path';

import { Bert, CheckpointError, InputError, Tokenizer } from '../lib';
import { BLOCK_ROWS, KnowledgeBase } from '../lib/chat/knowledge';
import type { EmbedFunction, KnowledgeEntry, KnowledgeHit } from '../lib/chat/knowledge';
import { randomF32, rejection, tmpDir } from './helpers';

/** Entries `e0..e{n-1}` with questions `q<i>`, embedded by `table`'s row i. */
function fixture(
  n: number,
  dims: number,
  seed: number,
): { entries: KnowledgeEntry[]; table: Float32Array; embed: EmbedFunction; calls: number[] } {
  const table = randomF32(n * dims, seed);
  const calls: number[] = [];
  const embed: EmbedFunction = (texts) => {
    calls.push(texts.length);
    const out = new Float32Array(texts.length * dims);
    texts.forEach((t, i) =>
      out.set(table.subarray(Number(t.slice(1)) * dims, (Number(t.slice(1)) + 1) * dims), i * dims),
    );
    return Promise.resolve(out);
  };
  const entries = Array.from({ length: n }, (_, i) => ({
    id: `e${String(i)}`,
    question: `q${String(i)}`,
    answer: `a${String(i)}`,
    ...(i % 3 === 0 ? { intent: 'billing' } : {}),
  }));
  return { entries, table, embed, calls };
}

/** Cosine similarities in float64: `[q][row]` for every query row against every table row. */
function cosines(table: Float32Array, queries: Float32Array, dims: number): Float64Array[] {
  const n = table.length / dims;
  const norm = (v: Float32Array, r: number): number => {
    let s = 0;
    for (let j = 0; j < dims; j++) s += (v[r * dims + j] ?? 0) ** 2;
    return Math.sqrt(s);
  };
  const rowNorms = Array.from({ length: n }, (_, r) => norm(table, r));
  return Array.from({ length: queries.length / dims }, (_, qi) => {
    const qn = norm(queries, qi);
    const out = new Float64Array(n);
    for (let r = 0; r < n; r++) {
      let dot = 0;
      for (let j = 0; j < dims; j++) dot += (queries[qi * dims + j] ?? 0) * (table[r * dims + j] ?? 0);
      out[r] = dot / (qn * (rowNorms[r] ?? NaN));
    }
    return out;
  });
}

/** The reference top-k over `rows` (increasing): best first, ties to the earlier row, by insertion. */
function bruteForce(cos: Float64Array[], rows: number[], k: number): { row: number; score: number }[][] {
  return cos.map((scores) => {
    const best: { row: number; score: number }[] = [];
    for (const row of rows) {
      const score = scores[row] ?? NaN;
      if (best.length === k && score <= (best[k - 1]?.score ?? Infinity)) continue;
      let at = best.length;
      while (at > 0 && (best[at - 1]?.score ?? Infinity) < score) at--;
      best.splice(at, 0, { row, score });
      if (best.length > k) best.pop();
    }
    return best;
  });
}

/**
 * Hits agree with the reference: the same scores rank by rank (1e-5), and each hit's own
 * reference score equals the rank's (so near-ties may swap, nothing else may).
 */
function expectSameHits(hits: KnowledgeHit[][], ref: { row: number; score: number }[][], cos: Float64Array[]): void {
  expect(hits.length).toBe(ref.length);
  hits.forEach((list, qi) => {
    const want = ref[qi] ?? [];
    expect(list.length).toBe(want.length);
    list.forEach((hit, rank) => {
      const r = want[rank];
      expect(r).toBeDefined();
      expect(Math.abs(hit.score - (r?.score ?? NaN))).toBeLessThan(1e-5);
      const own = cos[qi]?.[Number(hit.entry.id.slice(1))] ?? NaN;
      expect(Math.abs(own - (r?.score ?? NaN))).toBeLessThan(1e-5);
    });
  });
}

describe('KnowledgeBase search', () => {
  it('returns the exact top-k of a float64 brute force, best first, in batches of embed calls', async () => {
    const dims = 37;
    const n = 300;
    const { entries, table, embed, calls } = fixture(n, dims, 11);
    const kb = await KnowledgeBase.build(entries, { embed, batchSize: 64 });
    expect(calls).toEqual([64, 64, 64, 64, 44]);
    expect(kb.size).toBe(n);
    expect(kb.dims).toBe(dims);
    const queries = randomF32(20 * dims, 12);
    const hits = kb.searchVectors(queries, { k: 7 });
    const all = Array.from({ length: n }, (_, i) => i);
    const cos = cosines(table, queries, dims);
    expectSameHits(hits, bruteForce(cos, all, 7), cos);
    for (const list of hits) {
      for (let i = 1; i < list.length; i++) expect(list[i - 1]!.score).toBeGreaterThanOrEqual(list[i]!.score);
    }
    // searchMany over a Float32Array and search() over one vector agree with searchVectors.
    const many = await kb.searchMany(queries, { k: 7 });
    expect(many.map((l) => l.map((h) => h.entry.id))).toEqual(hits.map((l) => l.map((h) => h.entry.id)));
    const one = await kb.search(queries.subarray(0, dims), { k: 7 });
    expect(one.map((h) => h.entry.id)).toEqual(hits[0]!.map((h) => h.entry.id));
    // A text query is embedded, then searched: its own entry is first with score 1.
    const [top] = await kb.search('q42', { k: 1 });
    expect(top?.entry).toEqual({ id: 'e42', question: 'q42', answer: 'a42', intent: 'billing' });
    expect(top?.score).toBeCloseTo(1, 5);
  });

  it('is exact across storage blocks (more rows than one block holds), after remove, add, save and load', async () => {
    const dims = 8;
    const n = 40_000; // blocks of BLOCK_ROWS (16384) rows: 3 blocks
    expect(BLOCK_ROWS).toBe(16384);
    const { entries, table, embed } = fixture(n, dims, 21);
    // Built in two parts, so the second part fills a partly filled block first.
    const kb = await KnowledgeBase.build(entries.slice(0, 20_000), { embed, batchSize: 4096 });
    await kb.add(entries.slice(20_000, 39_000));
    const queries = randomF32(70 * dims, 22); // 2 query blocks
    const cos = cosines(table, queries, dims);
    const all = Array.from({ length: 39_000 }, (_, i) => i);
    expectSameHits(kb.searchVectors(queries, { k: 5 }), bruteForce(cos, all, 5), cos);

    // Remove rows of every block (so rows move across block boundaries), then add the rest.
    const removed = new Set<number>();
    for (let r = 7; r < 39_000; r += 97) removed.add(r);
    for (let r = 16_300; r < 16_500; r++) removed.add(r);
    expect(kb.remove([...removed].map((r) => `e${String(r)}`))).toBe(removed.size);
    await kb.add(entries.slice(39_000));
    const kept = Array.from({ length: n }, (_, i) => i).filter((r) => !removed.has(r));
    expect(kb.size).toBe(kept.length);
    const ref = bruteForce(cos, kept, 5);
    const hits = kb.searchVectors(queries, { k: 5 });
    expectSameHits(hits, ref, cos);
    // Each kept entry still has its own vector: its question finds it first.
    for (const r of [0, 16_299, 16_500, 16_384 * 2 + 5, n - 1]) {
      expect((await kb.search(`q${String(r)}`, { k: 1 }))[0]?.entry.id).toBe(`e${String(r)}`);
    }

    const dir = tmpDir('kb');
    await kb.save(dir);
    const back = await KnowledgeBase.load(dir, { embed });
    expect(back.size).toBe(kb.size);
    expect(back.searchVectors(queries, { k: 5 })).toEqual(hits);
  });

  it('breaks ties by insertion order, returns all n when k > n, and honours minScore and intent', async () => {
    const dims = 16;
    const n = 30;
    const { entries, table, embed } = fixture(n, dims, 31);
    // Rows 3, 10 and 20 hold the same vector; so does the query (scaled: cosine ignores length).
    for (const r of [10, 20]) table.set(table.subarray(3 * dims, 4 * dims), r * dims);
    const kb = await KnowledgeBase.build(entries, { embed });
    const query = table.slice(3 * dims, 4 * dims).map((v) => v * 2.5);
    const hits = await kb.search(query, { k: 3 });
    expect(hits.map((h) => h.entry.id)).toEqual(['e3', 'e10', 'e20']);
    for (const h of hits) expect(h.score).toBeCloseTo(1, 5);

    const everything = await kb.search(query, { k: 100 });
    expect(everything).toHaveLength(n);
    expect(new Set(everything.map((h) => h.entry.id)).size).toBe(n);

    const high = await kb.search(query, { k: 100, minScore: 0.5 });
    expect(high.length).toBeGreaterThanOrEqual(3);
    expect(high.every((h) => h.score >= 0.5)).toBe(true);
    expect(high).toEqual(everything.filter((h) => h.score >= 0.5));

    const billing = await kb.search(query, { k: 100, intent: 'billing' });
    expect(billing).toHaveLength(10);
    expect(billing.every((h) => h.entry.intent === 'billing')).toBe(true);
    expect(billing[0]?.entry.id).toBe('e3');
    expect(await kb.search(query, { intent: 'nothing-has-this' })).toEqual([]);
  });

  it('never returns removed ids and stays exact after remove and add', async () => {
    const dims = 12;
    const n = 200;
    const { entries, table, embed } = fixture(n, dims, 41);
    const kb = await KnowledgeBase.build(entries.slice(0, 150), { embed });
    const removedIds = ['e0', 'e7', 'e8', 'e9', 'e149', 'e77'];
    expect(kb.remove([...removedIds, 'not-there'])).toBe(6);
    expect(kb.remove(['e7'])).toBe(0);
    expect(kb.has('e7')).toBe(false);
    expect(kb.get('e8')).toBeUndefined();
    await kb.add(entries.slice(150));
    expect(kb.size).toBe(n - removedIds.length);
    expect(kb.get('e199')?.answer).toBe('a199');

    const queries = randomF32(10 * dims, 42);
    // Queries equal to removed rows: their own entry must not come back.
    queries.set(table.subarray(7 * dims, 8 * dims), 0);
    queries.set(table.subarray(149 * dims, 150 * dims), dims);
    const hits = kb.searchVectors(queries, { k: 8 });
    const removed = new Set(removedIds.map((id) => Number(id.slice(1))));
    const kept = Array.from({ length: n }, (_, i) => i).filter((i) => !removed.has(i));
    const cos = cosines(table, queries, dims);
    expectSameHits(hits, bruteForce(cos, kept, 8), cos);
    for (const list of hits) for (const h of list) expect(removedIds).not.toContain(h.entry.id);
    expect(hits[0]![0]!.score).toBeLessThan(0.99);
  });

  it('returns [] on an empty knowledge base without embedding the query', async () => {
    const embed = jest.fn<Promise<Float32Array>, [string[]]>((texts) =>
      Promise.resolve(new Float32Array(texts.length * 4)),
    );
    const kb = await KnowledgeBase.build([], { embed });
    expect(kb.size).toBe(0);
    expect(await kb.search('anything')).toEqual([]);
    expect(await kb.searchMany(['a', 'b'])).toEqual([[], []]);
    expect(embed).not.toHaveBeenCalled();
    const { entries, embed: e2 } = fixture(3, 4, 1);
    const sized = await KnowledgeBase.build(entries, { embed: e2 });
    sized.remove(['e0', 'e1', 'e2']);
    expect(await sized.search(new Float32Array(4))).toEqual([]);
    expect(await sized.searchMany(new Float32Array(8))).toEqual([[], []]);
  });

  it('scores a zero vector 0 and entries are frozen copies', async () => {
    const { entries, table, embed } = fixture(4, 6, 51);
    table.fill(0, 6, 12); // e1's embedding is zero
    const kb = await KnowledgeBase.build(entries, { embed });
    const hits = await kb.search(table.slice(0, 6), { k: 4 });
    expect(hits.find((h) => h.entry.id === 'e1')?.score).toBe(0);
    expect(await kb.search(new Float32Array(6), { k: 2 })).toEqual([
      { entry: kb.get('e0'), score: 0 },
      { entry: kb.get('e1'), score: 0 },
    ]);
    entries[0]!.answer = 'changed by the caller';
    expect(kb.get('e0')?.answer).toBe('a0');
    expect(Object.isFrozen(kb.get('e0'))).toBe(true);
  });
});

describe('KnowledgeBase input errors', () => {
  const { entries, embed } = fixture(5, 8, 61);

  it('rejects bad k, minScore, intent and query', async () => {
    const kb = await KnowledgeBase.build(entries, { embed });
    for (const k of [0, -1, 1.5, NaN, 2_000_000]) {
      const err = await rejection(kb.search('q1', { k }));
      expect(err).toBeInstanceOf(InputError);
      expect(err.message).toMatch(/^Expected an integer in \[1, 1000000\] for options\.k but received/);
    }
    expect(await rejection(kb.search('q1', { minScore: NaN }))).toBeInstanceOf(InputError);
    expect((await rejection(kb.search('q1', { intent: 3 as unknown as string }))).message).toContain('options.intent');
    expect((await rejection(kb.search(new Float32Array(7)))).message).toBe(
      'Expected a Float32Array of 8 floats (dims) for query but received Float32Array(7)',
    );
    expect((await rejection(kb.search(12 as unknown as string))).message).toContain('for query');
    expect(() => kb.searchVectors(new Float32Array(12))).toThrow('q x 8 floats');
    const nan = new Float32Array(8);
    nan[3] = NaN;
    expect(() => kb.searchVectors(nan)).toThrow('Expected finite values in the query vectors but row 0');
  });

  it('rejects malformed entries and repeated ids, naming the field', async () => {
    const err = await rejection(KnowledgeBase.build([{ id: 'x', question: '', answer: 'a' }], { embed }));
    expect(err).toBeInstanceOf(InputError);
    expect(err.message).toBe("Expected a non-empty string for entries[0].question but received string ''");
    expect(
      (await rejection(KnowledgeBase.build([{ id: 'x', question: 'q1' } as KnowledgeEntry], { embed }))).message,
    ).toContain('entries[0].answer');
    expect(
      (
        await rejection(
          KnowledgeBase.build([{ id: 'x', question: 'q1', answer: '', tags: [1] } as unknown as KnowledgeEntry], {
            embed,
          }),
        )
      ).message,
    ).toContain('entries[0].tags');
    const dup = await rejection(KnowledgeBase.build([entries[0]!, entries[1]!, entries[0]!], { embed }));
    expect(dup.message).toBe("Expected unique entry ids but received 'e0' twice");
    const kb = await KnowledgeBase.build(entries, { embed });
    expect((await rejection(kb.add([entries[2]!]))).message).toContain("'e2' twice");
    expect(kb.size).toBe(5);
    expect((await rejection(KnowledgeBase.build(entries, {} as never))).message).toContain('options.embed');
    expect((await rejection(KnowledgeBase.build(entries, { embed, batchSize: 0 }))).message).toContain(
      'options.batchSize',
    );
  });

  it('rejects an embed function that returns the wrong type, size or values, naming it', async () => {
    const wrongSize: EmbedFunction = (texts) => Promise.resolve(new Float32Array(texts.length * 8 - 1));
    const e1 = await rejection(KnowledgeBase.build(entries, { embed: wrongSize, dims: 8 }));
    expect(e1).toBeInstanceOf(InputError);
    expect(e1.message).toBe(
      'Expected 5 x 8 floats (texts x dims) for the result of embed (5 texts) but received Float32Array(39)',
    );
    const e2 = await rejection(KnowledgeBase.build(entries, { embed: wrongSize }));
    expect(e2.message).toBe(
      'Expected a multiple of 5 floats (one row per text) for the result of embed but received Float32Array(39)',
    );
    const notF32: EmbedFunction = (texts) =>
      Promise.resolve(new Float64Array(texts.length * 8) as unknown as Float32Array);
    expect((await rejection(KnowledgeBase.build(entries, { embed: notF32 }))).message).toBe(
      'Expected a Float32Array for the result of embed (5 texts) but received Float64Array(40)',
    );
    const nan: EmbedFunction = (texts) => Promise.resolve(new Float32Array(texts.length * 8).fill(NaN));
    expect((await rejection(KnowledgeBase.build(entries, { embed: nan }))).message).toBe(
      'Expected finite values in the embeddings but row 0 has a NaN or infinity',
    );
    // A later batch of another size: the dims of the first batch hold.
    let call = 0;
    const drifting: EmbedFunction = (texts) => Promise.resolve(new Float32Array(texts.length * (call++ === 0 ? 8 : 9)));
    expect((await rejection(KnowledgeBase.build(entries, { embed: drifting, batchSize: 2 }))).message).toBe(
      'Expected 2 x 8 floats (texts x dims) for the result of embed (2 texts) but received Float32Array(18)',
    );
    // embed's own failure passes through, and nothing is added.
    const kb = await KnowledgeBase.build(entries, { embed });
    const failing: EmbedFunction = () => Promise.reject(new Error('model gone'));
    const broken = await KnowledgeBase.build([], { embed: failing });
    expect((await rejection(broken.add(entries))).message).toBe('model gone');
    expect(broken.size).toBe(0);
    expect(kb.size).toBe(5);
  });
});

describe('KnowledgeBase save and load', () => {
  const dims = 10;
  const { entries, table, embed } = fixture(40, dims, 71);

  async function saved(): Promise<{ dir: string; kb: KnowledgeBase }> {
    const kb = await KnowledgeBase.build(
      entries.map((e, i) => (i === 5 ? { ...e, tags: ['card', 'urgent'] } : e)),
      { embed, fingerprint: 'encoder@1' },
    );
    const dir = tmpDir('kb');
    await kb.save(dir);
    return { dir, kb };
  }

  function vectorsFile(dir: string): string {
    const name = fs.readdirSync(dir).find((f) => f.endsWith('.f32'));
    if (name === undefined) throw new Error('no vectors file');
    return path.join(dir, name);
  }

  it('round-trips entries, vectors, fingerprint and search results', async () => {
    const { dir, kb } = await saved();
    expect(fs.readdirSync(dir).sort()).toEqual([path.basename(vectorsFile(dir)), 'knowledge.json'].sort());
    const back = await KnowledgeBase.load(dir, { embed, fingerprint: 'encoder@1' });
    expect(back.size).toBe(40);
    expect(back.dims).toBe(dims);
    expect(back.fingerprint).toBe('encoder@1');
    expect(back.entries()).toEqual(kb.entries());
    expect(back.get('e5')?.tags).toEqual(['card', 'urgent']);
    const queries = randomF32(5 * dims, 72);
    expect(back.searchVectors(queries, { k: 4 })).toEqual(kb.searchVectors(queries, { k: 4 }));
    // Loading without a fingerprint accepts any; a text search embeds with the given function.
    const anyModel = await KnowledgeBase.load(dir, { embed });
    expect((await anyModel.search('q17', { k: 1 }))[0]?.entry.id).toBe('e17');
    // Saving again after a change replaces the vectors file (the old one is removed).
    back.remove(['e1']);
    await back.add([{ id: 'new', question: 'q1', answer: 'again' }]);
    await back.save(dir);
    expect(fs.readdirSync(dir).filter((f) => f.endsWith('.f32'))).toHaveLength(1);
    const again = await KnowledgeBase.load(dir, { embed });
    expect((await again.search(table.slice(dims, 2 * dims), { k: 1 }))[0]?.entry.id).toBe('new');
  });

  it('rejects another model, a damaged vectors file or index, with CheckpointError naming what differs', async () => {
    const { dir } = await saved();
    const other = await rejection(KnowledgeBase.load(dir, { embed, fingerprint: 'encoder@2' }));
    expect(other).toBeInstanceOf(CheckpointError);
    expect(other.message).toContain("built with embedding model 'encoder@1' but 'encoder@2' was asked for");

    const file = vectorsFile(dir);
    const good = fs.readFileSync(file);
    fs.writeFileSync(file, good.subarray(0, good.length - 4));
    const short = await rejection(KnowledgeBase.load(dir, { embed }));
    expect(short).toBeInstanceOf(CheckpointError);
    expect(short.message).toContain('holds 1596 bytes but 40 entries x 10 dims of f32 take 1600');

    const flipped = Buffer.from(good);
    flipped[100] = (flipped[100] ?? 0) ^ 0x40;
    fs.writeFileSync(file, flipped);
    const corrupt = await rejection(KnowledgeBase.load(dir, { embed }));
    expect(corrupt).toBeInstanceOf(CheckpointError);
    expect(corrupt.message).toContain('does not match the checksum');
    fs.writeFileSync(file, good);

    const indexPath = path.join(dir, 'knowledge.json');
    const index = JSON.parse(fs.readFileSync(indexPath, 'utf8')) as { entries: unknown[] } & Record<string, unknown>;
    const write = (value: unknown): void => fs.writeFileSync(indexPath, JSON.stringify(value));
    write({ ...index, entries: index.entries.slice(1) });
    expect((await rejection(KnowledgeBase.load(dir, { embed }))).message).toContain(
      'says count 40 but holds 39 entries',
    );
    write({ ...index, dims: 11 });
    expect((await rejection(KnowledgeBase.load(dir, { embed }))).message).toContain(
      '40 entries x 11 dims of f32 take 1760',
    );
    write({ ...index, count: 39, entries: index.entries.slice(1) });
    expect((await rejection(KnowledgeBase.load(dir, { embed }))).message).toContain('holds 1600 bytes but 39 entries');
    write({ ...index, entries: [index.entries[1], ...index.entries.slice(1)] });
    expect((await rejection(KnowledgeBase.load(dir, { embed }))).message).toContain("'e1' twice");
    write({ ...index, entries: [{ id: 'x' }, ...index.entries.slice(1)] });
    const badEntry = await rejection(KnowledgeBase.load(dir, { embed }));
    expect(badEntry).toBeInstanceOf(CheckpointError);
    expect(badEntry.message).toContain('entries[0].question');
    write({ ...index, vectors: '../elsewhere.f32' });
    expect((await rejection(KnowledgeBase.load(dir, { embed }))).message).toContain('a file name for vectors');
    write({ ...index, format: 'something' });
    expect((await rejection(KnowledgeBase.load(dir, { embed }))).message).toContain("expected format 'elmo-knowledge'");
    fs.writeFileSync(indexPath, '{"format": "elmo-kn');
    expect((await rejection(KnowledgeBase.load(dir, { embed }))).message).toContain('is not valid JSON');
    fs.rmSync(file);
    write(index);
    const missing = await rejection(KnowledgeBase.load(dir, { embed }));
    expect(missing).toBeInstanceOf(CheckpointError);
    expect(missing.message).toContain('Cannot read');
    expect(await rejection(KnowledgeBase.load(path.join(dir, 'nope'), { embed }))).toBeInstanceOf(CheckpointError);
  });
});

describe('KnowledgeBase with a real model', () => {
  it('embeds FAQ questions with Bert.embed and finds an exact-question query at rank 1', async () => {
    const tokenizer = Tokenizer.fromVocab(path.join(__dirname, 'fixtures', 'bert-a-cls', 'vocab.txt'));
    using model = Bert.create(
      {
        vocabSize: tokenizer.vocabSize,
        hiddenSize: 24,
        numLayers: 2,
        numHeads: 3,
        intermediateSize: 40,
        maxPositions: 64,
        typeVocabSize: 2,
      },
      { tokenizer, device: 'cpu', seed: 5 },
    );
    const faq: KnowledgeEntry[] = [
      { id: 'hours', question: 'when are you open on the weekend?', answer: 'Nine to five, Saturdays too.' },
      { id: 'card', question: 'my card was lost, what should i do?', answer: 'Block it in the app.' },
      { id: 'fees', question: 'how much does an international transfer cost?', answer: 'One percent.' },
      { id: 'pin', question: 'i forgot the pin of my new card', answer: 'Reset it at any ATM.' },
      { id: 'address', question: 'how can i change my address?', answer: 'Under Settings, Profile.' },
    ];
    const kb = await KnowledgeBase.build(faq, {
      embed: (texts) => model.embed(texts, { pooling: 'mean' }),
      fingerprint: 'test-model',
      batchSize: 2,
    });
    expect(kb.dims).toBe(24);
    const hits = await kb.searchMany(
      faq.map((e) => e.question),
      { k: 2 },
    );
    hits.forEach((list, i) => {
      expect(list[0]?.entry.id).toBe(faq[i]?.id);
      expect(list[0]?.score).toBeCloseTo(1, 4);
      expect(list[1]!.score).toBeLessThan(list[0]!.score);
    });
  });
});
