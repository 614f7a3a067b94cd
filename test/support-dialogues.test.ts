// lib/demo/support-dialogues.ts: the demo's generated customer-service dataset. Determinism, the
// labels on each turn, the split by conversation, the example shape fineTune reads, and a
// bag-of-words baseline showing the intents are learnable but not trivial.
import { InputError } from '../lib/errors';
import {
  SUPPORT_EMOTIONS,
  SUPPORT_INTENTS,
  dialogueExamples,
  generateSupportDialogues,
  splitDialogues,
} from '../lib/demo/support-dialogues';
import type { Dialogue, DialogueExample } from '../lib/demo/support-dialogues';
import { splitByGroup, validateExamples } from '../lib/train/data';

const dialogues = generateSupportDialogues();
const { train, test: heldOut } = splitDialogues(dialogues, { testFraction: 0.2, seed: 1 });

function userTurns(ds: readonly Dialogue[]) {
  return ds.flatMap((d) => d.turns.filter((t) => t.speaker === 'user'));
}

function counts(values: readonly string[]): Map<string, number> {
  const m = new Map<string, number>();
  for (const v of values) m.set(v, (m.get(v) ?? 0) + 1);
  return m;
}

// ------------------------------------------------------------------------------------------------
// Nearest-centroid classifier over word counts: each text a bag of lowercased words and "!"/"?",
// L2-normalized; each class the mean of its training vectors; a test text goes to the class of
// highest cosine similarity.

type Bag = Map<string, number>;

function bag(text: string): Bag {
  const v: Bag = new Map();
  for (const w of text.toLowerCase().match(/[a-z0-9']+|[!?]/g) ?? []) v.set(w, (v.get(w) ?? 0) + 1);
  let norm = 0;
  for (const c of v.values()) norm += c * c;
  norm = Math.sqrt(norm) || 1;
  for (const [w, c] of v) v.set(w, c / norm);
  return v;
}

function nearestCentroidAccuracy(trainSet: readonly DialogueExample[], testSet: readonly DialogueExample[]): number {
  const sums = new Map<string, Bag>();
  for (const ex of trainSet) {
    const c = sums.get(ex.label) ?? new Map<string, number>();
    for (const [w, x] of bag(ex.text)) c.set(w, (c.get(w) ?? 0) + x);
    sums.set(ex.label, c);
  }
  const centroids = [...sums].map(([label, c]) => {
    let norm = 0;
    for (const x of c.values()) norm += x * x;
    return { label, c, norm: Math.sqrt(norm) || 1 };
  });
  let correct = 0;
  for (const ex of testSet) {
    const v = bag(ex.text);
    let best = '';
    let bestScore = -Infinity;
    for (const { label, c, norm } of centroids) {
      let dot = 0;
      for (const [w, x] of v) dot += x * (c.get(w) ?? 0);
      if (dot / norm > bestScore) {
        bestScore = dot / norm;
        best = label;
      }
    }
    if (best === ex.label) correct++;
  }
  return correct / testSet.length;
}

// ------------------------------------------------------------------------------------------------

describe('generateSupportDialogues', () => {
  test('is deterministic: the same seed gives the same dialogues, another seed others', () => {
    expect(generateSupportDialogues()).toEqual(dialogues);
    expect(generateSupportDialogues({ seed: 1, dialogues: 600 })).toEqual(dialogues);
    const other = generateSupportDialogues({ seed: 2 });
    expect(other).toHaveLength(dialogues.length);
    const same = other.filter((d, i) => JSON.stringify(d.turns) === JSON.stringify(dialogues[i]?.turns)).length;
    expect(same).toBe(0);
  });

  test('dialogue i does not depend on how many are generated; ids are unique and stable', () => {
    const few = generateSupportDialogues({ dialogues: 25 });
    expect(few).toEqual(dialogues.slice(0, 25));
    expect(new Set(dialogues.map((d) => d.id)).size).toBe(dialogues.length);
    expect(dialogues[0]?.id).toBe('support-1-0000');
    expect(dialogues[599]?.id).toBe('support-1-0599');
  });

  test('default size: 600 dialogues, thousands of user turns, in well under a second', () => {
    const t0 = performance.now();
    generateSupportDialogues();
    expect(performance.now() - t0).toBeLessThan(1000);
    expect(dialogues).toHaveLength(600);
    expect(userTurns(dialogues).length).toBeGreaterThan(2000);
  });

  test('2-6 user turns per dialogue, each answered by the agent', () => {
    for (const d of dialogues) {
      const users = d.turns.filter((t) => t.speaker === 'user').length;
      expect(users).toBeGreaterThanOrEqual(2);
      expect(users).toBeLessThanOrEqual(6);
      d.turns.forEach((t, i) => {
        if (t.speaker === 'user') expect(d.turns[i + 1]?.speaker).toBe('agent');
      });
    }
  });

  test('every user turn has an intent and an emotion from the lists; agent turns have neither', () => {
    expect(SUPPORT_INTENTS.length).toBeGreaterThanOrEqual(15);
    expect(SUPPORT_EMOTIONS.length).toBeGreaterThanOrEqual(5);
    const turns = dialogues.flatMap((d) => d.turns);
    const users = turns.filter((t) => t.speaker === 'user');
    const agents = turns.filter((t) => t.speaker === 'agent');
    expect(users.length + agents.length).toBe(turns.length);
    expect(
      users.filter((t) => !SUPPORT_INTENTS.includes(t.intent ?? '') || !SUPPORT_EMOTIONS.includes(t.emotion ?? '')),
    ).toEqual([]);
    expect(agents.filter((t) => 'intent' in t || 'emotion' in t)).toEqual([]);
    expect(turns.filter((t) => t.text.trim() === '')).toEqual([]);
    expect(turns.filter((t) => /[{}[\]]/.test(t.text))).toEqual([]); // every slot and alternative filled
  });

  test('labels are not degenerate: the most common intent is under 20% of turns, neutral the most common emotion', () => {
    const users = userTurns(dialogues);
    const intents = counts(users.map((t) => t.intent ?? ''));
    expect(Math.max(...intents.values()) / users.length).toBeLessThan(0.2);
    const emotions = counts(users.map((t) => t.emotion ?? ''));
    const top = [...emotions].sort((a, b) => b[1] - a[1])[0];
    expect(top?.[0]).toBe('neutral');
    expect((top?.[1] ?? 0) / users.length).toBeLessThan(0.5);
  });

  test('rejects bad options', () => {
    expect(() => generateSupportDialogues({ seed: 1.5 })).toThrow(InputError);
    expect(() => generateSupportDialogues({ dialogues: 0 })).toThrow(InputError);
    expect(() => generateSupportDialogues(null as never)).toThrow(InputError);
  });
});

describe('splitDialogues', () => {
  test('splits by conversation: no dialogue id on both sides, all dialogues kept, in order', () => {
    expect(heldOut).toHaveLength(120);
    expect(train).toHaveLength(480);
    const trainIds = new Set(train.map((d) => d.id));
    for (const d of heldOut) expect(trainIds.has(d.id)).toBe(false);
    const trainTurns = new Set(train.map((d) => JSON.stringify(d.turns)));
    for (const d of heldOut) expect(trainTurns.has(JSON.stringify(d.turns))).toBe(false);
    const kept = new Set([...train, ...heldOut].map((d) => d.id));
    expect(kept.size).toBe(dialogues.length);
    const index = new Map(dialogues.map((d, i) => [d.id, i]));
    for (const side of [train, heldOut]) {
      const at = side.map((d) => index.get(d.id) ?? -1);
      expect(at).toEqual([...at].sort((a, b) => a - b));
    }
  });

  test('is seeded, and keeps at least one dialogue on each side', () => {
    expect(splitDialogues(dialogues, { testFraction: 0.2, seed: 1 })).toEqual({ train, test: heldOut });
    expect(splitDialogues(dialogues, { testFraction: 0.2, seed: 2 }).test).not.toEqual(heldOut);
    const two = dialogues.slice(0, 2);
    expect(splitDialogues(two, { testFraction: 0.01, seed: 1 }).test).toHaveLength(1);
    expect(splitDialogues(two, { testFraction: 0.99, seed: 1 }).train).toHaveLength(1);
    expect(splitDialogues(two, { testFraction: 0, seed: 1 }).test).toHaveLength(0);
    expect(() => splitDialogues(dialogues, { testFraction: 1.5, seed: 1 })).toThrow(InputError);
  });

  test('every intent and emotion occurs in both train and test', () => {
    for (const side of [train, heldOut]) {
      const users = userTurns(side);
      expect(new Set(users.map((t) => t.intent))).toEqual(new Set(SUPPORT_INTENTS));
      expect(new Set(users.map((t) => t.emotion))).toEqual(new Set(SUPPORT_EMOTIONS));
    }
  });
});

describe('dialogueExamples', () => {
  test('one example per user turn, labelled by the field, grouped by dialogue', () => {
    const intents = dialogueExamples(dialogues, { field: 'intent' });
    const emotions = dialogueExamples(dialogues, { field: 'emotion' });
    const users = userTurns(dialogues);
    expect(intents.map((e) => e.label)).toEqual(users.map((t) => t.intent));
    expect(emotions.map((e) => e.label)).toEqual(users.map((t) => t.emotion));
    expect(intents.map((e) => e.text)).toEqual(users.map((t) => t.text));
    expect(new Set(intents.map((e) => e.group))).toEqual(new Set(dialogues.map((d) => d.id)));
  });

  test('context is the previous turns, oldest first, at most contextTurns of them', () => {
    const d = dialogues.find((x) => x.turns.length >= 8) as Dialogue;
    for (const contextTurns of [1, 2, 3, 10]) {
      const examples = dialogueExamples([d], { field: 'intent', contextTurns });
      let k = 0;
      d.turns.forEach((t, i) => {
        if (t.speaker !== 'user') return;
        const ex = examples[k++] as DialogueExample;
        expect(ex.text).toBe(t.text);
        expect(ex.context).toEqual(d.turns.slice(Math.max(0, i - contextTurns), i).map((p) => p.text));
      });
      expect(k).toBe(examples.length);
    }
    const first = dialogueExamples(dialogues, { field: 'intent' }).filter((e, i, all) => all[i - 1]?.group !== e.group);
    expect(first.some((e) => e.context?.length === 0)).toBe(true); // a dialogue the user opens
    for (const e of dialogueExamples(dialogues, { field: 'emotion', contextTurns: 0 })) {
      expect(e).not.toHaveProperty('context');
    }
  });

  test('the examples are what fineTune takes: valid sequence examples, split whole by group', () => {
    const examples = dialogueExamples(train, { field: 'intent', contextTurns: 2 });
    expect(() => {
      validateExamples(examples, 'sequence');
    }).not.toThrow();
    const split = splitByGroup(examples, { fraction: 0.1, seed: 3 });
    const evalGroups = new Set(split.eval.map((e) => e.group));
    for (const e of split.train) expect(evalGroups.has(e.group)).toBe(false);
  });

  test('rejects bad options', () => {
    expect(() => dialogueExamples(dialogues, { field: 'topic' as never })).toThrow(InputError);
    expect(() => dialogueExamples(dialogues, { field: 'intent', contextTurns: -1 })).toThrow(InputError);
  });
});

describe('bag-of-words baseline', () => {
  const score = (field: 'intent' | 'emotion'): number =>
    nearestCentroidAccuracy(
      dialogueExamples(train, { field, contextTurns: 0 }),
      dialogueExamples(heldOut, { field, contextTurns: 0 }),
    );

  test('intent: well above chance, below 100% (learnable, not trivial)', () => {
    const acc = score('intent');
    expect(acc).toBeGreaterThan(0.4);
    expect(acc).toBeLessThan(0.99);
  });

  test('emotion: above chance and above always-neutral, below 100%', () => {
    const acc = score('emotion');
    const neutral = userTurns(heldOut).filter((t) => t.emotion === 'neutral').length / userTurns(heldOut).length;
    expect(acc).toBeGreaterThan(neutral);
    expect(acc).toBeLessThan(0.99);
  });

  test('context matters for a minority of turns: follow-ups and short answers need the previous exchange', () => {
    // Topics never repeat within a dialogue, so a user turn with the intent of the previous user
    // turn is a follow-up or an answer to the agent's question ("It's #482913", "yes, please").
    const dependent = (ds: readonly Dialogue[]): boolean[] =>
      ds.flatMap((d) => {
        const intents = d.turns.filter((t) => t.speaker === 'user').map((t) => t.intent);
        return intents.map((intent, i) => i > 0 && intent === intents[i - 1]);
      });
    const share = dependent(dialogues).filter(Boolean).length / userTurns(dialogues).length;
    expect(share).toBeGreaterThan(0.1);
    expect(share).toBeLessThan(0.35);

    const trainSet = dialogueExamples(train, { field: 'intent', contextTurns: 2 });
    const isDependent = dependent(heldOut);
    const testSet = dialogueExamples(heldOut, { field: 'intent', contextTurns: 2 }).filter((_, i) => isDependent[i]);
    const fromText = nearestCentroidAccuracy(trainSet, testSet);
    const fromContext = nearestCentroidAccuracy(
      trainSet,
      testSet.map((e) => ({ ...e, text: (e.context ?? []).join(' ') })),
    );
    expect(fromText).toBeLessThan(0.3);
    expect(fromContext).toBeGreaterThan(0.5);
  });
});
