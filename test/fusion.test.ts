// Model fusion: the safetensors reader and writer, weight soups (uniform, weighted, greedy) and
// logit ensembles of chat models, on tiny models built here.
import * as fs from 'node:fs';
import * as path from 'node:path';

import { Bert, CheckpointError, InputError, ShapeError, Tokenizer } from '../lib';
import { ChatModel } from '../lib/chat/chat-model';
import type { ChatExample, ChatLabels, TurnScores } from '../lib/chat/chat-model';
import { ChatEnsemble, averageChatModels, chatScore, greedySoup } from '../lib/chat/fusion';
import type { GreedySoupStep } from '../lib/chat/fusion';
import { decodeSafetensors, encodeSafetensors, readSafetensors, writeSafetensors } from '../lib/safetensors';
import type { F32Tensor } from '../lib/safetensors';
import { randomF32, rejection, tmpDir } from './helpers';

const FIXTURES = path.join(__dirname, 'fixtures');
const VOCAB = fs.readFileSync(path.join(FIXTURES, 'bert-a-cls', 'vocab.txt'), 'utf8');
const tokenizer = Tokenizer.fromVocab(VOCAB);
const tiny = {
  vocabSize: tokenizer.vocabSize,
  hiddenSize: 32,
  numLayers: 2,
  numHeads: 2,
  intermediateSize: 64,
  maxPositions: 64,
  typeVocabSize: 2,
};
const LABELS = { intents: ['music', 'support', 'travel'], emotions: ['anger', 'joy'], slots: ['city'] };
const TURNS = [
  { text: 'i want to go to london with my family' },
  { text: 'play some music from york now' },
  { text: 'please help me in paris', context: ['hello, how can i help?'] },
  { text: 'go to boston' },
];
const EXAMPLES: ChatExample[] = [
  { text: 'i want to go to london', intent: 'travel', emotions: [], slots: [{ name: 'city', start: 16, end: 22 }] },
  { text: 'play some music from york now', intent: 'music', emotions: ['anger'], slots: [] },
  {
    text: 'please help me in paris',
    intent: 'support',
    emotions: ['joy'],
    slots: [{ name: 'city', start: 18, end: 23 }],
  },
];

async function chatModel(
  seed: number,
  labels: ChatLabels = LABELS,
  config = tiny,
  tok = tokenizer,
  maxSeqLen?: number,
): Promise<ChatModel> {
  const bert = Bert.create(config, { tokenizer: tok, device: 'cpu', seed, ...(maxSeqLen ? { maxSeqLen } : {}) });
  return ChatModel.create(bert, labels, { seed });
}

/** A fresh tiny chat model saved in its own directory. */
async function savedModel(seed: number, labels?: ChatLabels, config = tiny, tok = tokenizer): Promise<string> {
  const dir = tmpDir('fusion-model');
  const chat = await chatModel(seed, labels, config, tok);
  try {
    await chat.save(dir);
  } finally {
    chat.dispose();
  }
  return dir;
}

function copyModel(dir: string): string {
  const to = tmpDir('fusion-copy');
  fs.cpSync(dir, to, { recursive: true });
  return to;
}

/** A copy of a model directory with its head tensors (intent/emotion classifier and slot head) scaled. */
function scaledHeads(dir: string, factor: number): string {
  const to = copyModel(dir);
  const file = path.join(to, 'model.safetensors');
  const st = readSafetensors(file);
  const tensors = new Map<string, F32Tensor>();
  for (const [name, t] of st.tensors) {
    const head = name.startsWith('classifier.') || name.startsWith('slot_classifier.');
    tensors.set(name, { shape: t.shape, data: head ? t.data.map((x) => x * factor) : t.data });
  }
  writeSafetensors(file, { tensors, ...(st.metadata ? { metadata: st.metadata } : {}) });
  return to;
}

// ------------------------------------------------------------------------------------------------
// safetensors

/** A file from a header (an object or raw JSON text) and a data section. */
function stBytes(header: unknown, data: Uint8Array | number, headerLength?: bigint): Buffer {
  const json = Buffer.isBuffer(header)
    ? header
    : Buffer.from(typeof header === 'string' ? header : JSON.stringify(header), 'utf8');
  const body = typeof data === 'number' ? new Uint8Array(data) : data;
  const out = Buffer.alloc(8 + json.length + body.length);
  out.writeBigUInt64LE(headerLength ?? BigInt(json.length), 0);
  json.copy(out, 8);
  out.set(body, 8 + json.length);
  return out;
}

function checkpointError(f: () => unknown): CheckpointError {
  try {
    f();
  } catch (err) {
    expect(err).toBeInstanceOf(CheckpointError);
    expect((err as CheckpointError).code).toBe('ERR_CHECKPOINT');
    return err as CheckpointError;
  }
  throw new Error('expected a CheckpointError');
}

describe('safetensors', () => {
  const tensors = new Map<string, F32Tensor>([
    ['bert.encoder.weight', { shape: [3, 5], data: randomF32(15, 1) }],
    ['bias', { shape: [5], data: randomF32(5, 2) }],
    ['10', { shape: [1], data: Float32Array.of(7) }], // an integer-like name keeps its place
    ['scalar', { shape: [], data: Float32Array.of(-2.5) }],
    ['empty', { shape: [0, 4], data: new Float32Array(0) }],
  ]);

  test('round trip in memory and on disk: names in order, shapes, values, metadata; 8-byte aligned data', () => {
    const bytes = encodeSafetensors({ tensors, metadata: { format: 'pt' } });
    const n = Number(bytes.readBigUInt64LE(0));
    expect((8 + n) % 8).toBe(0);
    expect(bytes.length).toBe(8 + n + 4 * (15 + 5 + 1 + 1));
    const back = decodeSafetensors(bytes);
    expect(back.metadata).toEqual({ format: 'pt' });
    expect([...back.tensors.keys()]).toEqual(['bert.encoder.weight', 'bias', '10', 'scalar', 'empty']);
    for (const [name, t] of tensors) {
      expect(back.tensors.get(name)?.shape).toEqual(t.shape);
      expect(Array.from(back.tensors.get(name)?.data ?? [])).toEqual(Array.from(t.data));
    }
    const dir = tmpDir('st');
    const file = path.join(dir, 'model.safetensors');
    writeSafetensors(file, { tensors });
    expect(fs.readdirSync(dir)).toEqual(['model.safetensors']); // no temporary file left
    const read = readSafetensors(file);
    expect(read.metadata).toBeUndefined();
    expect(Array.from(read.tensors.get('bert.encoder.weight')?.data ?? [])).toEqual(
      Array.from(tensors.get('bert.encoder.weight')?.data ?? []),
    );
  });

  test("reads what elmo's native writer saves, and elmo loads what it writes", async () => {
    const dir = await savedModel(1);
    const st = readSafetensors(path.join(dir, 'model.safetensors'));
    expect(st.tensors.get('bert.embeddings.word_embeddings.weight')?.shape).toEqual([tiny.vocabSize, 32]);
    expect(st.tensors.get('classifier.weight')?.shape).toEqual([5, 32]); // 3 intents then 2 emotions
    expect(st.tensors.get('slot_classifier.weight')?.shape).toEqual([3, 32]);
    // rewritten by this writer, the model loads and answers the same
    const copy = copyModel(dir);
    writeSafetensors(path.join(copy, 'model.safetensors'), st);
    using a = await ChatModel.load(dir);
    using b = await ChatModel.load(copy);
    expect(await b.understandMany(TURNS)).toEqual(await a.understandMany(TURNS));
  });

  test('malformed files are an ERR_CHECKPOINT naming the problem', () => {
    const good = encodeSafetensors({ tensors });
    const n = Number(good.readBigUInt64LE(0));
    // truncated anywhere: in the length, in the header, in the data
    for (const cut of [0, 5, 8, 8 + Math.floor(n / 2), good.length - 4, good.length - 1]) {
      expect(checkpointError(() => decodeSafetensors(good.subarray(0, cut))).message).toMatch(/truncated/);
    }
    const entry = (dtype: unknown, shape: unknown, offsets: unknown): unknown => ({
      t: { dtype, shape, data_offsets: offsets },
    });
    const cases: [string, Buffer, RegExp][] = [
      ['bad JSON', stBytes('{"t": {"dtype": "F32", ', 0), /not JSON/],
      ['not an object', stBytes('[1, 2]', 0), /not a JSON object/],
      ['not UTF-8', stBytes(Buffer.from([0x7b, 0xff, 0xfe, 0x7d]), 0), /not valid UTF-8/],
      ['an F16 tensor', stBytes(entry('F16', [2], [0, 4]), 4), /dtype string 'F16' is not F32/],
      ['an I64 tensor', stBytes(entry('I64', [1], [0, 8]), 8), /not F32/],
      ['no dtype', stBytes({ t: { shape: [1], data_offsets: [0, 4] } }, 4), /keys/],
      ['an extra key', stBytes({ t: { dtype: 'F32', shape: [1], data_offsets: [0, 4], x: 1 } }, 4), /keys/],
      ['offsets past the data', stBytes(entry('F32', [2], [0, 8]), 4), /outside the 4-byte data section/],
      ['offsets backwards', stBytes(entry('F32', [1], [4, 0]), 4), /end before/],
      ['offsets not integers', stBytes(entry('F32', [1], [0, 4.5]), 4), /data_offsets/],
      ['offsets of the wrong size', stBytes(entry('F32', [2], [0, 4]), 4), /8 bytes but data_offsets span 4/],
      ['a negative dim', stBytes(entry('F32', [-1], [0, 4]), 4), /shape/],
      [
        'a gap',
        stBytes(
          {
            a: { dtype: 'F32', shape: [1], data_offsets: [0, 4] },
            b: { dtype: 'F32', shape: [1], data_offsets: [8, 12] },
          },
          12,
        ),
        /bytes no tensor owns/,
      ],
      [
        'overlapping tensors',
        stBytes(
          {
            a: { dtype: 'F32', shape: [2], data_offsets: [0, 8] },
            b: { dtype: 'F32', shape: [1], data_offsets: [4, 8] },
          },
          8,
        ),
        /overlap/,
      ],
      ['bytes after the last tensor', stBytes(entry('F32', [1], [0, 4]), 8), /data section has 8 bytes/],
      ['non-string metadata', stBytes({ __metadata__: { a: 1 } }, 0), /__metadata__/],
      ['a huge header length', stBytes({}, 0, 1n << 40n), /exceeds the limit/],
    ];
    for (const [, bytes, message] of cases) {
      expect(checkpointError(() => decodeSafetensors(bytes)).message).toMatch(message);
    }
    // an empty file of no tensors is valid
    expect(decodeSafetensors(stBytes({}, 0)).tensors.size).toBe(0);
    // from disk, the error names the file
    const file = path.join(tmpDir('st-bad'), 'model.safetensors');
    fs.writeFileSync(file, good.subarray(0, good.length - 4));
    expect(checkpointError(() => readSafetensors(file)).message).toContain(file);
    expect(checkpointError(() => readSafetensors(path.join(tmpDir('st-none'), 'x.safetensors'))).message).toMatch(
      /Cannot read/,
    );
  });

  test('the writer refuses what it cannot write', () => {
    const file = path.join(tmpDir('st-w'), 'x.safetensors');
    expect(() =>
      writeSafetensors(file, { tensors: new Map([['a', { shape: [2, 2], data: new Float32Array(3) }]]) }),
    ).toThrow(ShapeError);
    expect(() =>
      writeSafetensors(file, { tensors: new Map([['', { shape: [1], data: new Float32Array(1) }]]) }),
    ).toThrow(InputError);
    expect(() =>
      writeSafetensors(file, { tensors: new Map([['a', { shape: [1], data: [1] as unknown as Float32Array }]]) }),
    ).toThrow(InputError);
    expect(fs.existsSync(file)).toBe(false);
  });
});

// ------------------------------------------------------------------------------------------------
// weight averaging

describe('averageChatModels', () => {
  jest.setTimeout(30_000);

  test('the uniform and weighted averages of two models are the float64 ones within f32 rounding', async () => {
    const a = await savedModel(1);
    const b = await savedModel(2);
    const A = readSafetensors(path.join(a, 'model.safetensors'));
    const B = readSafetensors(path.join(b, 'model.safetensors'));
    for (const weights of [undefined, [3, 1]]) {
      const out = tmpDir('fusion-avg');
      const r = averageChatModels([a, b], out, weights ? { weights } : {});
      const w = weights ? [0.75, 0.25] : [0.5, 0.5];
      expect(r.weights).toEqual(w);
      expect(r.tensors).toBe(A.tensors.size);
      const O = readSafetensors(path.join(out, 'model.safetensors'));
      expect([...O.tensors.keys()]).toEqual([...A.tensors.keys()]);
      let parameters = 0;
      for (const [name, t] of A.tensors) {
        const x = t.data;
        const y = B.tensors.get(name)?.data ?? new Float32Array(0);
        const got = O.tensors.get(name)?.data ?? new Float32Array(0);
        expect(O.tensors.get(name)?.shape).toEqual(t.shape);
        expect(got.length).toBe(x.length);
        parameters += x.length;
        // a two-term dot product in f32: |error| <= 2u (|w0 x| + |w1 y|), u = 2^-24
        for (let i = 0; i < x.length; i++) {
          const p = (w[0] as number) * (x[i] as number);
          const q = (w[1] as number) * (y[i] as number);
          const err = Math.abs((got[i] as number) - (p + q));
          if (err > 2 ** -23 * (Math.abs(p) + Math.abs(q)) + 1e-38) {
            throw new Error(`${name}[${String(i)}]: ${String(got[i])} against ${String(p + q)}`);
          }
        }
      }
      expect(r.parameters).toBe(parameters);
      // a complete chat model directory
      expect(fs.readdirSync(out).sort()).toEqual(fs.readdirSync(a).sort());
      const meta = JSON.parse(fs.readFileSync(path.join(out, 'chat.json'), 'utf8')) as Record<string, unknown>;
      expect(meta.training).toMatchObject({ method: 'weight-average', weights: w });
      using soup = await ChatModel.load(out);
      expect(soup.intents).toEqual(LABELS.intents);
      expect((await soup.understand('go to london')).intents).toHaveLength(3);
    }
  });

  test('a model averaged with itself (or alone) is that model, bit for bit', async () => {
    const a = await savedModel(3);
    using model = await ChatModel.load(a);
    const want = await model.understandMany(TURNS);
    const A = readSafetensors(path.join(a, 'model.safetensors'));
    for (const dirs of [[a, a], [a]]) {
      const out = tmpDir('fusion-self');
      averageChatModels(dirs, out);
      const O = readSafetensors(path.join(out, 'model.safetensors'));
      for (const [name, t] of A.tensors) expect(O.tensors.get(name)?.data).toEqual(t.data);
      using soup = await ChatModel.load(out);
      expect(await soup.understandMany(TURNS)).toEqual(want);
    }
  });

  test('models of other label sets, architectures or tokenizers are refused, naming what differs', async () => {
    const a = await savedModel(1);
    const otherIntents = await savedModel(2, { ...LABELS, intents: ['music', 'support', 'weather'] });
    const noEmotions = await savedModel(2, { intents: LABELS.intents, slots: LABELS.slots });
    const wider = await savedModel(2, LABELS, { ...tiny, intermediateSize: 48 });
    // the same vocabulary size, two tokens swapped
    const lines = VOCAB.split('\n');
    [lines[200], lines[201]] = [lines[201] as string, lines[200] as string];
    const swapped = await savedModel(2, LABELS, tiny, Tokenizer.fromVocab(lines.join('\n')));
    const cases: [string, RegExp][] = [
      [otherIntents, /label sets differ: dirs\[1\].*intents at position 2: 'weather' against 'travel'/],
      [noEmotions, /label sets differ.*emotions 0 of them against 2/],
      [wider, /architectures differ.*intermediate_size 48 against 64/],
      [swapped, /tokenizers differ.*(tokenizer\.json|vocab\.txt) differs/],
    ];
    for (const [dir, message] of cases) {
      const out = path.join(tmpDir('fusion-refused'), 'soup');
      let err: unknown;
      try {
        averageChatModels([a, dir], out);
      } catch (e) {
        err = e;
      }
      expect(err).toBeInstanceOf(InputError);
      expect((err as Error).message).toMatch(message);
      expect(fs.existsSync(out)).toBe(false); // nothing written
    }
    const out = tmpDir('fusion-bad-args');
    for (const weights of [[1], [1, -1], [0, 0], [1, Number.NaN]]) {
      expect(() => averageChatModels([a, a], out, { weights })).toThrow(InputError);
    }
    expect(() => averageChatModels([], out)).toThrow(InputError);
    expect(() => averageChatModels([a, tmpDir('fusion-empty')], out)).toThrow(CheckpointError);
    // a malformed weights file in an ingredient
    const broken = copyModel(a);
    const file = path.join(broken, 'model.safetensors');
    fs.truncateSync(file, fs.statSync(file).size - 8);
    expect(checkpointError(() => averageChatModels([a, broken], out)).message).toMatch(/truncated/);
  });
});

// ------------------------------------------------------------------------------------------------
// greedy soup

describe('greedySoup', () => {
  jest.setTimeout(30_000);

  test('keeps the ingredients that do not lower the held-out score and rejects one that does', async () => {
    // A, A×2 (heads scaled: the same argmax everywhere) and a head-reversing one (×-6): soup
    // (A, 2A) has heads 1.5A, the same predictions; adding the third gives heads -A (each
    // turn's worst intent and tags), the score drops.
    const a = await savedModel(4);
    const double = scaledHeads(a, 2);
    const reversed = scaledHeads(a, -6);
    // held out: A's own understanding, so that A scores 1 by construction
    let heldOut: ChatExample[];
    {
      using model = await ChatModel.load(a);
      const texts = [...TURNS.map((t) => t.text), 'go to paris now', 'play music in london', 'help me please'];
      const us = await model.understandMany(texts.map((text) => ({ text })));
      heldOut = us.map((u, i) => ({
        text: texts[i] as string,
        intent: u.intent?.label as string,
        slots: u.slots.map((s) => ({ name: s.name, start: s.start, end: s.end })),
      }));
      expect(heldOut.some((ex) => (ex.slots?.length ?? 0) > 0)).toBe(true); // the slot head is scored too
    }
    const steps: GreedySoupStep[] = [];
    const out = tmpDir('fusion-greedy');
    const r = await greedySoup([reversed, double, a], heldOut, out, { onStep: (s) => steps.push(s) });
    // sorted by score, ties in the order given
    expect(r.ingredients.map((x) => x.dir)).toEqual([double, a, reversed]);
    expect(r.ingredients[0]?.score).toBe(1);
    expect(r.ingredients[1]?.score).toBe(1);
    expect(r.ingredients[2]?.score).toBeLessThan(0.5);
    expect(r.steps.map((s) => [s.dir, s.kept])).toEqual([
      [double, true],
      [a, true],
      [reversed, false],
    ]);
    expect(steps).toEqual(r.steps);
    expect(r.steps[2]?.score).toBeLessThan(1);
    expect(r.steps[2]?.soupScore).toBe(1);
    expect(r.kept).toEqual([double, a]);
    expect(r.score).toBe(1);
    expect(chatScore(r.metrics)).toBe(1);
    // the soup on disk: the encoder as A's, the heads 1.5 A's
    const A = readSafetensors(path.join(a, 'model.safetensors'));
    const O = readSafetensors(path.join(out, 'model.safetensors'));
    for (const [name, t] of A.tensors) {
      const head = name.startsWith('classifier.') || name.startsWith('slot_classifier.');
      const got = O.tensors.get(name)?.data ?? new Float32Array(0);
      if (!head) expect(got).toEqual(t.data);
      else t.data.forEach((x, i) => expect(got[i]).toBeCloseTo(1.5 * x, 6));
    }
    using soup = await ChatModel.load(out);
    expect(chatScore(await soup.evaluate(heldOut))).toBe(1);

    // with a tolerance as wide as the drop, the third is kept too
    const loose = await greedySoup([reversed, double, a], heldOut, tmpDir('fusion-greedy-loose'), { tolerance: 1 });
    expect(loose.kept).toEqual([double, a, reversed]);
    // incompatible ingredients are refused before any evaluation
    const other = await savedModel(5, { ...LABELS, slots: ['town'] });
    expect((await rejection(greedySoup([a, other], heldOut, tmpDir('fusion-greedy-bad')))).code).toBe('ERR_INPUT');
  });
});

// ------------------------------------------------------------------------------------------------
// logit ensembles

function expectMean(got: ArrayLike<number>, parts: ArrayLike<number>[], w: number[]): void {
  expect(got.length).toBe((parts[0] as ArrayLike<number>).length);
  for (let i = 0; i < got.length; i++) {
    const want = parts.reduce((s, p, k) => s + (w[k] as number) * (p[i] as number), 0);
    expect(Math.abs((got[i] as number) - want)).toBeLessThan(1e-6);
  }
}

describe('ChatEnsemble', () => {
  jest.setTimeout(30_000);

  test('an ensemble of one model understands and scores as the model does', async () => {
    using a = await chatModel(6);
    const e = ChatEnsemble.create([a]);
    const turns = [...TURNS, { text: 'go to london '.repeat(40) }]; // the last one is cut
    const want = await a.understandMany(turns);
    expect(want[4]?.truncated).toBe(true);
    expect(await e.understandMany(turns)).toEqual(want);
    expect(await e.understand('go to boston')).toEqual(await a.understand('go to boston'));
    const { turnsPerSecond: t1, ...mine } = await e.evaluate(EXAMPLES);
    const { turnsPerSecond: t2, ...theirs } = await a.evaluate(EXAMPLES);
    expect(mine).toEqual(theirs);
    expect(t1).toBeGreaterThan(0);
    expect(t2).toBeGreaterThan(0);
    expect(e.parameters).toBe(a.model.config.numParameters);
    // thresholds are the ensemble's own
    e.emotionThreshold = 0;
    expect((await e.understand('go to boston')).emotions).toHaveLength(2);
    e.outOfScopeThreshold = 1;
    expect((await e.understand('go to boston')).outOfScope).toBe(true);
    e.dispose();
    expect(a.disposed).toBe(false); // not its model to free
    expect((await rejection(e.understand('hi'))).code).toBe('ERR_DISPOSED');
  });

  test("an ensemble of two has the mean of the members' probabilities, word by word", async () => {
    using a = await chatModel(7);
    // another size and a shorter reach: the long turn's tail is read by `a` alone
    using b = await chatModel(8, LABELS, { ...tiny, hiddenSize: 48, intermediateSize: 96, numHeads: 3 }, tokenizer, 16);
    const long = { text: 'go to london '.repeat(8).trim() }; // 24 words: a reads all, b 14
    const turns = [...TURNS, long];
    const sa = await a.scores(turns);
    const sb = await b.scores(turns);
    expect(sa[4]?.words).toHaveLength(24);
    expect(sb[4]?.words).toHaveLength(14);
    for (const weights of [undefined, [3, 1]]) {
      const w = weights ? [0.75, 0.25] : [0.5, 0.5];
      const e = ChatEnsemble.create([a, b], weights ? { weights } : {});
      expect(e.weights).toEqual(w);
      const se = await e.scores(turns);
      se.forEach((s: TurnScores, k) => {
        const x = sa[k] as TurnScores;
        const y = sb[k] as TurnScores;
        expectMean(s.intentProbs, [x.intentProbs, y.intentProbs], w);
        expectMean(s.emotionProbs, [x.emotionProbs, y.emotionProbs], w);
        expect(s.words).toEqual(x.words);
        const common = y.words.length * 3;
        expectMean(s.wordTagProbs.subarray(0, common), [x.wordTagProbs.subarray(0, common), y.wordTagProbs], w);
        // words only `a` read: a's own distribution (its weight renormalized to 1)
        expectMean(s.wordTagProbs.subarray(common), [x.wordTagProbs.subarray(common)], [1]);
        expect(s.truncated).toBe(false);
      });
      // decoded from the mean: the intents sorted by mean probability
      const u = await e.understandMany(turns);
      u.forEach((x, k) => {
        const p = (se[k] as TurnScores).intentProbs;
        const best = p.indexOf(Math.max(...p));
        expect(x.intent?.label).toBe(LABELS.intents[best]);
        expect(x.intent?.score).toBeCloseTo(p[best] as number, 7);
      });
      const m = await e.evaluate(EXAMPLES);
      expect(m.count).toBe(3);
      expect(m.intent?.count).toBe(3);
      expect(m.slots?.count).toBe(3);
      expect(m.emotions?.count).toBe(3);
      expect(e.parameters).toBe(a.model.config.numParameters + b.model.config.numParameters);
    }
  });

  test('members with other label sets, bad weights and disposed members are refused; load owns its models', async () => {
    using a = await chatModel(9);
    using c = await chatModel(10, { ...LABELS, emotions: ['anger'] });
    expect(() => ChatEnsemble.create([a, c])).toThrow(/models\[1\]'s emotions differ/);
    expect(() => ChatEnsemble.create([a, c])).toThrow(InputError);
    expect(() => ChatEnsemble.create([])).toThrow(InputError);
    expect(() => ChatEnsemble.create([a, {} as unknown as ChatModel])).toThrow(InputError);
    expect(() => ChatEnsemble.create([a, a], { weights: [1] })).toThrow(InputError);
    expect(() => ChatEnsemble.create([a], { emotionThreshold: 2 })).toThrow(InputError);
    const e = ChatEnsemble.create([a]);
    await expect(e.evaluate([{ text: 'x', intent: 'dance' }])).rejects.toThrow(/'dance'/);

    const d1 = await savedModel(11);
    const d2 = await savedModel(12);
    const owned = await ChatEnsemble.load([d1, d2], { emotionThreshold: 0.9 });
    expect(owned.emotionThreshold).toBe(0.9);
    expect((await owned.understand('go to york')).intents).toHaveLength(3);
    owned.dispose();
    expect(owned.members.every((m) => m.disposed)).toBe(true);
    const bad = await savedModel(13, { ...LABELS, slots: ['town'] });
    expect((await rejection(ChatEnsemble.load([d1, bad]))).code).toBe('ERR_INPUT');

    const gone = await chatModel(14);
    const withGone = ChatEnsemble.create([a, gone]);
    gone.dispose();
    expect((await rejection(withGone.understand('hi'))).code).toBe('ERR_DISPOSED');
    expect(() => ChatEnsemble.create([a, gone])).toThrow(/disposed/);
  });
});
