// `elmo feedback export` and `elmo feedback import` (lib/cli/feedback.ts), run in-process on a
// fresh commander program with only these commands: the lines, the files, the counts, and how
// usage problems (exit 2) and store failures (ElmoErrors, exit 1) are reported.
import * as fs from 'node:fs';
import * as path from 'node:path';
import { Readable } from 'node:stream';

import { Command, CommanderError } from 'commander';

import { openStore } from '../lib/chat/store';
import type { ChatStore, StoredFeedback } from '../lib/chat/store';
import { commanderExitCode, configureCommand } from '../lib/cli/args';
import type { CliIo } from '../lib/cli/args';
import { addFeedbackCommand } from '../lib/cli/feedback';
import { ElmoError } from '../lib/errors';
import { freePort } from './helpers-postgres';
import { tmpDir } from './helpers';

/** Runs `elmo <args>` with only the feedback commands; exit codes as lib/cli.ts gives them. */
async function elmo(
  args: string[],
  stdin: NodeJS.ReadableStream = Readable.from([]),
): Promise<{ code: number; out: string[]; err: string }> {
  const out: string[] = [];
  const err: string[] = [];
  const io: CliIo = { write: (l) => out.push(l), error: (l) => err.push(l), isTTY: false };
  const program = configureCommand(new Command('elmo'), io);
  addFeedbackCommand(program, io, stdin);
  try {
    await program.parseAsync(args, { from: 'user' });
    return { code: 0, out, err: err.join('\n') };
  } catch (e) {
    if (e instanceof CommanderError) return { code: commanderExitCode(e), out, err: err.join('\n') };
    if (e instanceof ElmoError) {
      err.push(`elmo feedback: ${e.code}: ${e.message}`);
      return { code: 1, out, err: err.join('\n') };
    }
    throw e;
  }
}

let tmp: string;
let db: string;
let ids: string[];

async function seed(store: ChatStore): Promise<string[]> {
  const id = await store.createConversation();
  await store.appendTurn(id, { speaker: 'user', text: 'book a table for two' });
  await store.appendTurn(id, { speaker: 'bot', text: 'When?' });
  await store.appendTurn(id, { speaker: 'user', text: 'tonight' });
  const a = await store.addFeedback({ conversationId: id, turn: 0, intent: 'book_table' });
  const b = await store.addFeedback({ conversationId: id, turn: 2, rating: -1, comment: 'asked twice' });
  return [a.id, b.id];
}

beforeAll(async () => {
  tmp = tmpDir('cli-feedback');
  db = path.join(tmp, 'chat.db');
  const store = await openStore(db);
  ids = await seed(store);
  await store.close();
});
afterAll(() => {
  fs.rmSync(tmp, { recursive: true, force: true });
});

describe('elmo feedback export', () => {
  it('writes one JSON line per feedback to stdout, the count to stderr', async () => {
    const r = await elmo(['feedback', 'export', '--store', db]);
    expect(r.code).toBe(0);
    const lines = r.out.map((l) => JSON.parse(l) as StoredFeedback);
    expect(lines.map((f) => f.id)).toEqual(ids);
    expect(lines[0]).toMatchObject({ intent: 'book_table', text: 'book a table for two', status: 'new', turn: 0 });
    expect(r.err).toBe('elmo feedback export: 2 feedback lines');
  });

  it('writes --out FILE whole (no temporary file left), and --since filters', async () => {
    const file = path.join(tmp, 'all.jsonl');
    const r = await elmo(['feedback', 'export', '--store', `sqlite:${db}`, '--out', file]);
    expect(r.code).toBe(0);
    expect(r.out).toEqual([`exported 2 feedback lines to ${file}`]);
    const text = fs.readFileSync(file, 'utf8');
    expect(text.endsWith('\n')).toBe(true);
    expect(text.trim().split('\n')).toHaveLength(2);
    expect(fs.readdirSync(tmp).filter((f) => f.includes('.tmp-'))).toEqual([]);

    const later = await elmo(['feedback', 'export', '--store', db, '--since', '2999-01-01', '--out', file]);
    expect(later.out).toEqual([`exported 0 feedback lines to ${file}`]);
    expect(fs.readFileSync(file, 'utf8')).toBe('');
  });

  it('takes the store from ELMO_STORE', async () => {
    const before = process.env.ELMO_STORE;
    process.env.ELMO_STORE = db;
    try {
      const r = await elmo(['feedback', 'export']);
      expect(r.code).toBe(0);
      expect(r.out).toHaveLength(2);
    } finally {
      if (before === undefined) delete process.env.ELMO_STORE;
      else process.env.ELMO_STORE = before;
    }
  });

  it('usage problems exit 2 with the command named; store failures exit 1 with ERR_STORE', async () => {
    const before = process.env.ELMO_STORE;
    delete process.env.ELMO_STORE;
    try {
      const missing = await elmo(['feedback', 'export']);
      expect(missing.code).toBe(2);
      expect(missing.err).toMatch(/^elmo feedback export: --store URL is required/);
    } finally {
      if (before !== undefined) process.env.ELMO_STORE = before;
    }
    const since = await elmo(['feedback', 'export', '--store', db, '--since', 'yesterday']);
    expect(since.code).toBe(2);
    expect(since.err).toMatch(/^elmo feedback export: --since expects an ISO 8601 time/);
    const out = await elmo(['feedback', 'export', '--store', db, '--out', path.join(tmp, 'no', 'such', 'dir', 'f')]);
    expect(out.code).toBe(2);
    expect(out.err).toMatch(/cannot write --out/);

    const port = await freePort();
    const down = await elmo(['feedback', 'export', '--store', `postgres://elmo@127.0.0.1:${String(port)}/chat`]);
    expect(down.code).toBe(1);
    expect(down.err).toMatch(/^elmo feedback: ERR_STORE: .*cannot reach the Postgres server/);
    expect((await elmo(['feedback'])).code).toBe(2);
  });
});

describe('elmo feedback import', () => {
  it('imports an export into another store, once, from a file or stdin', async () => {
    const file = path.join(tmp, 'moved.jsonl');
    expect((await elmo(['feedback', 'export', '--store', db, '--out', file])).code).toBe(0);
    const target = path.join(tmp, 'target.db');

    const first = await elmo(['feedback', 'import', '--store', target, file]);
    expect(first.code).toBe(0);
    expect(first.out).toEqual(['imported 2 feedback lines, skipped 0 already in the store']);
    const again = await elmo(['feedback', 'import', '--store', target, '-'], Readable.from([fs.readFileSync(file)]));
    expect(again.out).toEqual(['imported 0 feedback lines, skipped 2 already in the store']);

    const store = await openStore(target);
    expect((await store.listFeedback()).map((f) => f.id)).toEqual(ids);
    await store.close();
  });

  it('a bad line imports nothing and names the file and line; an unreadable file exits 2', async () => {
    const file = path.join(tmp, 'bad.jsonl');
    const good = (await elmo(['feedback', 'export', '--store', db])).out;
    fs.writeFileSync(file, `${good[0] ?? ''}\n{"not": "feedback"}\n`);
    const target = path.join(tmp, 'bad-target.db');
    const r = await elmo(['feedback', 'import', '--store', target, file]);
    expect(r.code).toBe(1);
    expect(r.err).toContain(`ERR_INPUT: ${file}: line 2:`);
    const store = await openStore(target);
    expect(await store.listFeedback()).toEqual([]);
    await store.close();

    const missing = await elmo(['feedback', 'import', '--store', target, path.join(tmp, 'nope.jsonl')]);
    expect(missing.code).toBe(2);
    expect(missing.err).toMatch(/^elmo feedback import: cannot read .*nope\.jsonl/);
    const noFile = await elmo(['feedback', 'import', '--store', target]);
    expect(noFile.code).toBe(2);
  });
});
