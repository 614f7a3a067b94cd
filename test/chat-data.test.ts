// bench/chat-data.js: the dataset adapters of the dialogue benchmarks, on hand-written snippets
// of each dataset's format (the datasets themselves are not read here).
import * as fs from 'node:fs';
import { createRequire } from 'node:module';
import * as path from 'node:path';

import type { ChatExample, SlotSpan } from '../lib/chat/chat-model';
import { tmpDir } from './helpers';

interface SnipsSplit {
  examples: (ChatExample & { intent: string; slots: SlotSpan[] })[];
  tags: string[][];
  repaired: number;
}
interface WordCheck {
  lines: number;
  same: number;
  split: number;
  other: number;
  splitExamples: string[];
  otherExamples: string[];
}
interface SgdDialogue {
  id: string;
  examples: (ChatExample & { context: string[]; intent: string; slots: SlotSpan[] })[];
}
interface ChatData {
  hash32(s: string): number;
  subsample<T>(items: readonly T[], n: number | undefined, seed?: number): T[];
  bioToSpans(words: string[], tags: string[]): { text: string; slots: SlotSpan[]; repaired: number };
  readSnipsSplit(dir: string): SnipsSplit;
  checkWordTags(examples: readonly ChatExample[], tags: readonly string[][]): WordCheck;
  readSgd(source: string | unknown[]): { dialogues: SgdDialogue[]; stats: Record<string, number> };
  splitByDialogue(
    dialogues: readonly SgdDialogue[],
    options?: { fraction?: number; seed?: number },
  ): { train: ChatExample[]; test: ChatExample[]; trainDialogues: number; testDialogues: number };
  withoutContext(examples: readonly ChatExample[]): ChatExample[];
  readGoEmotions(dir: string): { labels: string[]; train: ChatExample[]; dev: ChatExample[]; test: ChatExample[] };
  readBanking77(file: string): ChatExample[];
}

const data = createRequire(__filename)(path.join(__dirname, '..', 'bench', 'chat-data.js')) as ChatData;

const slice = (text: string, s: SlotSpan): string => text.slice(s.start, s.end);

describe('SNIPS', () => {
  test('BIO tags become character spans over the words joined by single spaces', () => {
    const r = data.bioToSpans(
      ['play', 'the', 'dark', 'side', 'on', 'spotify'],
      ['O', 'O', 'B-album', 'I-album', 'O', 'B-service'],
    );
    expect(r.text).toBe('play the dark side on spotify');
    expect(r.slots.map((s) => [s.name, slice(r.text, s)])).toEqual([
      ['album', 'dark side'],
      ['service', 'spotify'],
    ]);
    expect(r.repaired).toBe(0);
    // an I- that continues nothing starts a slot (seqeval), and is counted
    const odd = data.bioToSpans(['a', 'b', 'c'], ['I-x', 'B-y', 'I-x']);
    expect(odd.slots.map((s) => [s.name, slice(odd.text, s)])).toEqual([
      ['x', 'a'],
      ['y', 'b'],
      ['x', 'c'],
    ]);
    expect(odd.repaired).toBe(2);
    expect(() => data.bioToSpans(['a'], ['O', 'O'])).toThrow(/1 words but 2 tags/);
    expect(() => data.bioToSpans(['a'], ['X-y'])).toThrow(/not a BIO tag/);
  });

  test('a split read from seq.in, seq.out and label (trailing spaces, a last newline)', () => {
    const dir = tmpDir('snips');
    fs.writeFileSync(
      path.join(dir, 'seq.in'),
      'add sabrina salerno to the grime instrumentals playlist \nbook a table on 1/20/2023 for 5 people\n',
    );
    fs.writeFileSync(
      path.join(dir, 'seq.out'),
      'O B-artist I-artist O O B-playlist I-playlist O \nO O B-restaurant_type O B-timeRange O B-party_size_number O\n',
    );
    fs.writeFileSync(path.join(dir, 'label'), 'AddToPlaylist\nBookRestaurant\n');
    const r = data.readSnipsSplit(dir);
    expect(r.examples).toHaveLength(2);
    const [a, b] = r.examples;
    expect(a?.text).toBe('add sabrina salerno to the grime instrumentals playlist');
    expect(a?.intent).toBe('AddToPlaylist');
    expect(a?.slots.map((s) => [s.name, slice(a.text, s)])).toEqual([
      ['artist', 'sabrina salerno'],
      ['playlist', 'grime instrumentals'],
    ]);
    expect(b?.slots.map((s) => [s.name, slice(b.text, s)])).toEqual([
      ['restaurant_type', 'table'],
      ['timeRange', '1/20/2023'],
      ['party_size_number', '5'],
    ]);
    expect(r.tags[1]).toHaveLength(8);

    // elmo's words give back the file's tags, except where they split a file word further
    const check = data.checkWordTags(r.examples, r.tags);
    expect(check).toMatchObject({ lines: 2, same: 1, split: 1, other: 0 });
    expect(check.splitExamples).toEqual(['book a table on 1/20/2023 for 5 people']);
    // tags that no slot reproduces are 'other'
    const wrong = r.tags.map((t) => t.map(() => 'O'));
    expect(data.checkWordTags(r.examples, wrong)).toMatchObject({ same: 0, split: 0, other: 2 });

    fs.writeFileSync(path.join(dir, 'seq.out'), 'O B-artist\nO\n');
    expect(() => data.readSnipsSplit(dir)).toThrow(/line 1 has 8 words in seq.in but 2 tags/);
    fs.writeFileSync(path.join(dir, 'label'), 'AddToPlaylist\n');
    expect(() => data.readSnipsSplit(dir)).toThrow(/2, 2, 1 lines/);
  });
});

// Two dialogues in the SGD format: a multi-frame turn, a "NONE" turn, slot spans.
const SGD = [
  {
    dialogue_id: '1_00000',
    services: ['Restaurants_1', 'Buses_1'],
    turns: [
      {
        speaker: 'USER',
        utterance: 'Find me a bus to Fresno.',
        frames: [
          {
            service: 'Buses_1',
            actions: [{ act: 'INFORM_INTENT', slot: 'intent', values: ['FindBus'] }],
            slots: [{ slot: 'to_location', start: 17, exclusive_end: 23 }],
            state: { active_intent: 'FindBus', requested_slots: [], slot_values: {} },
          },
        ],
      },
      { speaker: 'SYSTEM', utterance: 'When do you leave?', frames: [{ service: 'Buses_1', actions: [], slots: [] }] },
      {
        speaker: 'USER',
        utterance: 'Thanks. Now a table at Sipan in Saratoga.',
        frames: [
          {
            service: 'Buses_1',
            actions: [{ act: 'THANK_YOU', slot: '', values: [] }],
            slots: [],
            state: { active_intent: 'FindBus', requested_slots: [], slot_values: {} },
          },
          {
            service: 'Restaurants_1',
            actions: [{ act: 'INFORM_INTENT', slot: 'intent', values: ['ReserveRestaurant'] }],
            slots: [
              { slot: 'city', start: 32, exclusive_end: 40 },
              { slot: 'restaurant_name', start: 23, exclusive_end: 28 },
            ],
            state: { active_intent: 'ReserveRestaurant', requested_slots: [], slot_values: {} },
          },
        ],
      },
      { speaker: 'SYSTEM', utterance: 'Booked.', frames: [] },
      {
        speaker: 'USER',
        utterance: 'Bye.',
        frames: [
          {
            service: 'Restaurants_1',
            actions: [{ act: 'GOODBYE', slot: '', values: [] }],
            slots: [],
            state: { active_intent: 'NONE', requested_slots: [], slot_values: {} },
          },
        ],
      },
    ],
  },
  {
    dialogue_id: '1_00001',
    services: ['Buses_1'],
    turns: [
      {
        speaker: 'USER',
        utterance: 'A bus to LA please',
        frames: [
          {
            service: 'Buses_1',
            actions: [{ act: 'INFORM_INTENT', slot: 'intent', values: ['FindBus'] }],
            slots: [{ slot: 'to_location', start: 9, exclusive_end: 11 }],
            state: { active_intent: 'FindBus', requested_slots: [], slot_values: {} },
          },
        ],
      },
    ],
  },
];

describe('SGD', () => {
  test('user turns with the acting frame, unprefixed slot spans and the earlier turns as context', () => {
    const dir = tmpDir('sgd');
    fs.writeFileSync(path.join(dir, 'dialogues_001.json'), JSON.stringify([SGD[0]]));
    fs.writeFileSync(path.join(dir, 'dialogues_002.json'), JSON.stringify([SGD[1]]));
    fs.writeFileSync(path.join(dir, 'schema.json'), '[]');
    const { dialogues, stats } = data.readSgd(dir);
    expect(stats).toMatchObject({ dialogues: 2, userTurns: 4, kept: 3, skippedNone: 1, multiFrame: 1, withSlots: 3 });
    expect(dialogues.map((d) => d.id)).toEqual(['1_00000', '1_00001']);
    const [first, second] = dialogues[0]?.examples ?? [];
    expect(first).toEqual({
      text: 'Find me a bus to Fresno.',
      context: [],
      intent: 'FindBus',
      slots: [{ name: 'to_location', start: 17, end: 23 }],
    });
    // the frame announcing the new intent, not the one being thanked for; slots sorted by start
    expect(second?.intent).toBe('ReserveRestaurant');
    expect(second?.context).toEqual(['Find me a bus to Fresno.', 'When do you leave?']);
    expect(second?.slots.map((s) => [s.name, slice(second.text, s)])).toEqual([
      ['restaurant_name', 'Sipan'],
      ['city', 'Saratoga'],
    ]);
    expect(data.readSgd(SGD).stats).toEqual(stats);
    expect(data.withoutContext([second as ChatExample])).toEqual([
      { text: second?.text, intent: 'ReserveRestaurant', slots: second?.slots },
    ]);
  });

  test('a slot outside its utterance is an error naming the dialogue', () => {
    const bad = structuredClone(SGD[1]) as unknown as { turns: { frames: { slots: { exclusive_end: number }[] }[] }[] };
    const slot = bad.turns[0]?.frames[0]?.slots[0];
    if (slot) slot.exclusive_end = 99;
    expect(() => data.readSgd([bad])).toThrow(/1_00001: slot to_location \[9, 99\)/);
  });

  test('the split is by dialogue, seeded, and keeps each dialogue whole', () => {
    const dialogues = Array.from({ length: 400 }, (_, i) => ({
      id: `${String(1 + (i % 3))}_${String(i).padStart(5, '0')}`,
      examples: [
        { text: `turn a of ${String(i)}`, context: [], intent: 'x', slots: [] },
        { text: `turn b of ${String(i)}`, context: ['hi'], intent: 'y', slots: [] },
      ],
    }));
    const s = data.splitByDialogue(dialogues, { fraction: 0.2, seed: 1 });
    expect(s.trainDialogues + s.testDialogues).toBe(400);
    expect(s.testDialogues).toBeGreaterThan(55);
    expect(s.testDialogues).toBeLessThan(105);
    expect(s.test).toHaveLength(2 * s.testDialogues);
    const side = new Map<string, string>();
    for (const [name, part] of [
      ['train', s.train],
      ['test', s.test],
    ] as const) {
      for (const ex of part) {
        const id = ex.text.replace(/^turn [ab] of /, '');
        expect(side.get(id) ?? name).toBe(name);
        side.set(id, name);
      }
    }
    expect(data.splitByDialogue(dialogues, { fraction: 0.2, seed: 1 })).toEqual(s);
    expect(data.splitByDialogue(dialogues, { fraction: 0.2, seed: 2 }).test).not.toEqual(s.test);
  });
});

describe('GoEmotions and BANKING77', () => {
  test('GoEmotions TSV: label ids to names, multi-label, labels.txt without a last newline', () => {
    const dir = tmpDir('goemotions');
    fs.writeFileSync(path.join(dir, 'labels.txt'), 'anger\ndisgust\nfear\njoy\nneutral\nsadness\nsurprise');
    fs.writeFileSync(
      path.join(dir, 'train.tsv'),
      'WHY THE FUCK IS BAYLESS ISOING\t0\teezlygj\nYes, "this" is great, thanks!\t3,6\tabc\n',
    );
    fs.writeFileSync(path.join(dir, 'dev.tsv'), 'ok\t4\tx1\n');
    fs.writeFileSync(path.join(dir, 'test.tsv'), 'oh no\t2,5,2\tx2\n');
    const g = data.readGoEmotions(dir);
    expect(g.labels).toHaveLength(7);
    expect(g.train).toEqual([
      { text: 'WHY THE FUCK IS BAYLESS ISOING', emotions: ['anger'] },
      { text: 'Yes, "this" is great, thanks!', emotions: ['joy', 'surprise'] },
    ]);
    expect(g.dev).toEqual([{ text: 'ok', emotions: ['neutral'] }]);
    expect(g.test).toEqual([{ text: 'oh no', emotions: ['fear', 'sadness'] }]);
    fs.writeFileSync(path.join(dir, 'dev.tsv'), 'ok\t9\tx1\n');
    expect(() => data.readGoEmotions(dir)).toThrow(/dev.tsv: line 1: no label 9/);
  });

  test('BANKING77 CSV with quoted commas', () => {
    const dir = tmpDir('banking77');
    const file = path.join(dir, 'train.csv');
    fs.writeFileSync(
      file,
      'text,category\nI am still waiting on my card?,card_arrival\n"Hi, my top-up failed",top_up_failed\n',
    );
    expect(data.readBanking77(file)).toEqual([
      { text: 'I am still waiting on my card?', intent: 'card_arrival' },
      { text: 'Hi, my top-up failed', intent: 'top_up_failed' },
    ]);
  });

  test('subsample: seeded, in the original order, all items when n is not smaller', () => {
    const items = Array.from({ length: 100 }, (_, i) => i);
    const a = data.subsample(items, 10, 1);
    expect(a).toHaveLength(10);
    expect([...a].sort((x, y) => x - y)).toEqual(a);
    expect(data.subsample(items, 10, 1)).toEqual(a);
    expect(data.subsample(items, 10, 2)).not.toEqual(a);
    expect(data.subsample(items, 200)).toEqual(items);
    expect(data.subsample(items, undefined)).toEqual(items);
    expect(data.hash32('1_00000')).not.toBe(data.hash32('1_00001'));
  });
});
