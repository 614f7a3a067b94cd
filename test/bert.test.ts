// The model API against the Hugging Face fixtures (test/fixtures/bert-*: checkpoints written by
// transformers, inputs, float64 reference outputs stored as f32), plus its lifecycle and
// every misuse error. Tiny models only, so the whole file runs in a few seconds.
import * as fs from 'node:fs';
import * as path from 'node:path';

import {
  Bert,
  CheckpointError,
  DeviceUnavailableError,
  DisposedError,
  InputError,
  ShapeError,
  Tokenizer,
  devices,
} from '../lib';
import { native } from '../lib/native';
import { collectUntil, expectClose, gcFunction, rejection, tmpDir } from './helpers';

const FIXTURES = path.join(__dirname, 'fixtures');
const FIXTURE_DIRS = ['bert-a-cls', 'bert-b-mlm', 'bert-b-multilabel'];

interface Manifest {
  ids: number[];
  type_ids: number[];
  offsets: number[];
  texts?: (string | [string, string])[];
  outputs: Record<string, { file: string; shape: number[] }>;
}

function manifest(name: string): Manifest {
  return JSON.parse(fs.readFileSync(path.join(FIXTURES, name, 'manifest.json'), 'utf8')) as Manifest;
}

function readF32(name: string, file: string): Float32Array {
  const b = fs.readFileSync(path.join(FIXTURES, name, file));
  return new Float32Array(b.buffer.slice(b.byteOffset, b.byteOffset + b.byteLength));
}

function packed(m: Manifest): { ids: Int32Array; typeIds: Int32Array; offsets: Int32Array } {
  return { ids: Int32Array.from(m.ids), typeIds: Int32Array.from(m.type_ids), offsets: Int32Array.from(m.offsets) };
}

/** Same bytes (both absent counts as equal). */
function bitEqual(a: Float32Array | undefined, b: Float32Array | undefined): boolean {
  if (a === undefined || b === undefined) return a === b;
  return Buffer.from(a.buffer, a.byteOffset, a.byteLength).equals(Buffer.from(b.buffer, b.byteOffset, b.byteLength));
}

function softmax64(row: ArrayLike<number>): number[] {
  const z = Array.from(row);
  const max = Math.max(...z);
  const e = z.map((v) => Math.exp(v - max));
  const sum = e.reduce((a, b) => a + b, 0);
  return e.map((v) => v / sum);
}

function argmax(row: ArrayLike<number>): number {
  let best = 0;
  for (let i = 1; i < row.length; i++) if ((row[i] ?? -Infinity) > (row[best] ?? -Infinity)) best = i;
  return best;
}

const cudaAvailable = devices().cuda.available;

describe.each(FIXTURE_DIRS)('Bert on fixture %s', (name) => {
  let model: Bert;
  const m = manifest(name);

  beforeAll(async () => {
    model = await Bert.load(path.join(FIXTURES, name), { device: 'cpu' });
  });
  afterAll(() => model.dispose());

  it('forwardIds matches the transformers outputs (hidden, pooled, logits)', async () => {
    const out = await model.forwardIds(packed(m));
    const H = model.config.hiddenSize;
    const B = m.offsets.length - 1;
    expect(out.hidden.length).toBe(m.ids.length * H);
    expect(Array.from(out.offsets)).toEqual(m.offsets);
    expectClose(out.hidden, readF32(name, 'hidden.bin'), 1e-5, 1e-4);
    if (m.outputs.pooled) {
      expect(out.pooled?.length).toBe(B * H);
      expectClose(out.pooled ?? new Float32Array(), readF32(name, 'pooled.bin'), 1e-5, 1e-4);
    } else {
      expect(out.pooled).toBeUndefined();
    }
    if (m.outputs.logits) {
      expectClose(out.logits ?? new Float32Array(), readF32(name, 'logits.bin'), 1e-5, 1e-4);
    } else {
      expect(out.logits).toBeUndefined();
    }
  });

  it('forward over texts equals forwardIds over the tokenizer batch', async () => {
    const pairs = model.config.typeVocabSize > 1;
    const texts: (string | [string, string])[] = m.texts ?? [
      'hello world',
      pairs ? ['is my card lost?', 'we can help with that'] : 'is my card lost? we can help with that',
      'a',
    ];
    const batch = model.tokenizer.encodeBatch(texts, { maxSeqLen: model.maxSeqLen });
    const viaText = await model.forward(texts);
    const viaIds = await model.forwardIds(batch);
    expect(Array.from(viaText.offsets)).toEqual(Array.from(batch.offsets));
    expect(bitEqual(viaText.hidden, viaIds.hidden)).toBe(true);
    if (m.texts) {
      // The manifest's texts were encoded by transformers into the manifest's ids.
      expect(Array.from(batch.ids)).toEqual(m.ids);
      expectClose(viaText.hidden, readF32(name, 'hidden.bin'), 1e-5, 1e-4);
    }
  });

  it('outputs own their memory: a later forward does not change an earlier result', async () => {
    const first = await model.forwardIds(packed(m));
    const copy = Float32Array.from(first.hidden);
    const second = await model.forward(['something else entirely', 'x']);
    expect(second.hidden.buffer).not.toBe(first.hidden.buffer);
    expect(bitEqual(first.hidden, copy)).toBe(true);
  });

  it('where external buffers are forbidden, outputs are equal copies', async () => {
    const zeroCopy = await model.forwardIds(packed(m));
    native().testing.setExternalBuffers(false);
    try {
      const copied = await model.forwardIds(packed(m));
      expect(bitEqual(copied.hidden, zeroCopy.hidden)).toBe(true);
      expect(bitEqual(copied.pooled, zeroCopy.pooled)).toBe(true);
      expect(bitEqual(copied.logits, zeroCopy.logits)).toBe(true);
    } finally {
      native().testing.setExternalBuffers(true);
    }
  });

  it('embed pools in native code: mean over real tokens, or the [CLS] row', async () => {
    const texts = ['hello world', 'a much longer sentence with several more words in it', 'x'];
    const H = model.config.hiddenSize;
    const { hidden, offsets } = await model.forward(texts);
    const mean = await model.embed(texts, { pooling: 'mean' });
    const cls = await model.embed(texts, { pooling: 'cls' });
    const byDefault = await model.embed(texts);
    expect(mean.length).toBe(texts.length * H);
    const refMean = new Float64Array(texts.length * H);
    const refCls = new Float64Array(texts.length * H);
    for (let b = 0; b < texts.length; b++) {
      const t0 = offsets[b] ?? 0;
      const t1 = offsets[b + 1] ?? 0;
      for (let j = 0; j < H; j++) {
        let s = 0;
        for (let t = t0; t < t1; t++) s += hidden[t * H + j] ?? NaN;
        refMean[b * H + j] = s / (t1 - t0);
        refCls[b * H + j] = hidden[t0 * H + j] ?? NaN;
      }
    }
    expectClose(mean, refMean, 1e-6, 1e-5);
    // [CLS] pooling runs the last layer on the [CLS] rows alone: the same bits on the AVX-512
    // and scalar paths, the same to rounding on AVX2 for the fixtures' 200-wide FFN (docs/api.md).
    expectClose(cls, refCls, 1e-5, 1e-4);
    if (devices().cpu.isa !== 'avx2') expectClose(cls, refCls, 0, 0);
    expectClose(byDefault, mean, 0, 0);
  });

  it('save -> load round trip gives identical outputs, labels and tokenizer', async () => {
    const dir = path.join(tmpDir('bert'), 'nested', 'model');
    await model.save(dir);
    for (const f of ['config.json', 'model.safetensors', 'vocab.txt'])
      expect(fs.existsSync(path.join(dir, f))).toBe(true);
    expect(fs.readdirSync(dir).filter((f) => f.includes('.tmp'))).toEqual([]);
    const config = JSON.parse(fs.readFileSync(path.join(dir, 'config.json'), 'utf8')) as {
      id2label?: Record<string, string>;
    };
    const again = await Bert.load(dir, { device: 'cpu' });
    try {
      expect(again.labels).toEqual(model.labels);
      if (model.labels.length > 0) expect(Object.values(config.id2label ?? {})).toEqual(model.labels);
      const a = await model.forwardIds(packed(m));
      const b = await again.forwardIds(packed(m));
      expect(bitEqual(b.hidden, a.hidden)).toBe(true);
      expect(bitEqual(b.pooled, a.pooled)).toBe(true);
      expect(bitEqual(b.logits, a.logits)).toBe(true);
      expect(Array.from(again.tokenizer.encode('hello world').ids)).toEqual(
        Array.from(model.tokenizer.encode('hello world').ids),
      );
    } finally {
      again.dispose();
    }
  });
});

describe('precision bf16 on the CPU', () => {
  // The fixtures' random weights amplify rounding (their logits move by up to 0.04 with bf16
  // linear layers, as in PyTorch); the scores, after softmax or sigmoid, stay within 1e-2.
  it.each(['bert-a-cls', 'bert-b-multilabel'])('%s predicts within 1e-2 of fp32', async (name) => {
    const dir = path.join(FIXTURES, name);
    using exact = await Bert.load(dir, { device: 'cpu' });
    using bf16 = await Bert.load(dir, { device: 'cpu', precision: 'bf16' });
    const pair: string | [string, string] =
      exact.config.typeVocabSize > 1 ? ['is my card lost?', 'we can help'] : 'is my card lost? we can help';
    const texts = ['hello world', pair, 'zzz qqq', 'a b c d e f'];
    const want = await exact.predict(texts);
    const got = await bf16.predict(texts);
    expect(got).toHaveLength(want.length);
    got.forEach((p, b) => {
      const w = want[b];
      if (w === undefined) return;
      expectClose(p.scores, w.scores, 1e-2, 0);
      const sorted = Array.from(w.scores).sort((x, y) => y - x);
      // The label agrees wherever fp32's choice is not a near tie.
      if ((sorted[0] ?? 0) - (sorted[1] ?? 0) > 2e-2) expect(p.label).toBe(w.label);
    });
    // And the bf16 copies are really used: the outputs differ from fp32.
    const a = await exact.forward(texts);
    const b16 = await bf16.forward(texts);
    expect(bitEqual(a.hidden, b16.hidden)).toBe(false);
  });
});

describe('precision int8 on the CPU', () => {
  // Dynamic quantization: int8 weights per row, activations per token. On the fixtures' random
  // weights (std 0.2) the scores move by up to a few 1e-2 (measured below 3e-2).
  it.each(['bert-a-cls', 'bert-b-multilabel'])('%s predicts within 5e-2 of fp32', async (name) => {
    const dir = path.join(FIXTURES, name);
    using exact = await Bert.load(dir, { device: 'cpu' });
    using int8 = await Bert.load(dir, { device: 'cpu', precision: 'int8' });
    const pair: string | [string, string] =
      exact.config.typeVocabSize > 1 ? ['is my card lost?', 'we can help'] : 'is my card lost? we can help';
    const texts = ['hello world', pair, 'zzz qqq', 'a b c d e f'];
    const want = await exact.predict(texts);
    const got = await int8.predict(texts);
    expect(got).toHaveLength(want.length);
    got.forEach((p, b) => {
      const w = want[b];
      if (w === undefined) return;
      expectClose(p.scores, w.scores, 5e-2, 0);
      const sorted = Array.from(w.scores).sort((x, y) => y - x);
      if ((sorted[0] ?? 0) - (sorted[1] ?? 0) > 1e-1) expect(p.label).toBe(w.label);
    });
    const a = await exact.forward(texts);
    const q = await int8.forward(texts);
    expect(bitEqual(a.hidden, q.hidden)).toBe(false);
  });

  it('the kernel is named, and an int8 model is for inference only', async () => {
    expect(['avx512_vnni', 'avx2', 'scalar']).toContain(devices().cpu.int8Kernel);
    using int8 = await Bert.load(path.join(FIXTURES, 'bert-a-cls'), { device: 'cpu', precision: 'int8' });
    const err = await rejection(int8.fineTune([{ text: 'hello', label: int8.labels[0] ?? '' }], { epochs: 1 }));
    expect(err.code).toBe('ERR_INPUT');
    expect(err.message).toMatch(/int8/);
  });
});

describe('Bert.predict', () => {
  it('single-label: softmax over the logits, label = arg-max', async () => {
    using model = await Bert.load(path.join(FIXTURES, 'bert-a-cls'), { device: 'cpu' });
    const texts = ['hello world', ['card', 'lost'] as [string, string], 'zzz qqq'];
    const { logits } = await model.forward(texts);
    const preds = await model.predict(texts);
    const L = model.labels.length;
    expect(L).toBe(5);
    expect(preds).toHaveLength(3);
    preds.forEach((p, b) => {
      const row = (logits ?? new Float32Array()).subarray(b * L, (b + 1) * L);
      const ref = softmax64(row);
      expectClose(p.scores, ref, 1e-7, 1e-5);
      expect(p.label).toBe(model.labels[argmax(row)]);
      expect(p.score).toBe(p.scores[argmax(row)]);
    });
  });

  it('multi-label: an independent sigmoid per label', async () => {
    using model = await Bert.load(path.join(FIXTURES, 'bert-b-multilabel'), { device: 'cpu' });
    expect(model.config.problemType).toBe('multi_label_classification');
    const texts = ['hello', 'another text'];
    const { logits } = await model.forward(texts);
    const preds = await model.predict(texts);
    const L = model.labels.length;
    preds.forEach((p, b) => {
      const row = Array.from((logits ?? new Float32Array()).subarray(b * L, (b + 1) * L));
      expectClose(
        p.scores,
        row.map((z) => 1 / (1 + Math.exp(-z))),
        1e-7,
        1e-5,
      );
      expect(p.label).toBe(model.labels[argmax(row)]);
    });
  });

  it('a model with one token type refuses text pairs with ERR_INPUT', async () => {
    using model = await Bert.load(path.join(FIXTURES, 'bert-b-multilabel'), { device: 'cpu' });
    expect(model.config.typeVocabSize).toBe(1);
    const err = await rejection(model.predict(['one', ['a', 'b']]));
    expect(err).toBeInstanceOf(InputError);
    expect(err.message).toBe(
      "Expected a single text (the model's type_vocab_size is 1) for inputs[1] but received a [string, string] pair",
    );
  });

  it('a model without a classification head refuses predict with ERR_INPUT', async () => {
    using model = await Bert.load(path.join(FIXTURES, 'bert-b-mlm'), { device: 'cpu' });
    const err = await rejection(model.predict(['hello']));
    expect(err).toBeInstanceOf(InputError);
    expect(err.message).toMatch(/^Expected a model with a sequence-classification head for predict but received/);
  });
});

describe('Bert.create', () => {
  const tokenizer = Tokenizer.fromVocab(path.join(FIXTURES, 'bert-a-cls', 'vocab.txt'));
  const config = {
    vocabSize: tokenizer.vocabSize,
    hiddenSize: 24,
    numLayers: 2,
    numHeads: 3,
    intermediateSize: 40,
    maxPositions: 32,
    typeVocabSize: 2,
    labels: ['greet', 'bye', 'other'],
  };

  it('is deterministic in the seed and saves a loadable checkpoint with its labels and vocab', async () => {
    using a = Bert.create(config, { tokenizer, device: 'cpu', seed: 7 });
    using b = Bert.create(config, { tokenizer, device: 'cpu', seed: 7 });
    using c = Bert.create(config, { tokenizer, device: 'cpu', seed: 8 });
    expect(a.labels).toEqual(config.labels);
    expect(a.config.heads).toEqual({
      pooler: true,
      classifier: true,
      mlm: false,
      tokenClassifier: false,
      slots: false,
    });
    const texts = ['hello there', 'bye'];
    const [oa, ob, oc] = await Promise.all([a.forward(texts), b.forward(texts), c.forward(texts)]);
    expect(bitEqual(oa.hidden, ob.hidden)).toBe(true);
    expect(bitEqual(oa.hidden, oc.hidden)).toBe(false);

    const dir = tmpDir('bert');
    await a.save(dir);
    expect(fs.readFileSync(path.join(dir, 'vocab.txt'), 'utf8')).toBe(
      fs.readFileSync(path.join(FIXTURES, 'bert-a-cls', 'vocab.txt'), 'utf8'),
    );
    using loaded = await Bert.load(dir, { device: 'cpu' });
    expect(loaded.labels).toEqual(config.labels);
    const ol = await loaded.forward(texts);
    expect(bitEqual(ol.hidden, oa.hidden)).toBe(true);
    expect(oa.logits).toBeDefined();
    expect(bitEqual(ol.logits, oa.logits)).toBe(true);
    const preds = await loaded.predict(texts);
    expect(config.labels).toContain(preds[0]?.label);
  });

  it('validates its config and options', () => {
    expect(() => Bert.create({ ...config, hiddenSize: 0 }, { tokenizer })).toThrow(
      'Expected a positive integer for config.hiddenSize but received number 0',
    );
    expect(() => Bert.create({ ...config, hiddenSize: 25 }, { tokenizer, device: 'cpu' })).toThrow(
      'Expected a multiple of config.numHeads (3) for config.hiddenSize but received number 25',
    );
    expect(() => Bert.create({ ...config, vocabSize: 10 }, { tokenizer, device: 'cpu' })).toThrow(
      /^Expected config.vocabSize of at least 600/,
    );
    const notATokenizer: unknown = {};
    expect(() => Bert.create(config, { tokenizer: notATokenizer as Tokenizer })).toThrow(
      'Expected a Tokenizer for options.tokenizer but received an object',
    );
    expect(() => Bert.create(config, { tokenizer, device: 'gpu' as 'cpu' })).toThrow(
      "Expected one of 'auto', 'cpu', 'cuda' for device but received string 'gpu'",
    );
  });
});

describe('Bert lifecycle and concurrency', () => {
  const tokenizer = Tokenizer.fromVocab(path.join(FIXTURES, 'bert-a-cls', 'vocab.txt'));
  // Big enough that a forward takes a while on any machine (about 0.5 GFLOP).
  const bigConfig = {
    vocabSize: tokenizer.vocabSize,
    hiddenSize: 128,
    numLayers: 3,
    numHeads: 4,
    intermediateSize: 512,
    maxPositions: 256,
    typeVocabSize: 2,
    labels: ['a', 'b'],
  };
  const longText = Array.from({ length: 300 }, (_, i) => `word${String(i % 50)}`).join(' ');
  const bigBatch = Array.from({ length: 8 }, () => longText);

  it('the event loop keeps running during a large forward', async () => {
    using model = Bert.create(bigConfig, { tokenizer, device: 'cpu', seed: 1 });
    let ticks = 0;
    const timer = setInterval(() => ticks++, 1);
    let ticksAtResolve = -1;
    try {
      const out = await model.forward(bigBatch).then((o) => {
        ticksAtResolve = ticks;
        return o;
      });
      expect(out.offsets[8]).toBe(8 * 256);
    } finally {
      clearInterval(timer);
    }
    expect(ticksAtResolve).toBeGreaterThan(0);
  });

  it('short forwards run inline once the model knows its speed, with the same outputs', async () => {
    const dir = path.join(FIXTURES, 'bert-a-cls');
    const batch = packed(manifest('bert-a-cls'));
    using inline = await Bert.load(dir, { device: 'cpu', inlineMaxMs: 1e6 });
    using threaded = await Bert.load(dir, { device: 'cpu', inlineMaxMs: 0 });
    const first = await inline.forwardIds(batch); // on the model's thread: no speed known yet
    // Now inline: the promise is settled when returned, so awaiting it resumes before any
    // setImmediate callback queued ahead of the call.
    let immediate = false;
    setImmediate(() => (immediate = true));
    const second = await inline.forwardIds(batch);
    expect(immediate).toBe(false);
    const [p] = await inline.predict(['hello world']);
    expect(immediate).toBe(false);
    const reference = await threaded.forwardIds(batch);
    for (const out of [first, second]) {
      expect(out.hidden).toEqual(reference.hidden);
      expect(out.pooled).toEqual(reference.pooled);
      expect(out.logits).toEqual(reference.logits);
    }
    const [q] = await threaded.predict(['hello world']);
    expect(p?.scores).toEqual(q?.scores);
    // Errors of an inline call still reject the promise (never throw).
    const bad = inline.forwardIds({ ids: Int32Array.of(101, 999999), offsets: Int32Array.of(0, 2) });
    expect(bad).toBeInstanceOf(Promise);
    expect((await rejection(bad)).code).toBe('ERR_INPUT');
    expect(inline.busy).toBe(false);
  });

  it('calls queue: concurrent operations run one at a time, in the order they were made', async () => {
    using model = Bert.create(bigConfig, { tokenizer, device: 'cpu', seed: 1 });
    const order: string[] = [];
    const first = model.forward(bigBatch).then((out) => {
      order.push('forward');
      return out;
    });
    expect(model.busy).toBe(true);
    const second = model.forward(['hi']).then((out) => {
      order.push('forward hi');
      return out;
    });
    const third = model.embed(['hi']).then((out) => {
      order.push('embed');
      return out;
    });
    const dir = tmpDir('bert');
    const fourth = model.save(dir).then(() => order.push('save'));
    const out = await first;
    expect(out.hidden.length).toBe(8 * 256 * 128);
    const [hi, emb] = await Promise.all([second, third, fourth]);
    expect(order).toEqual(['forward', 'forward hi', 'embed', 'save']);
    expect(model.busy).toBe(false);
    // The queued calls computed what they compute alone.
    expect(hi.hidden).toEqual((await model.forward(['hi'])).hidden);
    expect(emb).toEqual(await model.embed(['hi']));
    expect(fs.existsSync(path.join(dir, 'model.safetensors'))).toBe(true);
  });

  it('dispose while calls are queued lets them finish, then frees the model', async () => {
    const model = Bert.create(bigConfig, { tokenizer, device: 'cpu', seed: 1 });
    const a = model.forward(bigBatch);
    const b = model.embed(['hi']);
    model.dispose();
    await expect(a).resolves.toBeDefined();
    await expect(b).resolves.toBeDefined();
    expect((await rejection(model.forward(['hi']))).code).toBe('ERR_DISPOSED');
  });

  it('dispose is idempotent; use after dispose rejects with ERR_DISPOSED', async () => {
    const model = await Bert.load(path.join(FIXTURES, 'bert-a-cls'), { device: 'cpu' });
    const kept = await model.forward(['hello']);
    model.dispose();
    model.dispose();
    model[Symbol.dispose]();
    expect(model.disposed).toBe(true);
    for (const p of [
      model.forward(['hi']),
      model.forwardIds({ ids: Int32Array.of(101, 102), offsets: Int32Array.of(0, 2) }),
      model.predict(['hi']),
      model.embed(['hi']),
      model.save(tmpDir('bert')),
    ]) {
      const err = await rejection(p);
      expect(err).toBeInstanceOf(DisposedError);
      expect(err.code).toBe('ERR_DISPOSED');
      expect(err.message).toMatch(/^Expected a live model for \w+ but received a disposed model$/);
    }
    // Results handed out before dispose own their memory.
    expect(kept.hidden.every((v) => Number.isFinite(v))).toBe(true);
  });

  it('dispose during a forward lets it finish, then frees the model', async () => {
    const model = Bert.create(bigConfig, { tokenizer, device: 'cpu', seed: 2 });
    const running = model.forward(bigBatch);
    model.dispose();
    const out = await running;
    expect(out.hidden.length).toBe(8 * 256 * 128);
    expect(out.hidden.every((v) => Number.isFinite(v))).toBe(true);
    expect((await rejection(model.forward(['hi']))).code).toBe('ERR_DISPOSED');
  });
});

describe('Bert and the garbage collector', () => {
  it('a model dropped by JS during a forward still settles, then is collected', async () => {
    const tokenizer = Tokenizer.fromVocab(path.join(FIXTURES, 'bert-a-cls', 'vocab.txt'));
    const config = {
      vocabSize: tokenizer.vocabSize,
      hiddenSize: 64,
      numLayers: 2,
      numHeads: 2,
      intermediateSize: 128,
      maxPositions: 128,
      typeVocabSize: 2,
    };
    const texts = Array.from({ length: 8 }, () => 'a b c d e f g h i j k l m n o p q r s t u v w x y z'.repeat(4));
    // Each model owns a worker thread (and a CPU pool): the finalizer must join them.
    const threads = (): number => (fs.existsSync('/proc/self/task') ? fs.readdirSync('/proc/self/task').length : 0);
    const pending = Array.from({ length: 3 }, (_, i) => Bert.create(config, { tokenizer, seed: i }).forward(texts));
    const during = threads();
    const gc = gcFunction();
    gc();
    const outs = await Promise.all(pending);
    for (const out of outs) expect(out.hidden.every((v) => Number.isFinite(v))).toBe(true);
    const collected = await collectUntil(() => threads() <= during - 3);
    if (during > 0) expect(collected).toBe(true);
  });
});

describe('Bert input validation', () => {
  let model: Bert;
  beforeAll(async () => {
    model = await Bert.load(path.join(FIXTURES, 'bert-a-cls'), { device: 'cpu', maxSeqLen: 16 });
  });
  afterAll(() => model.dispose());

  it('rejects empty and malformed inputs with ERR_INPUT and one message shape', async () => {
    const cases: [unknown, string][] = [
      [[], 'Expected a non-empty array of strings or [string, string] pairs for inputs but received Array(0)'],
      ['text', "Expected a non-empty array of strings or [string, string] pairs for inputs but received string 'text'"],
      [['ok', 5], 'Expected a string or a [string, string] pair for inputs[1] but received number 5'],
      [[['a', 2]], 'Expected a string or a [string, string] pair for inputs[0] but received Array(2)'],
      [[null], 'Expected a string or a [string, string] pair for inputs[0] but received null'],
    ];
    for (const [input, message] of cases) {
      for (const p of [
        model.forward(input as string[]),
        model.predict(input as string[]),
        model.embed(input as string[]),
      ]) {
        const err = await rejection(p);
        expect(err).toBeInstanceOf(InputError);
        expect(err.code).toBe('ERR_INPUT');
        expect(err.message).toBe(message);
      }
    }
    const err = await rejection(model.embed(['x'], { pooling: 'max' as 'mean' }));
    expect(err.message).toBe("Expected 'cls' or 'mean' for options.pooling but received string 'max'");
  });

  it('cuts long texts to maxSeqLen by default; a 10^6-character text works', async () => {
    const long = 'hello world '.repeat(1000);
    const out = await model.forward([long, 'short']);
    expect((out.offsets[1] ?? 0) - (out.offsets[0] ?? 0)).toBe(16);
    const huge = `${'x'.repeat(999_995)} tail`;
    expect(huge.length).toBeGreaterThanOrEqual(1e6);
    const words = Array.from({ length: 200_000 }, (_, i) => `w${String(i % 97)}`).join(' ');
    const [p1, p2] = await model.predict([huge, words]);
    expect(p1?.scores.length).toBe(5);
    expect(p2?.scores.length).toBe(5);
  });

  it('truncation: false refuses a text longer than maxSeqLen with ERR_INPUT', async () => {
    using strict = await Bert.load(path.join(FIXTURES, 'bert-a-cls'), {
      device: 'cpu',
      maxSeqLen: 8,
      truncation: false,
    });
    await expect(strict.forward(['a b c'])).resolves.toBeDefined();
    const err = await rejection(strict.forward(['fine', 'one two three four five six seven eight']));
    expect(err).toBeInstanceOf(InputError);
    expect(err.message).toMatch(
      /^Expected at most 8 tokens \(maxSeqLen\) for inputs\[1\] but received string '.*' of \d+ tokens \(truncation is off\)$/,
    );
  });

  it('checks load options', async () => {
    const dir = path.join(FIXTURES, 'bert-a-cls');
    const cases: [object, string][] = [
      [{ maxSeqLen: 65 }, "Expected an integer in [3, 64] (the model's max_position_embeddings) for options.maxSeqLen"],
      [{ maxSeqLen: 2.5 }, 'Expected an integer >= 3 for options.maxSeqLen but received number 2.5'],
      [{ truncation: 'yes' }, "Expected a boolean for options.truncation but received string 'yes'"],
      [{ device: 'tpu' }, "Expected one of 'auto', 'cpu', 'cuda' for device but received string 'tpu'"],
      [{ threads: -1 }, 'Expected an integer in [0, 1024] for options.threads but received number -1'],
      [{ inlineMaxMs: -1 }, 'Expected a finite number >= 0 for options.inlineMaxMs but received number -1'],
      [{ inlineMaxMs: NaN }, 'Expected a finite number >= 0 for options.inlineMaxMs but received number NaN'],
      [{ inlineMaxMs: '1' }, "Expected a finite number >= 0 for options.inlineMaxMs but received string '1'"],
    ];
    for (const [options, message] of cases) {
      const err = await rejection(Bert.load(dir, options));
      expect(err).toBeInstanceOf(InputError);
      expect(err.message.startsWith(message)).toBe(true);
    }
    expect((await rejection(Bert.load(42 as unknown as string))).message).toBe(
      'Expected a directory path for dir but received number 42',
    );
  });

  it('forwardIds checks the packed arrays', async () => {
    const ok = { ids: Int32Array.of(101, 7, 102), offsets: Int32Array.of(0, 3) };
    await expect(model.forwardIds(ok)).resolves.toBeDefined();
    const bad: [object, new (m: string) => Error, RegExp][] = [
      [{ ...ok, ids: [101, 102] }, InputError, /^Expected an Int32Array for batch.ids but received Array\(2\)/],
      [{ ...ok, offsets: Float32Array.of(0, 3) }, InputError, /^Expected an Int32Array for batch.offsets/],
      [{ ...ok, offsets: Int32Array.of(0) }, InputError, /at least 2 elements for offsets/],
      [{ ...ok, offsets: Int32Array.of(0, 2) }, ShapeError, /offsets\[B\] = 2 but the batch has T = 3 rows/],
      [{ ...ok, offsets: Int32Array.of(0, 5) }, ShapeError, /offsets\[B\] = 5 but the batch has T = 3 rows/],
      [{ ...ok, offsets: Int32Array.of(0, 3, 1) }, InputError, /offsets: decreasing at 1/],
      [{ ...ok, ids: Int32Array.of(101, 600, 102) }, InputError, /ids\[1\] = 600 is outside the vocabulary/],
      [{ ...ok, typeIds: Int32Array.of(0, 0) }, ShapeError, /typeIds/],
      [{ ...ok, typeIds: Int32Array.of(0, 2, 0) }, InputError, /type_ids\[1\] = 2/],
      [
        { ids: new Int32Array(70).fill(5), offsets: Int32Array.of(0, 70) },
        InputError,
        /70 tokens, more than max_position_embeddings 64/,
      ],
    ];
    for (const [batch, cls, message] of bad) {
      const err = await rejection(model.forwardIds(batch as never));
      expect(err).toBeInstanceOf(cls);
      expect(err.message).toMatch(message);
    }
  });
});

describe('Bert.load failures', () => {
  it("device: 'cuda' without a usable device is DeviceUnavailableError with the reason", async () => {
    if (cudaAvailable) return; // a machine with a GPU loads it; covered by the GPU checks
    const err = await rejection(Bert.load(path.join(FIXTURES, 'bert-a-cls'), { device: 'cuda' }));
    expect(err).toBeInstanceOf(DeviceUnavailableError);
    expect(err.code).toBe('ERR_DEVICE_UNAVAILABLE');
    const reason = err instanceof DeviceUnavailableError ? err.reason : '';
    expect(reason.length).toBeGreaterThan(0);
    expect(err.message).toContain(reason);
  });

  it('precision is checked: fp32, bf16 and int8 load, anything else is ERR_INPUT', async () => {
    const dir = path.join(FIXTURES, 'bert-a-cls');
    const bad = await rejection(Bert.load(dir, { device: 'cpu', precision: 'fp16' as never }));
    expect(bad).toBeInstanceOf(InputError);
    expect(bad.code).toBe('ERR_INPUT');
    expect(bad.message).toMatch(/Expected one of 'fp32', 'bf16', 'int8' for options.precision/);
    using exact = await Bert.load(dir, { device: 'cpu', precision: 'fp32' });
    using bf16 = await Bert.load(dir, { device: 'cpu', precision: 'bf16' });
    expect(exact.device).toBe('cpu');
    expect(bf16.device).toBe('cpu');
  });

  function copyFixture(): string {
    const dir = tmpDir('bert');
    for (const f of ['config.json', 'model.safetensors', 'vocab.txt']) {
      fs.copyFileSync(path.join(FIXTURES, 'bert-a-cls', f), path.join(dir, f));
    }
    return dir;
  }

  it('a missing or corrupt model directory is ERR_CHECKPOINT with a clear message', async () => {
    const missing = path.join(tmpDir('bert'), 'nope');
    const cases: [string, RegExp][] = [[missing, /for dir but received '.*nope', which does not exist/]];

    const file = path.join(tmpDir('bert'), 'file');
    fs.writeFileSync(file, 'x');
    cases.push([file, /which is not a directory/]);

    const noConfig = copyFixture();
    fs.rmSync(path.join(noConfig, 'config.json'));
    cases.push([noConfig, /Expected a model directory with config.json for dir .* \(no config.json\)/]);

    const noWeights = copyFixture();
    fs.rmSync(path.join(noWeights, 'model.safetensors'));
    cases.push([noWeights, /\(no model.safetensors\)/]);

    const noVocab = copyFixture();
    fs.rmSync(path.join(noVocab, 'vocab.txt'));
    cases.push([noVocab, /tokenizer.json or vocab.txt/]);

    const badJson = copyFixture();
    fs.writeFileSync(path.join(badJson, 'config.json'), '{"hidden_size": 96,');
    cases.push([badJson, /config.json/]);

    const truncated = copyFixture();
    const weights = fs.readFileSync(path.join(truncated, 'model.safetensors'));
    fs.writeFileSync(path.join(truncated, 'model.safetensors'), weights.subarray(0, weights.length >> 1));
    cases.push([truncated, /model.safetensors/]);

    const garbage = copyFixture();
    fs.writeFileSync(path.join(garbage, 'model.safetensors'), Buffer.from('not a safetensors file at all'));
    cases.push([garbage, /model.safetensors/]);

    const wrongShape = copyFixture();
    const cfg = JSON.parse(fs.readFileSync(path.join(wrongShape, 'config.json'), 'utf8')) as Record<string, unknown>;
    cfg.intermediate_size = 100;
    fs.writeFileSync(path.join(wrongShape, 'config.json'), JSON.stringify(cfg));
    cases.push([wrongShape, /intermediate.dense.weight.*expected shape/]);

    for (const [dir, message] of cases) {
      const err = await rejection(Bert.load(dir, { device: 'cpu' }));
      expect(err).toBeInstanceOf(CheckpointError);
      expect(err.code).toBe('ERR_CHECKPOINT');
      expect(err.message).toMatch(message);
    }
  });
});
