/**
 * Character classes of the BERT normalizer and pre-tokenizer, as one flag byte per code point.
 *
 * Built once, lazily, from the generated ranges in unicode-tables.ts (1.1 MB, shared by every
 * tokenizer). Lookup is a single typed-array read, which keeps the non-ASCII path cheap.
 */
import {
  CJK,
  CLEAN_REMOVED,
  CLEAN_TO_SPACE,
  LOWERCASE_MULTI,
  LOWERCASE_RUNS,
  NFD_SENSITIVE,
  NONSPACING_MARK,
  PUNCTUATION,
  WHITESPACE,
} from './unicode-tables';

export const F_REMOVED = 1; // dropped by clean_text
export const F_TO_SPACE = 2; // replaced by ' ' by clean_text
export const F_WHITESPACE = 4; // word separator, dropped
export const F_PUNCT = 8; // word separator, kept as its own word
export const F_MARK = 16; // dropped by strip_accents after NFD
export const F_CJK = 32; // surrounded by spaces by handle_chinese_chars
export const F_LOWER = 64; // has a lowercase mapping
export const F_NFD = 128; // NFD may change or reorder it

const MAX_CODE_POINT = 0x10ffff;

let flags: Uint8Array | undefined;
let lowerSingle: Map<number, number> | undefined;
let lowerMulti: Map<number, string> | undefined;

function mark(table: Uint8Array, ranges: readonly number[], bit: number): void {
  for (let r = 0; r + 1 < ranges.length; r += 2) {
    const first = ranges[r] as number;
    const last = ranges[r + 1] as number;
    for (let cp = first; cp <= last; cp++) table[cp] = (table[cp] as number) | bit;
  }
}

/** Flag byte per code point (index 0..0x10FFFF). Lone surrogates are flagged removed. */
export function charFlags(): Uint8Array {
  if (flags !== undefined) return flags;
  const t = new Uint8Array(MAX_CODE_POINT + 1);
  mark(t, CLEAN_REMOVED, F_REMOVED);
  mark(t, [0xd800, 0xdfff], F_REMOVED); // lone surrogates (category Cs)
  mark(t, CLEAN_TO_SPACE, F_TO_SPACE);
  mark(t, WHITESPACE, F_WHITESPACE);
  mark(t, PUNCTUATION, F_PUNCT);
  mark(t, NONSPACING_MARK, F_MARK);
  mark(t, CJK, F_CJK);
  mark(t, NFD_SENSITIVE, F_NFD);
  const single = new Map<number, number>();
  for (let r = 0; r + 3 < LOWERCASE_RUNS.length; r += 4) {
    const first = LOWERCASE_RUNS[r] as number;
    const last = LOWERCASE_RUNS[r + 1] as number;
    const delta = LOWERCASE_RUNS[r + 2] as number;
    const stride = LOWERCASE_RUNS[r + 3] as number;
    for (let cp = first; cp <= last; cp += stride) {
      single.set(cp, cp + delta);
      t[cp] = (t[cp] as number) | F_LOWER;
    }
  }
  const multi = new Map<number, string>();
  for (const [cp, lower] of LOWERCASE_MULTI) {
    multi.set(cp, lower);
    t[cp] = (t[cp] as number) | F_LOWER;
  }
  lowerSingle = single;
  lowerMulti = multi;
  flags = t;
  return t;
}

/**
 * The lowercase of one code point (per code point, as the Rust normalizer does: no final-sigma
 * context): a code point, or a string when it lowercases to several.
 */
export function lowercaseOf(cp: number): number | string {
  const single = (lowerSingle as Map<number, number>).get(cp);
  if (single !== undefined) return single;
  return (lowerMulti as Map<number, string>).get(cp) ?? cp;
}
