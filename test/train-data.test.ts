/**
 * lib/train/data.ts (reading, task inference, labels, encoding, packing, splitting) and
 * lib/train/rng.ts. Uses the pure-TypeScript tokenizer with bert-base-uncased's vocabulary
 * (test/fixtures/tokenizer/vocab.txt); no native addon.
 */
import { mkdtempSync, rmSync, writeFileSync } from 'fs';
import { tmpdir } from 'os';
import { join } from 'path';

import { ElmoError, InputError } from '../lib/errors';
import { Tokenizer } from '../lib/tokenizer';
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
} from '../lib/train/data';
import type { EncodedExample, Example, PackOptions } from '../lib/train/data';
import { Rng } from '../lib/train/rng';

const tok = Tokenizer.fromVocab(join(__dirname, 'fixtures', 'tokenizer', 'vocab.txt'));
const CLS = 101;
const SEP = 102;
const UNK = 100;

let dir: string;
beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), 'elmo-train-data-'));
});
afterAll(() => {
  rmSync(dir, { recursive: true, force: true });
});

function file(name: string, content: string): string {
  const path = join(dir, name);
  writeFileSync(path, content);
  return path;
}

async function collect(source: Parameters<typeof readExamples>[0]): Promise<Example[]> {
  const out: Example[] = [];
  for await (const ex of readExamples(source)) out.push(ex);
  return out;
}

/** The error a promise rejects with (fails the test when it resolves). */
async function rejection(p: Promise<unknown>): Promise<ElmoError> {
  try {
    await p;
  } catch (e) {
    expect(e).toBeInstanceOf(ElmoError);
    return e as ElmoError;
  }
  throw new Error('expected a rejection');
}

function ids(text: string): number[] {
  return Array.from(tok.encode(text, undefined, { addSpecialTokens: false }).ids);
}

// ------------------------------------------------------------------------------------------------

describe('readExamples', () => {
  test('JSONL: one object per line; blank lines, CRLF and a BOM are fine', async () => {
    const path = file(
      'a.jsonl',
      '\ufeff{"text": "hi", "label": "greet"}\r\n\r\n  \n{"text": "bye", "label": "leave", "group": 3}\n',
    );
    expect(await collect(path)).toEqual([
      { text: 'hi', label: 'greet' },
      { text: 'bye', label: 'leave', group: 3 },
    ]);
  });

  test('JSONL: a malformed line is an InputError naming file:line', async () => {
    const path = file('bad.jsonl', '{"text": "a", "label": "x"}\n\n{"text": "b", "label": \n{"text": "c"}\n');
    const err = await rejection(collect(path));
    expect(err).toBeInstanceOf(InputError);
    expect(err.code).toBe('ERR_INPUT');
    expect(err.message).toContain(`${path}:3`);
    expect(err.message).toMatch(/^Expected a JSON object for .*bad\.jsonl:3 but received string '\{"text": "b", "lab/);
  });

  test('JSONL: a line that is not an object names file:line', async () => {
    const path = file('notobj.jsonl', '{"text": "a", "label": "x"}\n[1, 2]\n');
    const err = await rejection(collect(path));
    expect(err.message).toBe(`Expected a JSON object for ${path}:2 but received Array(2)`);
  });

  test('.json: JSON lines, or one array of objects', async () => {
    expect(await collect(file('l.json', '{"text": "a", "label": "x"}\n'))).toEqual([{ text: 'a', label: 'x' }]);
    const path = file('arr.json', '\n  [{"text": "a", "label": "x"},\n {"text": "b", "label": "y"}]\n');
    expect(await collect(path)).toEqual([
      { text: 'a', label: 'x' },
      { text: 'b', label: 'y' },
    ]);
    const bad = await rejection(collect(file('arr-bad.json', '[{"text": "a"}, 3]')));
    expect(bad.message).toContain('[1]');
  });

  test("CSV: header columns map to fields; BANKING77's category is the label", async () => {
    const path = file(
      'banking.csv',
      'text,category\n"I lost my card, help",card_lost\nwhere is my refund?,refund\n\n"say ""hi""",greeting\n',
    );
    expect(await collect(path)).toEqual([
      { text: 'I lost my card, help', label: 'card_lost' },
      { text: 'where is my refund?', label: 'refund' },
      { text: 'say "hi"', label: 'greeting' },
    ]);
  });

  test('CSV: labels split on |, empty cells left out, other columns kept', async () => {
    const path = file('multi.csv', 'text,labels,group,pair,source\na,x|y,g1,,web\nb,,g2,other text,\n');
    expect(await collect(path)).toEqual([
      { text: 'a', labels: ['x', 'y'], group: 'g1', source: 'web' },
      { text: 'b', labels: [], group: 'g2', pair: 'other text' },
    ]);
  });

  test('CSV: with both label and category columns, label is the label', async () => {
    const path = file('both.csv', 'text,label,category\na,x,c\n');
    expect(await collect(path)).toEqual([{ text: 'a', label: 'x', category: 'c' }]);
  });

  test('TSV: tab-separated, quotes are ordinary characters', async () => {
    const path = file('glue.tsv', 'text\tlabel\nit "works" fine\t1\n');
    expect(await collect(path)).toEqual([{ text: 'it "works" fine', label: '1' }]);
  });

  test('CSV: a malformed row is an InputError naming file:line', async () => {
    const path = file('bad.csv', 'text,label\na,x\nb,y,extra\n');
    const err = await rejection(collect(path));
    expect(err).toBeInstanceOf(InputError);
    expect(err.message).toContain(`${path}:3`);
  });

  test('a missing file or an unknown extension is ERR_INPUT', async () => {
    const missing = await rejection(collect(join(dir, 'nope.jsonl')));
    expect(missing).toBeInstanceOf(InputError);
    expect(missing.code).toBe('ERR_INPUT');
    expect(missing.message).toContain('nope.jsonl');
    const ext = await rejection(collect(file('data.parquet', '')));
    expect(ext.message).toContain('Expected a .jsonl, .json, .csv or .tsv file');
  });

  test('iterables and async iterables pass through; each item must be an object', async () => {
    const list: Example[] = [{ text: 'a', label: 'x' }];
    expect(await collect(list)).toEqual(list);
    async function* gen(): AsyncGenerator<Example> {
      await Promise.resolve();
      yield { text: 'b', label: 'y' };
    }
    expect(await collect(gen())).toEqual([{ text: 'b', label: 'y' }]);
    const err = await rejection(collect([{ text: 'a' }, 'oops'] as never));
    expect(err.message).toBe("Expected an example object for example 1 but received string 'oops'");
    await expect(collect(42 as never)).rejects.toThrow(InputError);
  });
});

// ------------------------------------------------------------------------------------------------

describe('inferTask and validateExamples', () => {
  test('infers each task from the first example', () => {
    expect(inferTask([{ text: 'a', label: 'x' }])).toBe('sequence');
    expect(inferTask([{ text: 'a', labels: ['x'] }])).toBe('multi-label');
    expect(inferTask([{ text: 'a', labels: [] }])).toBe('multi-label');
    expect(inferTask([{ text: 'a', label: 0.5 }])).toBe('regression');
    expect(inferTask([{ tokens: ['Ann'], tags: ['B-PER'] }])).toBe('token');
    expect(inferTask([{ text: 'a', pair: 'b', label: 'x' }])).toBe('sequence');
  });

  test('names the example and the field that is wrong', () => {
    expect(() => inferTask([])).toThrow('Expected a non-empty array of examples for examples but received Array(0)');
    expect(() => inferTask([{ text: 'a' }])).toThrow(InputError);
    expect(() => inferTask([{ text: 'a', label: 'x' }, { label: 'y' }])).toThrow(
      'Expected a string for examples[1].text but received undefined',
    );
    expect(() => inferTask([{ tokens: ['a', 'b'], tags: ['O'] }])).toThrow(
      'Expected 2 tags (one per token) for examples[0].tags but received Array(1)',
    );
    expect(() => inferTask([{ tokens: ['a'], tags: [''] }])).toThrow('examples[0].tags');
    expect(() =>
      inferTask([
        { text: 'a', label: 'x' },
        { text: 'b', labels: ['x'] },
      ]),
    ).toThrow(
      'Expected no labels in a sequence task (the examples mix shapes) for examples[1].labels but received Array(1)',
    );
    expect(() =>
      inferTask([
        { text: 'a', labels: ['x'] },
        { text: 'b', label: 'x' },
      ]),
    ).toThrow('examples[1].label');
    expect(() =>
      inferTask([
        { text: 'a', label: 1 },
        { text: 'b', label: 'x' },
      ]),
    ).toThrow('Expected a finite number (or numeric string) for examples[1].label');
    expect(() =>
      inferTask([
        { text: 'a', label: 'x' },
        { tokens: ['a'], tags: ['O'], text: 'a', label: 'x' },
      ]),
    ).toThrow('examples[1].tokens');
    expect(() => inferTask([{ text: 'a', label: 'x', pair: 'b', context: ['c'] }])).toThrow(
      'Expected either a pair or a context, not both for examples[0].pair',
    );
    expect(() => inferTask([{ text: 'a', label: 'x', context: 'c' as never }])).toThrow('examples[0].context');
  });

  test('regression takes numeric strings (as read from CSV)', () => {
    expect(() => validateExamples([{ text: 'a', label: '3.5' }], 'regression')).not.toThrow();
    expect(() => validateExamples([{ text: 'a', label: ' ' }], 'regression')).toThrow(InputError);
    expect(() => validateExamples([{ text: 'a', label: 'x' }], 'nope' as never)).toThrow("one of 'sequence'");
  });
});

describe('labelSet and checkLabels', () => {
  test('sorted unique names per task', () => {
    const seq: Example[] = [
      { text: 'a', label: 'refund' },
      { text: 'b', label: 'card_lost' },
      { text: 'c', label: 'refund' },
    ];
    expect(labelSet(seq, 'sequence')).toEqual(['card_lost', 'refund']);
    expect(
      labelSet(
        [
          { text: 'a', labels: ['z', 'b'] },
          { text: 'b', labels: [] },
        ],
        'multi-label',
      ),
    ).toEqual(['b', 'z']);
    const ner: Example[] = [
      { tokens: ['Ann', 'met', 'Bob'], tags: ['B-PER', 'O', 'B-PER'] },
      { tokens: ['New', 'York'], tags: ['B-LOC', 'I-LOC'] },
    ];
    expect(labelSet(ner, 'token')).toEqual(['B-LOC', 'B-PER', 'I-LOC', 'O']);
    expect(labelSet([{ text: 'a', label: 2.5 }], 'regression')).toEqual([]);
  });

  test('integer names sort as numbers', () => {
    const ex = [10, 2, 0, 1].map((label) => ({ text: 't', label: String(label) }));
    expect(labelSet(ex, 'sequence')).toEqual(['0', '1', '2', '10']);
  });

  test('a fixed list is checked and returned as given', () => {
    const ex: Example[] = [{ text: 'a', label: 'x' }];
    expect(labelSet(ex, 'sequence', { labels: ['y', 'x'] })).toEqual(['y', 'x']);
    expect(() => labelSet(ex, 'sequence', { labels: ['y'] })).toThrow(
      'Unknown label "x" in examples[0].label: not among the 1 labels (y)',
    );
  });

  test('checkLabels names the unseen label and its example; refuses duplicates', () => {
    const ner: Example[] = [
      { tokens: ['a'], tags: ['O'] },
      { tokens: ['b', 'c'], tags: ['O', 'B-ORG'] },
    ];
    expect(() => checkLabels(ner, ['O', 'B-PER'], 'token')).toThrow(
      'Unknown label "B-ORG" in examples[1].tags: not among the 2 labels (O, B-PER)',
    );
    expect(() => checkLabels(ner, ['O', 'O', 'B-ORG'], 'token')).toThrow('"O" appears more than once');
    expect(() => checkLabels(ner, ['O', 'B-ORG'], 'token')).not.toThrow();
    expect(() => checkLabels([{ text: 'a', labels: ['q'] }], ['x'], 'multi-label')).toThrow('examples[0].labels');
  });
});

// ------------------------------------------------------------------------------------------------

describe('encodeExamples', () => {
  test('sequence: the tokenizer encoding, label ids, pairs', () => {
    const examples: Example[] = [
      { text: 'Where is my card?', label: 'card_lost' },
      { text: 'refund please', pair: 'we can help', label: 'refund' },
    ];
    const enc = encodeExamples(tok, examples, { task: 'sequence', labels: ['card_lost', 'refund'], maxSeqLen: 32 });
    expect(enc[0]).toEqual({ ...tok.encode('Where is my card?'), label: 0, index: 0 });
    expect(enc[1]).toEqual({ ...tok.encode('refund please', 'we can help'), label: 1, index: 1 });
    const [a, b] = [ids('refund please'), ids('we can help')];
    expect(Array.from(enc[1]!.typeIds)).toEqual([0, ...a.map(() => 0), 0, ...b.map(() => 1), 1]);
    const short = encodeExamples(tok, examples, { task: 'sequence', labels: ['card_lost', 'refund'], maxSeqLen: 4 });
    expect(Array.from(short[0]!.ids)).toEqual([CLS, ...ids('Where is'), SEP]);
  });

  test('multi-label: a 0/1 vector; regression: the value', () => {
    const ml = encodeExamples(
      tok,
      [
        { text: 'a', labels: ['z', 'x'] },
        { text: 'b', labels: [] },
      ],
      {
        task: 'multi-label',
        labels: ['x', 'y', 'z'],
        maxSeqLen: 8,
      },
    );
    expect(Array.from(ml[0]!.labelVector!)).toEqual([1, 0, 1]);
    expect(Array.from(ml[1]!.labelVector!)).toEqual([0, 0, 0]);
    const reg = encodeExamples(
      tok,
      [
        { text: 'a', label: 0.25 },
        { text: 'b', label: '4' },
      ],
      {
        task: 'regression',
        labels: [],
        maxSeqLen: 8,
      },
    );
    expect(reg.map((e) => Array.from(e.labelVector!))).toEqual([[0.25], [4]]);
  });

  test('token: the tag on the first piece of each word, IGNORE_INDEX elsewhere', () => {
    // 'unbelievably' is un ##bel ##ie ##va ##bly; 'Zxqvian' is z ##x ##q ##vian; '\u0007' has no piece.
    const labels = ['B-PER', 'I-PER', 'O'];
    const words = ['Zxqvian', 'was', 'unbelievably', '\u0007', 'late'];
    const tags = ['B-PER', 'O', 'O', 'O', 'O'];
    const [e] = encodeExamples(tok, [{ tokens: words, tags }], { task: 'token', labels, maxSeqLen: 64 });
    const pieces = words.map((w) => (ids(w).length > 0 ? ids(w) : [UNK]));
    expect(pieces.map((p) => p.length)).toEqual([4, 1, 5, 1, 1]);
    expect(Array.from(e!.ids)).toEqual([CLS, ...pieces.flat(), SEP]);
    const I = IGNORE_INDEX;
    expect(Array.from(e!.tokenLabels!)).toEqual([I, 0, I, I, I, 2, 2, I, I, I, I, 2, 2, I]);
    expect(Array.from(e!.wordIds!)).toEqual([-1, 0, 0, 0, 0, 1, 2, 2, 2, 2, 2, 3, 4, -1]);
    expect(Array.from(e!.typeIds)).toEqual(new Array<number>(14).fill(0));
  });

  test('token: truncated to maxSeqLen; a word cut short keeps its label on the first piece', () => {
    const ex = { tokens: ['Ann', 'unbelievably', 'late'], tags: ['B-PER', 'O', 'O'] };
    const [e] = encodeExamples(tok, [ex], { task: 'token', labels: ['B-PER', 'O'], maxSeqLen: 5 });
    expect(Array.from(e!.ids)).toEqual([CLS, ...ids('Ann'), ...ids('unbelievably').slice(0, 2), SEP]);
    expect(Array.from(e!.tokenLabels!)).toEqual([IGNORE_INDEX, 0, 1, IGNORE_INDEX, IGNORE_INDEX]);
    expect(Array.from(e!.wordIds!)).toEqual([-1, 0, 1, 1, -1]);
  });

  describe('context', () => {
    const turns = ['hello there', 'my card was unbelievably stolen yesterday', 'which card'];
    const text = 'the blue one';
    const A = [...ids(turns[0]!), SEP, ...ids(turns[1]!), SEP, ...ids(turns[2]!)];
    const B = ids(text);
    const encode = (maxSeqLen: number, contextMaxTokens?: number): EncodedExample =>
      encodeExamples(tok, [{ text, context: turns, label: 'x' }], {
        task: 'sequence',
        labels: ['x'],
        maxSeqLen,
        ...(contextMaxTokens === undefined ? {} : { contextMaxTokens }),
      })[0]!;

    test('everything fits: [CLS] turn [SEP] turn [SEP] turn [SEP] text [SEP], segments 0 and 1', () => {
      const e = encode(128);
      expect(Array.from(e.ids)).toEqual([CLS, ...A, SEP, ...B, SEP]);
      expect(Array.from(e.typeIds)).toEqual([...new Array<number>(A.length + 2).fill(0), ...B.map(() => 1), 1]);
    });

    test('left truncation keeps the newest tokens and fills maxSeqLen exactly', () => {
      for (let maxSeqLen = B.length + 4; maxSeqLen < A.length + B.length + 3; maxSeqLen++) {
        const e = encode(maxSeqLen);
        const got = Array.from(e.ids);
        expect(got.length).toBeLessThanOrEqual(maxSeqLen);
        const keptA = got.slice(1, got.length - B.length - 2);
        // The newest tokens of A, minus a leading joiner [SEP] when the cut falls just after one.
        const want = A.slice(A.length - (maxSeqLen - 3 - B.length));
        expect(keptA).toEqual(want[0] === SEP ? want.slice(1) : want);
        expect(got.length).toBe(want[0] === SEP ? maxSeqLen - 1 : maxSeqLen);
        expect(got.slice(-B.length - 1)).toEqual([...B, SEP]);
        expect(got[0]).toBe(CLS);
        expect(got[keptA.length + 1]).toBe(SEP);
        expect(Array.from(e.typeIds).filter((t) => t === 1).length).toBe(B.length + 1);
      }
    });

    test('contextMaxTokens caps the context', () => {
      const e = encode(128, 5);
      expect(Array.from(e.ids)).toEqual([CLS, ...A.slice(-5), SEP, ...B, SEP]);
    });

    test('no room for context: the text alone, truncated only when it alone is too long', () => {
      expect(Array.from(encode(B.length + 3).ids)).toEqual([CLS, ...B, SEP]);
      expect(Array.from(encode(4).ids)).toEqual([CLS, ...B.slice(0, 2), SEP]);
      expect(Array.from(encode(4).typeIds)).toEqual([0, 0, 0, 0]);
      const empty = encodeExamples(tok, [{ text, context: ['', ''], label: 'x' }], {
        task: 'sequence',
        labels: ['x'],
        maxSeqLen: 64,
      });
      expect(Array.from(empty[0]!.ids)).toEqual([CLS, ...B, SEP]);
    });
  });

  test('checks labels and options', () => {
    const ex: Example[] = [{ text: 'a', label: 'x' }];
    expect(() => encodeExamples(tok, ex, { task: 'sequence', labels: ['y'], maxSeqLen: 8 })).toThrow(
      'Unknown label "x" in examples[0].label',
    );
    expect(() => encodeExamples(tok, ex, { task: 'sequence', labels: ['x'], maxSeqLen: 1 })).toThrow(
      'Expected an integer of at least 2 for options.maxSeqLen but received number 1',
    );
    expect(() => encodeExamples(tok, ex, { task: 'token', labels: ['x'], maxSeqLen: 8 })).toThrow('examples[0].tokens');
  });
});

// ------------------------------------------------------------------------------------------------

/** Synthetic encoded examples of random lengths (ids = index, so that content can be checked). */
function synthetic(n: number, seed: number, kind: 'class' | 'vector' | 'token' = 'class'): EncodedExample[] {
  const rng = new Rng(seed);
  return Array.from({ length: n }, (_, i) => {
    const len = 3 + rng.nextInt(60);
    const e: EncodedExample = { ids: new Int32Array(len).fill(i), typeIds: new Int32Array(len), index: i };
    if (kind === 'class') e.label = i % 7;
    else if (kind === 'vector') e.labelVector = Float32Array.of(i, -i);
    else {
      e.tokenLabels = new Int32Array(len).fill(i);
      e.wordIds = new Int32Array(len).fill(-1);
    }
    return e;
  });
}

describe('packBatches', () => {
  const encoded = synthetic(500, 1);
  const opts: PackOptions = { maxTokens: 256, maxBatchSize: 12, shuffle: true, seed: 5, epoch: 0 };

  test('every example exactly once per epoch, within the budgets, packed without padding', () => {
    for (const o of [opts, { ...opts, epoch: 3 }, { ...opts, shuffle: false }, { ...opts, maxBatchSize: 1 }]) {
      const batches = packBatches(encoded, o);
      const seen = new Int32Array(encoded.length);
      for (const b of batches) {
        const B = b.indices.length;
        expect(B).toBeGreaterThan(0);
        expect(B).toBeLessThanOrEqual(o.maxBatchSize);
        expect(b.tokens).toBeLessThanOrEqual(o.maxTokens);
        expect(b.offsets.length).toBe(B + 1);
        expect(b.offsets[B]).toBe(b.tokens);
        expect(b.ids.length).toBe(b.tokens);
        expect(b.labels).toBeInstanceOf(Int32Array);
        for (let k = 0; k < B; k++) {
          const e = encoded[b.indices[k]!]!;
          seen[e.index] = seen[e.index]! + 1;
          expect(Array.from(b.ids.subarray(b.offsets[k], b.offsets[k + 1]))).toEqual(Array.from(e.ids));
          expect(b.labels[k]).toBe(e.label);
        }
      }
      expect(Array.from(seen).every((c) => c === 1)).toBe(true);
    }
  });

  test('batches are length-bucketed: the lengths within a batch are close', () => {
    const batches = packBatches(encoded, opts);
    // Within a batch the lengths are close: bucketing sorted them.
    let spread = 0;
    for (const b of batches) {
      const lens = Array.from(b.offsets.subarray(1), (o, k) => o - b.offsets[k]!);
      spread += Math.max(...lens) - Math.min(...lens);
    }
    expect(spread / batches.length).toBeLessThan(8);
  });

  test('deterministic for (seed, epoch); another epoch or seed gives another order', () => {
    const a = packBatches(encoded, opts);
    expect(packBatches(encoded, opts)).toEqual(a);
    const order = (bs: ReturnType<typeof packBatches>): number[] => bs.flatMap((b) => Array.from(b.indices));
    expect(order(packBatches(encoded, { ...opts, epoch: 1 }))).not.toEqual(order(a));
    expect(order(packBatches(encoded, { ...opts, seed: 6 }))).not.toEqual(order(a));
    const plain = { ...opts, shuffle: false };
    expect(packBatches(encoded, plain)).toEqual(packBatches(encoded, { ...plain, epoch: 9 }));
  });

  test('a sequence longer than maxTokens gets a batch of its own', () => {
    const batches = packBatches(encoded.slice(0, 40), { ...opts, maxTokens: 30 });
    for (const b of batches) if (b.tokens > 30) expect(b.indices.length).toBe(1);
    expect(batches.reduce((n, b) => n + b.indices.length, 0)).toBe(40);
  });

  test('label layouts: Float32 (B, L) vectors; Int32 (T) token labels with word ids', () => {
    for (const b of packBatches(synthetic(50, 2, 'vector'), opts)) {
      expect(b.labels).toBeInstanceOf(Float32Array);
      expect(Array.from(b.labels)).toEqual(Array.from(b.indices).flatMap((i) => [i, -i]));
    }
    for (const b of packBatches(synthetic(50, 3, 'token'), opts)) {
      expect(b.labels).toBeInstanceOf(Int32Array);
      expect(Array.from(b.labels)).toEqual(Array.from(b.ids));
      expect(b.wordIds?.length).toBe(b.tokens);
    }
    expect(packBatches([], opts)).toEqual([]);
  });

  test('refuses mixed label layouts and bad options', () => {
    const mixed = [...synthetic(2, 1), ...synthetic(2, 1, 'vector')];
    expect(() => packBatches(mixed, opts)).toThrow('encoded[2]');
    expect(() => packBatches(encoded, { ...opts, maxTokens: 0 })).toThrow(
      'Expected a positive integer for options.maxTokens but received number 0',
    );
    expect(() => packBatches(encoded, { ...opts, epoch: -1 })).toThrow('options.epoch');
  });

  test('end to end: encoded examples of each task pack into the layout the model takes', () => {
    const ner: Example[] = [
      { tokens: ['Ann', 'lives', 'in', 'Paris'], tags: ['B-PER', 'O', 'O', 'B-LOC'] },
      { tokens: ['unbelievably'], tags: ['O'] },
    ];
    const labels = labelSet(ner, inferTask(ner));
    const enc = encodeExamples(tok, ner, { task: 'token', labels, maxSeqLen: 16 });
    const [b] = packBatches(enc, { ...opts, shuffle: false });
    expect(b!.indices.length).toBe(2);
    const first = b!.indices[0]!;
    expect(Array.from(b!.labels.subarray(0, b!.offsets[1]))).toEqual(Array.from(enc[first]!.tokenLabels!));
  });
});

// ------------------------------------------------------------------------------------------------

describe('splitByGroup', () => {
  const examples: Example[] = Array.from({ length: 300 }, (_, i) => ({
    text: `t${i}`,
    label: 'x',
    conversation: `c${Math.floor(((i * 7919) % 300) / 4)}`, // groups of 4, interleaved
  }));

  test('a group never straddles the split; about the fraction goes to eval', () => {
    const { train, eval: ev } = splitByGroup(examples, { fraction: 0.2, seed: 3, group: 'conversation' });
    expect(train.length + ev.length).toBe(300);
    const trainGroups = new Set(train.map((e) => e.conversation));
    for (const e of ev) expect(trainGroups.has(e.conversation)).toBe(false);
    expect(ev.length).toBeGreaterThanOrEqual(60);
    expect(ev.length).toBeLessThan(64);
    // Input order kept on both sides.
    const pos = (e: Example): number => Number(e.text!.slice(1));
    expect(train.map(pos)).toEqual([...train.map(pos)].sort((a, b) => a - b));
  });

  test('deterministic for a seed; another seed gives another split', () => {
    const a = splitByGroup(examples, { fraction: 0.2, seed: 3, group: 'conversation' });
    expect(splitByGroup(examples, { fraction: 0.2, seed: 3, group: 'conversation' })).toEqual(a);
    expect(splitByGroup(examples, { fraction: 0.2, seed: 4, group: 'conversation' }).eval).not.toEqual(a.eval);
  });

  test('without groups the split is per example; the default key is group', () => {
    const { eval: ev } = splitByGroup(examples, { fraction: 0.1, seed: 1 });
    expect(ev.length).toBe(30);
    const grouped = examples.map((e, i) => ({ ...e, group: i % 2 }));
    const s = splitByGroup(grouped, { fraction: 0.1, seed: 1 });
    expect(s.eval.length).toBe(150);
    expect(new Set(s.eval.map((e) => e.group)).size).toBe(1);
  });

  test('fraction 0 and 1; at least one group left for training', () => {
    expect(splitByGroup(examples, { fraction: 0, seed: 1 }).eval).toEqual([]);
    expect(splitByGroup(examples, { fraction: 1, seed: 1 }).train).toEqual([]);
    const two = [
      { text: 'a', group: 'g' },
      { text: 'b', group: 'h' },
    ];
    expect(splitByGroup(two, { fraction: 0.99, seed: 1 }).train.length).toBe(1);
    expect(() => splitByGroup(examples, { fraction: 1.5, seed: 1 })).toThrow('options.fraction');
    expect(() => splitByGroup([{ text: 'a', group: {} as never }], { fraction: 0.5, seed: 1 })).toThrow(
      'Expected a string or number for examples[0].group but received an object',
    );
  });
});

describe('Rng', () => {
  test('deterministic per (seed, stream); streams differ', () => {
    const draw = (seed: number, stream: number): number[] => {
      const r = new Rng(seed, stream);
      return Array.from({ length: 8 }, () => r.nextUint32());
    };
    expect(draw(1, 0)).toEqual(draw(1, 0));
    expect(draw(1, 1)).not.toEqual(draw(1, 0));
    expect(draw(2, 0)).not.toEqual(draw(1, 0));
    expect(draw(-1, 0)).not.toEqual(draw(0xffffffff, 0));
    expect(draw(0, 0).every((x) => Number.isInteger(x) && x >= 0 && x < 2 ** 32)).toBe(true);
  });

  test('shuffle is a permutation; nextInt and nextFloat stay in range and spread', () => {
    const r = new Rng(42);
    const a = r.shuffle(Array.from({ length: 100 }, (_, i) => i));
    expect([...a].sort((x, y) => x - y)).toEqual(Array.from({ length: 100 }, (_, i) => i));
    expect(a).not.toEqual(Array.from({ length: 100 }, (_, i) => i));
    const counts = new Array<number>(6).fill(0);
    for (let i = 0; i < 6000; i++) {
      const k = r.nextInt(6);
      counts[k] = counts[k]! + 1;
    }
    for (const c of counts) expect(Math.abs(c - 1000)).toBeLessThan(150);
    for (let i = 0; i < 1000; i++) {
      const f = r.nextFloat();
      expect(f >= 0 && f < 1).toBe(true);
    }
    expect(() => new Rng(1.5)).toThrow('Expected a safe integer for seed but received number 1.5');
  });
});
