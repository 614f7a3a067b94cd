// A learnable toy dialogue for the dialogue layer's tests: three intents, each with its own
// phrasings, a city (the slot) after the phrase, and "now" for an angry user. Every word is in the
// fixture vocabulary (test/fixtures/bert-a-cls/vocab.txt), whose tokenizer is exported with it.
import * as fs from 'node:fs';
import * as path from 'node:path';

import { Tokenizer } from '../lib';
import type { ChatExample } from '../lib/chat/chat-model';

export const VOCAB = path.join(__dirname, 'fixtures', 'bert-a-cls', 'vocab.txt');
export const tokenizer = Tokenizer.fromVocab(fs.readFileSync(VOCAB, 'utf8'));

/** A small BERT (2 layers) over the fixture vocabulary; `hiddenSize` 64 leaves the first plateau quickly. */
export const SMALL = {
  vocabSize: tokenizer.vocabSize,
  hiddenSize: 64,
  numLayers: 2,
  numHeads: 2,
  intermediateSize: 128,
  maxPositions: 64,
  typeVocabSize: 2,
};

export const PHRASES: Record<string, string[]> = {
  travel: ['i want to go to', 'take me to', 'a trip to'],
  music: ['play some music from', 'play songs of', 'music from'],
  support: ['please help me in', 'i need help in', 'help me with my account in'],
};
/** London and York are in the fixture vocabulary; Paris and Boston are [UNK] to it. */
export const CITIES = ['london', 'york', 'paris', 'boston'];

export interface ToyOptions {
  /** Phrasings per intent used (1: the first only); default all three. */
  phrasings?: number;
  /** Append " with my family", and " now" with the emotion anger on every fourth turn; default false. */
  emotions?: boolean;
  /** The cities; default {@link CITIES}. */
  cities?: readonly string[];
}

/** `n` turns, deterministic in `seed`, each with its intent and its city as a slot span. */
export function toy(n: number, seed: number, options: ToyOptions = {}): ChatExample[] {
  const intents = Object.keys(PHRASES);
  const out: ChatExample[] = [];
  for (let i = 0; i < n; i++) {
    const intent = intents[(i + seed) % intents.length] as string;
    const phrases = (PHRASES[intent] as string[]).slice(0, options.phrasings ?? 3);
    const head = `${phrases[Math.floor(i / 3 + seed) % phrases.length] as string} `;
    const cities = options.cities ?? CITIES;
    const city = cities[(i * 7 + seed) % cities.length] as string;
    const angry = options.emotions === true && (i + seed) % 4 === 0;
    const tail = options.emotions === true ? ` with my family${angry ? ' now' : ''}` : '';
    out.push({
      text: `${head}${city}${tail}`,
      intent,
      ...(options.emotions === true ? { emotions: angry ? ['anger'] : [] } : {}),
      slots: [{ name: 'city', start: head.length, end: head.length + city.length }],
    });
  }
  return out;
}
