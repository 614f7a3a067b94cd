// What the service says back (ResponsePolicy): templates with slots, clarifying questions, the
// empathetic opening that keeps the answer, knowledge-base answers, fallback and every hand-off
// reason, responses.json validation; and the out-of-scope threshold calibration on synthetic
// scores with a known answer.
import * as fs from 'node:fs';
import * as path from 'node:path';

import { InputError } from '../lib';
import { ResponsePolicy } from '../lib/chat/answers';
import type { ResponsesConfig } from '../lib/chat/answers';
import { calibrateThreshold, evaluateThreshold, expectedCalibrationError } from '../lib/chat/calibrate';
import { KnowledgeBase } from '../lib/chat/knowledge';
import type { EmbedFunction } from '../lib/chat/knowledge';
import type { Scored, Slot, Understanding } from '../lib/chat/types';
import { rng, tmpDir } from './helpers';

function understood(
  intent: string | null,
  score = 0.9,
  options: { emotions?: Scored[]; slots?: Partial<Slot>[]; outOfScope?: boolean } = {},
): Understanding {
  const top = intent === null ? null : { label: intent, score };
  return {
    intent: top,
    intents: top === null ? [] : [top],
    emotions: options.emotions ?? [],
    slots: (options.slots ?? []).map((s) => ({ name: '', value: '', start: 0, end: 0, score: 0.9, ...s })),
    outOfScope: options.outOfScope ?? false,
    truncated: false,
  };
}

const angry: Scored[] = [{ label: 'anger', score: 0.8 }];

const config: ResponsesConfig = {
  intents: {
    card_arrival: {
      templates: ['Your {card_type} card is on its way.', 'Your card is on its way.'],
    },
    transfer: {
      templates: ['I have sent {amount} to {recipient}.', 'Sending {amount} to {recipient} now.'],
      requiredSlots: ['amount', 'recipient'],
      ask: { amount: 'How much would you like to send?' },
    },
    branch: ['The branch in {city} opens at nine.'],
    greeting: ['Hello! How can I help?', 'Hi there, what can I do for you?', 'Good day! How may I help?'],
    fees: 'kb',
  },
  fallback: ["Sorry, I can't help with that."],
  thresholds: { handoff: 0.2, outOfScope: 0.4, kb: 0.8, emotion: 0.5 },
  handoff: { intent: 'human_agent', keywords: ['human', 'real person'], upsetTurns: 3 },
  empathy: { prefixes: ["I'm sorry about that."] },
};

/** A knowledge base whose embeddings are bags of the question's known words. */
async function faq(): Promise<KnowledgeBase> {
  const words = ['fee', 'transfer', 'abroad', 'card', 'limit', 'atm', 'cash', 'open'];
  const embed: EmbedFunction = (texts) => {
    const out = new Float32Array(texts.length * words.length);
    texts.forEach((t, i) => {
      for (const w of t.toLowerCase().split(/\W+/)) {
        const j = words.indexOf(w);
        if (j >= 0) out[i * words.length + j] = (out[i * words.length + j] ?? 0) + 1;
      }
    });
    return Promise.resolve(out);
  };
  return KnowledgeBase.build(
    [
      { id: 'fee-abroad', question: 'fee transfer abroad', answer: 'Transfers abroad cost 1%.' },
      { id: 'atm-limit', question: 'atm cash limit', answer: 'You can take out 500 a day.' },
    ],
    { embed },
  );
}

describe('ResponsePolicy templates', () => {
  const policy = new ResponsePolicy(config);

  it('fills slot values in, preferring the template that uses them', async () => {
    const reply = await policy.respond(
      understood('card_arrival', 0.9, { slots: [{ name: 'card_type', value: 'debit ' }] }),
    );
    expect(reply).toEqual({ text: 'Your debit card is on its way.', intent: 'card_arrival', kind: 'template' });
    // Without the slot: the variant that does not need it.
    expect((await policy.respond(understood('card_arrival'))).text).toBe('Your card is on its way.');
    // A slot known from earlier turns fills in too; this turn's value wins over it.
    expect((await policy.respond(understood('card_arrival'), { slots: { card_type: 'credit' } })).text).toBe(
      'Your credit card is on its way.',
    );
    const both = await policy.respond(
      understood('card_arrival', 0.9, {
        slots: [
          { name: 'card_type', value: 'virtual', score: 0.6 },
          { name: 'card_type', value: 'metal', score: 0.95 },
        ],
      }),
      { slots: { card_type: 'credit' } },
    );
    expect(both.text).toBe('Your metal card is on its way.');
  });

  it('picks among templates deterministically in the seed, conversation and turn', async () => {
    const greet = understood('greeting');
    const texts = new Set<string>();
    for (let turn = 0; turn < 30; turn++) {
      const a = await policy.respond(greet, { turn, conversationId: 'c1' });
      const b = await policy.respond(greet, { turn, conversationId: 'c1' });
      expect(a).toEqual(b);
      texts.add(a.text);
    }
    expect(texts.size).toBe(3);
    const seeded = new ResponsePolicy({ ...config, seed: 7 });
    const bySeed = await Promise.all(
      Array.from({ length: 10 }, (_, turn) => seeded.respond(greet, { turn, conversationId: 'c1' })),
    );
    const byDefault = await Promise.all(
      Array.from({ length: 10 }, (_, turn) => policy.respond(greet, { turn, conversationId: 'c1' })),
    );
    expect(bySeed.map((r) => r.text)).not.toEqual(byDefault.map((r) => r.text));
  });

  it('asks for a missing required slot (its own question, or the default one)', async () => {
    const noAmount = await policy.respond(
      understood('transfer', 0.9, { slots: [{ name: 'recipient', value: 'Anna' }] }),
    );
    expect(noAmount).toEqual({
      text: 'How much would you like to send?',
      intent: 'transfer',
      kind: 'clarify',
      slot: 'amount',
    });
    const noRecipient = await policy.respond(
      understood('transfer', 0.9, { slots: [{ name: 'amount', value: '20 EUR' }] }),
    );
    expect(noRecipient).toMatchObject({ text: 'Could you tell me the recipient?', kind: 'clarify', slot: 'recipient' });
    const all = await policy.respond(
      understood('transfer', 0.9, {
        slots: [
          { name: 'amount', value: '20 EUR' },
          { name: 'recipient', value: 'Anna' },
        ],
      }),
    );
    expect(all.kind).toBe('template');
    expect(['I have sent 20 EUR to Anna.', 'Sending 20 EUR to Anna now.']).toContain(all.text);
    // No template usable without a slot: ask for it, even if not listed as required.
    expect(await policy.respond(understood('branch'))).toMatchObject({
      kind: 'clarify',
      slot: 'city',
      text: 'Could you tell me the city?',
    });
  });

  it('replies are plain JSON', async () => {
    const reply = await policy.respond(understood('card_arrival', 0.9, { emotions: angry }));
    expect(JSON.parse(JSON.stringify(reply))).toEqual(reply);
  });
});

describe('ResponsePolicy emotion wording', () => {
  const policy = new ResponsePolicy(config);

  it('puts an empathetic opening before the answer for an upset user, never instead of it', async () => {
    const calm = await policy.respond(
      understood('card_arrival', 0.9, { slots: [{ name: 'card_type', value: 'debit' }] }),
    );
    const upset = await policy.respond(
      understood('card_arrival', 0.9, { slots: [{ name: 'card_type', value: 'debit' }], emotions: angry }),
    );
    expect(upset.kind).toBe('template');
    expect(upset.empathy).toBe(true);
    expect(upset.text).toBe(`I'm sorry about that. ${calm.text}`);
    expect(upset.text.endsWith(calm.text)).toBe(true);
    // For every kind of reply the upset text ends with the calm one.
    const cases: [Understanding, Understanding][] = [
      [understood('transfer'), understood('transfer', 0.9, { emotions: angry })],
      [understood('nonsense', 0.3), understood('nonsense', 0.3, { emotions: angry })],
      [understood('greeting'), understood('greeting', 0.9, { emotions: angry })],
    ];
    for (const [a, b] of cases) {
      const [ra, rb] = [await policy.respond(a, { turn: 4 }), await policy.respond(b, { turn: 4 })];
      expect(rb.kind).toBe(ra.kind);
      expect(rb.text).toBe(`I'm sorry about that. ${ra.text}`);
    }
  });

  it('needs a negative emotion at or above the threshold', async () => {
    const mild = await policy.respond(understood('card_arrival', 0.9, { emotions: [{ label: 'anger', score: 0.49 }] }));
    expect(mild.empathy).toBeUndefined();
    const happy = await policy.respond(understood('card_arrival', 0.9, { emotions: [{ label: 'joy', score: 0.99 }] }));
    expect(happy.text).toBe('Your card is on its way.');
    const custom = new ResponsePolicy({ ...config, empathy: { emotions: ['confusion'], prefixes: ['Let me help.'] } });
    const confused = await custom.respond(
      understood('card_arrival', 0.9, { emotions: [{ label: 'confusion', score: 0.7 }] }),
    );
    expect(confused.text).toBe('Let me help. Your card is on its way.');
    expect((await custom.respond(understood('card_arrival', 0.9, { emotions: angry }))).empathy).toBeUndefined();
  });
});

describe('ResponsePolicy knowledge base, fallback and hand-off', () => {
  it("answers 'kb' intents, unknown intents and out-of-scope turns from the top hit above the threshold", async () => {
    const policy = new ResponsePolicy(config, { knowledge: await faq() });
    const kb = await policy.respond(understood('fees'), { text: 'What is the fee for a transfer abroad?' });
    expect(kb).toEqual({
      text: 'Transfers abroad cost 1%.',
      intent: 'fees',
      kind: 'kb',
      source: { id: 'fee-abroad', score: expect.closeTo(1, 5) as number },
    });
    const unknown = await policy.respond(understood('limits'), { text: 'atm cash limit?' });
    expect(unknown).toMatchObject({ kind: 'kb', intent: 'limits', source: { id: 'atm-limit' } });
    const oos = await policy.respond(understood('card_arrival', 0.3), { text: 'cash limit at the atm' });
    expect(oos).toMatchObject({ kind: 'kb', source: { id: 'atm-limit' } });
    const flagged = await policy.respond(understood('card_arrival', 0.9, { outOfScope: true }), {
      text: 'atm cash limit',
    });
    expect(flagged.kind).toBe('kb');
    // Below the similarity threshold (0.8): fallback.
    const weak = await policy.respond(understood('fees'), { text: 'card fee' });
    expect(weak).toEqual({ text: "Sorry, I can't help with that.", intent: 'fees', kind: 'fallback' });
    // No text to search: fallback.
    expect((await policy.respond(understood('fees'))).kind).toBe('fallback');
  });

  it('falls back when out of scope and nothing is known', async () => {
    const policy = new ResponsePolicy(config);
    for (const u of [understood('card_arrival', 0.35), understood('weather'), understood(null), understood('fees')]) {
      expect(await policy.respond(u, { text: 'will it rain tomorrow?' })).toEqual({
        text: "Sorry, I can't help with that.",
        intent: u.intent?.label ?? null,
        kind: 'fallback',
      });
    }
  });

  it("hands off 'asked' for the hand-off intent or a keyword in the text", async () => {
    const policy = new ResponsePolicy(config);
    expect(await policy.respond(understood('human_agent', 0.95))).toEqual({
      text: 'Of course. Let me connect you with a member of our team.',
      intent: 'human_agent',
      kind: 'handoff',
      handoff: { reason: 'asked' },
    });
    for (const text of ['Can I talk to a HUMAN please', 'I want a real   person!']) {
      expect((await policy.respond(understood('card_arrival'), { text })).handoff).toEqual({ reason: 'asked' });
    }
    // Whole words only.
    expect((await policy.respond(understood('card_arrival'), { text: 'humanitarian aid' })).kind).toBe('template');
  });

  it("hands off 'upset' after N upset user turns in a row, not before", async () => {
    const policy = new ResponsePolicy(config);
    const upset = understood('card_arrival', 0.9, { emotions: angry });
    const calm = understood('card_arrival');
    const second = await policy.respond(upset, { history: [calm, upset] });
    expect(second.kind).toBe('template');
    expect(second.empathy).toBe(true);
    const third = await policy.respond(upset, { history: [calm, upset, upset] });
    expect(third).toEqual({
      text: "I'm sorry this has been frustrating. Let me connect you with a member of our team.",
      intent: 'card_arrival',
      kind: 'handoff',
      handoff: { reason: 'upset' },
    });
    // A calm turn in between breaks the streak; a calm current turn never hands off.
    expect((await policy.respond(upset, { history: [upset, calm, upset] })).kind).toBe('template');
    expect((await policy.respond(calm, { history: [upset, upset, upset] })).kind).toBe('template');
    const never = new ResponsePolicy({ ...config, handoff: { upsetTurns: 0 } });
    expect((await never.respond(upset, { history: [upset, upset, upset] })).kind).toBe('template');
  });

  it("hands off 'unsure' below the intent threshold", async () => {
    const policy = new ResponsePolicy(config);
    const reply = await policy.respond(understood('card_arrival', 0.15));
    expect(reply).toMatchObject({ kind: 'handoff', handoff: { reason: 'unsure' }, intent: 'card_arrival' });
    expect(reply.text).toBe("I'm not sure I understood. Let me connect you with a member of our team.");
    const upset = await policy.respond(understood('card_arrival', 0.15, { emotions: angry }));
    expect(upset.text).toBe(`I'm sorry about that. ${reply.text}`);
    const texts = new ResponsePolicy({
      ...config,
      handoff: { texts: { unsure: 'One moment, a colleague will help.' } },
    });
    expect((await texts.respond(understood('card_arrival', 0.1))).text).toBe('One moment, a colleague will help.');
    // The default threshold 0 never hands off for being unsure.
    expect((await new ResponsePolicy({ intents: {} }).respond(understood('x', 0.01))).kind).toBe('fallback');
  });
});

describe('responses.json', () => {
  it('loads a policy from a file', async () => {
    const file = path.join(tmpDir('answers'), 'responses.json');
    fs.writeFileSync(file, JSON.stringify(config));
    const policy = ResponsePolicy.fromFile(file);
    expect(policy.hasTemplates('card_arrival')).toBe(true);
    expect(policy.hasTemplates('fees')).toBe(false);
    expect((await policy.respond(understood('branch', 0.9, { slots: [{ name: 'city', value: 'Oslo' }] }))).text).toBe(
      'The branch in Oslo opens at nine.',
    );
  });

  it('names the file and the field of a bad configuration', () => {
    const dir = tmpDir('answers');
    const file = path.join(dir, 'responses.json');
    const load = (value: unknown): (() => ResponsePolicy) => {
      fs.writeFileSync(file, typeof value === 'string' ? value : JSON.stringify(value));
      return () => ResponsePolicy.fromFile(file);
    };
    expect(load('{"intents": ')).toThrow(`${file} is not valid JSON`);
    expect(() => ResponsePolicy.fromFile(path.join(dir, 'missing.json'))).toThrow(InputError);
    expect(load({})).toThrow(`${file}: Expected an object of intents for config.intents but received undefined`);
    expect(load({ intents: { a: { templates: [] } } })).toThrow(
      'Expected a non-empty array of strings for config.intents.a.templates but received Array(0)',
    );
    expect(load({ intents: { a: ['ok', 3] } })).toThrow('for config.intents.a[1] but received number 3');
    expect(load({ intents: { a: 'kbb' } })).toThrow("an array of templates or 'kb' for config.intents.a");
    expect(load({ intents: { a: { templates: ['x'], required: ['y'] } } })).toThrow(
      'Unknown field config.intents.a.required (expected one of templates, requiredSlots, ask)',
    );
    expect(load({ intents: {}, thresholds: { kb: '0.5' } })).toThrow(
      "Expected a number in [-1, 1] for config.thresholds.kb but received string '0.5'",
    );
    expect(load({ intents: {}, thresholds: { handoff: 1.5 } })).toThrow('config.thresholds.handoff');
    expect(load({ intents: {}, treshold: {} })).toThrow('Unknown field config.treshold');
    expect(load({ intents: {}, handoff: { upsetTurns: 1.5 } })).toThrow('config.handoff.upsetTurns');
    expect(load({ intents: {}, fallback: [] })).toThrow('config.fallback');
    expect(load({ intents: {}, empathy: { emotions: 'anger' } })).toThrow('config.empathy.emotions');
    expect(load({ intents: { t: { templates: ['x'], ask: { a: '' } } } })).toThrow('config.intents.t.ask.a');
  });

  it('rejects a malformed understanding or context, naming the field', async () => {
    const policy = new ResponsePolicy(config);
    await expect(
      policy.respond({ ...understood('a'), emotions: undefined } as unknown as Understanding),
    ).rejects.toThrow('Expected an array for understanding.emotions but received undefined');
    await expect(policy.respond(understood('a'), { turn: -1 })).rejects.toThrow('context.turn');
    await expect(policy.respond(understood('a'), { history: [{}] as Understanding[] })).rejects.toThrow(
      'context.history[0]',
    );
    await expect(
      policy.respond(understood('a'), { slots: { city: 3 } as unknown as Record<string, string> }),
    ).rejects.toThrow('Expected a string for context.slots.city but received number 3');
  });
});

describe('calibrateThreshold', () => {
  it('separates disjoint in-scope and out-of-scope scores at the gap (F1 1)', () => {
    const next = rng(3);
    const inScope = Array.from({ length: 200 }, () => ({ score: next(0.6, 1), correct: next(0, 1) < 0.8 }));
    const outOfScope = Array.from({ length: 100 }, () => next(0, 0.4));
    const report = calibrateThreshold({ inScope, outOfScope });
    const lowestIn = Math.min(...inScope.map((e) => e.score));
    const highestOut = Math.max(...outOfScope);
    expect(report.threshold).toBeCloseTo((lowestIn + highestOut) / 2, 12);
    expect(report).toMatchObject({ method: 'f1', oosF1: 1, oosRecall: 1, oosPrecision: 1, coverage: 1 });
    expect(report.counts).toEqual({ inScope: 200, correct: inScope.filter((e) => e.correct).length, outOfScope: 100 });
  });

  // OOS 0.1 0.2 0.4 0.6 and in-scope 0.3 0.5 0.7 0.9: flagging <= 0.6 gives P 4/6, R 1, F1 0.8 (the
  // best cut); the lowest cut with recall >= 0.75 flags <= 0.4.
  const inScope = [0.3, 0.5, 0.7, 0.9].map((score) => ({ score, correct: score !== 0.9 }));
  const outOfScope = [0.1, 0.2, 0.4, 0.6];

  it('maximizes the F1 of out-of-scope detection on overlapping scores', () => {
    const report = calibrateThreshold({ inScope, outOfScope });
    expect(report.threshold).toBeCloseTo(0.65, 12);
    expect(report.oosF1).toBeCloseTo(0.8, 12);
    expect(report.oosPrecision).toBeCloseTo(4 / 6, 12);
    expect(report.oosRecall).toBe(1);
    expect(report.coverage).toBe(0.5);
    expect(report.accuracyKept).toBe(0.5); // 0.7 right, 0.9 wrong
    expect(report.inScopeAccuracy).toBe(0.25);
    expect(report.correctKept).toBeCloseTo(1 / 3, 12);
  });

  it('keeps the most in-scope turns at a target out-of-scope recall', () => {
    const report = calibrateThreshold({ inScope, outOfScope, objective: 'accuracy-at-recall', targetRecall: 0.75 });
    expect(report.method).toBe('accuracy-at-recall');
    expect(report.threshold).toBeCloseTo(0.45, 12);
    expect(report.oosRecall).toBe(0.75);
    expect(report.coverage).toBe(0.75);
    expect(report.inScopeAccuracy).toBe(0.5);
    const all = calibrateThreshold({ inScope, outOfScope, objective: 'accuracy-at-recall', targetRecall: 1 });
    expect(all.threshold).toBeCloseTo(0.65, 12);
  });

  it('without out-of-scope examples, keeps the target fraction of correct in-scope predictions', () => {
    // Correct: scores 0.01..1.00; wrong ones below, which do not count.
    const examples = [
      ...Array.from({ length: 100 }, (_, i) => ({ score: (i + 1) / 100, correct: true })),
      ...Array.from({ length: 20 }, (_, i) => ({ score: i / 200, correct: false })),
    ];
    const report = calibrateThreshold({ inScope: examples });
    expect(report.method).toBe('keep-fraction');
    expect(report.threshold).toBe(0.06);
    expect(report.correctKept).toBe(0.95);
    expect(report.oosF1).toBeUndefined();
    expect(calibrateThreshold({ inScope: examples, keepFraction: 0.9 }).threshold).toBe(0.11);
    expect(calibrateThreshold({ inScope: examples, keepFraction: 1 }).threshold).toBe(0.01);
    expect(calibrateThreshold({ inScope: examples, keepFraction: 0.001 }).threshold).toBe(1);
  });

  it('expected calibration error: 0 when confidence matches accuracy, the gap otherwise', () => {
    const n = 100;
    const at = (score: number, rightOf10: number): { score: number; correct: boolean }[] =>
      Array.from({ length: n }, (_, i) => ({ score, correct: i % 10 < rightOf10 }));
    const ece = (xs: { score: number; correct: boolean }[]): number =>
      expectedCalibrationError(
        xs.map((x) => x.score),
        xs.map((x) => x.correct),
      );
    expect(ece(at(0.8, 8))).toBeCloseTo(0, 12);
    expect(ece(at(0.9, 5))).toBeCloseTo(0.4, 12);
    // Two bins, each half the examples: |0.95 - 1| and |0.55 - 0.3|.
    expect(ece([...at(0.95, 10), ...at(0.55, 3)])).toBeCloseTo((0.05 + 0.25) / 2, 12);
    expect(expectedCalibrationError([1, 0], [true, false])).toBe(0);
    expect(calibrateThreshold({ inScope: at(0.9, 5) }).ece).toBeCloseTo(0.4, 12);
    expect(() => expectedCalibrationError([1.2], [true])).toThrow('Expected a number in [0, 1] for scores[0]');
    expect(() => expectedCalibrationError([0.5], [true, false])).toThrow('Expected an array of 1 booleans for correct');
  });

  it('evaluates a given threshold and validates its inputs', () => {
    expect(evaluateThreshold(0.5, inScope, outOfScope)).toEqual({
      threshold: 0.5,
      coverage: 0.75,
      accuracyKept: 2 / 3,
      inScopeAccuracy: 0.5,
      correctKept: 2 / 3,
      oosRecall: 0.75,
      oosPrecision: 0.75,
      oosF1: 0.75,
    });
    expect(() => calibrateThreshold({ inScope: [] })).toThrow(
      'Expected a non-empty array of { score, correct } for options.inScope but received Array(0)',
    );
    expect(() => calibrateThreshold({ inScope: [{ score: NaN, correct: true }] })).toThrow('options.inScope[0].score');
    expect(() => calibrateThreshold({ inScope, outOfScope: [0.1, Infinity] })).toThrow('options.outOfScope[1]');
    expect(() => calibrateThreshold({ inScope, objective: 'auc' as 'f1' })).toThrow('options.objective');
    expect(() => calibrateThreshold({ inScope, keepFraction: 0 })).toThrow('options.keepFraction');
    expect(() => calibrateThreshold({ inScope, outOfScope, targetRecall: 1.1 })).toThrow('options.targetRecall');
    expect(() => calibrateThreshold({ inScope, bins: 0 })).toThrow('options.bins');
  });
});
