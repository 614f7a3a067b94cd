/**
 * Tokenizer.train (lib/tokenizer/train.ts): WordPiece vocabulary training, against the
 * vocabulary Hugging Face `tokenizers` learns on test/fixtures/wordpiece/corpus.txt
 * (scripts/gen_wordpiece_fixture.py), plus its contract: sizes, order, coverage, save / load
 * round trips, sources, progress, and typed errors.
 */
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';

import { AbortedError, ElmoError } from '../lib/errors';
import { CorpusError, Tokenizer, TokenizerError, trainWordPiece } from '../lib/tokenizer';
import type { TrainProgress } from '../lib/tokenizer';

const FIXTURES = path.join(__dirname, 'fixtures', 'wordpiece');
const CORPUS = path.join(FIXTURES, 'corpus.txt');
const HF_VOCAB = fs.readFileSync(path.join(FIXTURES, 'vocab.txt'), 'utf8').split('\n').slice(0, -1);
const expected = JSON.parse(fs.readFileSync(path.join(FIXTURES, 'expected.json'), 'utf8')) as {
  options: { vocabSize: number; minFrequency: number; lowercase: boolean };
  cases: { text: string; ids: number[]; tokens: string[] }[];
};
const OPTIONS = expected.options;
const LINES = fs.readFileSync(CORPUS, 'utf8').split('\n');
const SPECIALS = ['[PAD]', '[UNK]', '[CLS]', '[SEP]', '[MASK]'];

/** The corpus lines 700 times, each with a made-up word: about 2.5 MB. */
function bigLines(): string[] {
  const lines: string[] = [];
  for (let i = 0; i < 700; i++) for (const l of LINES) lines.push(`${l} w${i % 97}x${i % 13}`);
  return lines;
}

function tokensOf(tok: Tokenizer): string[] {
  const out: string[] = [];
  for (let id = 0; id < tok.vocabSize; id++) out.push(tok.idToToken(id) ?? '');
  return out;
}

/** The words the trainer sees in `text`. */
function wordsOf(text: string, lowercase = true): string[] {
  const words: string[] = [];
  Tokenizer.wordSplitter({ lowercase })(text, (units, n) => words.push(String.fromCharCode(...units.subarray(0, n))));
  return words;
}

let tmp: string;
beforeAll(() => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'elmo-vocab-'));
});
afterAll(() => {
  fs.rmSync(tmp, { recursive: true, force: true });
});

function file(name: string, content: string | Buffer): string {
  const p = path.join(tmp, name);
  fs.mkdirSync(path.dirname(p), { recursive: true });
  fs.writeFileSync(p, content);
  return p;
}

/** The rejection of `p`, checked to be a CorpusError. */
async function corpusError(p: Promise<unknown>): Promise<CorpusError> {
  const err = await rejection(p);
  if (!(err instanceof CorpusError)) throw new Error(`expected a CorpusError, got ${err.name}: ${err.message}`);
  return err;
}

/** The rejection of `p`, checked to be an ElmoError. */
async function rejection(p: Promise<unknown>): Promise<ElmoError> {
  try {
    await p;
  } catch (err) {
    expect(err).toBeInstanceOf(ElmoError);
    return err as ElmoError;
  }
  throw new Error('expected a rejection');
}

describe('Tokenizer.train against Hugging Face tokenizers', () => {
  it('reproduces the WordPieceTrainer vocabulary id for id, given its numbering of the "##c" tokens', async () => {
    // tokenizers numbers the "##c" tokens in hash-map order (different in each process); with
    // that order handed over, every merge, and so every id, must be the same.
    const order = HF_VOCAB.filter((t) => t.startsWith('##') && Array.from(t).length === 3);
    const tok = await trainWordPiece(CORPUS, OPTIONS, order);
    expect(tokensOf(tok)).toEqual(HF_VOCAB);
    for (const c of expected.cases) expect(Array.from(tok.encode(c.text).ids)).toEqual(c.ids);
  });

  it('with its own numbering (by code point) stays within the quality bounds of that vocabulary', async () => {
    // Equal-count pairs that only a "##c" id orders may merge in another order; the bounds of
    // the spec: the same tokens per word within 5%, no more [UNK].
    const tok = await Tokenizer.train(CORPUS, OPTIONS);
    const mine = new Set(tokensOf(tok));
    const shared = HF_VOCAB.filter((t) => mine.has(t)).length;
    expect(shared / HF_VOCAB.length).toBeGreaterThanOrEqual(0.95);
    const unk = tok.tokenToId('[UNK]');
    let ours = 0;
    let theirs = 0;
    let oursUnk = 0;
    let theirsUnk = 0;
    for (const c of expected.cases) {
      const ids = tok.encode(c.text, undefined, { addSpecialTokens: false }).ids;
      ours += ids.length;
      oursUnk += ids.filter((id) => id === unk).length;
      theirs += c.ids.length - 2;
      theirsUnk += c.tokens.filter((t) => t === '[UNK]').length;
    }
    expect(Math.abs(ours - theirs) / theirs).toBeLessThanOrEqual(0.05);
    expect(oursUnk).toBeLessThanOrEqual(theirsUnk);
  });
});

describe('Tokenizer.train', () => {
  it('is deterministic, and a file, its lines as texts and an async iterable give the same vocabulary', async () => {
    const a = tokensOf(await Tokenizer.train(CORPUS, OPTIONS));
    const b = tokensOf(await Tokenizer.train([CORPUS], OPTIONS));
    const c = tokensOf(await Tokenizer.train({ texts: LINES }, OPTIONS));
    async function* lines(): AsyncGenerator<string> {
      for (const l of LINES) {
        await Promise.resolve();
        yield l;
      }
    }
    const d = tokensOf(await Tokenizer.train({ texts: lines() }, OPTIONS));
    expect(b).toEqual(a);
    expect(c).toEqual(a);
    expect(d).toEqual(a);
  });

  it('streams large files: lines cut across 1 MiB chunks count as in one piece', async () => {
    const lines = bigLines();
    const big = file('big/big.txt', lines.join('\r\n'));
    expect(fs.statSync(big).size).toBeGreaterThan(2 * 1024 * 1024);
    const options = { vocabSize: 400, minFrequency: 2 };
    const fromFile = tokensOf(await Tokenizer.train(big, options));
    expect(fromFile).toEqual(tokensOf(await Tokenizer.train({ texts: lines }, options)));
  });

  it('honours vocabSize exactly, or stops early when no pair is seen minFrequency times', async () => {
    for (const vocabSize of [150, 300, 400]) {
      expect((await Tokenizer.train(CORPUS, { vocabSize })).vocabSize).toBe(vocabSize);
    }
    // Far more than the corpus supports: merges stop when the best pair is seen once.
    const all = await Tokenizer.train(CORPUS, { vocabSize: 100000, minFrequency: 2 });
    expect(all.vocabSize).toBeLessThan(100000);
    const fewer = await Tokenizer.train(CORPUS, { vocabSize: 100000, minFrequency: 5 });
    expect(fewer.vocabSize).toBeLessThan(all.vocabSize);
    // With minFrequency 2, every word seen twice or more is one token.
    const counts = new Map<string, number>();
    for (const w of wordsOf(LINES.join('\n'))) counts.set(w, (counts.get(w) ?? 0) + 1);
    for (const [w, n] of counts) if (n >= 2) expect(all.tokenize(w)).toEqual([w]);
  });

  it('puts the special tokens first, then the alphabet by code point, then the "##" characters', async () => {
    const tok = await Tokenizer.train(CORPUS, OPTIONS);
    const tokens = tokensOf(tok);
    expect(tokens.slice(0, 5)).toEqual(SPECIALS);
    const alphabet = [...new Set(Array.from(wordsOf(LINES.join('\n')).join('')))].sort(
      (x, y) => (x.codePointAt(0) ?? 0) - (y.codePointAt(0) ?? 0),
    );
    expect(tokens.slice(5, 5 + alphabet.length)).toEqual(alphabet);
    const inner = tokens.slice(5 + alphabet.length).filter((t) => t.startsWith('##') && Array.from(t).length === 3);
    expect(tokens.slice(5 + alphabet.length, 5 + alphabet.length + inner.length)).toEqual(inner);
    expect(inner.map((t) => t.codePointAt(2))).toEqual([...inner.map((t) => t.codePointAt(2))].sort((x, y) => x! - y!));

    const custom = await Tokenizer.train(CORPUS, { ...OPTIONS, specialTokens: ['[CLS]', '[SEP]', '[UNK]', '<e1>'] });
    expect(tokensOf(custom).slice(0, 4)).toEqual(['[CLS]', '[SEP]', '[UNK]', '<e1>']);
    // An extra special token is matched whole when encoding.
    expect(custom.tokenize('the <e1> boat')).toEqual(['the', '<e1>', 'boat']);
  });

  it('has every character of the corpus, and "##c" for every character seen inside a word', async () => {
    const tok = await Tokenizer.train(CORPUS, OPTIONS);
    for (const w of wordsOf(LINES.join('\n'))) {
      Array.from(w).forEach((ch, k) => {
        expect(tok.tokenToId(ch)).toBeDefined();
        if (k > 0) expect(tok.tokenToId(`##${ch}`)).toBeDefined();
      });
    }
  });

  it('encodes its training text without [UNK]', async () => {
    for (const vocabSize of [150, 300]) {
      const tok = await Tokenizer.train(CORPUS, { vocabSize });
      const unk = tok.tokenToId('[UNK]');
      for (const line of LINES) expect(Array.from(tok.encode(line).ids)).not.toContain(unk);
    }
    // Cased: the alphabet keeps capitals and accents.
    const cased = await Tokenizer.train(CORPUS, { vocabSize: 400, lowercase: false });
    expect(cased.tokenToId('T')).toBeDefined();
    expect(cased.tokenToId('##é')).toBeDefined();
    for (const line of LINES) expect(Array.from(cased.encode(line).ids)).not.toContain(cased.tokenToId('[UNK]'));
  });

  it('limitAlphabet keeps the most frequent characters', async () => {
    const tok = await Tokenizer.train(CORPUS, { vocabSize: 300, limitAlphabet: 30 });
    const singles = tokensOf(tok).filter((t) => !SPECIALS.includes(t) && Array.from(t).length === 1);
    expect(singles).toHaveLength(30);
    expect(singles).toContain('e');
    expect(singles).not.toContain('東');
    expect(tok.tokenize('東京')).toEqual(['[UNK]', '[UNK]']);
  });

  it('saves vocab.txt, tokenizer.json, tokenizer_config.json and special_tokens_map.json that load back to the same ids', async () => {
    const tok = await Tokenizer.train(CORPUS, OPTIONS);
    const dir = path.join(tmp, 'saved');
    tok.save(dir);
    expect(fs.readdirSync(dir).sort()).toEqual([
      'special_tokens_map.json',
      'tokenizer.json',
      'tokenizer_config.json',
      'vocab.txt',
    ]);
    const config = JSON.parse(fs.readFileSync(path.join(dir, 'tokenizer_config.json'), 'utf8'));
    expect(config).toMatchObject({ tokenizer_class: 'BertTokenizer', do_lower_case: true, unk_token: '[UNK]' });
    const json = JSON.parse(fs.readFileSync(path.join(dir, 'tokenizer.json'), 'utf8'));
    expect(json.model).toMatchObject({
      type: 'WordPiece',
      continuing_subword_prefix: '##',
      max_input_chars_per_word: 100,
    });
    expect(json.post_processor.type).toBe('TemplateProcessing');
    expect(json.decoder.type).toBe('WordPiece');

    const fromJson = Tokenizer.fromTokenizerJson(path.join(dir, 'tokenizer.json'));
    const fromVocab = Tokenizer.fromVocab(path.join(dir, 'vocab.txt'), { lowercase: config.do_lower_case });
    const texts = [...LINES, ...expected.cases.map((c) => c.text), '[CLS] spécial [MASK] tokens [SEP]', ''];
    for (const text of texts) {
      const want = Array.from(tok.encode(text, 'a second segment').ids);
      expect(Array.from(fromJson.encode(text, 'a second segment').ids)).toEqual(want);
      expect(Array.from(fromVocab.encode(text, 'a second segment').ids)).toEqual(want);
      expect(Array.from(fromJson.encode(text, 'a second segment').typeIds)).toEqual(
        Array.from(tok.encode(text, 'a second segment').typeIds),
      );
    }
    // Saved again from the loaded tokenizer: the same files.
    const again = path.join(tmp, 'saved-again');
    fromJson.save(again);
    for (const name of fs.readdirSync(dir)) {
      expect(fs.readFileSync(path.join(again, name), 'utf8')).toBe(fs.readFileSync(path.join(dir, name), 'utf8'));
    }
  });

  it('reports progress: count, merge, then done with the final sizes', async () => {
    const seen: TrainProgress[] = [];
    await Tokenizer.train(CORPUS, { ...OPTIONS, onProgress: (p) => seen.push(p), progressIntervalMs: 0 });
    const phases = [...new Set(seen.map((p) => p.phase))];
    expect(phases).toEqual(['count', 'merge', 'done']);
    const last = seen[seen.length - 1]!;
    expect(last).toMatchObject({ phase: 'done', vocabSize: 300, targetVocabSize: 300, files: 1 });
    expect(last.read).toBe(fs.statSync(CORPUS).size);
    expect(last.totalBytes).toBe(fs.statSync(CORPUS).size);
    expect(last.words).toBe(wordsOf(LINES.join('\n')).length);
    expect(last.merges).toBeGreaterThanOrEqual(300 - last.initialVocabSize);
  });

  it('walks directories for .txt and .md files (extensions), skipping hidden entries', async () => {
    file('tree/a.txt', 'alpha beta gamma\n');
    file('tree/sub/b.md', 'delta epsilon\n');
    file('tree/c.json', '{"zeta": "ž"}\n');
    file('tree/.hidden.txt', 'ω\n');
    const tok = await Tokenizer.train(path.join(tmp, 'tree'), { vocabSize: 60, minFrequency: 1 });
    expect(tok.tokenToId('a')).toBeDefined();
    expect(tok.tokenToId('d')).toBeDefined();
    expect(tok.tokenToId('ž')).toBeUndefined();
    expect(tok.tokenToId('ω')).toBeUndefined();
    const json = await Tokenizer.train(path.join(tmp, 'tree'), {
      vocabSize: 80,
      minFrequency: 1,
      extensions: ['.json'],
    });
    expect(json.tokenToId('z')).toBeDefined();
    expect(json.tokenToId('l')).toBeUndefined();
  });

  it('wordSplitter gives the words encode sees, without matching special tokens', () => {
    expect(wordsOf('Héllo, WORLD! [CLS] 東京')).toEqual(['hello', ',', 'world', '!', '[', 'cls', ']', '東', '京']);
    expect(wordsOf('Héllo WORLD', false)).toEqual(['Héllo', 'WORLD']);
  });
});

describe('Tokenizer.train errors', () => {
  it('an empty or whitespace-only corpus: CorpusError "empty"', async () => {
    for (const corpus of [
      file('empty.txt', ''),
      file('blank.txt', ' \n\t\n\u00a0  \r\n'),
      { texts: [] as string[] },
      { texts: ['   ', '\n'] },
    ]) {
      const err = await corpusError(Tokenizer.train(corpus));
      expect(err.code).toBe('ERR_INPUT');
      expect(err.reason).toBe('empty');
    }
    file('no-text/data.bin', 'x');
    const err = await corpusError(Tokenizer.train(path.join(tmp, 'no-text')));
    expect(err.reason).toBe('empty');
    expect(err.message).toMatch(/\.txt/);
  });

  it('a binary file (NUL bytes, or mostly invalid UTF-8): CorpusError "binary" naming it', async () => {
    const nul = file('nul.txt', Buffer.from('some text\u0000\u0001\u0002 more', 'utf8'));
    const latin1 = file(
      'latin1.txt',
      Buffer.from('caf\xe9 na\xefve \xe0 la cr\xe8me br\xfbl\xe9e '.repeat(20), 'latin1'),
    );
    for (const f of [nul, latin1]) {
      const err = await corpusError(Tokenizer.train([CORPUS, f]));
      expect(err.code).toBe('ERR_INPUT');
      expect(err.reason).toBe('binary');
      expect(err.path).toBe(f);
      expect(err.message).toContain(f);
    }
    // A stray invalid byte in a text file is tolerated (it becomes U+FFFD, which is dropped).
    const stray = file('stray.txt', Buffer.concat([Buffer.from(LINES.join('\n')), Buffer.from([0xff, 0x0a])]));
    expect((await Tokenizer.train(stray, OPTIONS)).vocabSize).toBe(OPTIONS.vocabSize);
  });

  it('a missing path: CorpusError "not-found" with the ENOENT error as cause', async () => {
    const missing = path.join(tmp, 'does-not-exist.txt');
    const err = await corpusError(Tokenizer.train([CORPUS, missing]));
    expect(err).toBeInstanceOf(CorpusError);
    expect(err.code).toBe('ERR_INPUT');
    expect(err.reason).toBe('not-found');
    expect(err.path).toBe(missing);
    expect((err.cause as NodeJS.ErrnoException).code).toBe('ENOENT');
    expect(err.message).toContain(missing);
  });

  it('vocabSize smaller than specials + alphabet + "##" characters: ERR_INPUT naming the minimum', async () => {
    // Specials, characters and "##" characters: the fixture vocabulary before its first merge.
    const minimum = HF_VOCAB.filter(
      (t) => SPECIALS.includes(t) || Array.from(t).length === 1 || (t.startsWith('##') && Array.from(t).length === 3),
    ).length;
    const err = await rejection(Tokenizer.train(CORPUS, { vocabSize: 50 }));
    expect(err).toBeInstanceOf(TokenizerError);
    expect(err.code).toBe('ERR_INPUT');
    expect(err.message).toContain(`at least ${minimum}`);
    expect((await Tokenizer.train(CORPUS, { vocabSize: minimum })).vocabSize).toBe(minimum);
  });

  it('bad options: ERR_INPUT "Expected ... for options.X"', async () => {
    for (const [options, what] of [
      [{ vocabSize: 1000.5 }, 'options.vocabSize'],
      [{ vocabSize: '8000' }, 'options.vocabSize'],
      [{ vocabSize: 0 }, 'options.vocabSize'],
      [{ minFrequency: -1 }, 'options.minFrequency'],
      [{ lowercase: 'yes' }, 'options.lowercase'],
      [{ specialTokens: ['[UNK]', '[CLS]'] }, 'options.specialTokens'],
      [{ specialTokens: ['[UNK]', '[CLS]', '[SEP]', '[UNK]'] }, 'options.specialTokens'],
      [{ specialTokens: ['[UNK]', '[CLS]', '[SEP]', 'a\nb'] }, 'options.specialTokens[3]'],
    ] as const) {
      const err = await rejection(Tokenizer.train(CORPUS, options as never));
      expect(err.code).toBe('ERR_INPUT');
      expect(err.message).toContain(what);
    }
    for (const corpus of [[], 42, [''], { texts: 'abc' }, { texts: [1, 2] }]) {
      expect((await rejection(Tokenizer.train(corpus as never))).code).toBe('ERR_INPUT');
    }
  });

  it('an aborted signal: ERR_ABORTED, before the start and while merging', async () => {
    const before = new AbortController();
    before.abort();
    const err = await rejection(Tokenizer.train(CORPUS, { signal: before.signal }));
    expect(err).toBeInstanceOf(AbortedError);
    expect(err.code).toBe('ERR_ABORTED');

    const during = new AbortController();
    const training = Tokenizer.train(
      { texts: bigLines() },
      {
        vocabSize: 100000,
        minFrequency: 1,
        signal: during.signal,
        progressIntervalMs: 0,
        onProgress: (p) => {
          if (p.phase === 'merge' && p.merges > 0) during.abort();
        },
      },
    );
    expect((await rejection(training)).code).toBe('ERR_ABORTED');
  });
});
