// ChatModel: one encoder, intent + emotion + slot heads trained jointly and run in one forward.
import * as fs from 'node:fs';
import * as path from 'node:path';

import { Bert } from '../lib';
import { ChatModel, chatLabels, decodeSlots, wordTags } from '../lib/chat/chat-model';
import type { ChatExample } from '../lib/chat/chat-model';
import { TurnEncoder, wordSpans } from '../lib/chat/encode';
import { SMALL, tokenizer, toy as toyTurns } from './chat-toy';
import { rejection, tmpDir } from './helpers';

const tiny = { ...SMALL, hiddenSize: 32, intermediateSize: 64 };
// One phrasing per intent, the cities the vocabulary knows, "now" for anger.
const toy = (n: number, seed: number): ChatExample[] =>
  toyTurns(n, seed, { phrasings: 1, emotions: true, cities: ['london', 'york'] });

describe('turn encoding', () => {
  test('words keep their character spans; the context is cut from the left', () => {
    expect([...wordSpans('Hi, Ann-Marie!')].map((w) => 'Hi, Ann-Marie!'.slice(w.start, w.end))).toEqual([
      'Hi',
      ',',
      'Ann',
      '-',
      'Marie',
      '!',
    ]);
    const enc = new TurnEncoder(tokenizer, 16, 64);
    const e = enc.encode('go to london', ['one two three four five six seven eight nine ten', 'and then']);
    expect(e.ids.length).toBe(16);
    expect(e.truncated).toBe(false);
    // segment B is the turn, whole, after the newest context
    const b0 = e.typeIds.indexOf(1);
    expect(Array.from(e.ids.subarray(b0, 15))).toEqual(
      Array.from(tokenizer.encode('go to london', undefined, { addSpecialTokens: false }).ids),
    );
    expect(tokenizer.idToToken(e.ids[b0 - 2] as number)).toBe('then');
    expect(e.words.map((w) => 'go to london'.slice(w.start, w.end))).toEqual(['go', 'to', 'london']);
    expect(Array.from(e.firstPiece)).toEqual([b0, b0 + 1, b0 + 2]);
  });

  test('a huge turn is cut to the model and said so', () => {
    const enc = new TurnEncoder(tokenizer, 32, 64);
    const e = enc.encode('go '.repeat(400_000));
    expect(e.ids.length).toBe(32);
    expect(e.truncated).toBe(true);
    expect(e.words.length).toBe(30);
  });

  test('BIO tags from spans and back', () => {
    const text = 'fly to new york now';
    const words = [...wordSpans(text)];
    const tags = wordTags(words, [{ name: 'city', start: 7, end: 15 }]);
    expect(tags).toEqual(['O', 'O', 'B-city', 'I-city', 'O']);
    const slots = decodeSlots(text, words, tags, [1, 1, 0.8, 0.6, 1]);
    expect(slots).toEqual([{ name: 'city', value: 'new york', start: 7, end: 15, score: expect.closeTo(0.7, 6) }]);
    // an I- without its B- starts a slot, as seqeval reads it
    expect(decodeSlots(text, words, ['O', 'I-city', 'O', 'O', 'O'], [1, 1, 1, 1, 1])[0]?.value).toBe('to');
  });
});

describe('ChatModel', () => {
  jest.setTimeout(120_000);

  test('learns intent, emotion and slots jointly; one forward per turn; save and load', async () => {
    const train = toy(96, 0);
    const test = toy(24, 1);
    const labels = chatLabels(train);
    expect(labels).toEqual({ intents: ['music', 'support', 'travel'], emotions: ['anger'], slots: ['city'] });
    // Wide enough to leave the first plateau quickly (at hidden 32 the [CLS] heads stall for a
    // few hundred steps while the slot head learns).
    const small = SMALL;
    const chat = await ChatModel.create(Bert.create(small, { tokenizer, device: 'cpu', seed: 1 }), labels, { seed: 2 });
    try {
      expect(chat.slotTags).toEqual(['O', 'B-city', 'I-city']);
      const before = await chat.evaluate(test);
      const progress: number[] = [];
      const r = await chat.fineTune(train, {
        epochs: 30,
        batchSize: 16,
        learningRate: 3e-3,
        dropout: 0,
        evalSet: test,
        onProgress: (p) => progress.push(p.loss),
      });
      expect(r.steps).toBe(180);
      expect(progress).toHaveLength(180);
      expect(r.headLoss.intent).toBeGreaterThan(0);
      expect(r.headLoss.slots).toBeGreaterThan(0);
      expect(r.loss).toBeLessThan((progress[0] as number) / 2);
      const m = r.evalMetrics;
      expect(m?.intent?.accuracy).toBeGreaterThan(0.9);
      expect(m?.slots?.f1).toBeGreaterThan(0.9);
      expect(m?.emotions?.microF1).toBeGreaterThan(0.9);
      expect(m?.intent?.accuracy ?? 0).toBeGreaterThan(before.intent?.accuracy ?? 1);

      const text = 'i want to go to boston with my family now';
      const u = await chat.understand(text);
      expect(u.intent?.label).toBe('travel');
      expect(u.intents.map((i) => i.label).sort()).toEqual(['music', 'support', 'travel']);
      expect(u.emotions.map((e) => e.label)).toEqual(['anger']);
      expect(u.slots).toEqual([{ name: 'city', value: 'boston', start: 16, end: 22, score: expect.any(Number) }]);
      expect(text.slice(u.slots[0]?.start, u.slots[0]?.end)).toBe('boston');
      expect(u.outOfScope).toBe(false);
      expect(u.truncated).toBe(false);

      // the raw probabilities behind it
      const [sc] = await chat.scores([{ text }]);
      expect(sc?.intentProbs.reduce((x, y) => x + y, 0)).toBeCloseTo(1, 5);
      expect(sc?.words).toHaveLength(10);
      expect(sc?.wordTagProbs).toHaveLength(10 * 3);
      expect(sc?.wordTagProbs[5 * 3 + 1]).toBeCloseTo(u.slots[0]?.score ?? NaN, 5); // "boston" is word 5, B-city

      // one forward answers several turns as each alone
      const many = await chat.understandMany([{ text }, { text: 'play some music from london with my family' }]);
      expect(many[0]?.intent?.score).toBeCloseTo(u.intent?.score ?? NaN, 5);
      expect(many[1]?.intent?.label).toBe('music');

      chat.outOfScopeThreshold = 0.999999;
      expect((await chat.understand(text)).outOfScope).toBe(true);
      chat.outOfScopeThreshold = 0.2;

      const dir = tmpDir('chat');
      await chat.save(dir);
      const cfg = JSON.parse(fs.readFileSync(path.join(dir, 'config.json'), 'utf8')) as Record<string, unknown>;
      expect(cfg.num_slot_labels).toBe(3);
      expect(cfg.id2label).toEqual({ 0: 'intent:music', 1: 'intent:support', 2: 'intent:travel', 3: 'emotion:anger' });
      // Distillation: a student (here of the same size, other weights) learns from the teacher's
      // outputs on unlabelled texts.
      const student = await ChatModel.create(Bert.create(small, { tokenizer, device: 'cpu', seed: 5 }), labels);
      try {
        const texts = toy(96, 2).map((e) => ({ text: e.text }));
        const d = await student.distill(chat, texts, {
          epochs: 30,
          batchSize: 16,
          learningRate: 3e-3,
          dropout: 0,
          temperature: 2,
        });
        expect(d.headLoss.intent).toBeGreaterThan(0); // soft targets: the loss is the cross-entropy with the teacher
        const sm = await student.evaluate(test);
        expect(sm.slots?.f1).toBeGreaterThan(0.9);
        expect(sm.emotions?.microF1).toBeGreaterThan(0.9);
        expect(sm.intent?.accuracy).toBeGreaterThan(0.9);
        expect(
          (await rejection(student.distill(chat, [{ text: 'x', intent: 'music' }], { temperature: 0 }))).code,
        ).toBe('ERR_INPUT');
      } finally {
        student.dispose();
      }

      using again = await ChatModel.load(dir);
      const u2 = await again.understand(text);
      expect(u2.intent?.score).toBeCloseTo(u.intent?.score ?? NaN, 6);
      expect(u2.slots).toEqual(u.slots);
      expect(again.outOfScopeThreshold).toBe(0.2);
    } finally {
      chat.dispose();
    }
  });

  test('LoRA: adapters trained with the encoder frozen, saved in peft format, several per base, merged', async () => {
    const small = SMALL;
    const train = toy(96, 0);
    const test = toy(24, 1);
    const chat = await ChatModel.create(Bert.create(small, { tokenizer, device: 'cpu', seed: 1 }), chatLabels(train), {
      seed: 2,
    });
    try {
      const base = tmpDir('lora-base');
      await chat.save(base);
      const text = 'play some music from paris with my family';
      const plain = await chat.understand(text);
      await chat.enableLora({ rank: 4, alpha: 8, seed: 3 });
      expect(chat.adapters).toEqual({ names: ['default'], active: 'default' });
      expect((await chat.understand(text)).intent?.score).toBeCloseTo(plain.intent?.score ?? NaN, 5); // B = 0
      const r = await chat.fineTune(train, { lora: true, epochs: 30, batchSize: 16, learningRate: 1e-2, dropout: 0 });
      expect(r.loss).toBeLessThan(r.history[0]?.loss ?? 0);
      const tuned = await chat.evaluate(test);
      expect(tuned.slots?.f1).toBeGreaterThan(0.5);
      const withAdapter = await chat.understand(text);

      const adapterDir = tmpDir('lora-adapter');
      await chat.saveAdapter(adapterDir);
      const cfg = JSON.parse(fs.readFileSync(path.join(adapterDir, 'adapter_config.json'), 'utf8')) as Record<
        string,
        unknown
      >;
      expect(cfg).toEqual(
        expect.objectContaining({ peft_type: 'LORA', r: 4, lora_alpha: 8, target_modules: ['query', 'value'] }),
      );
      expect(cfg.modules_to_save).toEqual(['classifier', 'slot_classifier']);

      // Without the adapter: the base weights and heads, bit for bit (the encoder stayed frozen).
      await chat.useAdapter(null);
      const again = tmpDir('lora-again');
      await chat.save(again);
      expect(fs.readFileSync(path.join(again, 'model.safetensors'))).toEqual(
        fs.readFileSync(path.join(base, 'model.safetensors')),
      );
      expect((await chat.understand(text)).intent?.score).toBeCloseTo(plain.intent?.score ?? NaN, 5);

      // Several adapters on one base, chosen per call.
      await chat.loadAdapter(adapterDir, 'music');
      await chat.enableLora({ rank: 2, name: 'fresh' });
      const [a, b] = await Promise.all([
        chat.understand(text, { adapter: 'music' }),
        chat.understand(text, { adapter: null }),
      ]);
      expect(a.intent?.score).toBeCloseTo(withAdapter.intent?.score ?? NaN, 5);
      expect(a.slots).toEqual(withAdapter.slots);
      expect(b.intent?.score).toBeCloseTo(plain.intent?.score ?? NaN, 5);
      expect((await rejection(chat.useAdapter('nope'))).code).toBe('ERR_INPUT');

      // Merged: a plain checkpoint that answers as the adapter did.
      await chat.useAdapter('music');
      await chat.mergeAdapter();
      expect(chat.adapters).toEqual({ names: [], active: null });
      const merged = tmpDir('lora-merged');
      await chat.save(merged);
      using reloaded = await ChatModel.load(merged);
      expect((await reloaded.understand(text)).intent?.score).toBeCloseTo(withAdapter.intent?.score ?? NaN, 4);

      fs.writeFileSync(
        path.join(adapterDir, 'adapter_config.json'),
        JSON.stringify({ ...cfg, target_modules: ['key'] }),
      );
      expect((await rejection(chat.loadAdapter(adapterDir))).code).toBe('ERR_CHECKPOINT');
    } finally {
      chat.dispose();
    }
  });

  test('heads are optional; examples label any subset', async () => {
    const chat = await ChatModel.create(Bert.create(tiny, { tokenizer, device: 'cpu', seed: 1 }), {
      intents: ['a', 'b'],
    });
    try {
      const r = await chat.fineTune(
        [{ text: 'the cat', intent: 'a' }, { text: 'a dog', intent: 'b' }, { text: 'no label here' }],
        { epochs: 1, batchSize: 3 },
      );
      expect(r.headLoss.emotion).toBe(0);
      expect(r.headLoss.slots).toBe(0);
      const u = await chat.understand('the cat');
      expect(u.emotions).toEqual([]);
      expect(u.slots).toEqual([]);
    } finally {
      chat.dispose();
    }
  });

  test('bad input: typed errors, nothing trained', async () => {
    const chat = await ChatModel.create(Bert.create(tiny, { tokenizer, device: 'cpu', seed: 1 }), {
      intents: ['a', 'b'],
      slots: ['city'],
    });
    try {
      for (const text of ['', '   \n\t']) {
        const err = await rejection(chat.understand(text));
        expect(err.code).toBe('ERR_INPUT');
        expect(err.message).toMatch(/non-empty turn/);
      }
      expect((await rejection(chat.fineTune([{ text: 'x', intent: 'zzz' }]))).message).toMatch(/intents.*'zzz'/);
      expect((await rejection(chat.fineTune([{ text: 'xy', slots: [{ name: 'city', start: 1, end: 9 }] }]))).code).toBe(
        'ERR_INPUT',
      );
      expect((await rejection(chat.understand('hi', { context: [3 as unknown as string] }))).code).toBe('ERR_INPUT');
      const huge = await chat.understand('go to london '.repeat(100_000));
      expect(huge.truncated).toBe(true);
      expect((await rejection(ChatModel.create(Bert.create(tiny, { tokenizer, seed: 1 }), {}))).code).toBe('ERR_INPUT');
      expect((await rejection(ChatModel.load(tmpDir('nochat')))).code).toBe('ERR_CHECKPOINT');
    } finally {
      chat.dispose();
    }
  });
});
