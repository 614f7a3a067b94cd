// `elmo vocab`, run in-process through main() (the command needs no model and no addon): the
// saved tokenizer directory, the flags, the summary and progress lines, and the exit codes.
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';

import { main, runCli } from '../lib/cli';
import { Tokenizer } from '../lib/tokenizer';

const CORPUS = path.join(__dirname, 'fixtures', 'wordpiece', 'corpus.txt');

async function elmo(args: string[]): Promise<{ code: number; out: string[]; err: string }> {
  const out: string[] = [];
  const err: string[] = [];
  const code = await main(
    args,
    (l) => out.push(l),
    (l) => err.push(l),
  );
  return { code, out, err: err.join('\n') };
}

function tokensOf(tok: Tokenizer): string[] {
  const out: string[] = [];
  for (let id = 0; id < tok.vocabSize; id++) out.push(tok.idToToken(id) ?? '');
  return out;
}

let tmp: string;
beforeAll(() => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'elmo-cli-vocab-'));
});
afterAll(() => {
  fs.rmSync(tmp, { recursive: true, force: true });
});

describe('elmo vocab', () => {
  it('trains and saves a tokenizer directory equal to Tokenizer.train with the same options', async () => {
    const out = path.join(tmp, 'tok');
    const r = await elmo(['vocab', '--corpus', CORPUS, '--vocab-size', '300', '--out', out]);
    expect(r.code).toBe(0);
    expect(fs.readdirSync(out).sort()).toEqual([
      'special_tokens_map.json',
      'tokenizer.json',
      'tokenizer_config.json',
      'vocab.txt',
    ]);
    const saved = Tokenizer.fromTokenizerJson(path.join(out, 'tokenizer.json'));
    expect(tokensOf(saved)).toEqual(tokensOf(await Tokenizer.train(CORPUS, { vocabSize: 300 })));
    expect(r.out[0]).toMatch(/^vocab +300 tokens: \d+ specials and characters, \d+ merged$/);
    expect(r.out[1]).toMatch(/^corpus +1 file, 0\.00 MB, \d+ words \(\d+ distinct\)$/);
    expect(r.out.at(-1)).toContain(path.join(out, 'vocab.txt'));
    // Not a terminal: one line per phase on stderr.
    expect(r.err).toContain('elmo vocab: counting words in 1 file (');
    expect(r.err).toMatch(/merging up to 300 tokens/);
  });

  it('takes several --corpus paths, --no-lowercase, --min-frequency and --limit-alphabet', async () => {
    const dir = path.join(tmp, 'texts');
    fs.mkdirSync(dir);
    fs.writeFileSync(path.join(dir, 'a.txt'), 'Harbour Boats and Trains\n');
    const out = path.join(tmp, 'cased');
    const args = ['vocab', '--corpus', CORPUS, dir, '--vocab-size', '2000', '--no-lowercase', '--out', out];
    const r = await elmo([...args, '--min-frequency', '3', '--limit-alphabet', '60']);
    expect(r.code).toBe(0);
    const config = JSON.parse(fs.readFileSync(path.join(out, 'tokenizer_config.json'), 'utf8'));
    expect(config.do_lower_case).toBe(false);
    const saved = Tokenizer.fromTokenizerJson(path.join(out, 'tokenizer.json'));
    const want = await Tokenizer.train([CORPUS, dir], {
      vocabSize: 2000,
      lowercase: false,
      minFrequency: 3,
      limitAlphabet: 60,
    });
    expect(tokensOf(saved)).toEqual(tokensOf(want));
    expect(saved.tokenToId('H')).toBeDefined();
    // The corpus runs out of pairs seen 3 times before 2000 tokens: said so.
    expect(r.out[0]).toMatch(/fewer than 2000: no pair left that occurs 3 times/);
    expect(r.out[1]).toMatch(/^corpus +2 files/);
    // --corpus repeated works as well as several values after one flag.
    const again = path.join(tmp, 'again');
    const r2 = await elmo(['vocab', '--corpus', CORPUS, '--corpus', dir, '--vocab-size', '300', '--out', again]);
    expect(r2.code).toBe(0);
    expect(r2.out[1]).toMatch(/^corpus +2 files/);
  });

  it('usage problems exit 2 with the message and the usage', async () => {
    const cases: [string[], RegExp][] = [
      [['vocab', '--corpus', CORPUS], /--out DIR is required/],
      [['vocab', '--out', tmp], /--corpus PATH is required/],
      [['vocab', '--corpus', CORPUS, '--out', tmp, '--vocab-size', 'big'], /--vocab-size expects a positive integer/],
      [['vocab', '--corpus', CORPUS, '--out', tmp, '--vocab-size', '0'], /--vocab-size expects a positive integer/],
      [['vocab', '--corpus', CORPUS, '--out', tmp, '--min-frequency', '-1'], /--min-frequency expects an integer >= 0/],
    ];
    for (const [args, message] of cases) {
      const r = await elmo(args);
      expect(r.code).toBe(2);
      expect(r.err).toMatch(message);
      expect(r.err).toContain('Usage: elmo vocab');
    }
  });

  it('corpus and size problems exit 1 with the error code', async () => {
    const missing = path.join(tmp, 'nowhere.txt');
    let r = await elmo(['vocab', '--corpus', missing, '--out', path.join(tmp, 'x')]);
    expect(r.code).toBe(1);
    expect(r.err).toContain(
      `elmo vocab: ERR_INPUT: Expected an existing file or directory in the corpus but received '${missing}'`,
    );
    r = await elmo(['vocab', '--corpus', CORPUS, '--vocab-size', '20', '--out', path.join(tmp, 'x')]);
    expect(r.code).toBe(1);
    expect(r.err).toMatch(/ERR_INPUT: Expected options.vocabSize of at least \d+/);
    expect(fs.existsSync(path.join(tmp, 'x'))).toBe(false);
  });

  it('is listed in the help, and runCli sends it to main()', () => {
    const out: string[] = [];
    expect(runCli(['--help'], (l) => out.push(l))).toBe(0);
    expect(out.join('\n')).toMatch(/vocab \[options\]/);
    const err: string[] = [];
    expect(runCli(['vocab', '--corpus', CORPUS, '--out', tmp], undefined, (l) => err.push(l))).toBe(2);
    expect(err.join('\n')).toContain('call main()');
  });
});
