// Masked-LM pretraining from TypeScript: the corpus reader and sentence splitter, blocking,
// masking, model.pretrain (loss falls, head added, checkpoints, exact resume, abort) and its
// bad input.
import * as fs from 'node:fs';
import * as path from 'node:path';

import { AbortedError, Bert, InputError, Tokenizer } from '../lib';
import { readCorpus, splitSentences } from '../lib/train/corpus';
import { buildBlocks, maskBatch } from '../lib/train/pretrain';
import { Rng } from '../lib/train/rng';
import { rejection, tmpDir } from './helpers';

const FIXTURES = path.join(__dirname, 'fixtures');
const tokenizer = Tokenizer.fromVocab(fs.readFileSync(path.join(FIXTURES, 'bert-a-cls', 'vocab.txt'), 'utf8'));
const tiny = {
  vocabSize: tokenizer.vocabSize,
  hiddenSize: 32,
  numLayers: 2,
  numHeads: 2,
  intermediateSize: 64,
  maxPositions: 64,
  typeVocabSize: 2,
};

// A corpus with structure to learn: sentences made of fixed word patterns.
const WORDS = ['the', 'a', 'of', 'and', 'to', 'in', 'is', 'it', 'you', 'that', 'he', 'was', 'for', 'on', 'are'];
function corpusTexts(docs: number, seed = 1): string[] {
  const rng = new Rng(seed);
  const out: string[] = [];
  for (let d = 0; d < docs; d++) {
    const lines: string[] = [];
    for (let s = 0; s < 8; s++) {
      const k = rng.nextInt(5);
      const w = WORDS.slice(k * 3, k * 3 + 3);
      lines.push(`${w[0] ?? ''} ${w[1] ?? ''} ${w[2] ?? ''} ${w[0] ?? ''} ${w[1] ?? ''}.`);
    }
    out.push(lines.join(' '));
  }
  return out;
}

describe('corpus', () => {
  test('splitSentences splits at sentence ends, not after abbreviations or initials', () => {
    expect(splitSentences('Call me Ishmael. Some years ago I sailed! Did you? Yes.')).toEqual([
      'Call me Ishmael.',
      'Some years ago I sailed!',
      'Did you?',
      'Yes.',
    ]);
    expect(splitSentences('Mr. Smith met Dr. Jones at 5 p.m. in the U.S. Army office.')).toEqual([
      'Mr. Smith met Dr. Jones at 5 p.m. in the U.S. Army office.',
    ]);
    expect(splitSentences('J. R. Tolkien wrote it. "Really?" he asked.')).toEqual([
      'J. R. Tolkien wrote it.',
      '"Really?" he asked.',
    ]);
    expect(splitSentences('no punctuation here')).toEqual(['no punctuation here']);
  });

  test('readCorpus reads directories recursively in order, files as documents, skips blank lines', async () => {
    const dir = tmpDir('pretrain-test');
    fs.mkdirSync(path.join(dir, 'sub'));
    fs.writeFileSync(path.join(dir, 'b.txt'), 'second file\n\n  \nline two\n');
    fs.writeFileSync(path.join(dir, 'a.txt'), 'first file\n');
    fs.writeFileSync(path.join(dir, 'sub', 'c.md'), 'third\n');
    fs.writeFileSync(path.join(dir, 'skip.json'), '{"not": "text"}');
    fs.writeFileSync(path.join(dir, 'u.jsonl'), '{"text": "hello there", "label": "greet"}\n');
    const lines = [];
    for await (const l of readCorpus([dir, path.join(dir, 'u.jsonl'), { texts: ['x\ny', 'z'] }])) lines.push(l);
    expect(lines).toEqual([
      { doc: 0, text: 'first file' },
      { doc: 1, text: 'second file' },
      { doc: 1, text: 'line two' },
      { doc: 2, text: 'third' },
      { doc: 3, text: 'hello there' },
      { doc: 4, text: 'x' },
      { doc: 4, text: 'y' },
      { doc: 5, text: 'z' },
    ]);
  });

  test('buildBlocks packs whole sentences of one document into blocks of at most capacity tokens', async () => {
    const texts = [
      'One two three. Four five six seven. Eight.',
      'a b c d e f g h i j k l m n o p q r s t u v w x y z.',
    ];
    const blocks = await buildBlocks(tokenizer, { texts }, 8);
    const n = blocks.starts.length - 1;
    const lengths = Array.from({ length: n }, (_, b) => (blocks.starts[b + 1] ?? 0) - (blocks.starts[b] ?? 0));
    expect(lengths.every((l) => l > 0 && l <= 8)).toBe(true);
    expect(blocks.documents).toBe(2);
    expect(blocks.sentences).toBe(4);
    // The first document's tokens never share a block with the second's.
    const firstDoc = tokenizer.encode(texts[0] ?? '', undefined, { addSpecialTokens: false }).ids.length;
    let acc = 0;
    let boundary = false;
    for (const l of lengths) {
      acc += l;
      if (acc === firstDoc) boundary = true;
    }
    expect(boundary).toBe(true);
    expect(blocks.tokens.length).toBe(lengths.reduce((a, b) => a + b, 0));
  });
});

describe('maskBatch', () => {
  test('masks 15% of each block (at least one), 80/10/10, never [CLS]/[SEP]; labels hold the originals', async () => {
    const blocks = await buildBlocks(tokenizer, { texts: corpusTexts(40) }, 30);
    const n = blocks.starts.length - 1;
    const order = Int32Array.from({ length: n }, (_, i) => i);
    const cls = tokenizer.tokenToId('[CLS]') ?? -1;
    const sep = tokenizer.tokenToId('[SEP]') ?? -1;
    const mask = tokenizer.tokenToId('[MASK]') ?? -1;
    const vocab = {
      cls,
      sep,
      mask,
      randomIds: Int32Array.from({ length: 50 }, (_, i) => 200 + i),
      continues: new Uint8Array(tokenizer.vocabSize),
    };
    let masked = 0;
    let asMask = 0;
    let asRandom = 0;
    let kept = 0;
    const problems: string[] = [];
    for (let rep = 0; rep < 20; rep++) {
      const b = maskBatch(blocks, order, 0, n, vocab, new Rng(7, rep), 0.15, false);
      expect(b.offsets.length).toBe(n + 1);
      for (let s = 0; s < n; s++) {
        const o = b.offsets[s] ?? 0;
        const e = b.offsets[s + 1] ?? 0;
        if (b.ids[o] !== cls || b.ids[e - 1] !== sep) problems.push(`block ${String(s)}: specials`);
        if (b.labels[o] !== -100 || b.labels[e - 1] !== -100) problems.push(`block ${String(s)}: special masked`);
        const len = e - o - 2;
        let m = 0;
        for (let t = o + 1; t < e - 1; t++) {
          const orig = blocks.tokens[(blocks.starts[s] ?? 0) + t - o - 1];
          if (b.labels[t] === -100) {
            if (b.ids[t] !== orig) problems.push(`block ${String(s)}: unmasked token changed`);
            continue;
          }
          m++;
          if (b.labels[t] !== orig) problems.push(`block ${String(s)}: label is not the original`);
          if (b.ids[t] === mask) asMask++;
          else if (b.ids[t] === orig) kept++;
          else asRandom++;
        }
        if (m !== Math.max(1, Math.round(0.15 * len)))
          problems.push(`block ${String(s)}: ${String(m)} masked of ${String(len)}`);
        masked += m;
      }
    }
    expect(problems).toEqual([]);
    expect(asMask / masked).toBeGreaterThan(0.75);
    expect(asMask / masked).toBeLessThan(0.85);
    expect(asRandom / masked).toBeGreaterThan(0.06);
    expect(kept / masked).toBeGreaterThan(0.06);
  });

  test('whole-word masking takes a word with all its continuation pieces', () => {
    // Block: w0 w0## w0## w1 w2 w2## ... (continuation flags by id).
    const tokens = Int32Array.from([300, 301, 302, 310, 320, 321, 330, 340, 341, 342, 350, 360, 370, 371, 380, 390]);
    const blocks = { tokens, starts: Int32Array.from([0, tokens.length]), documents: 1, sentences: 1 };
    const continues = new Uint8Array(1000);
    for (const id of [301, 302, 321, 341, 342, 371]) continues[id] = 1;
    const vocab = { cls: 2, sep: 3, mask: 4, randomIds: Int32Array.of(500), continues };
    for (let rep = 0; rep < 30; rep++) {
      const b = maskBatch(blocks, Int32Array.of(0), 0, 1, vocab, new Rng(3, rep), 0.3, true);
      const isMasked = (k: number): boolean => b.labels[k + 1] !== -100;
      for (let k = 1; k < tokens.length; k++) {
        if (continues[tokens[k] ?? 0] === 1) expect(isMasked(k)).toBe(isMasked(k - 1));
      }
      const m = Array.from({ length: tokens.length }, (_, k) => (isMasked(k) ? 1 : 0)).reduce<number>(
        (a, x) => a + x,
        0,
      );
      expect(m).toBeGreaterThanOrEqual(1);
      expect(m).toBeLessThanOrEqual(Math.round(0.3 * tokens.length));
    }
  });
});

describe('Bert.pretrain', () => {
  test('the MLM loss falls, a head is added to a bare encoder, the checkpoint is a BertForMaskedLM', async () => {
    const model = Bert.create(tiny, { tokenizer, seed: 3 });
    expect(model.config.heads.mlm).toBe(false);
    const phases = new Set<string>();
    const r = await model.pretrain(
      { texts: corpusTexts(200) },
      {
        steps: 60,
        batchSize: 8,
        seqLen: 32,
        learningRate: 3e-3,
        seed: 1,
        onProgress: (p) => phases.add(p.phase),
        progressIntervalMs: 0,
      },
    );
    expect(r.headAdded).toBe(true);
    expect(r.steps).toBe(60);
    expect(r.history).toHaveLength(60);
    const mean = (a: { loss: number }[]): number => a.reduce((s, h) => s + h.loss, 0) / a.length;
    expect(mean(r.history.slice(-10))).toBeLessThan(0.6 * mean(r.history.slice(0, 5)));
    expect(Number.isFinite(r.evalLoss)).toBe(true);
    expect(r.evalHistory.length).toBeGreaterThan(1);
    expect(r.corpus.documents).toBe(200);
    expect([...phases].sort()).toEqual(['eval', 'prepare', 'train']);
    const dir = tmpDir('pretrain-test');
    await model.save(dir);
    const config = JSON.parse(fs.readFileSync(path.join(dir, 'config.json'), 'utf8')) as { architectures: string[] };
    expect(config.architectures).toEqual(['BertForMaskedLM']);
    const again = await Bert.load(dir);
    expect(again.config.heads.mlm).toBe(true);
    again.dispose();
    model.dispose();
  });

  test('resuming a checkpoint continues exactly: 10 steps = 5 + resume + 5, bit for bit', async () => {
    const texts = corpusTexts(60, 5);
    const opts = { steps: 10, batchSize: 4, seqLen: 24, learningRate: 1e-3, seed: 9, evals: 2 };
    const a = Bert.create(tiny, { tokenizer, seed: 4, mlm: true });
    const dirA = tmpDir('pretrain-test');
    const ra = await a.pretrain({ texts }, { ...opts, checkpointDir: dirA, checkpointSteps: 5, saveTotalLimit: 5 });
    expect(fs.existsSync(path.join(dirA, 'checkpoint-5', 'optimizer.safetensors'))).toBe(true);
    expect(fs.existsSync(path.join(dirA, 'checkpoint-10'))).toBe(true);
    const b = Bert.create(tiny, { tokenizer, seed: 99, mlm: true });
    const rb = await b.pretrain({ texts }, { ...opts, resume: path.join(dirA, 'checkpoint-5') });
    expect(rb.steps).toBe(10);
    expect(rb.history.map((h) => h.loss)).toEqual(ra.history.map((h) => h.loss));
    const outA = tmpDir('pretrain-test');
    const outB = tmpDir('pretrain-test');
    await a.save(outA);
    await b.save(outB);
    expect(
      fs
        .readFileSync(path.join(outB, 'model.safetensors'))
        .equals(fs.readFileSync(path.join(outA, 'model.safetensors'))),
    ).toBe(true);
    a.dispose();
    b.dispose();
  });

  test('an abort stops between steps; the last checkpoint stays intact and resumable', async () => {
    const model = Bert.create(tiny, { tokenizer, seed: 4, mlm: true });
    const dir = tmpDir('pretrain-test');
    const controller = new AbortController();
    const err = await rejection(
      model.pretrain(
        { texts: corpusTexts(60) },
        {
          steps: 50,
          batchSize: 4,
          seqLen: 24,
          checkpointDir: dir,
          checkpointSteps: 4,
          progressIntervalMs: 0,
          signal: controller.signal,
          onProgress: (p) => {
            if (p.phase === 'train' && p.step >= 6) controller.abort();
          },
        },
      ),
    );
    expect(err).toBeInstanceOf(AbortedError);
    expect(err.code).toBe('ERR_ABORTED');
    expect(fs.readdirSync(dir).filter((n) => n.startsWith('.tmp'))).toEqual([]);
    expect(fs.existsSync(path.join(dir, 'checkpoint-4', 'trainer_state.json'))).toBe(true);
    const r = await model.pretrain(
      { texts: corpusTexts(60) },
      { steps: 50, batchSize: 4, seqLen: 24, resume: path.join(dir, 'checkpoint-4') },
    );
    expect(r.steps).toBe(50);
    expect(r.history.map((h) => h.step)).toEqual(Array.from({ length: 50 }, (_, i) => i + 1));
    model.dispose();
  });

  test('a minutes budget stops on time and fits the schedule to the step rate', async () => {
    const model = Bert.create(tiny, { tokenizer, seed: 4, mlm: true });
    // Checkpoints on the way must not count twice against the budget.
    const t0 = performance.now();
    const r = await model.pretrain(
      { texts: corpusTexts(100) },
      { minutes: 0.05, batchSize: 4, seqLen: 24, checkpointDir: tmpDir('pretrain-test'), checkpointSteps: 5 },
    );
    expect((performance.now() - t0) / 1000).toBeGreaterThan(2.5);
    expect(r.trainSeconds).toBeGreaterThan(2.5);
    expect(r.trainSeconds).toBeLessThan(10);
    expect(r.steps).toBeGreaterThan(5);
    // Warmup then decay to (nearly) zero at the end.
    const lrs = r.history.map((h) => h.lr);
    const peak = Math.max(...lrs);
    expect(lrs[lrs.length - 1] ?? 1).toBeLessThan(0.3 * peak);
    model.dispose();
  });

  test('Bert.createLike: fresh weights of the same architecture and tokenizer, no head', async () => {
    const model = Bert.create(tiny, { tokenizer, seed: 4, mlm: true });
    const like = Bert.createLike(model, { seed: 5 });
    const arch = (c: Record<string, unknown>): Record<string, unknown> =>
      Object.fromEntries(Object.entries(c).filter(([k]) => k !== 'numParameters' && k !== 'heads'));
    expect(arch(like.config as unknown as Record<string, unknown>)).toEqual(
      arch(model.config as unknown as Record<string, unknown>),
    );
    expect(model.config.heads.mlm).toBe(true);
    expect(like.config.heads).toEqual({
      pooler: true,
      classifier: false,
      mlm: false,
      tokenClassifier: false,
      slots: false,
    });
    expect(like.tokenizer).toBe(model.tokenizer);
    const [ea, eb] = [await model.embed(['the a of']), await like.embed(['the a of'])];
    expect(Array.from(ea)).not.toEqual(Array.from(eb));
    model.dispose();
    expect(() => Bert.createLike(model)).toThrow(/disposed/);
    like.dispose();
  });

  test('bad input: typed errors', async () => {
    const model = Bert.create(tiny, { tokenizer, seed: 4, mlm: true });
    const dir = tmpDir('pretrain-test');
    const empty = await rejection(model.pretrain({ texts: ['', '   \n  '] }, { steps: 1 }));
    expect(empty).toBeInstanceOf(InputError);
    expect(empty.message).toMatch(/empty or whitespace/);
    const missing = await rejection(model.pretrain(path.join(dir, 'nope.txt'), { steps: 1 }));
    expect(missing.code).toBe('ERR_INPUT');
    expect(missing.message).toMatch(/not found/);
    const bin = path.join(dir, 'blob.txt');
    fs.writeFileSync(bin, Buffer.from([0x7f, 0x45, 0x4c, 0x46, 0, 0, 1, 2, 3]));
    const binary = await rejection(model.pretrain(bin, { steps: 1 }));
    expect(binary.code).toBe('ERR_INPUT');
    expect(binary.message).toMatch(/binary/);
    const notUtf8 = path.join(dir, 'latin1.txt');
    fs.writeFileSync(notUtf8, Buffer.from(Array.from({ length: 200 }, (_, i) => (i % 2 ? 0xe9 : 0x41))));
    expect((await rejection(model.pretrain(notUtf8, { steps: 1 }))).message).toMatch(/invalid UTF-8/);
    const both = await rejection(model.pretrain({ texts: ['a b c.'] }, { steps: 1, minutes: 1 }));
    expect(both.code).toBe('ERR_INPUT');
    const short = await rejection(model.pretrain({ texts: corpusTexts(10) }, { minutes: 1e-7 }));
    expect(short.code).toBe('ERR_INPUT');
    expect(short.message).toMatch(/too short|first step/);
    const bad = await rejection(model.pretrain({ texts: ['a'] }, { seqLen: 1000 }));
    expect(bad.message).toMatch(/options\.seqLen/);
    expect((await rejection(model.pretrain(42 as unknown as string))).code).toBe('ERR_INPUT');
    model.dispose();
  });
});
