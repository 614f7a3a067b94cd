/**
 * How a turn goes into the joint model: the conversation's last turns as segment A (cut from the
 * left, token by token, so the newest context stays) and the turn as segment B, word by word so
 * that each word's first piece carries its slot tag and maps back to character offsets.
 *
 *   [CLS] turn_{k-m} [SEP] ... turn_{k-1} [SEP] w1 w2 ... wn [SEP]      (typeIds 0 ... 0 1 ... 1)
 *   [CLS] w1 w2 ... wn [SEP]                                          (no context, or none fits)
 *
 * Words are runs of letters, marks and digits, or single other non-space characters: BERT's
 * basic tokenizer splits the same places (whitespace and punctuation), so tokenizing word by
 * word gives the pieces the whole text would get.
 */
import { InputError } from '../errors';
import type { Tokenizer } from '../tokenizer';

/** One word of a turn: its character span in the turn's text. */
export interface WordSpan {
  start: number;
  end: number;
}

/** A turn laid out for the model. */
export interface EncodedTurn {
  ids: Int32Array;
  typeIds: Int32Array;
  /** The words of the turn that fit, in order. */
  words: WordSpan[];
  /** Position in `ids` of each kept word's first piece. */
  firstPiece: Int32Array;
  /**
   * The turn itself lost words to the length limit. (Older context is dropped by design, the
   * newest kept: that is not reported.)
   */
  truncated: boolean;
}

const WORD = /[\p{L}\p{M}\p{N}]+|[^\s\p{L}\p{M}\p{N}]/gu;

/** Word spans of a text, lazily: a 10⁶-character turn is read only as far as the model needs. */
export function* wordSpans(text: string): Generator<WordSpan> {
  WORD.lastIndex = 0;
  for (const m of text.matchAll(WORD)) yield { start: m.index, end: m.index + m[0].length };
}

/** Encodes turns for one tokenizer and length limit; caches the pieces of short words. */
export class TurnEncoder {
  readonly #tok: Tokenizer;
  readonly #maxSeqLen: number;
  readonly #contextMaxTokens: number;
  readonly #cls: number;
  readonly #sep: number;
  readonly #unk: number;
  readonly #pieces = new Map<string, Int32Array>();

  constructor(tokenizer: Tokenizer, maxSeqLen: number, contextMaxTokens: number) {
    this.#tok = tokenizer;
    this.#maxSeqLen = maxSeqLen;
    this.#contextMaxTokens = contextMaxTokens;
    const empty = tokenizer.encode('');
    if (empty.ids.length !== 2) {
      throw new InputError(
        `Expected a tokenizer whose template is [CLS] text [SEP] but an empty text encodes to ${String(empty.ids.length)} tokens`,
      );
    }
    this.#cls = empty.ids[0] as number;
    this.#sep = empty.ids[1] as number;
    const unk = tokenizer.tokenToId('[UNK]');
    if (unk === undefined) throw new InputError('Expected a tokenizer with an [UNK] token for the dialogue layer');
    this.#unk = unk;
  }

  #piecesOf(text: string): Int32Array {
    let p = this.#pieces.get(text);
    if (p === undefined) {
      p = this.#tok.encode(text, undefined, { addSpecialTokens: false }).ids;
      if (text.length <= 32 && this.#pieces.size < 200_000) this.#pieces.set(text, p);
    }
    return p;
  }

  /**
   * The turn's words and their pieces, as many as fit in `room` tokens (a word cut in the middle
   * is dropped whole, so every kept word has its first piece).
   */
  #turnPieces(text: string, room: number): { words: WordSpan[]; pieces: Int32Array[]; n: number; cut: boolean } {
    const words: WordSpan[] = [];
    const pieces: Int32Array[] = [];
    let n = 0;
    let cut = false;
    for (const w of wordSpans(text)) {
      let p = this.#piecesOf(text.slice(w.start, w.end));
      if (p.length === 0) p = Int32Array.of(this.#unk);
      if (n + p.length > room) {
        cut = true;
        break;
      }
      words.push(w);
      pieces.push(p);
      n += p.length;
    }
    return { words, pieces, n, cut };
  }

  /** Lays out `text` with the newest of `context` (oldest first) in front of it. */
  encode(text: string, context: readonly string[] = []): EncodedTurn {
    const turn = this.#turnPieces(text, this.#maxSeqLen - 2);
    // Segment A: turns from the newest back, as many tokens as fit beside the turn.
    const roomA = Math.min(this.#contextMaxTokens, this.#maxSeqLen - 3 - turn.n);
    const turns: Int32Array[] = [];
    let nA = 0;
    for (let t = context.length - 1; t >= 0 && nA < roomA; t--) {
      // A turn yields at least one token per 32 characters kept: a huge earlier turn is read
      // only as far back as could fit.
      const ctx = context[t] as string;
      const p = this.#tok.encode(ctx.length > roomA * 32 ? ctx.slice(-roomA * 32) : ctx, undefined, {
        addSpecialTokens: false,
      }).ids;
      if (p.length === 0) continue;
      nA += p.length + (turns.length > 0 ? 1 : 0);
      turns.push(p);
    }
    let cutA = Math.max(0, nA - roomA);
    let oldest = turns.length - 1;
    if (oldest >= 0 && cutA >= (turns[oldest] as Int32Array).length) {
      // the whole oldest turn goes, and the [SEP] that joined it to the next
      nA -= (turns[oldest] as Int32Array).length + 1;
      cutA = 0;
      oldest--;
    }
    const lenA = oldest >= 0 ? nA - cutA + 1 : 0; // + the [SEP] closing segment A
    const total = 1 + lenA + turn.n + 1;
    const ids = new Int32Array(total);
    const typeIds = new Int32Array(total);
    let at = 0;
    ids[at++] = this.#cls;
    for (let t = oldest; t >= 0; t--) {
      const p = (turns[t] as Int32Array).subarray(t === oldest ? cutA : 0);
      ids.set(p, at);
      at += p.length;
      ids[at++] = this.#sep;
    }
    if (lenA > 0) typeIds.fill(1, at);
    const firstPiece = new Int32Array(turn.words.length);
    turn.pieces.forEach((p, w) => {
      firstPiece[w] = at;
      ids.set(p, at);
      at += p.length;
    });
    ids[at] = this.#sep;
    return { ids, typeIds, words: turn.words, firstPiece, truncated: turn.cut };
  }
}
