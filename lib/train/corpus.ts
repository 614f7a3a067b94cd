/**
 * Unlabelled text for pretraining, streamed: files, directories, in-memory texts or async
 * iterables, read as documents made of lines, each line split into sentences.
 *
 * - A directory is read recursively, its `.txt` / `.md` / `.text` files in sorted path order.
 * - A `.jsonl`, `.csv` or `.tsv` file is read as labelled examples are (lib/train/data.ts) and
 *   contributes its `text` (and `pair`) fields: a fine-tuning set's training split is also
 *   in-domain unlabelled text. Every other file is plain UTF-8 text.
 * - Each file, and each string of `{ texts }`, is one document; packing never crosses one.
 * - A file with NUL bytes, or with more than 1% of its characters invalid UTF-8, is refused as
 *   binary (`ERR_INPUT`), as is a path that does not exist.
 */
import { createReadStream, promises as fsp } from 'node:fs';
import * as path from 'node:path';
import { createInterface } from 'node:readline';

import { AbortedError, InputError, expected } from '../errors';
import { readExamples } from './data';

/** In-memory or generated text: each string is one document. */
export interface CorpusTexts {
  texts: Iterable<string> | AsyncIterable<string>;
}

/** A file or directory path, or texts. */
export type CorpusEntry = string | CorpusTexts;

/** What {@link Bert.pretrain} reads: one entry or several. */
export type CorpusSource = CorpusEntry | readonly CorpusEntry[];

/** One line of a document (`doc` counts documents from 0). */
export interface CorpusLine {
  doc: number;
  text: string;
}

const TEXT_EXTENSIONS = new Set(['.txt', '.md', '.text']);
const EXAMPLE_EXTENSIONS = new Set(['.jsonl', '.csv', '.tsv']);

/** Checks the shape of a corpus source (not the files: those are checked as they are read). */
export function checkCorpus(source: unknown, what = 'corpus'): CorpusEntry[] {
  const list: unknown[] = Array.isArray(source) ? (source as unknown[]) : [source];
  if (list.length === 0) throw expected(InputError, 'at least one path or { texts }', what, source);
  list.forEach((e, i) => {
    const name = Array.isArray(source) ? `${what}[${String(i)}]` : what;
    if (typeof e === 'string') {
      if (e === '') throw expected(InputError, 'a file or directory path', name, e);
      return;
    }
    const texts = typeof e === 'object' && e !== null ? (e as { texts?: unknown }).texts : undefined;
    const iterable =
      typeof texts === 'object' &&
      texts !== null &&
      (Symbol.iterator in texts || Symbol.asyncIterator in texts) &&
      typeof texts !== 'string';
    if (!iterable) throw expected(InputError, 'a path or { texts: an iterable of strings }', name, e);
  });
  return list as CorpusEntry[];
}

/** Every file a path names: itself, or a directory's text files, recursively, sorted. */
export async function corpusFiles(p: string): Promise<string[]> {
  let st;
  try {
    st = await fsp.stat(p);
  } catch {
    throw new InputError(`Expected an existing file or directory for the corpus but received '${p}' (not found)`);
  }
  if (st.isFile()) return [p];
  if (!st.isDirectory()) throw new InputError(`Expected a file or directory for the corpus but received '${p}'`);
  const out: string[] = [];
  const walk = async (dir: string): Promise<void> => {
    const entries = (await fsp.readdir(dir, { withFileTypes: true })).sort((a, b) => (a.name < b.name ? -1 : 1));
    for (const e of entries) {
      const full = path.join(dir, e.name);
      if (e.isDirectory()) await walk(full);
      else if (e.isFile() && TEXT_EXTENSIONS.has(path.extname(e.name).toLowerCase())) out.push(full);
    }
  };
  await walk(p);
  if (out.length === 0) {
    throw new InputError(`Expected .txt, .md or .text files in the corpus directory '${p}' but found none`);
  }
  return out;
}

/** Refuses a binary file by its first bytes (NUL) and its share of invalid UTF-8. */
async function checkTextFile(file: string): Promise<void> {
  const fh = await fsp.open(file, 'r');
  try {
    const buf = Buffer.alloc(65536);
    const { bytesRead } = await fh.read(buf, 0, buf.length, 0);
    const head = buf.subarray(0, bytesRead);
    if (head.includes(0))
      throw new InputError(`Expected a UTF-8 text file for the corpus but '${file}' is binary (NUL bytes)`);
    // A cut multi-byte sequence at the end of the window is not an error of the file.
    const text = new TextDecoder('utf-8').decode(head.subarray(0, Math.max(0, bytesRead - 4)));
    let bad = 0;
    for (let i = 0; i < text.length; i++) if (text.charCodeAt(i) === 0xfffd) bad++;
    if (text.length > 0 && bad > 0.01 * text.length) {
      throw new InputError(
        `Expected a UTF-8 text file for the corpus but '${file}' is binary (${String(bad)} invalid UTF-8 sequences in its first ${String(text.length)} characters)`,
      );
    }
  } finally {
    await fh.close();
  }
}

/**
 * The corpus as lines tagged with their document, in order. Empty lines are skipped. Throws
 * `ERR_ABORTED` between lines once `signal` aborts.
 */
export async function* readCorpus(source: CorpusSource, signal?: AbortSignal): AsyncGenerator<CorpusLine> {
  let doc = 0;
  const aborted = (): boolean => signal?.aborted === true;
  for (const entry of checkCorpus(source)) {
    if (typeof entry !== 'string') {
      for await (const text of entry.texts) {
        if (aborted()) throw new AbortedError('Reading the corpus was aborted');
        if (typeof text !== 'string') throw expected(InputError, 'a string', 'an element of corpus texts', text);
        for (const line of text.split(/\r?\n/)) if (line.trim() !== '') yield { doc, text: line };
        doc++;
      }
      continue;
    }
    for (const file of await corpusFiles(entry)) {
      const ext = path.extname(file).toLowerCase();
      if (EXAMPLE_EXTENSIONS.has(ext)) {
        for await (const ex of readExamples(file)) {
          if (aborted()) throw new AbortedError('Reading the corpus was aborted');
          if (typeof ex.text === 'string' && ex.text.trim() !== '') yield { doc, text: ex.text };
          if (typeof ex.pair === 'string' && ex.pair.trim() !== '') yield { doc, text: ex.pair };
        }
        doc++;
        continue;
      }
      await checkTextFile(file);
      const rl = createInterface({ input: createReadStream(file, { encoding: 'utf8' }), crlfDelay: Infinity });
      try {
        for await (const line of rl) {
          if (aborted()) throw new AbortedError('Reading the corpus was aborted');
          if (line.trim() !== '') yield { doc, text: line };
        }
      } finally {
        rl.close();
      }
      doc++;
    }
  }
}

// Abbreviations after which a period does not end a sentence.
const ABBREVIATIONS = new Set(
  'mr mrs ms dr prof sr jr st mt vs etc no nos co corp inc ltd gen col capt lt sgt gov sen rep hon rev fig e.g i.e u.s a.m p.m jan feb mar apr jun jul aug sep sept oct nov dec'.split(
    ' ',
  ),
);

/**
 * Splits a line into sentences: after `.`, `!` or `?` (and closing quotes or brackets) that is
 * followed by whitespace and an upper-case letter, a digit or an opening quote, unless the word
 * before is a known abbreviation or a single letter (initials).
 */
export function splitSentences(line: string): string[] {
  const out: string[] = [];
  const re = /[.!?]+["'\u2019\u201d)\]]*\s+(?=["'\u2018\u201c(\[]?[A-Z0-9])/g;
  let start = 0;
  for (let m = re.exec(line); m !== null; m = re.exec(line)) {
    const end = m.index + m[0].length;
    if (line[m.index] === '.') {
      const before = /([A-Za-z.]+)$/.exec(line.slice(start, m.index));
      const word = before?.[1]?.toLowerCase() ?? '';
      if (word.length === 1 || ABBREVIATIONS.has(word)) continue;
    }
    const s = line.slice(start, end).trim();
    if (s !== '') out.push(s);
    start = end;
  }
  const rest = line.slice(start).trim();
  if (rest !== '') out.push(rest);
  return out;
}
