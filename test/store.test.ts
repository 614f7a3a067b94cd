// The chat store (lib/chat/store*.ts): one suite run on both backends (SQLite on a temporary
// file; Postgres on a throwaway server from test/helpers-postgres.ts, a fresh database per test),
// then what only one backend has: SQLite's file checks and size limit, Postgres' unreachable
// server. Without Postgres binaries the Postgres cases are reported as skipped, by name.
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as path from 'node:path';

import Database from 'better-sqlite3';
import pg from 'pg';

import { NotFoundError, StoreError } from '../lib/errors';
import { openStore, parseStoreUrl, redactUrl } from '../lib/chat/store';
import type { ChatStore, StoredFeedback } from '../lib/chat/store';
import { SqliteStore } from '../lib/chat/store-sqlite';
import type { Understanding } from '../lib/chat/types';
import { rejection, tmpDir } from './helpers';
import { findPostgres, freePort, startPostgres } from './helpers-postgres';
import type { PostgresServer } from './helpers-postgres';

const PG = findPostgres();
let server: PostgresServer | undefined;
let tmp: string;

beforeAll(async () => {
  tmp = tmpDir('store');
  if (PG.ok) server = await startPostgres(PG);
}, 120_000);

afterAll(async () => {
  await server?.stop();
  fs.rmSync(tmp, { recursive: true, force: true });
}, 30_000);

/** How the shared suite reaches a backend. */
interface Backend {
  /** A URL of a new, empty store. */
  newUrl(): Promise<string>;
  /**
   * Holds the write lock from another connection until the returned function is called:
   * SQLite `BEGIN EXCLUSIVE`, Postgres `LOCK TABLE ... IN ACCESS EXCLUSIVE MODE`.
   */
  lock(url: string): Promise<() => Promise<void>>;
  /** Sets schema_version from another connection. */
  setSchemaVersion(url: string, version: number): Promise<void>;
}

let files = 0;
const sqliteBackend: Backend = {
  newUrl: () => {
    files += 1;
    return Promise.resolve(`sqlite:${path.join(tmp, `store-${String(files)}.db`)}`);
  },
  lock: (url) => {
    const db = new Database(parseFile(url));
    db.exec('BEGIN EXCLUSIVE');
    return Promise.resolve(() => {
      db.exec('COMMIT');
      db.close();
      return Promise.resolve();
    });
  },
  setSchemaVersion: (url, version) => {
    const db = new Database(parseFile(url));
    db.prepare('UPDATE schema_version SET version = ?').run(version);
    db.close();
    return Promise.resolve();
  },
};

const postgresBackend: Backend = {
  newUrl: () => {
    if (server === undefined) throw new Error('no Postgres server');
    return server.createDatabase();
  },
  lock: async (url) => {
    const client = new pg.Client({ connectionString: url });
    await client.connect();
    await client.query('BEGIN');
    await client.query('LOCK TABLE conversations, model_versions, feedback IN ACCESS EXCLUSIVE MODE');
    return async () => {
      await client.query('ROLLBACK');
      await client.end();
    };
  },
  setSchemaVersion: async (url, version) => {
    const client = new pg.Client({ connectionString: url });
    await client.connect();
    await client.query('UPDATE schema_version SET version = $1', [version]);
    await client.end();
  },
};

function parseFile(url: string): string {
  const target = parseStoreUrl(url);
  if (target.kind !== 'sqlite') throw new Error(`not an SQLite URL: ${url}`);
  return target.file;
}

const understanding: Understanding = {
  intent: { label: 'book_table', score: 0.91 },
  intents: [
    { label: 'book_table', score: 0.91 },
    { label: 'cancel', score: 0.09 },
  ],
  emotions: [{ label: 'joy', score: 0.7 }],
  slots: [{ name: 'people', value: 'two', start: 17, end: 20, score: 0.88 }],
  outOfScope: false,
  truncated: false,
};

/** A store with one conversation: a user turn, a bot turn, a user turn. */
async function withDialogue(store: ChatStore): Promise<string> {
  const id = await store.createConversation();
  await store.appendTurn(id, { speaker: 'user', text: 'book a table for two', understanding, modelVersion: 'v1' });
  await store.appendTurn(id, { speaker: 'bot', text: 'For what time?' });
  await store.appendTurn(id, { speaker: 'user', text: 'at 8 in Paris' });
  return id;
}

/** The `reason` of a StoreError (undefined for other errors). */
function reasonOf(err: unknown): unknown {
  return err instanceof StoreError ? err.reason : undefined;
}

function sqlite(store: ChatStore): SqliteStore {
  if (!(store instanceof SqliteStore)) throw new Error(`expected an SQLite store, got ${store.kind}`);
  return store;
}

async function* asyncLines(lines: string[]): AsyncGenerator<string> {
  for (const line of lines) {
    await Promise.resolve();
    yield line;
  }
}

const backends: [string, Backend][] = [['sqlite', sqliteBackend]];
if (PG.ok) backends.push(['postgres', postgresBackend]);
else {
  describe.skip(`postgres store (skipped: ${PG.reason})`, () => {
    test.skip('every case of the shared store suite', () => undefined);
  });
}

describe.each(backends)('%s store', (kind, backend) => {
  const open: ChatStore[] = [];
  async function fresh(options?: Parameters<typeof openStore>[1]): Promise<{ store: ChatStore; url: string }> {
    const url = await backend.newUrl();
    const store = await openStore(url, options);
    open.push(store);
    return { store, url };
  }
  async function reopen(url: string, options?: Parameters<typeof openStore>[1]): Promise<ChatStore> {
    const store = await openStore(url, options);
    open.push(store);
    return store;
  }
  afterEach(async () => {
    await Promise.all(open.splice(0).map((s) => s.close()));
  });

  test('opens with the right kind', async () => {
    const { store } = await fresh();
    expect(store.kind).toBe(kind);
  });

  test('creates conversations with random URL-safe ids or given ones; a taken id is a conflict', async () => {
    const { store } = await fresh();
    const a = await store.createConversation();
    const b = await store.createConversation({ metadata: { channel: 'web', user: { id: 7 } } });
    expect(a).toMatch(/^[A-Za-z0-9_-]{22}$/);
    expect(b).not.toBe(a);
    expect(await store.createConversation({ id: 'support-42' })).toBe('support-42');
    expect(await store.hasConversation('support-42')).toBe(true);
    expect(await store.hasConversation('nope')).toBe(false);
    expect(await store.hasConversation('not a valid id!')).toBe(false);
    const info = await store.getConversation(b);
    expect(info).toEqual({
      id: b,
      createdAt: expect.any(String),
      metadata: { channel: 'web', user: { id: 7 } },
      turns: 0,
    });
    expect(Date.parse(info.createdAt)).toBeGreaterThan(Date.now() - 60_000);

    const taken = await rejection(store.createConversation({ id: 'support-42' }));
    expect(taken).toBeInstanceOf(StoreError);
    expect(reasonOf(taken)).toBe('conflict');
    expect((await rejection(store.createConversation({ id: 'has space' }))).code).toBe('ERR_INPUT');
    expect((await rejection(store.createConversation({ metadata: [] as never }))).code).toBe('ERR_INPUT');
    expect(await rejection(store.getConversation('missing'))).toBeInstanceOf(NotFoundError);
  });

  test('appends turns with consecutive indices and reads them back as written', async () => {
    const { store } = await fresh();
    const id = await store.createConversation();
    const first = await store.appendTurn(id, {
      speaker: 'user',
      text: 'book a table for two',
      understanding,
      modelVersion: 'v1',
      at: '2025-03-01T10:00:00+01:00',
    });
    expect(first).toEqual({
      index: 0,
      speaker: 'user',
      text: 'book a table for two',
      understanding,
      modelVersion: 'v1',
      at: '2025-03-01T09:00:00.000Z',
    });
    const second = await store.appendTurn(id, { speaker: 'bot', text: 'For what time?' });
    expect(second).toEqual({ index: 1, speaker: 'bot', text: 'For what time?', at: expect.any(String) });
    expect('understanding' in second).toBe(false);
    await store.appendTurn(id, { speaker: 'user', text: '' });

    const turns = await store.getTurns(id);
    expect(turns.map((t) => t.index)).toEqual([0, 1, 2]);
    expect(turns[0]).toEqual(first);
    expect(turns[1]).toEqual(second);
    expect((await store.getTurns(id, { last: 2 })).map((t) => t.index)).toEqual([1, 2]);
    expect((await store.getTurns(id, { last: 10 })).map((t) => t.index)).toEqual([0, 1, 2]);
    expect((await store.getConversation(id)).turns).toBe(3);
    expect(await store.getTurns(await store.createConversation())).toEqual([]);
  });

  test('unknown conversations are NotFoundError; bad turns are ERR_INPUT', async () => {
    const { store } = await fresh();
    const missing = await rejection(store.appendTurn('missing', { speaker: 'user', text: 'hi' }));
    expect(missing).toBeInstanceOf(NotFoundError);
    expect(missing.code).toBe('ERR_NOT_FOUND');
    expect(missing.message).toContain("'missing'");
    expect(await rejection(store.getTurns('missing'))).toBeInstanceOf(NotFoundError);
    const id = await store.createConversation();
    expect((await rejection(store.appendTurn(id, { speaker: 'agent' as never, text: 'x' }))).code).toBe('ERR_INPUT');
    expect((await rejection(store.appendTurn(id, { speaker: 'user', text: 3 as never }))).code).toBe('ERR_INPUT');
    expect((await rejection(store.appendTurn(id, { speaker: 'user', text: 'x', at: 'yesterday' }))).code).toBe(
      'ERR_INPUT',
    );
    expect((await rejection(store.getTurns(id, { last: 0 }))).code).toBe('ERR_INPUT');
    // Nothing was appended by the failed calls.
    expect(await store.getTurns(id)).toEqual([]);
  });

  test('20 concurrent appends to one conversation, from two stores, get distinct consecutive indices', async () => {
    const { store, url } = await fresh();
    const other = await reopen(url);
    const id = await store.createConversation();
    const appended = await Promise.all(
      Array.from({ length: 20 }, (_, i) =>
        (i % 2 === 0 ? store : other).appendTurn(id, {
          speaker: i % 3 === 0 ? 'bot' : 'user',
          text: `turn ${String(i)}`,
        }),
      ),
    );
    expect(appended.map((t) => t.index).sort((a, b) => a - b)).toEqual(Array.from({ length: 20 }, (_, i) => i));
    const turns = await other.getTurns(id);
    expect(turns.map((t) => t.index)).toEqual(Array.from({ length: 20 }, (_, i) => i));
    expect(turns.map((t) => t.text).sort()).toEqual(Array.from({ length: 20 }, (_, i) => `turn ${String(i)}`).sort());
    for (const t of appended) expect(turns[t.index]?.text).toBe(t.text);
    expect((await store.getConversation(id)).turns).toBe(20);
  });

  test('feedback is checked against its turn and stored with status new and the turn text', async () => {
    const { store } = await fresh();
    const id = await withDialogue(store);
    const { id: fid } = await store.addFeedback({
      conversationId: id,
      turn: 0,
      intent: 'reserve_table', // a label the model does not have: kept as it is
      emotions: ['joy'],
      slots: [{ name: 'people', start: 17, end: 20 }],
      rating: 1,
      comment: 'right answer, wrong intent name',
    });
    expect(fid).toMatch(/^[A-Za-z0-9_-]{22}$/);
    const [stored] = await store.listFeedback();
    expect(stored).toEqual({
      id: fid,
      conversationId: id,
      turn: 0,
      text: 'book a table for two',
      intent: 'reserve_table',
      emotions: ['joy'],
      slots: [{ name: 'people', start: 17, end: 20 }],
      rating: 1,
      comment: 'right answer, wrong intent name',
      status: 'new',
      createdAt: expect.any(String),
    });
    await store.addFeedback({ conversationId: id, turn: 2, emotions: [] });

    const bad: [string, unknown, string][] = [
      ['a bot turn', { conversationId: id, turn: 1, intent: 'x' }, 'ERR_INPUT'],
      ['a missing turn', { conversationId: id, turn: 9, intent: 'x' }, 'ERR_NOT_FOUND'],
      ['a missing conversation', { conversationId: 'nope', turn: 0, intent: 'x' }, 'ERR_NOT_FOUND'],
      ['an empty intent', { conversationId: id, turn: 0, intent: ' ' }, 'ERR_INPUT'],
      ['an empty emotion', { conversationId: id, turn: 0, emotions: ['joy', ''] }, 'ERR_INPUT'],
      ['a repeated emotion', { conversationId: id, turn: 0, emotions: ['joy', 'joy'] }, 'ERR_INPUT'],
      [
        'a slot past the text',
        { conversationId: id, turn: 0, slots: [{ name: 'p', start: 17, end: 21 }] },
        'ERR_INPUT',
      ],
      ['an empty slot', { conversationId: id, turn: 0, slots: [{ name: 'p', start: 3, end: 3 }] }, 'ERR_INPUT'],
      ['an unnamed slot', { conversationId: id, turn: 0, slots: [{ name: '', start: 0, end: 4 }] }, 'ERR_INPUT'],
      [
        'overlapping slots',
        {
          conversationId: id,
          turn: 0,
          slots: [
            { name: 'a', start: 0, end: 6 },
            { name: 'b', start: 5, end: 8 },
          ],
        },
        'ERR_INPUT',
      ],
      ['a rating of 2', { conversationId: id, turn: 0, rating: 2 }, 'ERR_INPUT'],
      ['nothing to say', { conversationId: id, turn: 0 }, 'ERR_INPUT'],
      ['a negative turn', { conversationId: id, turn: -1, intent: 'x' }, 'ERR_INPUT'],
    ];
    for (const [what, fb, code] of bad) {
      const err = await rejection(store.addFeedback(fb as never));
      expect([what, err.code]).toEqual([what, code]);
    }
    expect(await store.listFeedback()).toHaveLength(2);
  });

  test('lists feedback by status, time and count, and marks it in one transaction', async () => {
    const { store } = await fresh();
    const id = await withDialogue(store);
    const ids: string[] = [];
    for (let i = 0; i < 5; i++)
      ids.push((await store.addFeedback({ conversationId: id, turn: 2, intent: `i${String(i)}` })).id);
    expect((await store.listFeedback()).map((f) => f.id)).toEqual(ids);
    expect((await store.listFeedback({ limit: 2 })).map((f) => f.id)).toEqual(ids.slice(0, 2));

    await store.markFeedback([ids[0]!, ids[1]!, ids[0]!], 'used', 'v2');
    await store.markFeedback([ids[2]!], 'pending-label');
    expect((await store.listFeedback({ status: 'new' })).map((f) => f.id)).toEqual(ids.slice(3));
    const used = await store.listFeedback({ status: 'used' });
    expect(used.map((f) => [f.id, f.usedBy])).toEqual([
      [ids[0], 'v2'],
      [ids[1], 'v2'],
    ]);
    expect((await store.listFeedback({ status: 'pending-label' }))[0]).not.toHaveProperty('usedBy');

    const unknown = await rejection(store.markFeedback([ids[3]!, 'no-such-feedback'], 'used', 'v3'));
    expect(unknown).toBeInstanceOf(NotFoundError);
    expect(unknown.message).toContain('no-such-feedback');
    // The known id of the failed call was not marked either.
    expect((await store.listFeedback({ status: 'new' })).map((f) => f.id)).toEqual(ids.slice(3));
    expect((await rejection(store.markFeedback(ids, 'new' as never))).code).toBe('ERR_INPUT');

    const future = new Date(Date.now() + 3_600_000).toISOString();
    expect(await store.listFeedback({ since: future })).toEqual([]);
    expect(await store.listFeedback({ since: '2000-01-01' })).toHaveLength(5);
    expect((await rejection(store.listFeedback({ since: 'last week' }))).code).toBe('ERR_INPUT');
  });

  test('keeps every model version; exactly one is active and a swap keeps the previous one', async () => {
    const { store } = await fresh();
    expect(await store.activeModelVersion()).toBeNull();
    await store.addModelVersion({ version: 'v1', dir: '/models/v1', metrics: { accuracy: 0.91, f1: { macro: 0.88 } } });
    await store.addModelVersion({ version: 'v2', dir: '/models/v2', parent: 'v1', note: 'refined on 120 feedback' });
    expect(await store.activeModelVersion()).toBeNull();
    expect((await store.listModelVersions()).map((v) => v.active)).toEqual([false, false]);

    await store.activateModelVersion('v1');
    await store.activateModelVersion('v2');
    const active = await store.activeModelVersion();
    expect(active).toEqual({
      version: 'v2',
      dir: '/models/v2',
      parent: 'v1',
      note: 'refined on 120 feedback',
      createdAt: expect.any(String),
      active: true,
      activatedAt: expect.any(String),
    });
    const list = await store.listModelVersions();
    expect(list.map((v) => [v.version, v.active])).toEqual([
      ['v1', false],
      ['v2', true],
    ]);
    expect(list[0]).toEqual({
      version: 'v1',
      dir: '/models/v1',
      metrics: { accuracy: 0.91, f1: { macro: 0.88 } },
      createdAt: expect.any(String),
      active: false,
      activatedAt: expect.any(String),
    });
    // Roll back: the previous version serves again.
    await store.activateModelVersion('v1');
    expect((await store.activeModelVersion())?.version).toBe('v1');

    const missing = await rejection(store.activateModelVersion('v9'));
    expect(missing).toBeInstanceOf(NotFoundError);
    expect((await store.activeModelVersion())?.version).toBe('v1');
    const dup = await rejection(store.addModelVersion({ version: 'v1', dir: '/elsewhere' }));
    expect(reasonOf(dup)).toBe('conflict');
    expect(await rejection(store.addModelVersion({ version: 'v3', dir: '/m', parent: 'v0' }))).toBeInstanceOf(
      NotFoundError,
    );
    expect((await rejection(store.addModelVersion({ version: '', dir: '/m' }))).code).toBe('ERR_INPUT');
    expect((await store.listModelVersions()).map((v) => v.version)).toEqual(['v1', 'v2']);
  });

  test('concurrent swaps from two stores on one database leave exactly one version active', async () => {
    const { store, url } = await fresh();
    const other = await reopen(url);
    const versions = ['a', 'b', 'c', 'd'];
    for (const v of versions) await store.addModelVersion({ version: v, dir: `/models/${v}` });
    const seen: number[] = [];
    const swaps = Array.from({ length: 40 }, (_, i) =>
      (i % 2 === 0 ? store : other).activateModelVersion(versions[(i * 7) % versions.length]!),
    );
    const reads = Array.from({ length: 10 }, async () => {
      const list = await other.listModelVersions();
      seen.push(list.filter((v) => v.active).length);
    });
    await Promise.all([...swaps, ...reads]);
    expect(seen.every((n) => n === 1)).toBe(true);
    const a = await store.listModelVersions();
    const b = await other.listModelVersions();
    expect(a.filter((v) => v.active)).toHaveLength(1);
    expect(b).toEqual(a);
    expect((await other.activeModelVersion())?.version).toBe(a.find((v) => v.active)?.version);
  });

  test('exports feedback as JSON lines and imports them idempotently into another store', async () => {
    const { store } = await fresh();
    const id = await withDialogue(store);
    await store.addFeedback({
      conversationId: id,
      turn: 0,
      intent: 'book_table',
      slots: [{ name: 'n', start: 17, end: 20 }],
    });
    await store.addFeedback({ conversationId: id, turn: 2, rating: -1, comment: 'wrong city' });
    const { id: used } = await store.addFeedback({ conversationId: id, turn: 2, emotions: ['anger'] });
    await store.markFeedback([used], 'used', 'v2');

    const lines: string[] = [];
    expect(await store.exportFeedback((l) => void lines.push(l))).toBe(3);
    const parsed = lines.map((l) => JSON.parse(l) as StoredFeedback);
    expect(parsed).toEqual(await store.listFeedback());
    expect(parsed[0]?.text).toBe('book a table for two');
    let asyncCount = 0;
    expect(
      await store.exportFeedback(async () => {
        await Promise.resolve();
        asyncCount += 1;
      }),
    ).toBe(3);
    expect(asyncCount).toBe(3);
    expect(await store.exportFeedback(() => undefined, { since: '2999-01-01T00:00:00Z' })).toBe(0);

    // Another store, without the conversation: the lines stand on their own.
    const { store: target } = await fresh();
    expect(await target.importFeedback(asyncLines(['', ...lines, lines[0]!]))).toEqual({ imported: 3, skipped: 1 });
    expect(await target.listFeedback()).toEqual(await store.listFeedback());
    expect(await target.importFeedback(lines)).toEqual({ imported: 0, skipped: 3 });
    expect(await target.listFeedback()).toHaveLength(3);
    expect((await target.listFeedback({ status: 'used' }))[0]?.usedBy).toBe('v2');
  });

  test('exports past one page in order; an error of the writer reaches the caller unchanged', async () => {
    const { store } = await fresh();
    const lines = Array.from({ length: 1203 }, (_, i) =>
      JSON.stringify({
        id: `fb-${String(i).padStart(4, '0')}`,
        conversationId: 'elsewhere',
        turn: i % 7,
        text: `text ${String(i)}`,
        intent: `intent_${String(i % 5)}`,
        status: 'new',
        createdAt: new Date(Date.UTC(2025, 0, 1) + i * 1000).toISOString(),
      }),
    );
    expect(await store.importFeedback(lines)).toEqual({ imported: 1203, skipped: 0 });
    const out: string[] = [];
    expect(await store.exportFeedback((l) => void out.push(l))).toBe(1203);
    expect(out.map((l) => (JSON.parse(l) as StoredFeedback).id)).toEqual(
      lines.map((l) => (JSON.parse(l) as StoredFeedback).id),
    );
    expect(await store.exportFeedback(() => undefined, { since: '2025-01-01T00:10:00Z' })).toBe(1203 - 600);

    const broken = new Error('EPIPE: the reader went away');
    let written = 0;
    const err = await rejection(
      store.exportFeedback(() => {
        written += 1;
        if (written === 3) throw broken;
      }),
    );
    expect(err).toBe(broken);
  });

  test('an import with a bad line imports nothing and names the line', async () => {
    const { store } = await fresh();
    const id = await withDialogue(store);
    for (let i = 0; i < 4; i++) await store.addFeedback({ conversationId: id, turn: 0, intent: `i${String(i)}` });
    const lines: string[] = [];
    await store.exportFeedback((l) => void lines.push(l));
    const { store: target } = await fresh();

    const broken = [...lines.slice(0, 2), '{"id": "x1", "conversationId": "c", "turn": 0}', ...lines.slice(2)];
    const err = await rejection(target.importFeedback(broken));
    expect(err.code).toBe('ERR_INPUT');
    expect(err.message).toMatch(/^line 3/);
    const notJson = await rejection(target.importFeedback(asyncLines([lines[0]!, '{oops'])));
    expect(notJson.message).toMatch(/^line 2: not JSON/);
    const badSlot = { ...(JSON.parse(lines[1]!) as StoredFeedback), slots: [{ name: 's', start: 0, end: 99 }] };
    expect((await rejection(target.importFeedback([lines[0]!, JSON.stringify(badSlot)]))).message).toMatch(/^line 2/);
    expect(await target.listFeedback()).toEqual([]);
    expect(await target.importFeedback(lines)).toEqual({ imported: 4, skipped: 0 });
  });

  test('a write waiting for another connection lock fails as locked, and works once it is released', async () => {
    const { store, url } = await fresh({ busyTimeoutMs: 150 });
    const id = await store.createConversation();
    await store.addModelVersion({ version: 'v1', dir: '/m' });
    const release = await backend.lock(url);
    let released = false;
    try {
      const started = Date.now();
      const err = await rejection(store.appendTurn(id, { speaker: 'user', text: 'hello?' }));
      const waited = Date.now() - started;
      expect(err).toBeInstanceOf(StoreError);
      expect(reasonOf(err)).toBe('locked');
      expect(err.message).toMatch(/locked|lock/);
      expect(waited).toBeGreaterThanOrEqual(100);
      expect(waited).toBeLessThan(5000);
      expect(reasonOf(await rejection(store.activateModelVersion('v1')))).toBe('locked');
      await release();
      released = true;
    } finally {
      if (!released) await release();
    }
    expect((await store.appendTurn(id, { speaker: 'user', text: 'hello?' })).index).toBe(0);
    await store.activateModelVersion('v1');
    expect(await store.getTurns(id)).toHaveLength(1);
  });

  test('everything is still there after the store is closed and opened again', async () => {
    const { store, url } = await fresh();
    const id = await withDialogue(store);
    await store.addFeedback({ conversationId: id, turn: 0, intent: 'book_table' });
    await store.addModelVersion({ version: 'v1', dir: '/models/v1' });
    await store.addModelVersion({ version: 'v2', dir: '/models/v2', parent: 'v1' });
    await store.activateModelVersion('v2');
    const turns = await store.getTurns(id);
    const versions = await store.listModelVersions();
    await store.close();
    await store.close(); // a second close does nothing

    const again = await reopen(url);
    expect(await again.hasConversation(id)).toBe(true);
    expect(await again.getTurns(id)).toEqual(turns);
    expect(await again.listModelVersions()).toEqual(versions);
    expect((await again.activeModelVersion())?.version).toBe('v2');
    expect(await again.listFeedback()).toHaveLength(1);
    expect((await again.appendTurn(id, { speaker: 'bot', text: 'Done.' })).index).toBe(3);
  });

  test('a closed store rejects with ERR_DISPOSED', async () => {
    const { store } = await fresh();
    await store.close();
    expect((await rejection(store.createConversation())).code).toBe('ERR_DISPOSED');
    expect((await rejection(store.listModelVersions())).code).toBe('ERR_DISPOSED');
    expect((await rejection(store.importFeedback([]))).code).toBe('ERR_DISPOSED');
  });

  test('a database written by a newer schema is refused at open', async () => {
    const { store, url } = await fresh();
    await store.close();
    await backend.setSchemaVersion(url, 99);
    const err = await rejection(openStore(url));
    expect(err).toBeInstanceOf(StoreError);
    expect(err.message).toMatch(/schema version 99/);
  });
});

describe('store URLs', () => {
  test('parses file paths, sqlite: URLs, :memory: and postgres URLs', () => {
    expect(parseStoreUrl('data/chat.db')).toEqual({ kind: 'sqlite', file: 'data/chat.db' });
    expect(parseStoreUrl('sqlite:data/chat.db')).toEqual({ kind: 'sqlite', file: 'data/chat.db' });
    expect(parseStoreUrl('sqlite:/var/lib/chat.db')).toEqual({ kind: 'sqlite', file: '/var/lib/chat.db' });
    expect(parseStoreUrl('sqlite:///var/lib/chat.db')).toEqual({ kind: 'sqlite', file: '/var/lib/chat.db' });
    expect(parseStoreUrl(':memory:')).toEqual({ kind: 'sqlite', file: ':memory:' });
    expect(parseStoreUrl('sqlite::memory:')).toEqual({ kind: 'sqlite', file: ':memory:' });
    const url = 'postgres://elmo:secret@db.internal:5432/chat';
    expect(parseStoreUrl(url)).toEqual({ kind: 'postgres', url });
    expect(parseStoreUrl('postgresql://db/chat').kind).toBe('postgres');
    expect(() => parseStoreUrl('mysql://db/chat')).toThrow(/Unsupported store URL/);
    expect(() => parseStoreUrl('')).toThrow(/store URL/);
    expect(() => parseStoreUrl('sqlite:')).toThrow(/file after sqlite:/);
    expect(redactUrl(url)).toBe('postgres://elmo:***@db.internal:5432/chat');
  });

  test('bad open options are ERR_INPUT', async () => {
    expect((await rejection(openStore(':memory:', { busyTimeoutMs: -1 }))).code).toBe('ERR_INPUT');
    expect((await rejection(openStore(':memory:', { poolSize: 0 }))).code).toBe('ERR_INPUT');
  });
});

describe('sqlite store only', () => {
  test(':memory: stores are private and work like files', async () => {
    const a = await openStore(':memory:');
    const b = await openStore('sqlite::memory:');
    const id = await a.createConversation();
    expect(await a.hasConversation(id)).toBe(true);
    expect(await b.hasConversation(id)).toBe(false);
    await Promise.all([a.close(), b.close()]);
  });

  test('opens in WAL mode with foreign keys on, creating the folder, at schema version 1', async () => {
    const file = path.join(tmp, 'nested', 'deeper', 'chat.db');
    const store = sqlite(await openStore(file));
    expect(store).toBeInstanceOf(SqliteStore);
    expect(store.db.pragma('journal_mode', { simple: true })).toBe('wal');
    expect(store.db.pragma('foreign_keys', { simple: true })).toBe(1);
    expect(store.db.prepare('SELECT version FROM schema_version').pluck().get()).toBe(1);
    const tables = store.db
      .prepare("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")
      .pluck()
      .all() as string[];
    expect(tables).toEqual(['active_model', 'conversations', 'feedback', 'model_versions', 'schema_version', 'turns']);
    await store.close();
    expect(fs.existsSync(file)).toBe(true);
  });

  test('a file that is not a database is a clear corrupt error at open', async () => {
    const file = path.join(tmp, 'notes.db');
    fs.writeFileSync(file, 'these are my notes, not a database\n'.repeat(200));
    const err = await rejection(openStore(file));
    expect(err).toBeInstanceOf(StoreError);
    expect(reasonOf(err)).toBe('corrupt');
    expect(err.message).toContain(`${file}: it is not an SQLite database`);
    expect(fs.readFileSync(file, 'utf8')).toMatch(/^these are my notes/);
    const dir = await rejection(openStore(tmp));
    expect(dir.message).toMatch(/is a directory/);
  });

  test('a full database (max_page_count) fails as full, writes nothing of the import, and recovers', async () => {
    const source = await openStore(':memory:');
    const id = await withDialogue(source);
    const comment = 'x'.repeat(2000);
    for (let i = 0; i < 60; i++) await source.addFeedback({ conversationId: id, turn: 0, comment });
    const lines: string[] = [];
    await source.exportFeedback((l) => void lines.push(l));
    await source.close();

    const store = sqlite(await openStore(path.join(tmp, 'full.db')));
    const pages = store.db.pragma('page_count', { simple: true }) as number;
    store.db.pragma(`max_page_count = ${String(pages + 8)}`);
    const err = await rejection(store.importFeedback(lines));
    expect(err).toBeInstanceOf(StoreError);
    expect(reasonOf(err)).toBe('full');
    expect(await store.listFeedback()).toEqual([]);
    // Small writes still fit; with room again the import goes through whole.
    expect(await store.createConversation({ id: 'after-full' })).toBe('after-full');
    store.db.pragma('max_page_count = 1073741823');
    expect(await store.importFeedback(lines)).toEqual({ imported: 60, skipped: 0 });
    await store.close();
  });
});

describe('postgres store, unreachable server', () => {
  test('a port where nothing listens is reason unreachable, quickly', async () => {
    const port = await freePort();
    const started = Date.now();
    const err = await rejection(
      openStore(`postgres://elmo:secret@127.0.0.1:${String(port)}/chat`, { connectTimeoutMs: 2000 }),
    );
    expect(err).toBeInstanceOf(StoreError);
    expect(reasonOf(err)).toBe('unreachable');
    expect(err.message).toMatch(/cannot reach the Postgres server/);
    expect(err.message).toContain('ECONNREFUSED');
    expect(err.message).not.toContain('secret');
    expect(Date.now() - started).toBeLessThan(3000);
  });

  test('a server that accepts but never answers is unreachable after the connect timeout, not a hang', async () => {
    const sockets: net.Socket[] = [];
    const silent = net.createServer((s) => void sockets.push(s));
    await new Promise<void>((resolve) => silent.listen(0, '127.0.0.1', resolve));
    const { port } = silent.address() as net.AddressInfo;
    try {
      const started = Date.now();
      const err = await rejection(
        openStore(`postgres://elmo@127.0.0.1:${String(port)}/chat`, { connectTimeoutMs: 300 }),
      );
      const waited = Date.now() - started;
      expect(reasonOf(err)).toBe('unreachable');
      expect(err.message).toMatch(/no connection to the Postgres server within 300 ms/);
      expect(waited).toBeGreaterThanOrEqual(250);
      expect(waited).toBeLessThan(3000);
    } finally {
      for (const s of sockets) s.destroy();
      await new Promise((resolve) => silent.close(resolve));
    }
  });
});

(PG.ok ? describe : describe.skip)(`postgres store only${PG.ok ? '' : ` (skipped: ${PG.reason})`}`, () => {
  test('a database that does not exist is reason unreachable', async () => {
    const url = `postgres://postgres@127.0.0.1:${String(server?.port ?? 0)}/no_such_database`;
    const err = await rejection(openStore(url));
    expect(reasonOf(err)).toBe('unreachable');
    expect(err.message).toMatch(/3D000|does not exist/);
  });

  test('two stores opening a new database at once both migrate it once', async () => {
    const url = await postgresBackend.newUrl();
    const stores = await Promise.all([openStore(url), openStore(url), openStore(url)]);
    const client = new pg.Client({ connectionString: url });
    await client.connect();
    const rows = (await client.query<{ version: number }>('SELECT version FROM schema_version')).rows;
    await client.end();
    expect(rows).toEqual([{ version: 1 }]);
    await Promise.all(stores.map((s) => s.close()));
  });
});
