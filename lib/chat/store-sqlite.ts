/**
 * The SQLite backend of {@link ChatStore}: one file (or `:memory:`), through better-sqlite3.
 *
 * better-sqlite3 is synchronous: each method runs its statements to the end before it returns,
 * so the calls of one process never interleave inside the database, and a transaction is a plain
 * function (`db.transaction(fn).immediate()`) that commits when it returns and rolls back when it
 * throws. Several processes (a server and `elmo feedback import`) share the file through WAL
 * mode (readers never wait for the writer) and `busy_timeout` (a writer waits for another
 * writer's lock, up to `busyTimeoutMs`, then fails with reason `'locked'`). Write transactions
 * begin IMMEDIATE, taking the write lock before their first read, so that they wait for it
 * rather than fail half-way on a snapshot another writer has moved past. See docs/store.md.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';

import Database from 'better-sqlite3';

import { DisposedError, ElmoError, InputError, NotFoundError, StoreError } from '../errors';
import type { StoreErrorReason } from '../errors';
import type { Feedback, Turn } from './types';
import type {
  ChatStore,
  ConversationInfo,
  CreateConversationOptions,
  ExportFeedbackOptions,
  GetTurnsOptions,
  ListFeedbackOptions,
  ModelVersion,
  NewModelVersion,
  NewTurn,
  OpenStoreOptions,
  StoredFeedback,
} from './store';
import {
  checkFeedback,
  checkId,
  checkMarkArgs,
  checkNewModelVersion,
  checkNewTurn,
  checkSlotsInText,
  checkStatus,
  checkVersion,
  isId,
  feedbackLine,
  isoTime,
  jsonObject,
  makeModelVersion,
  makeStoredFeedback,
  makeTurn,
  newId,
  now,
  optionalCount,
  readFeedbackLines,
} from './store';

/**
 * The schema, one entry per version; entry i takes a database from version i to i + 1. Applied
 * in order, in one transaction, when a store opens. Append only: a released entry never changes.
 */
const MIGRATIONS: readonly string[] = [
  `
  CREATE TABLE conversations (
    id TEXT PRIMARY KEY,
    created_at TEXT NOT NULL,
    metadata TEXT NOT NULL CHECK (json_valid(metadata)),
    turn_count INTEGER NOT NULL DEFAULT 0
  ) STRICT;

  CREATE TABLE turns (
    conversation_id TEXT NOT NULL REFERENCES conversations (id),
    turn_index INTEGER NOT NULL,
    speaker TEXT NOT NULL CHECK (speaker IN ('user', 'bot')),
    text TEXT NOT NULL,
    at TEXT NOT NULL,
    understanding TEXT CHECK (json_valid(understanding)),
    model_version TEXT,
    PRIMARY KEY (conversation_id, turn_index)
  ) STRICT, WITHOUT ROWID;

  CREATE TABLE feedback (
    seq INTEGER PRIMARY KEY,
    id TEXT NOT NULL UNIQUE,
    conversation_id TEXT NOT NULL,
    turn_index INTEGER NOT NULL,
    text TEXT NOT NULL,
    intent TEXT,
    emotions TEXT CHECK (json_valid(emotions)),
    slots TEXT CHECK (json_valid(slots)),
    rating INTEGER CHECK (rating IN (-1, 0, 1)),
    comment TEXT,
    status TEXT NOT NULL CHECK (status IN ('new', 'used', 'pending-label')),
    used_by TEXT,
    created_at TEXT NOT NULL
  ) STRICT;
  CREATE INDEX feedback_status ON feedback (status, seq);
  CREATE INDEX feedback_created_at ON feedback (created_at);
  CREATE INDEX feedback_turn ON feedback (conversation_id, turn_index);

  CREATE TABLE model_versions (
    seq INTEGER PRIMARY KEY,
    version TEXT NOT NULL UNIQUE,
    dir TEXT NOT NULL,
    parent TEXT REFERENCES model_versions (version),
    metrics TEXT CHECK (json_valid(metrics)),
    note TEXT,
    created_at TEXT NOT NULL,
    activated_at TEXT
  ) STRICT;

  CREATE TABLE active_model (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    version TEXT NOT NULL REFERENCES model_versions (version),
    activated_at TEXT NOT NULL
  ) STRICT;
  `,
];

/** The schema version this code writes. */
export const SQLITE_SCHEMA_VERSION = MIGRATIONS.length;

interface TurnRow {
  turn_index: number;
  speaker: string;
  text: string;
  at: string;
  understanding: string | null;
  model_version: string | null;
}

interface FeedbackRow {
  seq: number;
  id: string;
  conversation_id: string;
  turn_index: number;
  text: string;
  intent: string | null;
  emotions: string | null;
  slots: string | null;
  rating: number | null;
  comment: string | null;
  status: string;
  used_by: string | null;
  created_at: string;
}

interface VersionRow {
  version: string;
  dir: string;
  parent: string | null;
  metrics: string | null;
  note: string | null;
  created_at: string;
  activated_at: string | null;
  active: number;
}

const TURN_COLUMNS = 'turn_index, speaker, text, at, understanding, model_version';
const FEEDBACK_COLUMNS =
  'seq, id, conversation_id, turn_index, text, intent, emotions, slots, rating, comment, status, used_by, created_at';
const VERSION_COLUMNS =
  'mv.version, mv.dir, mv.parent, mv.metrics, mv.note, mv.created_at, mv.activated_at, (a.version IS NOT NULL) AS active';
/** Rows of an export read per query (an export never holds a statement open across `await`). */
const EXPORT_PAGE = 500;

function parseJson(text: string | null): unknown {
  return text === null ? null : JSON.parse(text);
}

function turnOf(row: TurnRow): Turn {
  return makeTurn({
    index: row.turn_index,
    speaker: row.speaker,
    text: row.text,
    at: row.at,
    understanding: parseJson(row.understanding),
    modelVersion: row.model_version,
  });
}

function feedbackOf(row: FeedbackRow): StoredFeedback {
  return makeStoredFeedback({
    id: row.id,
    conversationId: row.conversation_id,
    turn: row.turn_index,
    text: row.text,
    intent: row.intent,
    emotions: parseJson(row.emotions),
    slots: parseJson(row.slots),
    rating: row.rating,
    comment: row.comment,
    status: row.status,
    usedBy: row.used_by,
    createdAt: row.created_at,
  });
}

function versionOf(row: VersionRow): ModelVersion {
  return makeModelVersion({
    version: row.version,
    dir: row.dir,
    parent: row.parent,
    metrics: parseJson(row.metrics),
    note: row.note,
    createdAt: row.created_at,
    active: row.active !== 0,
    activatedAt: row.activated_at,
  });
}

/** The reason of a better-sqlite3 error code (extended codes included: `SQLITE_BUSY_SNAPSHOT`). */
function reasonOf(code: string): StoreErrorReason {
  if (code.startsWith('SQLITE_BUSY') || code.startsWith('SQLITE_LOCKED')) return 'locked';
  if (code.startsWith('SQLITE_FULL')) return 'full';
  if (code.startsWith('SQLITE_CORRUPT') || code.startsWith('SQLITE_NOTADB')) return 'corrupt';
  if (code.startsWith('SQLITE_CONSTRAINT')) return 'conflict';
  return 'other';
}

/** Applies the missing migrations in one IMMEDIATE transaction (a second process waits for it). */
function migrate(db: Database.Database, file: string): void {
  db.transaction(() => {
    db.exec('CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)');
    const row = db.prepare('SELECT version FROM schema_version').get() as { version: number } | undefined;
    if (row === undefined) db.prepare('INSERT INTO schema_version (version) VALUES (0)').run();
    const from = row?.version ?? 0;
    if (from > MIGRATIONS.length) {
      throw new StoreError(
        `${file} has schema version ${String(from)}, newer than the ${String(MIGRATIONS.length)} this elmo-chat ` +
          'knows: open it with the newer elmo-chat that wrote it',
        'other',
      );
    }
    for (let v = from; v < MIGRATIONS.length; v++) db.exec(MIGRATIONS[v] ?? '');
    if (from < MIGRATIONS.length) db.prepare('UPDATE schema_version SET version = ?').run(MIGRATIONS.length);
  }).immediate();
}

/** {@link ChatStore} on an SQLite file; made by {@link openStore} for a path or `sqlite:` URL. */
export class SqliteStore implements ChatStore {
  readonly kind = 'sqlite' as const;
  /**
   * The better-sqlite3 connection, for what the interface does not cover, such as an online
   * backup (`await store.db.backup('copy.db')`). Writing to the tables directly bypasses the
   * store's checks.
   */
  readonly db: Database.Database;
  /** The database file, or `:memory:`. */
  readonly file: string;
  private readonly busyTimeoutMs: number;
  private closed = false;
  /** Prepared statements by SQL text: each is compiled once per connection. */
  private readonly statements = new Map<string, Database.Statement>();

  private constructor(db: Database.Database, file: string, busyTimeoutMs: number) {
    this.db = db;
    this.file = file;
    this.busyTimeoutMs = busyTimeoutMs;
  }

  /** Opens `file` (created with its folder when missing), in WAL mode, and migrates its schema. */
  static open(file: string, options: OpenStoreOptions = {}): SqliteStore {
    const busyTimeoutMs = options.busyTimeoutMs ?? 5000;
    const memory = file === ':memory:';
    if (!memory) {
      try {
        fs.mkdirSync(path.dirname(path.resolve(file)), { recursive: true });
      } catch (err) {
        throw new StoreError(`Cannot create the folder of the store ${file}: ${(err as Error).message}`, 'other');
      }
      let stat: fs.Stats | undefined;
      try {
        stat = fs.statSync(file);
      } catch {
        stat = undefined;
      }
      if (stat?.isDirectory() === true) {
        throw new StoreError(`Cannot open the store ${file}: it is a directory, not an SQLite file`, 'other');
      }
    }
    let db: Database.Database;
    try {
      db = new Database(file, { timeout: busyTimeoutMs });
    } catch (err) {
      throw mapError(err, `Cannot open the store ${file}`, busyTimeoutMs);
    }
    try {
      // The first statements read the header: a file that is not a database fails here.
      db.pragma('journal_mode = WAL');
      db.pragma('foreign_keys = ON');
      migrate(db, file);
    } catch (err) {
      db.close();
      const e = mapError(err, `Cannot open the store ${file}`, busyTimeoutMs);
      if (e instanceof StoreError && e.reason === 'corrupt' && /NOTADB/.test(codeOf(err))) {
        throw new StoreError(`Cannot open the store ${file}: it is not an SQLite database`, 'corrupt', { cause: err });
      }
      throw e;
    }
    return new SqliteStore(db, file, busyTimeoutMs);
  }

  /** `fn()` as a promise: what it throws (bad arguments included) rejects, never throws. */
  private task<T>(fn: () => T): Promise<T> {
    return new Promise((resolve) => {
      resolve(fn());
    });
  }

  /** Runs `fn` on the open database, its SQLite errors mapped to StoreError (`what` heads the message). */
  private run<T>(what: string, fn: () => T): T {
    if (this.closed) throw new DisposedError(`The store ${this.file} was used after close()`);
    try {
      return fn();
    } catch (err) {
      throw mapError(err, `${what} (${this.file})`, this.busyTimeoutMs);
    }
  }

  /** Runs `fn` in an IMMEDIATE transaction (the write lock taken first); commits or rolls back. */
  private write<T>(what: string, fn: () => T): T {
    return this.run(what, () => this.db.transaction(fn).immediate());
  }

  /** The prepared statement of `sql`, compiled on first use. */
  private sql(sql: string): Database.Statement {
    let stmt = this.statements.get(sql);
    if (stmt === undefined) {
      stmt = this.db.prepare(sql);
      this.statements.set(sql, stmt);
    }
    return stmt;
  }

  private exists(id: string): boolean {
    return this.sql('SELECT 1 FROM conversations WHERE id = ?').get(id) !== undefined;
  }

  createConversation(options: CreateConversationOptions = {}): Promise<string> {
    return this.task(() => {
      if (options === null || typeof options !== 'object') throw new InputError('options must be an object');
      const id = options.id === undefined ? newId() : checkId(options.id, 'options.id');
      const metadata = options.metadata === undefined ? '{}' : jsonObject(options.metadata, 'options.metadata');
      return this.write(`Cannot create conversation '${id}'`, () => {
        if (this.exists(id)) throw new StoreError(`Conversation '${id}' already exists`, 'conflict');
        this.sql('INSERT INTO conversations (id, created_at, metadata) VALUES (?, ?, ?)').run(id, now(), metadata);
        return id;
      });
    });
  }

  hasConversation(id: string): Promise<boolean> {
    return this.task(() => {
      if (typeof id !== 'string') checkId(id, 'id');
      return this.run('Cannot read conversations', () => isId(id) && this.exists(id));
    });
  }

  getConversation(id: string): Promise<ConversationInfo> {
    return this.task(() => {
      checkId(id, 'id');
      return this.run(`Cannot read conversation '${id}'`, () => {
        const row = this.sql('SELECT id, created_at, metadata, turn_count FROM conversations WHERE id = ?').get(id) as
          { id: string; created_at: string; metadata: string; turn_count: number } | undefined;
        if (row === undefined) throw new NotFoundError(`No conversation '${id}'`);
        return {
          id: row.id,
          createdAt: row.created_at,
          metadata: JSON.parse(row.metadata) as Record<string, unknown>,
          turns: row.turn_count,
        };
      });
    });
  }

  appendTurn(conversationId: string, turn: NewTurn): Promise<Turn> {
    return this.task(() => {
      checkId(conversationId, 'conversationId');
      const t = checkNewTurn(turn);
      const index = this.write(`Cannot append a turn to conversation '${conversationId}'`, () => {
        // The counter on the conversation row gives the index; the write lock makes it exclusive.
        const row = this.sql(
          'UPDATE conversations SET turn_count = turn_count + 1 WHERE id = ? RETURNING turn_count - 1 AS idx',
        ).get(conversationId) as { idx: number } | undefined;
        if (row === undefined) throw new NotFoundError(`No conversation '${conversationId}'`);
        this.sql(`INSERT INTO turns (conversation_id, ${TURN_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?)`).run(
          conversationId,
          row.idx,
          t.speaker,
          t.text,
          t.at,
          t.understanding,
          t.modelVersion,
        );
        return row.idx;
      });
      return turnOf({
        turn_index: index,
        speaker: t.speaker,
        text: t.text,
        at: t.at,
        understanding: t.understanding,
        model_version: t.modelVersion,
      });
    });
  }

  getTurns(conversationId: string, options: GetTurnsOptions = {}): Promise<Turn[]> {
    return this.task(() => {
      checkId(conversationId, 'conversationId');
      const last = optionalCount(options.last, 'options.last');
      return this.run(`Cannot read the turns of conversation '${conversationId}'`, () => {
        const rows =
          last === undefined
            ? (this.sql(`SELECT ${TURN_COLUMNS} FROM turns WHERE conversation_id = ? ORDER BY turn_index`).all(
                conversationId,
              ) as TurnRow[])
            : (
                this.sql(
                  `SELECT ${TURN_COLUMNS} FROM turns WHERE conversation_id = ? ORDER BY turn_index DESC LIMIT ?`,
                ).all(conversationId, last) as TurnRow[]
              ).reverse();
        if (rows.length === 0 && !this.exists(conversationId)) {
          throw new NotFoundError(`No conversation '${conversationId}'`);
        }
        return rows.map(turnOf);
      });
    });
  }

  addFeedback(feedback: Feedback): Promise<{ id: string }> {
    return this.task(() => {
      const { fields, slotList } = checkFeedback(feedback);
      const id = newId();
      this.write('Cannot add feedback', () => {
        const turn = this.sql('SELECT speaker, text FROM turns WHERE conversation_id = ? AND turn_index = ?').get(
          fields.conversationId,
          fields.turn,
        ) as { speaker: string; text: string } | undefined;
        if (turn === undefined) {
          const conv = this.sql('SELECT turn_count FROM conversations WHERE id = ?').get(fields.conversationId) as
            { turn_count: number } | undefined;
          throw new NotFoundError(
            conv === undefined
              ? `No conversation '${fields.conversationId}'`
              : `Conversation '${fields.conversationId}' has no turn ${String(fields.turn)} (it has ${String(conv.turn_count)})`,
          );
        }
        if (turn.speaker !== 'user') {
          throw new InputError(
            `Turn ${String(fields.turn)} of conversation '${fields.conversationId}' is a bot turn: feedback is about user turns`,
          );
        }
        checkSlotsInText(slotList, turn.text);
        this.sql(
          `INSERT INTO feedback (id, conversation_id, turn_index, text, intent, emotions, slots, rating, comment, status, created_at)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, 'new', ?)`,
        ).run(
          id,
          fields.conversationId,
          fields.turn,
          turn.text,
          fields.intent,
          fields.emotions,
          fields.slots,
          fields.rating,
          fields.comment,
          now(),
        );
      });
      return { id };
    });
  }

  listFeedback(options: ListFeedbackOptions = {}): Promise<StoredFeedback[]> {
    return this.task(() => {
      const where: string[] = [];
      const params: (string | number)[] = [];
      if (options.status !== undefined) {
        where.push('status = ?');
        params.push(checkStatus(options.status, 'options.status'));
      }
      if (options.since !== undefined) {
        where.push('created_at >= ?');
        params.push(isoTime(options.since, 'options.since'));
      }
      const limit = optionalCount(options.limit, 'options.limit');
      const sql =
        `SELECT ${FEEDBACK_COLUMNS} FROM feedback` +
        (where.length > 0 ? ` WHERE ${where.join(' AND ')}` : '') +
        ' ORDER BY seq' +
        (limit !== undefined ? ' LIMIT ?' : '');
      if (limit !== undefined) params.push(limit);
      return this.run('Cannot list feedback', () => (this.sql(sql).all(...params) as FeedbackRow[]).map(feedbackOf));
    });
  }

  markFeedback(ids: readonly string[], status: 'used' | 'pending-label', modelVersion?: string): Promise<void> {
    return this.task(() => {
      const list = checkMarkArgs(ids, status, modelVersion);
      this.write('Cannot mark feedback', () => {
        const update = this.sql('UPDATE feedback SET status = ?, used_by = ? WHERE id = ?');
        for (const id of list) {
          if (update.run(status, modelVersion ?? null, id).changes === 0) {
            throw new NotFoundError(`No feedback '${id}' (no feedback was marked)`);
          }
        }
      });
    });
  }

  addModelVersion(version: NewModelVersion): Promise<void> {
    return this.task(() => {
      const v = checkNewModelVersion(version);
      this.write(`Cannot add model version '${v.version}'`, () => {
        const has = this.sql('SELECT 1 FROM model_versions WHERE version = ?');
        if (has.get(v.version) !== undefined) {
          throw new StoreError(`Model version '${v.version}' already exists`, 'conflict');
        }
        if (v.parent !== null && has.get(v.parent) === undefined) {
          throw new NotFoundError(`No model version '${v.parent}' (the parent of '${v.version}')`);
        }
        this.sql(
          'INSERT INTO model_versions (version, dir, parent, metrics, note, created_at) VALUES (?, ?, ?, ?, ?, ?)',
        ).run(v.version, v.dir, v.parent, v.metrics, v.note, now());
      });
    });
  }

  activateModelVersion(version: string): Promise<void> {
    return this.task(() => {
      checkVersion(version, 'version');
      this.write(`Cannot activate model version '${version}'`, () => {
        const at = now();
        const found = this.sql('UPDATE model_versions SET activated_at = ? WHERE version = ?').run(at, version);
        if (found.changes === 0) throw new NotFoundError(`No model version '${version}'`);
        // One row holds the active version: "exactly one active" is the shape of the table.
        this.sql(
          `INSERT INTO active_model (id, version, activated_at) VALUES (1, ?, ?)
             ON CONFLICT (id) DO UPDATE SET version = excluded.version, activated_at = excluded.activated_at`,
        ).run(version, at);
      });
    });
  }

  activeModelVersion(): Promise<ModelVersion | null> {
    return this.task(() => {
      return this.run('Cannot read the active model version', () => {
        const row = this.sql(
          `SELECT ${VERSION_COLUMNS} FROM active_model a JOIN model_versions mv ON mv.version = a.version`,
        ).get() as VersionRow | undefined;
        return row === undefined ? null : versionOf(row);
      });
    });
  }

  listModelVersions(): Promise<ModelVersion[]> {
    return this.task(() => {
      return this.run('Cannot list model versions', () =>
        (
          this.sql(
            `SELECT ${VERSION_COLUMNS} FROM model_versions mv LEFT JOIN active_model a ON a.version = mv.version ORDER BY mv.seq`,
          ).all() as VersionRow[]
        ).map(versionOf),
      );
    });
  }

  async exportFeedback(
    write: (line: string) => void | Promise<void>,
    options: ExportFeedbackOptions = {},
  ): Promise<number> {
    if (typeof write !== 'function') throw new InputError('Expected a function for write');
    const since = options.since === undefined ? null : isoTime(options.since, 'options.since');
    const page = `SELECT ${FEEDBACK_COLUMNS} FROM feedback WHERE seq > ? AND (? IS NULL OR created_at >= ?) ORDER BY seq LIMIT ${String(EXPORT_PAGE)}`;
    let after = 0;
    let count = 0;
    for (;;) {
      const rows = this.run('Cannot export feedback', () => this.sql(page).all(after, since, since) as FeedbackRow[]);
      for (const row of rows) {
        await write(feedbackLine(feedbackOf(row)));
        count += 1;
      }
      const lastRow = rows.at(-1);
      if (rows.length < EXPORT_PAGE || lastRow === undefined) return count;
      after = lastRow.seq;
    }
  }

  async importFeedback(
    lines: AsyncIterable<string> | Iterable<string>,
  ): Promise<{ imported: number; skipped: number }> {
    const { records, duplicates } = await readFeedbackLines(lines);
    const imported = this.write('Cannot import feedback', () => {
      const insert = this.sql(
        `INSERT INTO feedback (id, conversation_id, turn_index, text, intent, emotions, slots, rating, comment, status, used_by, created_at)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (id) DO NOTHING`,
      );
      let n = 0;
      for (const r of records) {
        n += insert.run(
          r.id,
          r.conversationId,
          r.turn,
          r.text,
          r.intent,
          r.emotions,
          r.slots,
          r.rating,
          r.comment,
          r.status,
          r.usedBy,
          r.createdAt,
        ).changes;
      }
      return n;
    });
    return { imported, skipped: records.length - imported + duplicates };
  }

  close(): Promise<void> {
    return this.task(() => {
      if (this.closed) return;
      this.closed = true;
      this.db.close();
    });
  }
}

function codeOf(err: unknown): string {
  const code = (err as { code?: unknown } | null)?.code;
  return typeof code === 'string' ? code : '';
}

/** An SQLite error as a StoreError with its reason; the project's own errors pass unchanged. */
function mapError(err: unknown, what: string, busyTimeoutMs: number): Error {
  if (err instanceof ElmoError) return err;
  // By code, not `instanceof Database.SqliteError`: the addon keeps the class of the first
  // better-sqlite3 module that loaded it, and a second copy (jest's module registries) has another.
  const code = codeOf(err);
  const text = (err as { message?: unknown } | null)?.message;
  const message = typeof text === 'string' ? text : String(err);
  if (!code.startsWith('SQLITE_')) return new StoreError(`${what}: ${message}`, 'other', { cause: err });
  const reason = reasonOf(code);
  const detail =
    reason === 'locked'
      ? `the database is locked by another connection (waited ${String(busyTimeoutMs)} ms; retry, or raise busyTimeoutMs)`
      : reason === 'full'
        ? 'the disk (or the database size limit) is full'
        : reason === 'corrupt'
          ? 'the file is damaged or not an SQLite database'
          : message;
  return new StoreError(`${what}: ${detail} [${code}: ${message}]`, reason, { cause: err });
}
