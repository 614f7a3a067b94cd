/**
 * BERT WordPiece tokenizer, id-for-id equal to Hugging Face `tokenizers` (BertNormalizer +
 * BertPreTokenizer + WordPiece + TemplateProcessing), with packed batch output.
 *
 * Pipeline per text, fused into one pass over the UTF-16 code units:
 *   added (special) tokens matched in the raw text -> clean_text -> CJK spacing -> NFD and
 *   non-spacing-mark removal -> per-code-point lowercase -> split on whitespace and punctuation
 *   -> greedy longest-match-first WordPiece over a vocabulary trie.
 * ASCII is handled by a 128-entry class table; runs of other characters take a slower path that
 * uses tabulated Unicode classes (see unicode-tables.ts). Nothing allocates per ASCII character
 * or per token; time is linear in the text length.
 */
import * as fs from 'fs';
import * as path from 'path';

import {
  F_CJK,
  F_LOWER,
  F_MARK,
  F_NFD,
  F_PUNCT,
  F_REMOVED,
  F_TO_SPACE,
  F_WHITESPACE,
  charFlags,
  lowercaseOf,
} from './char-classes';
import { CheckpointError } from '../errors';
import { TokenizerError, describe, invalid } from './errors';
import { trainWordPiece } from './train';
import type { TrainCorpus, TrainOptions } from './train';
import { VocabTrie } from './vocab-trie';
import { writeFileAtomic } from '../fs-atomic';

/** Options of {@link Tokenizer.fromVocab}. Defaults match `BertTokenizerFast` (uncased). */
export interface TokenizerOptions {
  /** Lowercase the text (default true). */
  lowercase?: boolean;
  /** Strip accents (NFD, drop non-spacing marks); `null` (default) follows `lowercase`. */
  stripAccents?: boolean | null;
  /** Put spaces around CJK ideographs so that each becomes a word (default true). */
  handleChineseChars?: boolean;
  /** Remove control characters and U+FFFD, map whitespace to a space (default true). */
  cleanText?: boolean;
  /** Words with more characters than this become the unknown token (default 100). */
  maxInputCharsPerWord?: number;
  /** Prefix of word-continuation pieces (default "##"). */
  continuingSubwordPrefix?: string;
  unkToken?: string;
  clsToken?: string;
  sepToken?: string;
  padToken?: string;
  maskToken?: string;
  /**
   * More tokens that are matched whole in the raw text and never split, like the five above
   * (Hugging Face `additional_special_tokens`). Each must be in the vocabulary.
   */
  specialTokens?: readonly string[];
}

/** The normalizer options of {@link TokenizerOptions} (Hugging Face `BertNormalizer`). */
export type NormalizerOptions = Pick<
  TokenizerOptions,
  'lowercase' | 'stripAccents' | 'handleChineseChars' | 'cleanText'
>;

/**
 * Receives one word of a pre-tokenized text: its UTF-16 code units `units[0, length)`, after
 * normalization. The array is reused: it is valid only during the call.
 */
export type WordSink = (units: Uint16Array, length: number) => void;

/** Calls `onWord` for each word of `text`, in order. See {@link Tokenizer.wordSplitter}. */
export type WordSplitter = (text: string, onWord: WordSink) => void;

/** Options of {@link Tokenizer.encode} and {@link Tokenizer.encodeBatch}. */
export interface EncodeOptions {
  /**
   * Maximum length of an encoded sequence, special tokens included. Applied when `truncation`
   * is `'longest_first'` (the default once `maxSeqLen` is given).
   */
  maxSeqLen?: number;
  /** `'longest_first'` trims the longer segment first, exactly as Hugging Face; `false` never trims. */
  truncation?: 'longest_first' | false;
  /** Add [CLS] and [SEP] per the post-processing template (default true). */
  addSpecialTokens?: boolean;
}

/** One encoded sequence. */
export interface Encoding {
  ids: Int32Array;
  /** Segment (token type) per token: 0 for [CLS] A [SEP], 1 for B [SEP]. */
  typeIds: Int32Array;
}

/** Sequences packed back to back: sequence b is rows offsets[b] .. offsets[b+1]. */
export interface BatchEncoding {
  ids: Int32Array; // (T)
  typeIds: Int32Array; // (T)
  offsets: Int32Array; // (B + 1)
}

/** A text, or a pair of texts (segments A and B). */
export type TokenizerInput = string | readonly [string, string];

/** One element of the post-processing template. */
interface TemplatePiece {
  /** 0 = segment A, 1 = segment B, -1 = special tokens. */
  segment: number;
  specialIds: readonly number[];
  typeId: number;
}

interface Template {
  single: readonly TemplatePiece[];
  pair: readonly TemplatePiece[];
}

interface NormalizerConfig {
  cleanText: boolean;
  handleChineseChars: boolean;
  stripAccents: boolean;
  lowercase: boolean;
}

interface AddedToken {
  content: string;
  id: number;
}

/** Token strings by role, for tokenizer_config.json and special_tokens_map.json. */
interface SpecialRoles {
  unk: string;
  cls: string;
  sep: string;
  pad: string;
  mask: string;
}

interface TokenizerConfig {
  vocab: ReadonlyMap<string, number>;
  normalizer: NormalizerConfig;
  unkToken: string;
  prefix: string;
  maxInputCharsPerWord: number;
  addedTokens: readonly AddedToken[];
  template: Template;
  defaultMaxSeqLen: number | undefined;
  roles: SpecialRoles;
}

/** Growable Int32 buffer; reused across calls so that steady-state encoding allocates nothing. */
class IdBuffer {
  data = new Int32Array(256);
  length = 0;

  push(v: number): void {
    if (this.length === this.data.length) this.reserve(this.length + 1);
    this.data[this.length++] = v;
  }

  reserve(n: number): void {
    if (n <= this.data.length) return;
    let cap = this.data.length * 2;
    while (cap < n) cap *= 2;
    const next = new Int32Array(cap);
    next.set(this.data.subarray(0, this.length));
    this.data = next;
  }
}

// ASCII class table values.
const A_WORD = 0;
const A_SPACE = 1;
const A_PUNCT = 2;
const A_SKIP = 3;
const A_SPECIAL = 4; // bit: an added token may start here

const DEFAULT_MAX_CHARS = 100;

export class Tokenizer {
  /** Token string to id (the model vocabulary plus added tokens). */
  private readonly vocab: ReadonlyMap<string, number>;
  private readonly idToTokenTable: readonly (string | undefined)[];
  private readonly norm: NormalizerConfig;
  private readonly trie: VocabTrie;
  /** Trie node of the continuing-subword prefix, or -1 when no continuation piece exists. */
  private readonly contNode: number;
  private readonly unkId: number;
  private readonly maxChars: number;
  private readonly template: Template;
  private readonly nAddedSingle: number;
  private readonly nAddedPair: number;
  private readonly defaultMaxSeqLen: number | undefined;
  /** What the tokenizer was built from, for {@link toTokenizerJson} and {@link save}. */
  private readonly config: TokenizerConfig;

  private readonly asciiClass = new Uint8Array(128);
  private readonly asciiUnit = new Uint16Array(128);
  /** Added tokens by first code unit, longest first. */
  private readonly addedByFirst = new Map<number, AddedToken[]>();

  // Scratch state of the tokenizing pass.
  private wordUnits = new Uint16Array(256);
  private wordLen = 0; // code units in wordUnits
  private wordChars = 0; // code points in the current word (may exceed maxChars; then not stored)
  private readonly matchEnd = new Int32Array(1);
  private stopAt = Infinity; // out.length at which tokenizeInto stops after a word
  private stopped = false;
  private readonly runCps: number[] = [];
  /** When set, words go here instead of to WordPiece (the splitter of {@link wordSplitter}). */
  private wordSink: WordSink | null = null;
  private readonly bufA = new IdBuffer();
  private readonly bufB = new IdBuffer();
  private readonly batchIds = new IdBuffer();
  private readonly batchTypes = new IdBuffer();

  private constructor(config: TokenizerConfig) {
    this.config = config;
    this.vocab = config.vocab;
    this.norm = config.normalizer;
    this.maxChars = config.maxInputCharsPerWord;
    this.template = config.template;
    this.defaultMaxSeqLen = config.defaultMaxSeqLen;
    const unk = config.vocab.get(config.unkToken);
    if (unk === undefined) {
      throw new TokenizerError(`The vocabulary has no unknown token "${config.unkToken}"`);
    }
    this.unkId = unk;

    const table: (string | undefined)[] = [];
    for (const [token, id] of config.vocab) table[id] = token;
    this.idToTokenTable = table;

    this.trie = new VocabTrie(config.vocab);
    this.contNode = config.prefix.length === 0 ? 0 : this.trie.find(config.prefix);
    this.nAddedSingle = countSpecial(config.template.single);
    this.nAddedPair = countSpecial(config.template.pair);

    const flags = charFlags();
    for (let c = 0; c < 128; c++) {
      const f = flags[c] as number;
      let k = A_WORD;
      let unit = c;
      if (this.norm.cleanText && f & F_REMOVED) k = A_SKIP;
      else if ((this.norm.cleanText && f & F_TO_SPACE) || f & F_WHITESPACE) k = A_SPACE;
      else if (f & F_PUNCT) k = A_PUNCT;
      if (this.norm.lowercase && c >= 65 && c <= 90) unit = c + 32;
      this.asciiClass[c] = k;
      this.asciiUnit[c] = unit;
    }
    for (const t of config.addedTokens) {
      if (t.content.length === 0) continue;
      const first = t.content.charCodeAt(0);
      let list = this.addedByFirst.get(first);
      if (list === undefined) this.addedByFirst.set(first, (list = []));
      list.push(t);
      if (first < 128) this.asciiClass[first] = (this.asciiClass[first] as number) | A_SPECIAL;
    }
    for (const list of this.addedByFirst.values()) list.sort((a, b) => b.content.length - a.content.length);
  }

  // ----------------------------------------------------------------------------------------------
  // Construction

  /**
   * A tokenizer from a bare WordPiece `vocab.txt` (one token per line, id = line index), with
   * the normalizer and [CLS]/[SEP] template of `BertTokenizerFast`.
   *
   * @param vocab the file's text, or a path to it (a string without a newline is a path).
   * @example
   * const tok = Tokenizer.fromVocab('models/bert/vocab.txt', { lowercase: true });
   * const { ids, typeIds } = tok.encode('Where is my card?', undefined, { maxSeqLen: 64 });
   */
  static fromVocab(vocab: string, options: TokenizerOptions = {}): Tokenizer {
    if (typeof vocab !== 'string') throw invalid('a vocab.txt text or path', 'vocab', vocab);
    if (typeof options !== 'object' || options === null) throw invalid('an object', 'options', options);
    const text = vocab.includes('\n') ? vocab : readText(vocab, 'vocab');
    const lines = text.split('\n');
    if (lines.length > 0 && lines[lines.length - 1] === '') lines.pop();
    const map = new Map<string, number>();
    lines.forEach((line, i) => map.set(line.endsWith('\r') ? line.slice(0, -1) : line, i));

    const normalizer = normalizerOf(options);
    const unkToken = optString(options.unkToken, 'options.unkToken', '[UNK]');
    const clsToken = optString(options.clsToken, 'options.clsToken', '[CLS]');
    const sepToken = optString(options.sepToken, 'options.sepToken', '[SEP]');
    const padToken = optString(options.padToken, 'options.padToken', '[PAD]');
    const maskToken = optString(options.maskToken, 'options.maskToken', '[MASK]');
    const cls = map.get(clsToken);
    const sep = map.get(sepToken);
    for (const [name, id] of [
      [clsToken, cls],
      [sepToken, sep],
      [unkToken, map.get(unkToken)],
    ] as const) {
      if (id === undefined) throw new TokenizerError(`The vocabulary has no "${name}" token`);
    }
    const addedTokens: AddedToken[] = [];
    for (const t of [padToken, unkToken, clsToken, sepToken, maskToken]) {
      const id = map.get(t);
      if (id !== undefined && !addedTokens.some((a) => a.content === t)) addedTokens.push({ content: t, id });
    }
    const extra = options.specialTokens ?? [];
    if (!Array.isArray(extra)) throw invalid('an array of strings', 'options.specialTokens', extra);
    extra.forEach((t: unknown, i) => {
      if (typeof t !== 'string' || t === '') throw invalid('a non-empty string', `options.specialTokens[${i}]`, t);
      const id = map.get(t);
      if (id === undefined)
        throw new TokenizerError(`The vocabulary has no "${t}" token (options.specialTokens[${i}])`);
      if (!addedTokens.some((a) => a.content === t)) addedTokens.push({ content: t, id });
    });
    return new Tokenizer({
      vocab: map,
      normalizer,
      unkToken,
      prefix: optString(options.continuingSubwordPrefix, 'options.continuingSubwordPrefix', '##'),
      maxInputCharsPerWord: optCount(options.maxInputCharsPerWord, 'options.maxInputCharsPerWord', DEFAULT_MAX_CHARS),
      addedTokens,
      template: bertTemplate(cls as number, sep as number),
      defaultMaxSeqLen: undefined,
      roles: { unk: unkToken, cls: clsToken, sep: sepToken, pad: padToken, mask: maskToken },
    });
  }

  /**
   * A tokenizer from a Hugging Face `tokenizer.json` (WordPiece model, BertNormalizer,
   * BertPreTokenizer, TemplateProcessing or BertProcessing). Anything else is refused with
   * `ERR_INPUT` rather than tokenized differently.
   *
   * @param json the parsed object, the file's text, or a path to it.
   */
  static fromTokenizerJson(json: string | object): Tokenizer {
    let root: unknown = json;
    if (typeof json === 'string') {
      const text = json.trimStart().startsWith('{') ? json : readText(json, 'tokenizer.json');
      try {
        root = JSON.parse(text);
      } catch (e) {
        throw new TokenizerError(`Invalid tokenizer.json: ${(e as Error).message}`);
      }
    }
    return new Tokenizer(parseTokenizerJson(root));
  }

  /**
   * Trains a WordPiece vocabulary on a corpus and returns its tokenizer: the algorithm of Hugging
   * Face `tokenizers`' `WordPieceTrainer`, on the words this class's normalizer and pre-tokenizer
   * make of the text. See {@link TrainOptions} for the options and defaults, {@link TrainCorpus}
   * for what the corpus may be. Rejects with `ERR_INPUT` ({@link CorpusError} for the corpus
   * itself) or `ERR_ABORTED`.
   *
   * @example
   * const tok = await Tokenizer.train(['data/books/', 'data/faq.txt'], { vocabSize: 8000 });
   * tok.save('models/my-tokenizer'); // vocab.txt, tokenizer.json, tokenizer_config.json, ...
   */
  static async train(corpus: TrainCorpus, options: TrainOptions = {}): Promise<Tokenizer> {
    return trainWordPiece(corpus, options);
  }

  /**
   * The normalizer and pre-tokenizer alone: a function that calls `onWord` for each word of a
   * text, exactly the words that encoding hands to WordPiece (same pass, same code). Added
   * tokens are not matched and words of any length are passed on, as Hugging Face's trainers
   * see the text. Each splitter has its own state; use one per concurrent consumer.
   *
   * @example
   * const split = Tokenizer.wordSplitter({ lowercase: true });
   * split('Héllo, world', (units, n) => console.log(String.fromCharCode(...units.subarray(0, n))));
   * // hello / , / world
   */
  static wordSplitter(options: NormalizerOptions = {}): WordSplitter {
    if (typeof options !== 'object' || options === null) throw invalid('an object', 'options', options);
    const tok = new Tokenizer({
      vocab: new Map([['[UNK]', 0]]),
      normalizer: normalizerOf(options),
      unkToken: '[UNK]',
      prefix: '##',
      maxInputCharsPerWord: 0x7fffffff,
      addedTokens: [],
      template: bertTemplate(0, 0),
      defaultMaxSeqLen: undefined,
      roles: { unk: '[UNK]', cls: '[CLS]', sep: '[SEP]', pad: '[PAD]', mask: '[MASK]' },
    });
    return (text, onWord) => {
      checkText(text, 'text');
      tok.wordSink = onWord;
      try {
        tok.bufA.length = 0;
        tok.tokenizeInto(text, tok.bufA);
      } finally {
        tok.wordSink = null;
      }
    };
  }

  // ----------------------------------------------------------------------------------------------
  // Public API

  /** Number of ids (largest id + 1). */
  get vocabSize(): number {
    return this.idToTokenTable.length;
  }

  /**
   * The tokenizer as a Hugging Face `tokenizer.json` object: WordPiece model, BertNormalizer,
   * BertPreTokenizer, TemplateProcessing post-processor, WordPiece decoder. {@link fromTokenizerJson}
   * of it, and `tokenizers` / `transformers` loading it, give the same ids as this tokenizer.
   */
  toTokenizerJson(): Record<string, unknown> {
    const c = this.config;
    const norm = c.normalizer;
    const tokenOf = (id: number): string => this.idToTokenTable[id] ?? `[unused_id_${id}]`;
    const added = [...c.addedTokens].sort((a, b) => a.id - b.id);
    const specialTokens: Record<string, { id: string; ids: number[]; tokens: string[] }> = {};
    const templateJson = (pieces: readonly TemplatePiece[]): unknown[] =>
      pieces.map((p) => {
        if (p.segment >= 0) return { Sequence: { id: p.segment === 0 ? 'A' : 'B', type_id: p.typeId } };
        const tokens = p.specialIds.map(tokenOf);
        const name = tokens.join('');
        specialTokens[name] = { id: name, ids: [...p.specialIds], tokens };
        return { SpecialToken: { id: name, type_id: p.typeId } };
      });
    const single = templateJson(c.template.single);
    const pair = templateJson(c.template.pair);
    const vocab: Record<string, number> = {};
    for (let id = 0; id < this.idToTokenTable.length; id++) {
      const token = this.idToTokenTable[id];
      if (token !== undefined) vocab[token] = id;
    }
    return {
      version: '1.0',
      truncation:
        this.defaultMaxSeqLen === undefined
          ? null
          : { direction: 'Right', max_length: this.defaultMaxSeqLen, strategy: 'LongestFirst', stride: 0 },
      padding: null,
      added_tokens: added.map((t) => ({
        id: t.id,
        content: t.content,
        single_word: false,
        lstrip: false,
        rstrip: false,
        normalized: false,
        special: true,
      })),
      normalizer: {
        type: 'BertNormalizer',
        clean_text: norm.cleanText,
        handle_chinese_chars: norm.handleChineseChars,
        strip_accents: stripAccentsJson(norm),
        lowercase: norm.lowercase,
      },
      pre_tokenizer: { type: 'BertPreTokenizer' },
      post_processor: { type: 'TemplateProcessing', single, pair, special_tokens: specialTokens },
      decoder: { type: 'WordPiece', prefix: c.prefix, cleanup: true },
      model: {
        type: 'WordPiece',
        unk_token: c.unkToken,
        continuing_subword_prefix: c.prefix,
        max_input_chars_per_word: c.maxInputCharsPerWord,
        vocab,
      },
    };
  }

  /**
   * Writes the tokenizer to `dir` (created if needed) as Hugging Face does: `vocab.txt`,
   * `tokenizer.json`, `tokenizer_config.json` (`BertTokenizer`, `do_lower_case`, ...) and
   * `special_tokens_map.json`. `BertTokenizerFast.from_pretrained(dir)`,
   * `AutoTokenizer.from_pretrained(dir)`, {@link fromTokenizerJson} and {@link fromVocab} (with
   * the options of tokenizer_config.json) all read it back to the same ids. Each file is written
   * under a temporary name and renamed into place. Throws `ERR_CHECKPOINT` when a file cannot
   * be written.
   *
   * @example
   * tok.save('models/my-tokenizer');
   * const again = Tokenizer.fromTokenizerJson('models/my-tokenizer/tokenizer.json');
   */
  save(dir: string): void {
    if (typeof dir !== 'string' || dir === '') throw invalid('a directory path', 'dir', dir);
    const c = this.config;
    const roles = c.roles;
    const lines: string[] = [];
    for (let id = 0; id < this.idToTokenTable.length; id++) {
      lines.push(this.idToTokenTable[id] ?? `[unused_id_${id}]`);
    }
    const roleMap: Record<string, string> = {};
    for (const [key, token] of [
      ['unk_token', roles.unk],
      ['sep_token', roles.sep],
      ['pad_token', roles.pad],
      ['cls_token', roles.cls],
      ['mask_token', roles.mask],
    ] as const) {
      if (this.vocab.has(token)) roleMap[key] = token;
    }
    const roleTokens = new Set(Object.values(roleMap));
    const additional = c.addedTokens.filter((t) => !roleTokens.has(t.content)).map((t) => t.content);
    const addedDecoder: Record<string, unknown> = {};
    for (const t of [...c.addedTokens].sort((a, b) => a.id - b.id)) {
      addedDecoder[String(t.id)] = {
        content: t.content,
        lstrip: false,
        normalized: false,
        rstrip: false,
        single_word: false,
        special: true,
      };
    }
    const tokenizerConfig = {
      tokenizer_class: 'BertTokenizer',
      do_lower_case: c.normalizer.lowercase,
      strip_accents: stripAccentsJson(c.normalizer),
      tokenize_chinese_chars: c.normalizer.handleChineseChars,
      do_basic_tokenize: true,
      never_split: null,
      model_max_length: this.defaultMaxSeqLen ?? 512,
      clean_up_tokenization_spaces: true,
      ...roleMap,
      ...(additional.length > 0 ? { additional_special_tokens: additional } : {}),
      added_tokens_decoder: addedDecoder,
    };
    const specialMap = { ...roleMap, ...(additional.length > 0 ? { additional_special_tokens: additional } : {}) };
    try {
      fs.mkdirSync(dir, { recursive: true });
    } catch (err) {
      throw new CheckpointError(`Cannot create the tokenizer directory '${dir}': ${(err as Error).message}`);
    }
    writeFileAtomic(path.join(dir, 'vocab.txt'), `${lines.join('\n')}\n`);
    writeFileAtomic(path.join(dir, 'tokenizer.json'), `${JSON.stringify(this.toTokenizerJson(), null, 2)}\n`);
    writeFileAtomic(path.join(dir, 'tokenizer_config.json'), `${JSON.stringify(tokenizerConfig, null, 2)}\n`);
    writeFileAtomic(path.join(dir, 'special_tokens_map.json'), `${JSON.stringify(specialMap, null, 2)}\n`);
  }

  /** The id of a token string, or undefined. */
  tokenToId(token: string): number | undefined {
    return this.vocab.get(token);
  }

  /** The token string of an id, or undefined. */
  idToToken(id: number): string | undefined {
    return this.idToTokenTable[id];
  }

  /** The WordPiece tokens of a text, without special tokens (for inspection and tests). */
  tokenize(text: string): string[] {
    checkText(text, 'text');
    const buf = this.bufA;
    buf.length = 0;
    this.tokenizeInto(text, buf);
    const out: string[] = [];
    for (let i = 0; i < buf.length; i++) out.push(this.idToTokenTable[buf.data[i] as number] ?? '');
    return out;
  }

  /**
   * Encodes one text or a pair as `[CLS] A [SEP]` / `[CLS] A [SEP] B [SEP]`. An empty `pair`
   * is treated as no pair, as `transformers` does.
   *
   * @example
   * tok.encode('is my card lost?', 'we can help', { maxSeqLen: 16 });
   */
  encode(text: string, pair?: string, options: EncodeOptions = {}): Encoding {
    checkText(text, 'text');
    if (pair !== undefined) checkText(pair, 'pair');
    const plan = this.plan(options);
    const ids = this.batchIds;
    const types = this.batchTypes;
    ids.length = 0;
    types.length = 0;
    this.encodeInto(text, pair, plan, ids, types);
    return { ids: ids.data.slice(0, ids.length), typeIds: types.data.slice(0, types.length) };
  }

  /**
   * Encodes many inputs straight into one packed batch: sequence b occupies
   * `ids[offsets[b] .. offsets[b + 1]]`. The outputs are the only allocations.
   *
   * @example
   * const { ids, typeIds, offsets } = tok.encodeBatch(['hi', ['context', 'reply']], { maxSeqLen: 128 });
   */
  encodeBatch(inputs: readonly TokenizerInput[], options: EncodeOptions = {}): BatchEncoding {
    if (!Array.isArray(inputs)) throw invalid('an array of strings or [string, string] pairs', 'inputs', inputs);
    const plan = this.plan(options);
    const ids = this.batchIds;
    const types = this.batchTypes;
    ids.length = 0;
    types.length = 0;
    const offsets = new Int32Array(inputs.length + 1);
    for (let b = 0; b < inputs.length; b++) {
      const input: unknown = inputs[b];
      if (typeof input === 'string') {
        this.encodeInto(input, undefined, plan, ids, types);
      } else if (Array.isArray(input) && input.length === 2) {
        const [a, p] = input as unknown[];
        checkText(a, `inputs[${b}][0]`);
        checkText(p, `inputs[${b}][1]`);
        this.encodeInto(a, p, plan, ids, types);
      } else {
        throw invalid('a string or a [string, string] pair', `inputs[${b}]`, input);
      }
      offsets[b + 1] = ids.length;
    }
    return { ids: ids.data.slice(0, ids.length), typeIds: types.data.slice(0, types.length), offsets };
  }

  // ----------------------------------------------------------------------------------------------
  // Encoding

  /** Validated encode options: effective truncation length (-1 = none) and special tokens. */
  private plan(options: EncodeOptions): { maxLen: number; special: boolean } {
    if (typeof options !== 'object' || options === null) throw invalid('an object', 'options', options);
    const special = optBool(options.addSpecialTokens, 'options.addSpecialTokens', true);
    const trunc = options.truncation;
    if (trunc !== undefined && trunc !== false && trunc !== 'longest_first') {
      throw invalid("'longest_first' or false", 'options.truncation', trunc);
    }
    const maxSeqLen =
      options.maxSeqLen === undefined ? this.defaultMaxSeqLen : optCount(options.maxSeqLen, 'options.maxSeqLen', 0);
    if (trunc === false || maxSeqLen === undefined) return { maxLen: -1, special };
    return { maxLen: maxSeqLen, special };
  }

  /** Tokenizes, truncates and lays out one sequence at the end of ids/types. */
  private encodeInto(
    text: string,
    pair: string | undefined,
    plan: { maxLen: number; special: boolean },
    ids: IdBuffer,
    types: IdBuffer,
  ): void {
    checkText(text, 'text');
    const a = this.bufA;
    const b = this.bufB;
    a.length = 0;
    b.length = 0;
    const limit = plan.maxLen >= 0 ? plan.maxLen : Infinity;
    this.tokenizeInto(text, a, limit);
    // An empty pair counts as no pair, as in transformers (`if text_pair:`).
    const hasPair = pair !== undefined && pair.length > 0;
    if (hasPair) this.tokenizeInto(pair, b, limit);

    const pieces = hasPair ? this.template.pair : this.template.single;
    const nAdded = hasPair ? this.nAddedPair : this.nAddedSingle;
    if (plan.maxLen >= 0 && plan.special && plan.maxLen < nAdded) {
      throw new TokenizerError(
        `Expected options.maxSeqLen of at least ${nAdded} (the special tokens) but received ${plan.maxLen}`,
      );
    }
    let lenA = a.length;
    let lenB = b.length;
    if (plan.maxLen >= 0) {
      const budget = plan.special ? plan.maxLen - nAdded : plan.maxLen;
      [lenA, lenB] = truncateLongestFirst(lenA, lenB, hasPair, budget);
    }
    const total = lenA + lenB + (plan.special ? nAdded : 0);
    ids.reserve(ids.length + total);
    types.reserve(types.length + total);
    const idData = ids.data;
    const typeData = types.data;
    let at = ids.length;
    for (const piece of pieces) {
      if (piece.segment < 0) {
        if (!plan.special) continue;
        for (const id of piece.specialIds) {
          idData[at] = id;
          typeData[at++] = piece.typeId;
        }
      } else {
        const src = piece.segment === 0 ? a : b;
        const n = piece.segment === 0 ? lenA : lenB;
        idData.set(src.data.subarray(0, n), at);
        typeData.fill(piece.typeId, at, at + n);
        at += n;
      }
    }
    ids.length = at;
    types.length = at;
  }

  // ----------------------------------------------------------------------------------------------
  // Normalize + pre-tokenize + WordPiece, one pass

  /**
   * Appends the WordPiece ids of `text` (no special template) to `out`.
   *
   * With `limit`, stops after the first word that brings the count of ids appended to `limit`
   * or more (added tokens count but do not stop it), as `tokenize_with_limit` in Hugging Face
   * `tokenizers` does when truncation is on. Which segment is longer before truncation depends
   * on this, so it is part of exact longest-first truncation, and it bounds the work on long
   * texts.
   */
  private tokenizeInto(text: string, out: IdBuffer, limit = Infinity): void {
    const cls = this.asciiClass;
    const units = this.asciiUnit;
    const n = text.length;
    this.wordLen = 0;
    this.wordChars = 0;
    this.stopAt = out.length + limit;
    this.stopped = false;
    let i = 0;
    while (i < n && !this.stopped) {
      const c = text.charCodeAt(i);
      if (c < 128) {
        let k = cls[c] as number;
        if (k === A_WORD) {
          this.appendUnit(units[c] as number);
          i++;
          continue;
        }
        if (k & A_SPECIAL) {
          const len = this.matchAdded(text, i, out);
          if (len > 0) {
            i += len;
            continue;
          }
          k &= ~A_SPECIAL;
        }
        if (k === A_WORD) {
          this.appendUnit(units[c] as number);
        } else if (k === A_SPACE) {
          this.flushWord(out);
        } else if (k === A_PUNCT) {
          this.flushWord(out);
          if (this.stopped) break;
          this.appendUnit(units[c] as number);
          this.flushWord(out);
        }
        i++;
      } else {
        if (this.addedByFirst.has(c)) {
          const len = this.matchAdded(text, i, out);
          if (len > 0) {
            i += len;
            continue;
          }
        }
        // A run of non-ASCII characters (and ASCII ones that clean_text drops, so that NFD
        // reorders marks across them as it does on the cleaned string).
        let j = i + 1;
        while (j < n) {
          const d = text.charCodeAt(j);
          if (d < 128 ? cls[d] !== A_SKIP : this.addedByFirst.has(d)) break;
          j++;
        }
        this.processRun(text, i, j, out);
        i = j;
      }
    }
    if (!this.stopped) this.flushWord(out);
  }

  /**
   * If an added token starts at text[i], flushes the current word, appends its id and returns
   * its length; else returns 0. Longest first, so matching is leftmost-longest.
   */
  private matchAdded(text: string, i: number, out: IdBuffer): number {
    const list = this.addedByFirst.get(text.charCodeAt(i));
    if (list === undefined) return 0;
    for (const t of list) {
      if (text.startsWith(t.content, i)) {
        this.flushWord(out);
        if (!this.stopped) out.push(t.id);
        return t.content.length;
      }
    }
    return 0;
  }

  /**
   * Normalizes text[start, end) (non-ASCII, plus ASCII that clean_text drops) and feeds the
   * result to the word splitter. NFD runs only when the run holds a character it can change,
   * and then over the whole cleaned run, so canonical reordering sees what HF's NFD sees.
   */
  private processRun(text: string, start: number, end: number, out: IdBuffer): void {
    const flags = charFlags();
    const norm = this.norm;
    if (norm.stripAccents) {
      let needNfd = false;
      let rebuild = false;
      for (let p = start; p < end;) {
        const cp = text.codePointAt(p) as number;
        p += cp > 0xffff ? 2 : 1;
        const f = flags[cp] as number;
        if (f & F_NFD) needNfd = true;
        if (f & (F_REMOVED | F_TO_SPACE | F_CJK)) rebuild = true;
      }
      if (needNfd) {
        const cleaned = rebuild ? this.cleanRun(text, start, end) : text.slice(start, end);
        const decomposed = cleaned.normalize('NFD');
        for (let p = 0; p < decomposed.length;) {
          const cp = decomposed.codePointAt(p) as number;
          p += cp > 0xffff ? 2 : 1;
          // Already cleaned and CJK-spaced: only mark removal, lowercase and splitting remain.
          if ((flags[cp] as number) & F_MARK) continue;
          this.emitLowered(cp, out);
          if (this.stopped) return;
        }
        return;
      }
    }
    // No NFD needed: clean, CJK-space, lowercase and split one code point at a time.
    for (let p = start; p < end;) {
      let cp = text.codePointAt(p) as number;
      p += cp > 0xffff ? 2 : 1;
      const f = flags[cp] as number;
      if (norm.cleanText) {
        if (f & F_REMOVED) continue;
        if (f & F_TO_SPACE) cp = 32;
      }
      if (norm.handleChineseChars && f & F_CJK) {
        this.flushWord(out);
        if (this.stopped) return;
        this.appendCodePoint(cp);
        this.flushWord(out);
      } else {
        this.emitLowered(cp, out);
      }
      if (this.stopped) return;
    }
  }

  /** The run after clean_text and CJK spacing, as a string for NFD. */
  private cleanRun(text: string, start: number, end: number): string {
    const flags = charFlags();
    const norm = this.norm;
    const cps = this.runCps;
    cps.length = 0;
    for (let p = start; p < end;) {
      let cp = text.codePointAt(p) as number;
      p += cp > 0xffff ? 2 : 1;
      const f = flags[cp] as number;
      if (norm.cleanText) {
        if (f & F_REMOVED) continue;
        if (f & F_TO_SPACE) cp = 32;
      }
      if (norm.handleChineseChars && f & F_CJK) cps.push(32, cp, 32);
      else cps.push(cp);
    }
    return fromCodePoints(cps);
  }

  /** Lowercases (if enabled) one normalized code point and feeds it to the word splitter. */
  private emitLowered(cp: number, out: IdBuffer): void {
    if (this.norm.lowercase && (charFlags()[cp] as number) & F_LOWER) {
      const lower = lowercaseOf(cp);
      if (typeof lower === 'number') {
        this.emit(lower, out);
      } else {
        for (let i = 0; i < lower.length && !this.stopped;) {
          const c = lower.codePointAt(i) as number;
          i += c > 0xffff ? 2 : 1;
          this.emit(c, out);
        }
      }
    } else {
      this.emit(cp, out);
    }
  }

  /** Feeds one final code point to the word splitter: whitespace ends a word, punctuation is one. */
  private emit(cp: number, out: IdBuffer): void {
    const f = charFlags()[cp] as number;
    if (f & (F_WHITESPACE | F_PUNCT)) {
      this.flushWord(out);
      if (f & F_PUNCT && !this.stopped) {
        this.appendCodePoint(cp);
        this.flushWord(out);
      }
    } else {
      this.appendCodePoint(cp);
    }
  }

  private appendUnit(u: number): void {
    if (++this.wordChars > this.maxChars) return; // the word will be [UNK]; stop storing it
    if (this.wordLen === this.wordUnits.length) this.growWord();
    this.wordUnits[this.wordLen++] = u;
  }

  private appendCodePoint(cp: number): void {
    if (cp <= 0xffff) {
      this.appendUnit(cp);
      return;
    }
    if (++this.wordChars > this.maxChars) return;
    if (this.wordLen + 2 > this.wordUnits.length) this.growWord();
    const v = cp - 0x10000;
    this.wordUnits[this.wordLen++] = 0xd800 + (v >> 10);
    this.wordUnits[this.wordLen++] = 0xdc00 + (v & 0x3ff);
  }

  private growWord(): void {
    const next = new Uint16Array(this.wordUnits.length * 2);
    next.set(this.wordUnits);
    this.wordUnits = next;
  }

  /** WordPiece on the current word: greedy longest-match-first, all-or-[UNK]. */
  private flushWord(out: IdBuffer): void {
    const chars = this.wordChars;
    if (chars === 0) return;
    this.wordPiece(out);
    if (out.length >= this.stopAt) this.stopped = true;
  }

  private wordPiece(out: IdBuffer): void {
    const chars = this.wordChars;
    const len = this.wordLen;
    this.wordChars = 0;
    this.wordLen = 0;
    if (this.wordSink !== null) {
      this.wordSink(this.wordUnits, len);
      return;
    }
    if (chars > this.maxChars) {
      out.push(this.unkId);
      return;
    }
    const units = this.wordUnits;
    const trie = this.trie;
    const mark = out.length;
    let pos = 0;
    let node = 0;
    while (pos < len) {
      const id = node < 0 ? -1 : trie.longestMatch(node, units, pos, len, this.matchEnd);
      if (id < 0) {
        out.length = mark;
        out.push(this.unkId);
        return;
      }
      out.push(id);
      pos = this.matchEnd[0] as number;
      node = this.contNode;
    }
  }
}

// ------------------------------------------------------------------------------------------------
// Truncation

/**
 * Lengths of segments A and B after longest-first truncation to `maxLen` tokens, as
 * `truncate_encodings` in Hugging Face `tokenizers`: when only the longer segment must shrink it
 * keeps the rest of the budget; when both must, the first gets floor(maxLen / 2) and the second
 * the rest, except that a strictly longer first segment keeps the larger half. n1 and n2 are the
 * lengths after the early stop of tokenizeInto.
 */
export function truncateLongestFirst(n1: number, n2: number, hasPair: boolean, maxLen: number): [number, number] {
  if (maxLen <= 0) return [0, 0];
  if (n1 + n2 <= maxLen) return [n1, n2];
  if (!hasPair) return [maxLen, 0];
  let a = n1;
  let b = n2;
  const swap = a > b; // make a the shorter one
  if (swap) [a, b] = [b, a];
  b = a > maxLen ? a : Math.max(a, maxLen - a);
  if (a + b > maxLen) {
    a = Math.floor(maxLen / 2);
    b = a + (maxLen % 2);
  }
  if (swap) [a, b] = [b, a];
  return [Math.min(n1, a), Math.min(n2, b)];
}

// ------------------------------------------------------------------------------------------------
// tokenizer.json

function parseTokenizerJson(root: unknown): TokenizerConfig {
  const obj = asObject(root, 'tokenizer.json');
  const model = asObject(obj.model, 'tokenizer.json model');
  if (model.type !== 'WordPiece') {
    throw new TokenizerError(
      `Unsupported tokenizer.json model type ${describe(model.type)}: only WordPiece (BERT) is supported`,
    );
  }
  const vocabObj = asObject(model.vocab, 'model.vocab');
  const vocab = new Map<string, number>();
  for (const [token, id] of Object.entries(vocabObj)) {
    if (typeof id !== 'number' || !Number.isInteger(id) || id < 0 || id > 0x7fffffff) {
      throw invalid('a non-negative integer id', `model.vocab["${token}"]`, id);
    }
    vocab.set(token, id);
  }
  const unkToken = optString(model.unk_token, 'model.unk_token', '[UNK]');
  const prefix = optString(model.continuing_subword_prefix, 'model.continuing_subword_prefix', '##');
  const maxChars = optCount(model.max_input_chars_per_word, 'model.max_input_chars_per_word', DEFAULT_MAX_CHARS);

  let normalizer: NormalizerConfig = {
    cleanText: false,
    handleChineseChars: false,
    stripAccents: false,
    lowercase: false,
  };
  if (obj.normalizer !== null && obj.normalizer !== undefined) {
    const n = asObject(obj.normalizer, 'normalizer');
    if (n.type !== 'BertNormalizer') {
      throw new TokenizerError(`Unsupported normalizer ${describe(n.type)}: only BertNormalizer is supported`);
    }
    const lowercase = optBool(n.lowercase, 'normalizer.lowercase', true);
    const strip = n.strip_accents;
    if (strip !== null && strip !== undefined && typeof strip !== 'boolean') {
      throw invalid('a boolean or null', 'normalizer.strip_accents', strip);
    }
    normalizer = {
      cleanText: optBool(n.clean_text, 'normalizer.clean_text', true),
      handleChineseChars: optBool(n.handle_chinese_chars, 'normalizer.handle_chinese_chars', true),
      stripAccents: strip ?? lowercase,
      lowercase,
    };
  }
  const pre = asObject(obj.pre_tokenizer, 'pre_tokenizer');
  if (pre.type !== 'BertPreTokenizer') {
    throw new TokenizerError(`Unsupported pre_tokenizer ${describe(pre.type)}: only BertPreTokenizer is supported`);
  }

  const addedTokens: AddedToken[] = [];
  if (obj.added_tokens !== undefined && obj.added_tokens !== null) {
    if (!Array.isArray(obj.added_tokens)) throw invalid('an array', 'added_tokens', obj.added_tokens);
    obj.added_tokens.forEach((raw: unknown, i: number) => {
      const t = asObject(raw, `added_tokens[${i}]`);
      const content = t.content;
      const id = t.id;
      if (typeof content !== 'string' || content.length === 0) {
        throw invalid('a non-empty string', `added_tokens[${i}].content`, content);
      }
      if (typeof id !== 'number' || !Number.isInteger(id) || id < 0) {
        throw invalid('a non-negative integer', `added_tokens[${i}].id`, id);
      }
      // lstrip/rstrip only absorb whitespace, which the pre-tokenizer drops anyway.
      if (t.normalized === true || t.single_word === true) {
        throw new TokenizerError(
          `Unsupported added token "${content}": normalized or single_word added tokens are not supported`,
        );
      }
      if (!vocab.has(content)) vocab.set(content, id);
      addedTokens.push({ content, id });
    });
  }

  const template = parsePostProcessor(obj.post_processor, vocab);

  let defaultMaxSeqLen: number | undefined;
  if (obj.truncation !== null && obj.truncation !== undefined) {
    const t = asObject(obj.truncation, 'truncation');
    if (
      (t.strategy ?? 'LongestFirst') !== 'LongestFirst' ||
      (t.direction ?? 'Right') !== 'Right' ||
      (t.stride ?? 0) !== 0
    ) {
      throw new TokenizerError('Unsupported truncation in tokenizer.json: only LongestFirst, Right, stride 0');
    }
    defaultMaxSeqLen = optCount(t.max_length, 'truncation.max_length', 512);
  }
  // The template's first and last special tokens are [CLS] and [SEP] in the BERT layout.
  const specials = template.single.filter((p) => p.segment < 0 && p.specialIds.length === 1);
  const tokenOf = (piece: TemplatePiece | undefined, dflt: string): string => {
    const id = piece?.specialIds[0];
    for (const [token, i] of vocab) if (i === id) return token;
    return dflt;
  };
  return {
    vocab,
    normalizer,
    unkToken,
    prefix,
    maxInputCharsPerWord: maxChars,
    addedTokens,
    template,
    defaultMaxSeqLen,
    roles: {
      unk: unkToken,
      cls: tokenOf(specials[0], '[CLS]'),
      sep: tokenOf(specials[specials.length - 1], '[SEP]'),
      pad: '[PAD]',
      mask: '[MASK]',
    },
  };
}

function parsePostProcessor(raw: unknown, vocab: ReadonlyMap<string, number>): Template {
  if (raw === null || raw === undefined)
    return {
      single: [{ segment: 0, specialIds: [], typeId: 0 }],
      pair: [
        { segment: 0, specialIds: [], typeId: 0 },
        { segment: 1, specialIds: [], typeId: 1 },
      ],
    };
  const pp = asObject(raw, 'post_processor');
  if (pp.type === 'BertProcessing') {
    const sep = tokenPair(pp.sep, 'post_processor.sep');
    const cls = tokenPair(pp.cls, 'post_processor.cls');
    return bertTemplate(cls, sep);
  }
  if (pp.type !== 'TemplateProcessing') {
    throw new TokenizerError(
      `Unsupported post_processor ${describe(pp.type)}: only TemplateProcessing and BertProcessing are supported`,
    );
  }
  const specials = new Map<string, number[]>();
  const st = pp.special_tokens === undefined ? {} : asObject(pp.special_tokens, 'post_processor.special_tokens');
  for (const [name, rawTok] of Object.entries(st)) {
    const tok = asObject(rawTok, `post_processor.special_tokens["${name}"]`);
    const ids = tok.ids;
    if (!Array.isArray(ids) || !ids.every((x) => typeof x === 'number' && Number.isInteger(x) && x >= 0)) {
      throw invalid('an array of ids', `post_processor.special_tokens["${name}"].ids`, ids);
    }
    specials.set(typeof tok.id === 'string' ? tok.id : name, ids as number[]);
  }
  const pieces = (list: unknown, what: string): TemplatePiece[] => {
    if (!Array.isArray(list)) throw invalid('an array', what, list);
    return list.map((rawPiece: unknown, i: number) => {
      const piece = asObject(rawPiece, `${what}[${i}]`);
      if (piece.Sequence !== undefined) {
        const s = asObject(piece.Sequence, `${what}[${i}].Sequence`);
        if (s.id !== 'A' && s.id !== 'B') throw invalid("'A' or 'B'", `${what}[${i}].Sequence.id`, s.id);
        return { segment: s.id === 'A' ? 0 : 1, specialIds: [], typeId: typeIdOf(s.type_id, what) };
      }
      const sp = asObject(piece.SpecialToken, `${what}[${i}].SpecialToken`);
      const name = sp.id;
      const ids = typeof name === 'string' ? (specials.get(name) ?? idList(vocab, name)) : undefined;
      if (ids === undefined) throw invalid('a known special token', `${what}[${i}].SpecialToken.id`, name);
      return { segment: -1, specialIds: ids, typeId: typeIdOf(sp.type_id, what) };
    });
  };
  const single = pieces(pp.single, 'post_processor.single');
  const pair = pieces(pp.pair, 'post_processor.pair');
  if (!single.some((p) => p.segment === 0) || !pair.some((p) => p.segment === 1)) {
    throw new TokenizerError('Invalid post_processor: the templates must contain $A (single) and $B (pair)');
  }
  return { single, pair };
}

function bertTemplate(cls: number, sep: number): Template {
  return {
    single: [
      { segment: -1, specialIds: [cls], typeId: 0 },
      { segment: 0, specialIds: [], typeId: 0 },
      { segment: -1, specialIds: [sep], typeId: 0 },
    ],
    pair: [
      { segment: -1, specialIds: [cls], typeId: 0 },
      { segment: 0, specialIds: [], typeId: 0 },
      { segment: -1, specialIds: [sep], typeId: 0 },
      { segment: 1, specialIds: [], typeId: 1 },
      { segment: -1, specialIds: [sep], typeId: 1 },
    ],
  };
}

function countSpecial(pieces: readonly TemplatePiece[]): number {
  let n = 0;
  for (const p of pieces) n += p.specialIds.length;
  return n;
}

function idList(vocab: ReadonlyMap<string, number>, name: string): number[] | undefined {
  const id = vocab.get(name);
  return id === undefined ? undefined : [id];
}

function tokenPair(raw: unknown, what: string): number {
  if (!Array.isArray(raw) || raw.length !== 2 || typeof raw[1] !== 'number' || !Number.isInteger(raw[1])) {
    throw invalid('a [token, id] pair', what, raw);
  }
  return raw[1];
}

function typeIdOf(raw: unknown, what: string): number {
  if (raw === undefined) return 0;
  if (typeof raw !== 'number' || !Number.isInteger(raw) || raw < 0) throw invalid('a type id', what, raw);
  return raw;
}

// ------------------------------------------------------------------------------------------------
// Helpers

function asObject(v: unknown, what: string): Record<string, unknown> {
  if (typeof v !== 'object' || v === null || Array.isArray(v)) throw invalid('an object', what, v);
  return v as Record<string, unknown>;
}

function normalizerOf(options: NormalizerOptions): NormalizerConfig {
  const lowercase = optBool(options.lowercase, 'options.lowercase', true);
  const strip = options.stripAccents;
  if (strip !== undefined && strip !== null && typeof strip !== 'boolean') {
    throw invalid('a boolean or null', 'options.stripAccents', strip);
  }
  return {
    cleanText: optBool(options.cleanText, 'options.cleanText', true),
    handleChineseChars: optBool(options.handleChineseChars, 'options.handleChineseChars', true),
    stripAccents: strip ?? lowercase,
    lowercase,
  };
}

function optBool(v: unknown, what: string, dflt: boolean): boolean {
  if (v === undefined) return dflt;
  if (typeof v !== 'boolean') throw invalid('a boolean', what, v);
  return v;
}

function optString(v: unknown, what: string, dflt: string): string {
  if (v === undefined || v === null) return dflt;
  if (typeof v !== 'string') throw invalid('a string', what, v);
  return v;
}

function optCount(v: unknown, what: string, dflt: number): number {
  if (v === undefined || v === null) return dflt;
  if (typeof v !== 'number' || !Number.isInteger(v) || v < 0 || v > 0x7fffffff) {
    throw invalid('a non-negative integer', what, v);
  }
  return v;
}

function checkText(v: unknown, what: string): asserts v is string {
  if (typeof v !== 'string') throw invalid('a string', what, v);
}

function readText(file: string, what: string): string {
  try {
    return fs.readFileSync(file, 'utf8');
  } catch (e) {
    throw new TokenizerError(`Cannot read ${what} from "${file}": ${(e as Error).message}`);
  }
}

/** `strip_accents` as Hugging Face writes it: null when it follows `lowercase`. */
function stripAccentsJson(norm: NormalizerConfig): boolean | null {
  return norm.stripAccents === norm.lowercase ? null : norm.stripAccents;
}

/** String.fromCodePoint over an array of any length (no argument-count limit). */
function fromCodePoints(cps: readonly number[]): string {
  const CHUNK = 4096;
  if (cps.length <= CHUNK) return String.fromCodePoint(...cps);
  let s = '';
  for (let i = 0; i < cps.length; i += CHUNK) s += String.fromCodePoint(...cps.slice(i, i + CHUNK));
  return s;
}
