/**
 * The durable store of the dialogue layer: conversations (append-only turns), user feedback on
 * turns, and the model versions a deployment has trained, with the one that serves. One
 * interface, {@link ChatStore}, and two backends behind it: embedded SQLite (the default, a
 * single file, `lib/chat/store-sqlite.ts`) and Postgres (several processes or machines on one
 * database, `lib/chat/store-postgres.ts`). {@link openStore} picks the backend from a URL.
 *
 * Every method is async (so that both backends fit), validates its arguments (`ERR_INPUT`),
 * writes all of its rows or none (one transaction), and fails with the project's errors: an
 * unknown conversation or model version is a {@link NotFoundError}, a database problem a
 * {@link StoreError} whose `reason` says which (`'locked'`, `'full'`, `'unreachable'`,
 * `'corrupt'`, `'conflict'`, `'other'`). The schema, the URL forms and the concurrency choices
 * are in docs/store.md.
 *
 * @example
 * ```ts
 * const store = await openStore('sqlite:./data/chat.db');
 * const id = await store.createConversation({ metadata: { channel: 'web' } });
 * const turn = await store.appendTurn(id, { speaker: 'user', text: 'book a table for two', understanding });
 * await store.addFeedback({ conversationId: id, turn: turn.index, intent: 'book_restaurant' });
 * const fresh = await store.listFeedback({ status: 'new' });
 * await store.close();
 * ```
 */
import { randomBytes } from 'node:crypto';

import { InputError, expected } from '../errors';
import type { Feedback, Speaker, Turn, Understanding } from './types';

/** What became of a piece of feedback: `'new'`, `'used'` by a refinement, or `'pending-label'` (set aside for a human). */
export type FeedbackStatus = 'new' | 'used' | 'pending-label';

/** Feedback as kept in the store: the {@link Feedback} and what the store adds to it. */
export interface StoredFeedback extends Feedback {
  /** Random URL-safe id given by the store. */
  id: string;
  /** ISO 8601 time the feedback was added. */
  createdAt: string;
  status: FeedbackStatus;
  /** The model version that used it (set by {@link ChatStore.markFeedback}). */
  usedBy?: string;
  /** The text of the turn the feedback is about, so that an exported line stands on its own. */
  text: string;
}

/** A model version: a checkpoint directory and where it came from. */
export interface ModelVersion {
  version: string;
  /** The checkpoint directory. */
  dir: string;
  /** The version it was refined from. */
  parent?: string;
  /** Whatever the trainer measured (accuracy, F1, the shadow evaluation). */
  metrics?: Record<string, unknown>;
  note?: string;
  /** ISO 8601 time it was added. */
  createdAt: string;
  /** The one version that serves; at most one is active, and exactly one once any has been activated. */
  active: boolean;
  /** ISO 8601 time it was last activated; absent if it never was. */
  activatedAt?: string;
}

/** What {@link ChatStore.addModelVersion} takes. */
export interface NewModelVersion {
  version: string;
  dir: string;
  parent?: string;
  metrics?: Record<string, unknown>;
  note?: string;
}

/** A turn to append: the store gives the index, and the time unless `at` is given. */
export type NewTurn = Omit<Turn, 'index' | 'at'> & { at?: string };

/** A conversation without its turns. */
export interface ConversationInfo {
  id: string;
  /** ISO 8601 time it was created. */
  createdAt: string;
  metadata: Record<string, unknown>;
  /** How many turns it has. */
  turns: number;
}

export interface CreateConversationOptions {
  /** The id to use (1-128 characters of `A-Z a-z 0-9 _ -`); a random 22-character one when absent. */
  id?: string;
  /** JSON-serializable data kept with the conversation (channel, user id, locale, ...). */
  metadata?: Record<string, unknown>;
}

export interface GetTurnsOptions {
  /** Only the last `last` turns (still oldest first). */
  last?: number;
}

export interface ListFeedbackOptions {
  status?: FeedbackStatus;
  /** Only feedback created at or after this ISO 8601 time. */
  since?: string;
  /** At most this many (the oldest first). */
  limit?: number;
}

export interface ExportFeedbackOptions {
  /** Only feedback created at or after this ISO 8601 time. */
  since?: string;
}

/** Options of {@link openStore}. */
export interface OpenStoreOptions {
  /**
   * How long a write waits for another connection's lock before failing with a
   * {@link StoreError} of reason `'locked'`, in ms (SQLite `busy_timeout`, Postgres
   * `lock_timeout`). Default 5000.
   */
  busyTimeoutMs?: number;
  /** Postgres: how long to wait for a connection before failing with reason `'unreachable'`, in ms. Default 5000. */
  connectTimeoutMs?: number;
  /** Postgres: the longest one query may take before the client gives up on it, in ms; 0 for no limit. Default 30000. */
  queryTimeoutMs?: number;
  /** Postgres: connections in the pool. Default 10. */
  poolSize?: number;
}

/**
 * The durable store of the dialogue layer; {@link openStore} opens one. Methods reject with
 * `ERR_INPUT` for bad arguments, {@link NotFoundError} for unknown ids, {@link StoreError} for
 * database failures, `ERR_DISPOSED` after {@link ChatStore.close}.
 */
export interface ChatStore {
  readonly kind: 'sqlite' | 'postgres';

  /** Creates a conversation and returns its id; a given id that exists is a StoreError of reason `'conflict'`. */
  createConversation(options?: CreateConversationOptions): Promise<string>;
  /** Whether a conversation with this id exists. */
  hasConversation(id: string): Promise<boolean>;
  /** A conversation's id, creation time, metadata and number of turns (NotFoundError if unknown). */
  getConversation(id: string): Promise<ConversationInfo>;
  /**
   * Appends a turn and returns it with its index: 0 for the first, then consecutive, distinct
   * even when many processes append to one conversation at once. NotFoundError if unknown.
   */
  appendTurn(conversationId: string, turn: NewTurn): Promise<Turn>;
  /** The turns of a conversation, oldest first (NotFoundError if unknown). */
  getTurns(conversationId: string, options?: GetTurnsOptions): Promise<Turn[]>;

  /**
   * Adds feedback on a user turn, with status `'new'`, and returns its id. The turn must exist
   * (NotFoundError) and be a user turn; labels are non-empty strings; slot offsets lie inside
   * the turn's text and do not overlap (ERR_INPUT). A label the model does not have is kept as
   * it is: the refinement decides what to do with it.
   */
  addFeedback(feedback: Feedback): Promise<{ id: string }>;
  /** Stored feedback, oldest first. */
  listFeedback(options?: ListFeedbackOptions): Promise<StoredFeedback[]>;
  /**
   * Sets the status of feedback (and `usedBy` to `modelVersion`, or clears it), all ids in one
   * transaction; an unknown id is a NotFoundError and changes nothing.
   */
  markFeedback(ids: readonly string[], status: 'used' | 'pending-label', modelVersion?: string): Promise<void>;

  /** Records a model version (kept for good); a version that exists is a StoreError of reason `'conflict'`, an unknown parent a NotFoundError. */
  addModelVersion(version: NewModelVersion): Promise<void>;
  /** Makes `version` the active one in one transaction; the one before stays in the list. NotFoundError if unknown. */
  activateModelVersion(version: string): Promise<void>;
  /** The active version, or null before any has been activated. */
  activeModelVersion(): Promise<ModelVersion | null>;
  /** Every version, oldest first. */
  listModelVersions(): Promise<ModelVersion[]>;

  /** Writes every stored feedback (created at or after `since`) as one JSON line each, oldest first; returns how many. */
  exportFeedback(write: (line: string) => void | Promise<void>, options?: ExportFeedbackOptions): Promise<number>;
  /**
   * Imports lines of {@link ChatStore.exportFeedback} (blank lines skipped) in one transaction:
   * a malformed line (ERR_INPUT, naming the line) or a failed write imports nothing. Feedback
   * whose id is already in the store, or earlier in the lines, is skipped, so importing twice
   * is importing once. The conversations need not be in this store.
   */
  importFeedback(lines: AsyncIterable<string> | Iterable<string>): Promise<{ imported: number; skipped: number }>;

  /** Closes the database (Postgres: waits for queries in flight). A second call does nothing. */
  close(): Promise<void>;
}

/**
 * Opens (and creates or migrates) a store. `url` is one of:
 * - a file path, `sqlite:PATH` or `sqlite:///ABSOLUTE/PATH`: SQLite, the file and its folder
 *   created when missing;
 * - `:memory:` or `sqlite::memory:`: a private in-memory SQLite database, gone on close;
 * - `postgres://user:password@host:port/database` or `postgresql://...`: Postgres (the database
 *   must exist; the tables are created in it).
 *
 * @example
 * ```ts
 * const store = await openStore(process.env.ELMO_STORE ?? 'data/chat.db', { busyTimeoutMs: 2000 });
 * ```
 */
export async function openStore(url: string, options: OpenStoreOptions = {}): Promise<ChatStore> {
  const target = parseStoreUrl(url);
  checkOpenOptions(options);
  if (target.kind === 'postgres') {
    const { PostgresStore } = await import('./store-postgres');
    return PostgresStore.open(target.url, options);
  }
  const { SqliteStore } = await import('./store-sqlite');
  return SqliteStore.open(target.file, options);
}

/** What a store URL names. */
export type StoreTarget = { kind: 'sqlite'; file: string } | { kind: 'postgres'; url: string };

/** Parses the URL forms of {@link openStore} (ERR_INPUT for anything else). */
export function parseStoreUrl(url: string): StoreTarget {
  if (typeof url !== 'string' || url.trim() === '') {
    throw expected(InputError, 'a store URL (a file path, sqlite:PATH, :memory: or postgres://...)', 'url', url);
  }
  if (/^postgres(ql)?:\/\//i.test(url)) return { kind: 'postgres', url };
  let file = url;
  if (/^sqlite:/i.test(url)) {
    file = url.slice('sqlite:'.length);
    if (file.startsWith('//')) file = file.slice(2);
    if (file === '') throw new InputError(`Expected a file after sqlite: in the store URL '${url}'`);
  } else if (/^[a-z][a-z0-9+.-]+:\/\//i.test(url)) {
    throw new InputError(
      `Unsupported store URL '${redactUrl(url)}': expected a file path, sqlite:PATH, :memory: or postgres://...`,
    );
  }
  return { kind: 'sqlite', file };
}

/** The URL with its password replaced by `***`, for messages. */
export function redactUrl(url: string): string {
  try {
    const u = new URL(url);
    if (u.password !== '') u.password = '***';
    return u.toString();
  } catch {
    return url.replace(/\/\/([^:/@]*):[^@]*@/, '//$1:***@');
  }
}

function checkOpenOptions(options: OpenStoreOptions): void {
  if (options === null || typeof options !== 'object') throw expected(InputError, 'an object', 'options', options);
  const ints: [keyof OpenStoreOptions, number][] = [
    ['busyTimeoutMs', 0],
    ['connectTimeoutMs', 1],
    ['queryTimeoutMs', 0],
    ['poolSize', 1],
  ];
  for (const [key, min] of ints) {
    const v = options[key];
    if (v !== undefined && !(Number.isSafeInteger(v) && v >= min)) {
      throw expected(InputError, `an integer >= ${String(min)}`, `options.${key}`, v);
    }
  }
}

// ---- shared by the backends: ids, times, validation, JSON lines ---------------------------------
// Exported for store-sqlite.ts and store-postgres.ts; not part of the package's API.

/** Conversation and feedback ids: URL-safe, as given by {@link newId}. */
const ID_PATTERN = /^[A-Za-z0-9_-]{1,128}$/;

/** A random URL-safe id (128 bits, 22 characters). */
export function newId(): string {
  return randomBytes(16).toString('base64url');
}

/** Whether `id` has the shape of a conversation or feedback id. */
export function isId(id: unknown): id is string {
  return typeof id === 'string' && ID_PATTERN.test(id);
}

export function checkId(id: unknown, what: string): string {
  if (typeof id !== 'string' || !ID_PATTERN.test(id)) {
    throw expected(InputError, '1-128 characters of A-Z a-z 0-9 _ -', what, id);
  }
  return id;
}

/** Model version names: any non-empty string of printable characters, up to 200. */
export function checkVersion(version: unknown, what: string): string {
  if (typeof version !== 'string' || version.length === 0 || version.length > 200 || /[\x00-\x1f\x7f]/.test(version)) {
    throw expected(InputError, 'a non-empty string of at most 200 printable characters', what, version);
  }
  return version;
}

/** An ISO 8601 time, normalized to `YYYY-MM-DDTHH:mm:ss.sssZ` (so that times compare as strings). */
export function isoTime(value: unknown, what: string): string {
  const ms = typeof value === 'string' && /^\d{4}-\d{2}-\d{2}/.test(value) ? Date.parse(value) : NaN;
  const date = new Date(ms);
  if (Number.isNaN(ms) || date.getUTCFullYear() > 9999) {
    throw expected(InputError, 'an ISO 8601 time (e.g. 2025-01-31T12:00:00Z)', what, value);
  }
  return date.toISOString();
}

export function now(): string {
  return new Date().toISOString();
}

function isPlainObject(value: unknown): value is Record<string, unknown> {
  return value !== null && typeof value === 'object' && !Array.isArray(value);
}

/** `JSON.stringify` of a plain object, ERR_INPUT when it is not one or does not serialize. */
export function jsonObject(value: unknown, what: string): string {
  if (!isPlainObject(value)) throw expected(InputError, 'a plain object', what, value);
  try {
    return JSON.stringify(value);
  } catch (err) {
    throw new InputError(`Expected JSON-serializable data for ${what}: ${(err as Error).message}`);
  }
}

export function nonNegativeInteger(value: unknown, what: string): number {
  if (typeof value !== 'number' || !Number.isSafeInteger(value) || value < 0) {
    throw expected(InputError, 'a non-negative integer', what, value);
  }
  return value;
}

/** `options.limit` and `options.last`: a positive integer or undefined. */
export function optionalCount(value: unknown, what: string): number | undefined {
  if (value === undefined) return undefined;
  if (typeof value !== 'number' || !Number.isSafeInteger(value) || value < 1) {
    throw expected(InputError, 'a positive integer', what, value);
  }
  return value;
}

/** A turn to append, checked, with its time. */
export interface CheckedTurn {
  speaker: Speaker;
  text: string;
  at: string;
  /** JSON text of the understanding, or null. */
  understanding: string | null;
  modelVersion: string | null;
}

export function checkNewTurn(turn: unknown): CheckedTurn {
  if (!isPlainObject(turn)) throw expected(InputError, 'a turn object', 'turn', turn);
  const { speaker, text, at, understanding, modelVersion } = turn;
  if (speaker !== 'user' && speaker !== 'bot') throw expected(InputError, "'user' or 'bot'", 'turn.speaker', speaker);
  if (typeof text !== 'string') throw expected(InputError, 'a string', 'turn.text', text);
  return {
    speaker,
    text,
    at: at === undefined ? now() : isoTime(at, 'turn.at'),
    understanding: understanding === undefined ? null : jsonObject(understanding, 'turn.understanding'),
    modelVersion: modelVersion === undefined ? null : checkVersion(modelVersion, 'turn.modelVersion'),
  };
}

/** A turn from stored columns (JSON already parsed); absent fields stay absent. */
export function makeTurn(row: {
  index: number;
  speaker: string;
  text: string;
  at: string;
  understanding: unknown;
  modelVersion: string | null;
}): Turn {
  const turn: Turn = { index: row.index, speaker: row.speaker as Speaker, text: row.text, at: row.at };
  if (row.understanding !== null && row.understanding !== undefined)
    turn.understanding = row.understanding as Understanding;
  if (row.modelVersion !== null) turn.modelVersion = row.modelVersion;
  return turn;
}

/** The label fields of a feedback, checked; what the backends write. */
export interface FeedbackFields {
  conversationId: string;
  turn: number;
  intent: string | null;
  /** JSON text of the emotions array, or null. */
  emotions: string | null;
  /** JSON text of the slots array, or null. */
  slots: string | null;
  rating: -1 | 0 | 1 | null;
  comment: string | null;
}

/** Checks the shape of a feedback (not yet against its turn). */
export function checkFeedback(fb: unknown, what = 'feedback'): { fields: FeedbackFields; slotList: Slotish[] } {
  if (!isPlainObject(fb)) throw expected(InputError, 'a feedback object', what, fb);
  const conversationId = checkId(fb.conversationId, `${what}.conversationId`);
  const turn = nonNegativeInteger(fb.turn, `${what}.turn`);
  const label = (v: unknown, w: string): string => {
    if (typeof v !== 'string' || v.trim() === '') throw expected(InputError, 'a non-empty string', w, v);
    return v;
  };
  const intent = fb.intent === undefined ? null : label(fb.intent, `${what}.intent`);
  let emotions: string | null = null;
  if (fb.emotions !== undefined) {
    if (!Array.isArray(fb.emotions)) throw expected(InputError, 'an array of strings', `${what}.emotions`, fb.emotions);
    const list = (fb.emotions as unknown[]).map((e, i) => label(e, `${what}.emotions[${String(i)}]`));
    if (new Set(list).size !== list.length) throw new InputError(`${what}.emotions names an emotion twice`);
    emotions = JSON.stringify(list);
  }
  let slots: string | null = null;
  const slotList: Slotish[] = [];
  if (fb.slots !== undefined) {
    if (!Array.isArray(fb.slots)) throw expected(InputError, 'an array of slots', `${what}.slots`, fb.slots);
    (fb.slots as unknown[]).forEach((s, i) => {
      const w = `${what}.slots[${String(i)}]`;
      if (!isPlainObject(s)) throw expected(InputError, 'a slot {name, start, end}', w, s);
      slotList.push({
        name: label(s.name, `${w}.name`),
        start: nonNegativeInteger(s.start, `${w}.start`),
        end: nonNegativeInteger(s.end, `${w}.end`),
      });
    });
    slots = JSON.stringify(slotList);
  }
  let rating: -1 | 0 | 1 | null = null;
  if (fb.rating !== undefined) {
    if (fb.rating !== -1 && fb.rating !== 0 && fb.rating !== 1) {
      throw expected(InputError, '-1, 0 or 1', `${what}.rating`, fb.rating);
    }
    rating = fb.rating;
  }
  let comment: string | null = null;
  if (fb.comment !== undefined) {
    if (typeof fb.comment !== 'string') throw expected(InputError, 'a string', `${what}.comment`, fb.comment);
    comment = fb.comment;
  }
  if (intent === null && emotions === null && slots === null && rating === null && comment === null) {
    throw new InputError(`${what} says nothing: give at least one of intent, emotions, slots, rating, comment`);
  }
  return { fields: { conversationId, turn, intent, emotions, slots, rating, comment }, slotList };
}

export interface Slotish {
  name: string;
  start: number;
  end: number;
}

/** Slot offsets inside `text` (UTF-16 code units, end exclusive), non-empty and not overlapping. */
export function checkSlotsInText(slots: readonly Slotish[], text: string, what = 'feedback'): void {
  const sorted = slots.map((s, i) => ({ ...s, i })).sort((a, b) => a.start - b.start);
  let lastEnd = 0;
  for (const s of sorted) {
    const w = `${what}.slots[${String(s.i)}]`;
    if (s.end <= s.start || s.end > text.length) {
      throw new InputError(
        `${w} spans [${String(s.start)}, ${String(s.end)}), which is not a non-empty range inside the turn's ` +
          `${String(text.length)} characters`,
      );
    }
    if (s.start < lastEnd) throw new InputError(`${w} overlaps another slot`);
    lastEnd = s.end;
  }
}

/** A checked feedback line of an import. */
export interface ImportedFeedback extends FeedbackFields {
  id: string;
  text: string;
  status: FeedbackStatus;
  usedBy: string | null;
  createdAt: string;
}

const STATUSES: readonly FeedbackStatus[] = ['new', 'used', 'pending-label'];

export function checkStatus(value: unknown, what: string): FeedbackStatus {
  if (!(STATUSES as readonly unknown[]).includes(value)) {
    throw expected(InputError, "'new', 'used' or 'pending-label'", what, value);
  }
  return value as FeedbackStatus;
}

/**
 * Reads and checks every line of an import before anything is written (so that a bad line
 * imports nothing); drops ids seen earlier in the lines. Unknown keys are ignored.
 */
export async function readFeedbackLines(
  lines: AsyncIterable<string> | Iterable<string>,
): Promise<{ records: ImportedFeedback[]; duplicates: number }> {
  if (
    lines === null ||
    typeof lines !== 'object' ||
    (!(Symbol.asyncIterator in lines) && !(Symbol.iterator in lines))
  ) {
    throw expected(InputError, 'an iterable of JSON lines', 'lines', lines);
  }
  const records: ImportedFeedback[] = [];
  const seen = new Set<string>();
  let duplicates = 0;
  let n = 0;
  for await (const line of lines) {
    n += 1;
    if (typeof line !== 'string') throw expected(InputError, 'a string', `line ${String(n)}`, line);
    if (line.trim() === '') continue;
    let record: ImportedFeedback;
    try {
      record = feedbackOfLine(line);
    } catch (err) {
      if (err instanceof InputError) throw new InputError(`line ${String(n)}: ${err.message}`);
      throw err;
    }
    if (seen.has(record.id)) {
      duplicates += 1;
      continue;
    }
    seen.add(record.id);
    records.push(record);
  }
  return { records, duplicates };
}

/** One line of an export, checked (ERR_INPUT naming the field). */
function feedbackOfLine(line: string): ImportedFeedback {
  let value: unknown;
  try {
    value = JSON.parse(line);
  } catch (err) {
    throw new InputError(`not JSON (${(err as Error).message})`);
  }
  if (!isPlainObject(value)) throw expected(InputError, 'a JSON object', 'the line', value);
  const { fields, slotList } = checkFeedback(value);
  const text = value.text;
  if (typeof text !== 'string') throw expected(InputError, 'a string', 'feedback.text', text);
  checkSlotsInText(slotList, text);
  return {
    ...fields,
    id: checkId(value.id, 'feedback.id'),
    text,
    status: checkStatus(value.status, 'feedback.status'),
    usedBy: value.usedBy === undefined ? null : checkVersion(value.usedBy, 'feedback.usedBy'),
    createdAt: isoTime(value.createdAt, 'feedback.createdAt'),
  };
}

/** Stored feedback from its columns (JSON already parsed), keys in the order of the JSON lines. */
export function makeStoredFeedback(row: {
  id: string;
  conversationId: string;
  turn: number;
  text: string;
  intent: string | null;
  emotions: unknown;
  slots: unknown;
  rating: number | null;
  comment: string | null;
  status: string;
  usedBy: string | null;
  createdAt: string;
}): StoredFeedback {
  const fb: StoredFeedback = {
    id: row.id,
    conversationId: row.conversationId,
    turn: row.turn,
    text: row.text,
    status: row.status as FeedbackStatus,
    createdAt: row.createdAt,
  };
  if (row.intent !== null) fb.intent = row.intent;
  if (row.emotions !== null && row.emotions !== undefined) fb.emotions = row.emotions as string[];
  if (row.slots !== null && row.slots !== undefined) fb.slots = row.slots as NonNullable<Feedback['slots']>;
  if (row.rating !== null) fb.rating = row.rating as -1 | 0 | 1;
  if (row.comment !== null) fb.comment = row.comment;
  if (row.usedBy !== null) fb.usedBy = row.usedBy;
  return fb;
}

/** A model version from its columns (JSON already parsed). */
export function makeModelVersion(row: {
  version: string;
  dir: string;
  parent: string | null;
  metrics: unknown;
  note: string | null;
  createdAt: string;
  active: boolean;
  activatedAt: string | null;
}): ModelVersion {
  const v: ModelVersion = { version: row.version, dir: row.dir, createdAt: row.createdAt, active: row.active };
  if (row.parent !== null) v.parent = row.parent;
  if (row.metrics !== null && row.metrics !== undefined) v.metrics = row.metrics as Record<string, unknown>;
  if (row.note !== null) v.note = row.note;
  if (row.activatedAt !== null) v.activatedAt = row.activatedAt;
  return v;
}

/** A model version to add, checked. */
export interface CheckedModelVersion {
  version: string;
  dir: string;
  parent: string | null;
  metrics: string | null;
  note: string | null;
}

export function checkNewModelVersion(v: unknown): CheckedModelVersion {
  if (!isPlainObject(v)) throw expected(InputError, 'a model version {version, dir}', 'version', v);
  if (typeof v.dir !== 'string' || v.dir === '') throw expected(InputError, 'a non-empty string', 'version.dir', v.dir);
  if (v.note !== undefined && typeof v.note !== 'string') {
    throw expected(InputError, 'a string', 'version.note', v.note);
  }
  return {
    version: checkVersion(v.version, 'version.version'),
    dir: v.dir,
    parent: v.parent === undefined ? null : checkVersion(v.parent, 'version.parent'),
    metrics: v.metrics === undefined ? null : jsonObject(v.metrics, 'version.metrics'),
    note: v.note === undefined ? null : v.note,
  };
}

/** The ids of {@link ChatStore.markFeedback}, checked and without repeats. */
export function checkMarkArgs(ids: unknown, status: unknown, modelVersion: unknown): string[] {
  if (!Array.isArray(ids)) throw expected(InputError, 'an array of feedback ids', 'ids', ids);
  const list = (ids as unknown[]).map((id, i) => checkId(id, `ids[${String(i)}]`));
  if (status !== 'used' && status !== 'pending-label') {
    throw expected(InputError, "'used' or 'pending-label'", 'status', status);
  }
  if (modelVersion !== undefined) checkVersion(modelVersion, 'modelVersion');
  return [...new Set(list)];
}

/** One line of {@link ChatStore.exportFeedback}. */
export function feedbackLine(fb: StoredFeedback): string {
  return JSON.stringify(fb);
}
