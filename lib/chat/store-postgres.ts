/**
 * The Postgres backend of {@link ChatStore}, through a `pg.Pool`: for deployments where several
 * processes or machines share one store.
 *
 * Concurrency: an appended turn takes its index from a counter on the conversation row, in the
 * statement that inserts it (`WITH c AS (UPDATE conversations ... RETURNING ...) INSERT ...`):
 * the UPDATE locks the row, as `SELECT ... FOR UPDATE` would, so appends to one conversation
 * queue on that row and get distinct, consecutive indices, while appends to different
 * conversations never wait for each other. The active model version is one row
 * (`active_model`), so a swap is one upsert and two stores can never leave two versions active.
 * Multi-statement changes (marking feedback, activating, importing) run in one transaction on
 * one pooled connection. See docs/store.md.
 *
 * Failures: no connection within `connectTimeoutMs` (refused, timed out, unknown host, bad
 * credentials, no such database) is a StoreError of reason `'unreachable'`, never a hang; a
 * lock held past `busyTimeoutMs` (`lock_timeout`) is `'locked'`.
 */
import pg from 'pg';

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
  feedbackLine,
  isId,
  isoTime,
  jsonObject,
  makeModelVersion,
  makeStoredFeedback,
  makeTurn,
  newId,
  now,
  optionalCount,
  readFeedbackLines,
  redactUrl,
} from './store';

/**
 * The schema, one entry per version; entry i takes a database from version i to i + 1. Applied
 * in order, in one transaction, under an advisory lock (two stores opening a new database at
 * once do not both create it). Append only: a released entry never changes.
 */
const MIGRATIONS: readonly string[] = [
  `
  CREATE TABLE conversations (
    id TEXT PRIMARY KEY,
    created_at TIMESTAMPTZ NOT NULL,
    metadata JSONB NOT NULL,
    turn_count INTEGER NOT NULL DEFAULT 0
  );

  CREATE TABLE turns (
    conversation_id TEXT NOT NULL REFERENCES conversations (id),
    turn_index INTEGER NOT NULL,
    speaker TEXT NOT NULL CHECK (speaker IN ('user', 'bot')),
    text TEXT NOT NULL,
    at TIMESTAMPTZ NOT NULL,
    understanding JSONB,
    model_version TEXT,
    PRIMARY KEY (conversation_id, turn_index)
  );

  CREATE TABLE feedback (
    seq BIGSERIAL PRIMARY KEY,
    id TEXT NOT NULL UNIQUE,
    conversation_id TEXT NOT NULL,
    turn_index INTEGER NOT NULL,
    text TEXT NOT NULL,
    intent TEXT,
    emotions JSONB,
    slots JSONB,
    rating SMALLINT CHECK (rating IN (-1, 0, 1)),
    comment TEXT,
    status TEXT NOT NULL CHECK (status IN ('new', 'used', 'pending-label')),
    used_by TEXT,
    created_at TIMESTAMPTZ NOT NULL
  );
  CREATE INDEX feedback_status ON feedback (status, seq);
  CREATE INDEX feedback_created_at ON feedback (created_at);
  CREATE INDEX feedback_turn ON feedback (conversation_id, turn_index);

  CREATE TABLE model_versions (
    seq BIGSERIAL PRIMARY KEY,
    version TEXT NOT NULL UNIQUE,
    dir TEXT NOT NULL,
    parent TEXT REFERENCES model_versions (version),
    metrics JSONB,
    note TEXT,
    created_at TIMESTAMPTZ NOT NULL,
    activated_at TIMESTAMPTZ
  );

  CREATE TABLE active_model (
    id SMALLINT PRIMARY KEY CHECK (id = 1),
    version TEXT NOT NULL REFERENCES model_versions (version),
    activated_at TIMESTAMPTZ NOT NULL
  );
  `,
];

/** The schema version this code writes. */
export const POSTGRES_SCHEMA_VERSION = MIGRATIONS.length;

/** Key of the advisory lock that serializes migrations ('elmo' in ASCII). */
const MIGRATION_LOCK = 0x656c6d6f;
/** Rows of an export per query, and of an import per INSERT. */
const PAGE = 500;

interface TurnRow {
  turn_index: number;
  speaker: string;
  text: string;
  at: Date;
  understanding: unknown;
  model_version: string | null;
}

interface FeedbackRow {
  seq: string;
  id: string;
  conversation_id: string;
  turn_index: number;
  text: string;
  intent: string | null;
  emotions: unknown;
  slots: unknown;
  rating: number | null;
  comment: string | null;
  status: string;
  used_by: string | null;
  created_at: Date;
}

interface VersionRow {
  version: string;
  dir: string;
  parent: string | null;
  metrics: unknown;
  note: string | null;
  created_at: Date;
  activated_at: Date | null;
  active: boolean;
}

const TURN_COLUMNS = 'turn_index, speaker, text, at, understanding, model_version';
const FEEDBACK_COLUMNS =
  'seq, id, conversation_id, turn_index, text, intent, emotions, slots, rating, comment, status, used_by, created_at';
const VERSION_COLUMNS =
  'mv.version, mv.dir, mv.parent, mv.metrics, mv.note, mv.created_at, mv.activated_at, (a.version IS NOT NULL) AS active';

function turnOf(row: TurnRow): Turn {
  return makeTurn({
    index: row.turn_index,
    speaker: row.speaker,
    text: row.text,
    at: row.at.toISOString(),
    understanding: row.understanding,
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
    emotions: row.emotions,
    slots: row.slots,
    rating: row.rating,
    comment: row.comment,
    status: row.status,
    usedBy: row.used_by,
    createdAt: row.created_at.toISOString(),
  });
}

function versionOf(row: VersionRow): ModelVersion {
  return makeModelVersion({
    version: row.version,
    dir: row.dir,
    parent: row.parent,
    metrics: row.metrics,
    note: row.note,
    createdAt: row.created_at.toISOString(),
    active: row.active,
    activatedAt: row.activated_at === null ? null : row.activated_at.toISOString(),
  });
}

/** Node's codes for a connection that could not be made or was lost. */
const NETWORK_CODES = new Set([
  'ECONNREFUSED',
  'ECONNRESET',
  'ETIMEDOUT',
  'ENOTFOUND',
  'EAI_AGAIN',
  'EHOSTUNREACH',
  'ENETUNREACH',
  'EPIPE',
  'ENOENT',
]);

/**
 * SQLSTATEs by reason: class 08 (connection exception) and the ones below are 'unreachable',
 * class 23 (integrity constraint violation) is 'conflict'.
 */
const SQLSTATE_REASONS: Record<string, StoreErrorReason> = {
  '57P01': 'unreachable', // admin_shutdown
  '57P02': 'unreachable', // crash_shutdown
  '57P03': 'unreachable', // cannot_connect_now (starting up)
  '53300': 'unreachable', // too_many_connections
  '3D000': 'unreachable', // invalid_catalog_name: no such database
  '28000': 'unreachable', // invalid_authorization_specification
  '28P01': 'unreachable', // invalid_password
  '55P03': 'locked', // lock_not_available (lock_timeout)
  '40P01': 'locked', // deadlock_detected
  '40001': 'locked', // serialization_failure
  '53100': 'full', // disk_full
  XX001: 'corrupt', // data_corrupted
  XX002: 'corrupt', // index_corrupted
};

/**
 * The errors of an AggregateError (Node 20 tries every address of a host name and reports them
 * together), else null. Duck-typed: errors made by Node's core are not `instanceof` the globals
 * of another realm (a vm context, jest's sandbox).
 */
function innerErrors(err: unknown): unknown[] | null {
  const errors = (err as { errors?: unknown } | null)?.errors;
  return Array.isArray(errors) && errors.length > 0 ? errors : null;
}

function codeOf(err: unknown): string {
  const code = (err as { code?: unknown } | null)?.code;
  if (typeof code === 'string' && code !== '') return code;
  const first = (innerErrors(err)?.[0] as { code?: unknown } | null | undefined)?.code;
  return typeof first === 'string' ? first : '';
}

function messageText(err: unknown): string {
  const message = (err as { message?: unknown } | null)?.message;
  return typeof message === 'string' ? message : String(err);
}

function messageOf(err: unknown): string {
  const own = messageText(err);
  const inner = innerErrors(err);
  return own === '' && inner !== null ? inner.map(messageText).join('; ') : own;
}

function reasonOf(err: unknown): StoreErrorReason {
  const code = codeOf(err);
  if (NETWORK_CODES.has(code) || code.startsWith('08')) return 'unreachable';
  const reason = SQLSTATE_REASONS[code];
  if (reason !== undefined) return reason;
  if (code.startsWith('23')) return 'conflict';
  const message = messageOf(err);
  if (
    /timeout expired|timeout exceeded when trying to connect|Connection terminated|Query read timeout/.test(message)
  ) {
    return 'unreachable';
  }
  return 'other';
}

/** {@link ChatStore} on a Postgres database; made by {@link openStore} for a `postgres://` URL. */
export class PostgresStore implements ChatStore {
  readonly kind = 'postgres' as const;
  /** The connection pool, for what the interface does not cover. */
  readonly pool: pg.Pool;
  /** The URL with its password hidden, for messages. */
  readonly url: string;
  private readonly connectTimeoutMs: number;
  private readonly queryTimeoutMs: number;
  private closed = false;
  private ended: Promise<void> | undefined;

  private constructor(pool: pg.Pool, url: string, connectTimeoutMs: number, queryTimeoutMs: number) {
    this.pool = pool;
    this.url = redactUrl(url);
    this.connectTimeoutMs = connectTimeoutMs;
    this.queryTimeoutMs = queryTimeoutMs;
  }

  /** Connects (failing with reason 'unreachable' after `connectTimeoutMs`), then creates or migrates the schema. */
  static async open(url: string, options: OpenStoreOptions = {}): Promise<PostgresStore> {
    const connectTimeoutMs = options.connectTimeoutMs ?? 5000;
    const queryTimeoutMs = options.queryTimeoutMs ?? 30000;
    const config: pg.PoolConfig = {
      connectionString: url,
      max: options.poolSize ?? 10,
      connectionTimeoutMillis: connectTimeoutMs,
      lock_timeout: options.busyTimeoutMs ?? 5000,
      application_name: 'elmo-chat',
    };
    if (queryTimeoutMs > 0) config.query_timeout = queryTimeoutMs;
    let pool: pg.Pool;
    try {
      pool = new pg.Pool(config);
    } catch (err) {
      throw new InputError(`Cannot use the store URL ${redactUrl(url)}: ${messageOf(err)}`);
    }
    // An idle pooled connection that the server drops is discarded by the pool; without a
    // listener its 'error' event would end the process. The next query connects afresh.
    pool.on('error', () => undefined);
    const store = new PostgresStore(pool, url, connectTimeoutMs, queryTimeoutMs);
    try {
      await store.transaction('Cannot open the store', async (client) => {
        await client.query('SELECT pg_advisory_xact_lock($1)', [MIGRATION_LOCK]);
        await client.query('CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)');
        const row = (await client.query<{ version: number }>('SELECT version FROM schema_version')).rows[0];
        if (row === undefined) await client.query('INSERT INTO schema_version (version) VALUES (0)');
        const from = row?.version ?? 0;
        if (from > MIGRATIONS.length) {
          throw new StoreError(
            `${store.url} has schema version ${String(from)}, newer than the ${String(MIGRATIONS.length)} this ` +
              'elmo-chat knows: open it with the newer elmo-chat that wrote it',
            'other',
          );
        }
        for (let v = from; v < MIGRATIONS.length; v++) await client.query(MIGRATIONS[v] ?? '');
        if (from < MIGRATIONS.length) {
          await client.query('UPDATE schema_version SET version = $1', [MIGRATIONS.length]);
        }
      });
    } catch (err) {
      store.closed = true;
      await pool.end().catch(() => undefined);
      throw err;
    }
    return store;
  }

  /** A StoreError (with its reason) for a failure of `what`; the project's own errors pass unchanged. */
  private mapError(err: unknown, what: string): Error {
    if (err instanceof ElmoError) return err;
    const reason = reasonOf(err);
    const code = codeOf(err);
    const raw = `${code !== '' ? `${code}: ` : ''}${messageOf(err)}`;
    let detail = raw;
    if (reason === 'unreachable') {
      detail = /timeout expired|timeout exceeded|connection timeout/.test(raw)
        ? `no connection to the Postgres server within ${String(this.connectTimeoutMs)} ms [${raw}]`
        : /Query read timeout/.test(raw)
          ? `the Postgres server did not answer within ${String(this.queryTimeoutMs)} ms [${raw}]`
          : `cannot reach the Postgres server or database (is it running, and is the URL right?) [${raw}]`;
    } else if (reason === 'locked') {
      detail = `a lock held by another connection was not released in time (retry, or raise busyTimeoutMs) [${raw}]`;
    }
    return new StoreError(`${what} (${this.url}): ${detail}`, reason, { cause: err });
  }

  /** Runs `fn` with the store open; what it throws rejects, mapped to the project's errors. */
  private async call<T>(what: string, fn: () => Promise<T>): Promise<T> {
    if (this.closed) throw new DisposedError(`The store ${this.url} was used after close()`);
    try {
      return await fn();
    } catch (err) {
      throw this.mapError(err, what);
    }
  }

  /** Runs `fn` in one transaction on one pooled connection: COMMIT when it resolves, ROLLBACK when it throws. */
  private transaction<T>(what: string, fn: (client: pg.PoolClient) => Promise<T>): Promise<T> {
    return this.call(what, async () => {
      const client = await this.pool.connect();
      let broken = false;
      try {
        await client.query('BEGIN');
        const result = await fn(client);
        await client.query('COMMIT');
        return result;
      } catch (err) {
        await client.query('ROLLBACK').catch(() => {
          broken = true;
        });
        throw err;
      } finally {
        // A connection whose ROLLBACK failed is in an unknown state: destroyed, not pooled.
        client.release(broken);
      }
    });
  }

  private async exists(id: string): Promise<boolean> {
    return (await this.pool.query('SELECT 1 FROM conversations WHERE id = $1', [id])).rowCount === 1;
  }

  createConversation(options: CreateConversationOptions = {}): Promise<string> {
    return this.call('Cannot create a conversation', async () => {
      if (options === null || typeof options !== 'object') throw new InputError('options must be an object');
      const id = options.id === undefined ? newId() : checkId(options.id, 'options.id');
      const metadata = options.metadata === undefined ? '{}' : jsonObject(options.metadata, 'options.metadata');
      const r = await this.pool.query(
        'INSERT INTO conversations (id, created_at, metadata) VALUES ($1, $2, $3::jsonb) ON CONFLICT (id) DO NOTHING',
        [id, now(), metadata],
      );
      if (r.rowCount === 0) throw new StoreError(`Conversation '${id}' already exists`, 'conflict');
      return id;
    });
  }

  hasConversation(id: string): Promise<boolean> {
    return this.call('Cannot read conversations', async () => {
      if (typeof id !== 'string') checkId(id, 'id');
      return isId(id) && (await this.exists(id));
    });
  }

  getConversation(id: string): Promise<ConversationInfo> {
    return this.call(`Cannot read conversation '${id}'`, async () => {
      checkId(id, 'id');
      const row = (
        await this.pool.query<{ id: string; created_at: Date; metadata: Record<string, unknown>; turn_count: number }>(
          'SELECT id, created_at, metadata, turn_count FROM conversations WHERE id = $1',
          [id],
        )
      ).rows[0];
      if (row === undefined) throw new NotFoundError(`No conversation '${id}'`);
      return { id: row.id, createdAt: row.created_at.toISOString(), metadata: row.metadata, turns: row.turn_count };
    });
  }

  appendTurn(conversationId: string, turn: NewTurn): Promise<Turn> {
    return this.call(`Cannot append a turn to conversation '${conversationId}'`, async () => {
      checkId(conversationId, 'conversationId');
      const t = checkNewTurn(turn);
      // One statement: the UPDATE locks the conversation row until the INSERT commits, so
      // concurrent appends queue there and each reads the counter the one before it left.
      const r = await this.pool.query<{ turn_index: number }>(
        `WITH c AS (
           UPDATE conversations SET turn_count = turn_count + 1 WHERE id = $1 RETURNING turn_count - 1 AS idx
         )
         INSERT INTO turns (conversation_id, ${TURN_COLUMNS})
         SELECT $1, c.idx, $2, $3, $4, $5::jsonb, $6 FROM c
         RETURNING turn_index`,
        [conversationId, t.speaker, t.text, t.at, t.understanding, t.modelVersion],
      );
      const row = r.rows[0];
      if (row === undefined) throw new NotFoundError(`No conversation '${conversationId}'`);
      return makeTurn({
        index: row.turn_index,
        speaker: t.speaker,
        text: t.text,
        at: t.at,
        understanding: t.understanding === null ? null : JSON.parse(t.understanding),
        modelVersion: t.modelVersion,
      });
    });
  }

  getTurns(conversationId: string, options: GetTurnsOptions = {}): Promise<Turn[]> {
    return this.call(`Cannot read the turns of conversation '${conversationId}'`, async () => {
      checkId(conversationId, 'conversationId');
      const last = optionalCount(options.last, 'options.last');
      const rows =
        last === undefined
          ? (
              await this.pool.query<TurnRow>(
                `SELECT ${TURN_COLUMNS} FROM turns WHERE conversation_id = $1 ORDER BY turn_index`,
                [conversationId],
              )
            ).rows
          : (
              await this.pool.query<TurnRow>(
                `SELECT ${TURN_COLUMNS} FROM turns WHERE conversation_id = $1 ORDER BY turn_index DESC LIMIT $2`,
                [conversationId, last],
              )
            ).rows.reverse();
      if (rows.length === 0 && !(await this.exists(conversationId))) {
        throw new NotFoundError(`No conversation '${conversationId}'`);
      }
      return rows.map(turnOf);
    });
  }

  addFeedback(feedback: Feedback): Promise<{ id: string }> {
    return this.call('Cannot add feedback', async () => {
      const { fields, slotList } = checkFeedback(feedback);
      // Turns never change once appended: reading the turn, then inserting, needs no lock.
      const turn = (
        await this.pool.query<{ speaker: string; text: string }>(
          'SELECT speaker, text FROM turns WHERE conversation_id = $1 AND turn_index = $2',
          [fields.conversationId, fields.turn],
        )
      ).rows[0];
      if (turn === undefined) {
        const conv = (
          await this.pool.query<{ turn_count: number }>('SELECT turn_count FROM conversations WHERE id = $1', [
            fields.conversationId,
          ])
        ).rows[0];
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
      const id = newId();
      await this.pool.query(
        `INSERT INTO feedback (id, conversation_id, turn_index, text, intent, emotions, slots, rating, comment, status, created_at)
         VALUES ($1, $2, $3, $4, $5, $6::jsonb, $7::jsonb, $8, $9, 'new', $10)`,
        [
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
        ],
      );
      return { id };
    });
  }

  listFeedback(options: ListFeedbackOptions = {}): Promise<StoredFeedback[]> {
    return this.call('Cannot list feedback', async () => {
      const where: string[] = [];
      const params: (string | number)[] = [];
      if (options.status !== undefined) {
        params.push(checkStatus(options.status, 'options.status'));
        where.push(`status = $${String(params.length)}`);
      }
      if (options.since !== undefined) {
        params.push(isoTime(options.since, 'options.since'));
        where.push(`created_at >= $${String(params.length)}`);
      }
      const limit = optionalCount(options.limit, 'options.limit');
      const sql =
        `SELECT ${FEEDBACK_COLUMNS} FROM feedback` +
        (where.length > 0 ? ` WHERE ${where.join(' AND ')}` : '') +
        ' ORDER BY seq' +
        (limit !== undefined ? ` LIMIT ${String(limit)}` : '');
      return (await this.pool.query<FeedbackRow>(sql, params)).rows.map(feedbackOf);
    });
  }

  markFeedback(ids: readonly string[], status: 'used' | 'pending-label', modelVersion?: string): Promise<void> {
    return this.transaction('Cannot mark feedback', async (client) => {
      const list = checkMarkArgs(ids, status, modelVersion);
      const r = await client.query<{ id: string }>(
        'UPDATE feedback SET status = $1, used_by = $2 WHERE id = ANY($3::text[]) RETURNING id',
        [status, modelVersion ?? null, list],
      );
      if (r.rows.length !== list.length) {
        const found = new Set(r.rows.map((row) => row.id));
        const missing = list.find((id) => !found.has(id)) ?? '';
        throw new NotFoundError(`No feedback '${missing}' (no feedback was marked)`);
      }
    });
  }

  addModelVersion(version: NewModelVersion): Promise<void> {
    return this.call('Cannot add a model version', async () => {
      const v = checkNewModelVersion(version);
      let r: pg.QueryResult;
      try {
        r = await this.pool.query(
          `INSERT INTO model_versions (version, dir, parent, metrics, note, created_at)
           VALUES ($1, $2, $3, $4::jsonb, $5, $6) ON CONFLICT (version) DO NOTHING`,
          [v.version, v.dir, v.parent, v.metrics, v.note, now()],
        );
      } catch (err) {
        if (codeOf(err) === '23503') {
          throw new NotFoundError(`No model version '${v.parent ?? ''}' (the parent of '${v.version}')`);
        }
        throw err;
      }
      if (r.rowCount === 0) throw new StoreError(`Model version '${v.version}' already exists`, 'conflict');
    });
  }

  activateModelVersion(version: string): Promise<void> {
    return this.transaction(`Cannot activate model version '${version}'`, async (client) => {
      checkVersion(version, 'version');
      const at = now();
      const found = await client.query('UPDATE model_versions SET activated_at = $2 WHERE version = $1', [version, at]);
      if (found.rowCount === 0) throw new NotFoundError(`No model version '${version}'`);
      // One row holds the active version: "exactly one active" is the shape of the table, and
      // concurrent swaps queue on that row.
      await client.query(
        `INSERT INTO active_model (id, version, activated_at) VALUES (1, $1, $2)
         ON CONFLICT (id) DO UPDATE SET version = excluded.version, activated_at = excluded.activated_at`,
        [version, at],
      );
    });
  }

  activeModelVersion(): Promise<ModelVersion | null> {
    return this.call('Cannot read the active model version', async () => {
      const row = (
        await this.pool.query<VersionRow>(
          `SELECT ${VERSION_COLUMNS} FROM active_model a JOIN model_versions mv ON mv.version = a.version`,
        )
      ).rows[0];
      return row === undefined ? null : versionOf(row);
    });
  }

  listModelVersions(): Promise<ModelVersion[]> {
    return this.call('Cannot list model versions', async () =>
      (
        await this.pool.query<VersionRow>(
          `SELECT ${VERSION_COLUMNS} FROM model_versions mv LEFT JOIN active_model a ON a.version = mv.version ORDER BY mv.seq`,
        )
      ).rows.map(versionOf),
    );
  }

  async exportFeedback(
    write: (line: string) => void | Promise<void>,
    options: ExportFeedbackOptions = {},
  ): Promise<number> {
    if (typeof write !== 'function') throw new InputError('Expected a function for write');
    const since = options.since === undefined ? null : isoTime(options.since, 'options.since');
    let after = '0';
    let count = 0;
    for (;;) {
      // Only the queries are the store's: an error of `write` reaches the caller as it is.
      const rows = await this.call('Cannot export feedback', async () => {
        const r = await this.pool.query<FeedbackRow>(
          `SELECT ${FEEDBACK_COLUMNS} FROM feedback
           WHERE seq > $1 AND ($2::timestamptz IS NULL OR created_at >= $2::timestamptz)
           ORDER BY seq LIMIT ${String(PAGE)}`,
          [after, since],
        );
        return r.rows;
      });
      for (const row of rows) {
        await write(feedbackLine(feedbackOf(row)));
        count += 1;
      }
      const lastRow = rows.at(-1);
      if (rows.length < PAGE || lastRow === undefined) return count;
      after = lastRow.seq;
    }
  }

  async importFeedback(
    lines: AsyncIterable<string> | Iterable<string>,
  ): Promise<{ imported: number; skipped: number }> {
    const { records, duplicates } = await readFeedbackLines(lines);
    const imported = await this.transaction('Cannot import feedback', async (client) => {
      let n = 0;
      for (let start = 0; start < records.length; start += PAGE) {
        const batch = records.slice(start, start + PAGE);
        const params: unknown[] = [];
        const values = batch.map((r) => {
          const base = params.length;
          params.push(
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
          );
          const p = (i: number): string => `$${String(base + i)}`;
          return `(${p(1)}, ${p(2)}, ${p(3)}, ${p(4)}, ${p(5)}, ${p(6)}::jsonb, ${p(7)}::jsonb, ${p(8)}::smallint, ${p(9)}, ${p(10)}, ${p(11)}, ${p(12)}::timestamptz)`;
        });
        const r = await client.query(
          `INSERT INTO feedback (id, conversation_id, turn_index, text, intent, emotions, slots, rating, comment, status, used_by, created_at)
           VALUES ${values.join(', ')} ON CONFLICT (id) DO NOTHING`,
          params,
        );
        n += r.rowCount ?? 0;
      }
      return n;
    });
    return { imported, skipped: records.length - imported + duplicates };
  }

  close(): Promise<void> {
    if (!this.closed) {
      this.closed = true;
      this.ended = this.pool.end().catch(() => undefined);
    }
    return this.ended ?? Promise.resolve();
  }
}
