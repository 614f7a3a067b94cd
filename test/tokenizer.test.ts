/**
 * The WordPiece tokenizer against ids produced by Hugging Face BertTokenizerFast
 * (scripts/gen_tokenizer_fixture.py writes test/fixtures/tokenizer/).
 */
import { readFileSync } from 'fs';
import { join } from 'path';

import { ElmoError } from '../lib/errors';
import { Tokenizer, TokenizerError, truncateLongestFirst } from '../lib/tokenizer';
import type { TokenizerOptions } from '../lib/tokenizer';

const FIXTURES = join(__dirname, 'fixtures', 'tokenizer');
const VOCAB_PATH = join(FIXTURES, 'vocab.txt');
const TOKENIZER_JSON_PATH = join(FIXTURES, 'tokenizer.json');

interface FixtureInput {
  name: string;
  text: string;
  pair?: string;
}
interface FixtureCase {
  input: number;
  maxSeqLen?: number;
  addSpecialTokens: boolean;
  ids: number[];
  typeIds: number[];
}
interface FixtureConfig {
  name: string;
  options: { lowercase: boolean; stripAccents?: boolean | null; handleChineseChars?: boolean; cleanText?: boolean };
  cases: FixtureCase[];
}
const fixture = JSON.parse(readFileSync(join(FIXTURES, 'cases.json'), 'utf8')) as {
  inputs: FixtureInput[];
  configs: FixtureConfig[];
  truncationGrid: [number, number, number, number, number, number][];
};

function tokenizerOptions(c: FixtureConfig): TokenizerOptions {
  const o: TokenizerOptions = { lowercase: c.options.lowercase };
  if (c.options.stripAccents !== undefined) o.stripAccents = c.options.stripAccents;
  if (c.options.handleChineseChars !== undefined) o.handleChineseChars = c.options.handleChineseChars;
  if (c.options.cleanText !== undefined) o.cleanText = c.options.cleanText;
  return o;
}

/** Runs every case of a configuration; returns one line per mismatching case. */
function mismatches(tok: Tokenizer, cfg: FixtureConfig): string[] {
  const out: string[] = [];
  for (const c of cfg.cases) {
    const input = fixture.inputs[c.input] as FixtureInput;
    const opts = {
      addSpecialTokens: c.addSpecialTokens,
      ...(c.maxSeqLen !== undefined ? { maxSeqLen: c.maxSeqLen } : {}),
    };
    const got = tok.encode(input.text, input.pair, opts);
    const ids = Array.from(got.ids);
    const typeIds = Array.from(got.typeIds);
    if (JSON.stringify(ids) !== JSON.stringify(c.ids) || JSON.stringify(typeIds) !== JSON.stringify(c.typeIds)) {
      out.push(
        `${cfg.name} ${input.name} max=${c.maxSeqLen ?? '-'} special=${c.addSpecialTokens} ` +
          `text=${JSON.stringify(input.text).slice(0, 80)}${input.pair !== undefined ? ' +pair' : ''}\n` +
          `  expected ${JSON.stringify(c.ids)} / ${JSON.stringify(c.typeIds)}\n  received ${JSON.stringify(ids)} / ${JSON.stringify(typeIds)}`,
      );
    }
  }
  return out;
}

function expectInputError(fn: () => unknown, message?: RegExp): void {
  let caught: unknown;
  try {
    fn();
  } catch (e) {
    caught = e;
  }
  expect(caught).toBeInstanceOf(TokenizerError);
  expect(caught).toBeInstanceOf(ElmoError);
  expect((caught as TokenizerError).code).toBe('ERR_INPUT');
  if (message !== undefined) expect((caught as Error).message).toMatch(message);
}

describe('fixture', () => {
  test('covers at least 500 real sentences, pairs and truncation', () => {
    const names = fixture.inputs.map((i) => i.name);
    const real = names.filter((n) => /^(banking77|goemotions|snips|pretrain|sgd)#/.test(n)).length;
    expect(real).toBeGreaterThanOrEqual(500);
    expect(fixture.inputs.filter((i) => i.pair !== undefined).length).toBeGreaterThanOrEqual(50);
    const uncased = fixture.configs.find((c) => c.name === 'uncased') as FixtureConfig;
    expect(uncased.cases.filter((c) => c.maxSeqLen === 16).length).toBeGreaterThan(500);
    expect(uncased.cases.filter((c) => c.maxSeqLen === 64).length).toBeGreaterThanOrEqual(20);
  });
});

describe('matches Hugging Face ids exactly', () => {
  for (const cfg of fixture.configs) {
    test(`fromVocab, ${cfg.name} (${cfg.cases.length} cases)`, () => {
      const tok = Tokenizer.fromVocab(VOCAB_PATH, tokenizerOptions(cfg));
      expect(mismatches(tok, cfg)).toEqual([]);
    });
  }

  for (const cfg of fixture.configs) {
    test(`fromTokenizerJson, ${cfg.name}`, () => {
      const json = JSON.parse(readFileSync(TOKENIZER_JSON_PATH, 'utf8')) as { normalizer: Record<string, unknown> };
      // The fixture tokenizer.json is the uncased configuration; the others differ only in the normalizer.
      json.normalizer.lowercase = cfg.options.lowercase;
      json.normalizer.strip_accents = cfg.options.stripAccents ?? null;
      json.normalizer.handle_chinese_chars = cfg.options.handleChineseChars ?? true;
      json.normalizer.clean_text = cfg.options.cleanText ?? true;
      expect(mismatches(Tokenizer.fromTokenizerJson(json), cfg)).toEqual([]);
    });
  }

  test('fromTokenizerJson accepts a path and JSON text; fromVocab accepts text', () => {
    const cfg = fixture.configs[0] as FixtureConfig;
    const subset = { ...cfg, cases: cfg.cases.slice(0, 200) };
    expect(mismatches(Tokenizer.fromTokenizerJson(TOKENIZER_JSON_PATH), subset)).toEqual([]);
    expect(mismatches(Tokenizer.fromTokenizerJson(readFileSync(TOKENIZER_JSON_PATH, 'utf8')), subset)).toEqual([]);
    expect(mismatches(Tokenizer.fromVocab(readFileSync(VOCAB_PATH, 'utf8')), subset)).toEqual([]);
  });
});

describe('encodeBatch', () => {
  const tok = Tokenizer.fromVocab(VOCAB_PATH);
  const texts = fixture.inputs.slice(0, 120);
  const inputs = texts.map((i) => (i.pair !== undefined ? ([i.text, i.pair] as const) : i.text));

  test.each([
    {},
    { maxSeqLen: 16 },
    { maxSeqLen: 64, addSpecialTokens: false },
    { truncation: false as const, maxSeqLen: 8 },
  ])('packs the same ids as encode, options %j', (opts) => {
    const batch = tok.encodeBatch(inputs, opts);
    expect(batch.offsets.length).toBe(inputs.length + 1);
    expect(batch.offsets[0]).toBe(0);
    expect(batch.offsets[inputs.length]).toBe(batch.ids.length);
    expect(batch.typeIds.length).toBe(batch.ids.length);
    inputs.forEach((input, b) => {
      const one = typeof input === 'string' ? tok.encode(input, undefined, opts) : tok.encode(input[0], input[1], opts);
      const lo = batch.offsets[b] as number;
      const hi = batch.offsets[b + 1] as number;
      expect(hi).toBeGreaterThanOrEqual(lo);
      expect(Array.from(batch.ids.subarray(lo, hi))).toEqual(Array.from(one.ids));
      expect(Array.from(batch.typeIds.subarray(lo, hi))).toEqual(Array.from(one.typeIds));
    });
  });

  test('pairs get type ids 0 then 1, singles all 0', () => {
    const batch = tok.encodeBatch(['hello world', ['how are you', 'fine thanks']]);
    const cls = tok.tokenToId('[CLS]') as number;
    const sep = tok.tokenToId('[SEP]') as number;
    const first = Array.from(batch.ids.subarray(0, batch.offsets[1]));
    expect(first[0]).toBe(cls);
    expect(first[first.length - 1]).toBe(sep);
    expect(Array.from(batch.typeIds.subarray(0, batch.offsets[1])).every((t) => t === 0)).toBe(true);
    const ids = Array.from(batch.ids.subarray(batch.offsets[1], batch.offsets[2]));
    const types = Array.from(batch.typeIds.subarray(batch.offsets[1], batch.offsets[2]));
    const firstSep = ids.indexOf(sep);
    expect(types.slice(0, firstSep + 1).every((t) => t === 0)).toBe(true);
    expect(types.slice(firstSep + 1).every((t) => t === 1)).toBe(true);
    expect(ids[ids.length - 1]).toBe(sep);
  });

  test('empty batch and batch of empty strings', () => {
    const empty = tok.encodeBatch([]);
    expect(empty.ids.length).toBe(0);
    expect(Array.from(empty.offsets)).toEqual([0]);
    const blanks = tok.encodeBatch(['', '']);
    expect(Array.from(blanks.offsets)).toEqual([0, 2, 4]);
  });

  test('results do not alias the reusable scratch buffers', () => {
    const a = tok.encodeBatch(['first batch text']);
    const before = Array.from(a.ids);
    tok.encodeBatch(['a completely different and longer second batch of text']);
    tok.encode('and a third call');
    expect(Array.from(a.ids)).toEqual(before);
  });

  test('rejects malformed inputs', () => {
    expectInputError(() => tok.encodeBatch('text' as unknown as string[]), /inputs/);
    expectInputError(() => tok.encodeBatch([42 as unknown as string]), /inputs\[0\]/);
    expectInputError(() => tok.encodeBatch([['a'] as unknown as [string, string]]), /inputs\[0\]/);
    expectInputError(() => tok.encodeBatch([['a', null] as unknown as [string, string]]), /inputs\[0\]\[1\]/);
  });
});

describe('errors', () => {
  const vocabText = readFileSync(VOCAB_PATH, 'utf8');

  test('a vocabulary without [CLS], [SEP] or [UNK]', () => {
    for (const special of ['[CLS]', '[SEP]', '[UNK]']) {
      const lines = vocabText.split('\n').map((l) => (l === special ? 'replaced-token' : l));
      expectInputError(() => Tokenizer.fromVocab(lines.join('\n')), new RegExp(special.replace(/[[\]]/g, '\\$&')));
    }
  });

  test('non-string text, pair and vocab', () => {
    const tok = Tokenizer.fromVocab(VOCAB_PATH);
    for (const bad of [undefined, null, 42, {}, ['a'], Buffer.from('a')]) {
      expectInputError(() => tok.encode(bad as string), /Expected a string for text/);
    }
    expectInputError(() => tok.encode('a', 7 as unknown as string), /pair/);
    expectInputError(() => Tokenizer.fromVocab(3 as unknown as string));
  });

  test('invalid options', () => {
    const tok = Tokenizer.fromVocab(VOCAB_PATH);
    expectInputError(() => tok.encode('a', undefined, { maxSeqLen: -1 }), /maxSeqLen/);
    expectInputError(() => tok.encode('a', undefined, { maxSeqLen: 2.5 }), /maxSeqLen/);
    expectInputError(() => tok.encode('a', 'b', { maxSeqLen: 2 }), /at least 3/);
    expectInputError(() => tok.encode('a', undefined, { maxSeqLen: 1 }), /at least 2/);
    expectInputError(() => tok.encodeBatch(['a', ['b', 'c']], { maxSeqLen: 2 }), /at least 3/);
    expect(tok.encode('a b c', undefined, { maxSeqLen: 2 }).ids.length).toBe(2);
    expect(tok.encode('a b c', undefined, { maxSeqLen: 0, addSpecialTokens: false }).ids.length).toBe(0);
    expectInputError(() => tok.encode('a', undefined, { truncation: 'only_first' as unknown as false }), /truncation/);
    expectInputError(() => Tokenizer.fromVocab(VOCAB_PATH, { lowercase: 'yes' as unknown as boolean }), /lowercase/);
  });

  test('a missing file', () => {
    expectInputError(() => Tokenizer.fromVocab(join(FIXTURES, 'no-such-vocab.txt')), /Cannot read vocab/);
    expectInputError(() => Tokenizer.fromTokenizerJson(join(FIXTURES, 'no-such.json')), /Cannot read tokenizer.json/);
  });

  test('unsupported or malformed tokenizer.json', () => {
    const base = JSON.parse(readFileSync(TOKENIZER_JSON_PATH, 'utf8')) as Record<string, Record<string, unknown>>;
    const variant = (patch: (j: Record<string, Record<string, unknown>>) => void): object => {
      const j = structuredClone(base);
      patch(j);
      return j;
    };
    expectInputError(
      () => Tokenizer.fromTokenizerJson(variant((j) => ((j.model as Record<string, unknown>).type = 'BPE'))),
      /model type.*BPE/,
    );
    expectInputError(
      () => Tokenizer.fromTokenizerJson(variant((j) => ((j.model as Record<string, unknown>).type = 'Unigram'))),
      /Unigram/,
    );
    expectInputError(
      () => Tokenizer.fromTokenizerJson(variant((j) => (j.normalizer = { type: 'NFKC' }))),
      /normalizer/,
    );
    expectInputError(
      () => Tokenizer.fromTokenizerJson(variant((j) => (j.pre_tokenizer = { type: 'ByteLevel' }))),
      /pre_tokenizer/,
    );
    expectInputError(
      () => Tokenizer.fromTokenizerJson(variant((j) => (j.post_processor = { type: 'RobertaProcessing' }))),
      /post_processor/,
    );
    expectInputError(
      () => Tokenizer.fromTokenizerJson(variant((j) => ((j.model as Record<string, unknown>).unk_token = '<unk>'))),
      /unknown token/,
    );
    expectInputError(() => Tokenizer.fromTokenizerJson('{"model": '), /Invalid tokenizer.json/);
    expectInputError(() => Tokenizer.fromTokenizerJson('{}'), /model/);
  });

  test('BertProcessing post-processor gives the same ids as TemplateProcessing', () => {
    const base = JSON.parse(readFileSync(TOKENIZER_JSON_PATH, 'utf8')) as Record<string, unknown>;
    const vocab = (base.model as { vocab: Record<string, number> }).vocab;
    const withBert = {
      ...base,
      post_processor: { type: 'BertProcessing', sep: ['[SEP]', vocab['[SEP]']], cls: ['[CLS]', vocab['[CLS]']] },
    };
    const a = Tokenizer.fromTokenizerJson(base);
    const b = Tokenizer.fromTokenizerJson(withBert);
    for (const input of fixture.inputs.slice(0, 200)) {
      const ea = a.encode(input.text, input.pair, { maxSeqLen: 16 });
      const eb = b.encode(input.text, input.pair, { maxSeqLen: 16 });
      expect(Array.from(eb.ids)).toEqual(Array.from(ea.ids));
      expect(Array.from(eb.typeIds)).toEqual(Array.from(ea.typeIds));
    }
  });
});

describe('behaviour', () => {
  const tok = Tokenizer.fromVocab(VOCAB_PATH);

  test('tokenize and id lookups are consistent with the vocabulary file', () => {
    const lines = readFileSync(VOCAB_PATH, 'utf8').split('\n');
    expect(tok.vocabSize).toBe(lines.length - 1);
    expect(tok.idToToken(tok.tokenToId('hello') as number)).toBe('hello');
    expect(tok.tokenToId('hello')).toBe(lines.indexOf('hello'));
    const pieces = tok.tokenize('Tokenization!');
    expect(pieces.join('').replace(/##/g, '')).toBe('tokenization!');
    expect(pieces.slice(1).every((p, i) => i === pieces.length - 2 || p.startsWith('##'))).toBe(true);
  });

  test('a word of more than maxInputCharsPerWord characters is one [UNK]', () => {
    const unk = tok.tokenToId('[UNK]');
    expect(Array.from(tok.encode('a'.repeat(101), undefined, { addSpecialTokens: false }).ids)).toEqual([unk]);
    expect(tok.encode('a'.repeat(100), undefined, { addSpecialTokens: false }).ids.length).toBeGreaterThan(1);
    const small = Tokenizer.fromVocab(VOCAB_PATH, { maxInputCharsPerWord: 3 });
    expect(Array.from(small.encode('abcd abc', undefined, { addSpecialTokens: false }).ids)).toEqual([
      unk,
      tok.tokenToId('abc'),
    ]);
  });

  test('longest-first truncation over a grid of segment lengths', () => {
    const a = tok.tokenToId('a') as number;
    const b = tok.tokenToId('b') as number;
    const bad: string[] = [];
    for (const [n1, n2, maxSeqLen, special, keptA, keptB] of fixture.truncationGrid) {
      const enc = tok.encode(Array(n1).fill('a').join(' '), Array(n2).fill('b').join(' '), {
        maxSeqLen,
        addSpecialTokens: special === 1,
      });
      const ids = Array.from(enc.ids);
      const gotA = ids.filter((x) => x === a).length;
      const gotB = ids.filter((x) => x === b).length;
      // An empty pair counts as no pair; one-token words make the early stop a plain min().
      const hasPair = n2 > 0;
      const budget = special === 1 ? maxSeqLen - (hasPair ? 3 : 2) : maxSeqLen;
      const [fnA, fnB] = truncateLongestFirst(Math.min(n1, maxSeqLen), Math.min(n2, maxSeqLen), hasPair, budget);
      if (gotA !== keptA || gotB !== keptB || fnA !== keptA || fnB !== keptB) {
        bad.push(
          `n1=${n1} n2=${n2} maxSeqLen=${maxSeqLen} special=${special}: expected ${keptA},${keptB} got ${gotA},${gotB} (fn ${fnA},${fnB})`,
        );
      }
    }
    expect(fixture.truncationGrid.length).toBeGreaterThan(3000);
    expect(bad).toEqual([]);
  });

  test('truncation: false ignores maxSeqLen', () => {
    const long = 'word '.repeat(50);
    expect(tok.encode(long, undefined, { maxSeqLen: 8, truncation: false }).ids.length).toBe(52);
    expect(tok.encode(long, undefined, { maxSeqLen: 8 }).ids.length).toBe(8);
  });

  test('lone surrogates are removed like other C* characters, not thrown on', () => {
    const a = tok.encode('ab\ud800cd \udc00x');
    const b = tok.encode('abcd x');
    expect(Array.from(a.ids)).toEqual(Array.from(b.ids));
  });
});

// 10^6-character inputs of every shape that could make a tokenizer quadratic (long words,
// prefix-heavy words, runs of punctuation, CJK, combining marks). They must encode, and
// truncate, correctly; a quadratic path would not finish within jest's timeout. Speed itself is
// measured by bench/tokenizer-bench.js, not here.
describe('10^6-character inputs', () => {
  const tok = Tokenizer.fromVocab(VOCAB_PATH);
  const shapes: [string, (n: number) => string][] = [
    ['one long word', (n) => 'a'.repeat(n)],
    ['repeated prefix-heavy word', (n) => 'ab'.repeat(n / 2)],
    ['many words', (n) => 'hello world, '.repeat(Math.ceil(n / 13)).slice(0, n)],
    ['punctuation only', (n) => '!?'.repeat(n / 2)],
    ['CJK', (n) => '你好世界'.repeat(n / 4)],
    ['combining marks', (n) => 'e\u0301'.repeat(n / 2)],
    ['accents without spaces', (n) => 'é'.repeat(n)],
    ['brackets that start special tokens', (n) => '[CLS'.repeat(n / 4)],
  ];
  for (const [name, make] of shapes) {
    test(name, () => {
      const large = make(1_000_000);
      const full = tok.encode(large);
      expect(full.ids.length).toBeGreaterThanOrEqual(3);
      expect(full.ids[0]).toBe(tok.tokenToId('[CLS]'));
      expect(full.ids[full.ids.length - 1]).toBe(tok.tokenToId('[SEP]'));
      const truncated = tok.encode(large, undefined, { maxSeqLen: 8 });
      expect(truncated.ids.length).toBeGreaterThanOrEqual(3);
      expect(truncated.ids.length).toBeLessThanOrEqual(8);
      expect(Array.from(truncated.ids.subarray(0, truncated.ids.length - 1))).toEqual(
        Array.from(full.ids.subarray(0, truncated.ids.length - 1)),
      );
    });
  }
});
