// API keys of the HTTP service: `elmo keys create|list|revoke` (lib/cli/keys.ts) and the checks
// of lib/serve/auth.ts against a real server: missing, unknown and revoked keys, scopes, per-key
// rate limits, a key file that changes under a running server.
import * as fs from 'node:fs';
import * as path from 'node:path';

import { Command, CommanderError } from 'commander';

import { InputError } from '../lib';
import { commanderExitCode, configureCommand } from '../lib/cli/args';
import { addKeysCommand } from '../lib/cli/keys';
import { KeyStore, createKey, createServer, hashKey, readKeyFile } from '../lib/serve';
import type { ServeOptions } from '../lib/serve';
import { tmpDir } from './helpers';
import { bearer, call, closeServers, makeTinyModel, startServer } from './serve-helpers';
import type { Reply } from './serve-helpers';

let modelDir: string;

beforeAll(async () => {
  modelDir = await makeTinyModel('serve-auth', ['a', 'b'], 5);
});

afterEach(closeServers);

/** Runs `elmo keys ...`; returns stdout and stderr lines, or the usage error. */
function keys(argv: string[]): { out: string[]; err: string[]; code: number } {
  const out: string[] = [];
  const err: string[] = [];
  const io = { write: (l: string) => out.push(l), error: (l: string) => err.push(l), isTTY: false };
  const program = configureCommand(new Command('elmo'), io);
  addKeysCommand(program, io);
  try {
    program.parse(['keys', ...argv], { from: 'user' });
    return { out, err, code: 0 };
  } catch (e) {
    if (e instanceof CommanderError) return { out, err, code: commanderExitCode(e) };
    throw e;
  }
}

/** A request with `key`, when given, as its bearer token. */
function callWithKey(port: number, method: string, route: string, key?: string, body?: unknown): Promise<Reply> {
  return call(port, method, route, body, bearer(key));
}

async function start(options: Partial<ServeOptions>): Promise<number> {
  return (await startServer(options, { model: modelDir })).port;
}

const PREDICT = { texts: ['hello'] };

describe('elmo keys', () => {
  it('create prints the key once and stores only its hash; list and revoke', () => {
    const file = path.join(tmpDir('keys'), 'keys.json');
    const made = keys(['create', '--keys', file, '--scopes', 'predict,feedback', '--id', 'web-1']);
    expect(made.code).toBe(0);
    expect(made.out).toHaveLength(1);
    const key = made.out[0]!;
    expect(key).toMatch(/^elmo_web-1\.[A-Za-z0-9_-]{43}$/);
    expect(made.err.join('\n')).toContain("key 'web-1' (scopes predict, feedback) added to");
    const text = fs.readFileSync(file, 'utf8');
    expect(text).not.toContain(key.split('.')[1]);
    const data = readKeyFile(file);
    expect(data.keys).toEqual([
      { id: 'web-1', hash: hashKey(key), scopes: ['predict', 'feedback'], createdAt: expect.any(String) },
    ]);

    const json = keys(['create', '--keys', file, '--scopes', 'admin', '--rps', '2.5', '--json']);
    const made2 = JSON.parse(json.out[0]!) as { id: string; key: string; rateLimit: unknown };
    expect(made2.rateLimit).toEqual({ rps: 2.5, burst: 3 });
    expect(made2.key.startsWith(`elmo_${made2.id}.`)).toBe(true);

    const list = keys(['list', '--keys', file]);
    expect(list.out).toHaveLength(2);
    expect(list.out[0]).toMatch(/^web-1\tpredict,feedback\t-\t\S+\tactive$/);
    expect(list.out[1]).toContain('2.5/s burst 3');
    expect(list.out.join('\n')).not.toContain('sha256');

    expect(keys(['revoke', 'web-1', '--keys', file]).code).toBe(0);
    expect(
      keys(['list', '--keys', file, '--json']).out.map((l) => JSON.parse(l) as { revoked?: boolean })[0],
    ).toMatchObject({
      id: 'web-1',
      revoked: true,
    });
  });

  it('refuses bad scopes, duplicate ids, unknown ids and malformed files', () => {
    const dir = tmpDir('keys');
    const file = path.join(dir, 'keys.json');
    const bad = keys(['create', '--keys', file, '--scopes', 'predict,root']);
    expect(bad.code).toBe(2);
    expect(bad.err.join('\n')).toContain(
      "elmo keys create: --scopes expects a comma-separated list of predict, feedback, admin, got 'predict,root'",
    );
    expect(keys(['create', '--keys', file, '--scopes', 'predict', '--burst', '3']).err.join('\n')).toContain(
      '--burst needs --rps',
    );
    keys(['create', '--keys', file, '--scopes', 'predict', '--id', 'a']);
    expect(() => keys(['create', '--keys', file, '--scopes', 'predict', '--id', 'a'])).toThrow(
      new InputError(`A key with id 'a' already exists in ${file}`),
    );
    expect(() => keys(['revoke', 'nope', '--keys', file])).toThrow(`No key with id 'nope' in ${file}`);
    const broken = path.join(dir, 'broken.json');
    fs.writeFileSync(
      broken,
      JSON.stringify({ keys: [{ id: 'x', hash: 'md5:00', scopes: ['predict'], createdAt: '' }] }),
    );
    expect(() => readKeyFile(broken)).toThrow(
      `Expected 'sha256:' and 64 hex digits for keys[0] of ${broken}.hash but received string 'md5:00'`,
    );
  });
});

describe('API keys', () => {
  it('401 for a missing, malformed, unknown or revoked key; 403 without the scope; health without a key', async () => {
    const file = path.join(tmpDir('keys'), 'keys.json');
    const predictKey = createKey(file, { scopes: ['predict'], id: 'p' }).key;
    const adminKey = createKey(file, { scopes: ['admin'], id: 'adm' }).key;
    const feedbackKey = createKey(file, { scopes: ['feedback'], id: 'fb' }).key;
    const port = await start({ auth: { keysFile: file, refreshMs: 0 } });

    expect((await callWithKey(port, 'GET', '/healthz')).status).toBe(200);
    expect((await callWithKey(port, 'GET', '/readyz')).status).toBe(200);
    const none = await callWithKey(port, 'POST', '/v1/predict', undefined, PREDICT);
    expect([none.status, none.body.error?.code]).toEqual([401, 'ERR_UNAUTHORIZED']);
    expect((await callWithKey(port, 'POST', '/v1/predict', 'not-a-key', PREDICT)).status).toBe(401);
    // The right shape and id, another secret.
    const forged = `elmo_p.${'A'.repeat(43)}`;
    expect((await callWithKey(port, 'POST', '/v1/predict', forged, PREDICT)).status).toBe(401);
    expect((await callWithKey(port, 'POST', '/v1/predict', predictKey, PREDICT)).status).toBe(200);
    expect((await callWithKey(port, 'POST', '/v1/embed', predictKey, PREDICT)).status).toBe(200);

    const wrongScope = await callWithKey(port, 'GET', '/metrics', predictKey);
    expect([wrongScope.status, wrongScope.body.error?.code]).toEqual([403, 'ERR_FORBIDDEN']);
    expect(wrongScope.body.error?.message).toBe(
      "Expected a key with scope 'admin' but received key 'p' with scopes [predict]",
    );
    expect((await callWithKey(port, 'POST', '/v1/predict', feedbackKey, PREDICT)).status).toBe(403);
    expect((await callWithKey(port, 'GET', '/metrics', adminKey)).status).toBe(200);
    // Any valid key reads the API description.
    expect((await callWithKey(port, 'GET', '/openapi.json', feedbackKey)).status).toBe(200);
    expect((await callWithKey(port, 'GET', '/openapi.json')).status).toBe(401);

    // Revoked through the CLI while the server runs.
    keys(['revoke', 'p', '--keys', file]);
    const revoked = await callWithKey(port, 'POST', '/v1/predict', predictKey, PREDICT);
    expect(revoked.status).toBe(401);
    expect(revoked.body.error?.message).toBe("Expected a valid API key but received key 'p', which is revoked");
    // A key created while the server runs works at once.
    const late = createKey(file, { scopes: ['predict'] }).key;
    expect((await callWithKey(port, 'POST', '/v1/predict', late, PREDICT)).status).toBe(200);
  });

  it('rate-limits per key: the burst passes, then 429 with Retry-After; other keys are not affected', async () => {
    const file = path.join(tmpDir('keys'), 'keys.json');
    // One request per 100 s on average: no token comes back during the test.
    const limited = createKey(file, { scopes: ['predict'], rateLimit: { rps: 0.01, burst: 3 } }).key;
    const other = createKey(file, { scopes: ['predict'] }).key;
    const port = await start({ auth: { keysFile: file } });
    for (let i = 0; i < 3; i++)
      expect((await callWithKey(port, 'POST', '/v1/predict', limited, PREDICT)).status).toBe(200);
    const over = await callWithKey(port, 'POST', '/v1/predict', limited, PREDICT);
    expect([over.status, over.body.error?.code]).toEqual([429, 'ERR_RATE_LIMITED']);
    expect(Number(over.headers['retry-after'])).toBe(100);
    expect((await callWithKey(port, 'POST', '/v1/predict', other, PREDICT)).status).toBe(200);
  });

  it('refills the bucket at rps (token bucket)', () => {
    const file = path.join(tmpDir('keys'), 'keys.json');
    const { key } = createKey(file, { scopes: ['predict'], rateLimit: { rps: 2, burst: 2 } });
    let now = 1_000_000;
    const store = new KeyStore(file, { now: () => now });
    const header = `Bearer ${key}`;
    expect(store.authenticate(header, 'predict').ok).toBe(true);
    expect(store.authenticate(header, 'predict').ok).toBe(true);
    const refused = store.authenticate(header, 'predict');
    expect(refused.ok ? 0 : refused.retryAfter).toBe(1);
    now += 500; // one token back at 2 per second
    expect(store.authenticate(header, 'predict').ok).toBe(true);
    expect(store.authenticate(header, 'predict').ok).toBe(false);
  });

  it('keeps the keys it has when the key file becomes malformed, and logs why', () => {
    const file = path.join(tmpDir('keys'), 'keys.json');
    const { key } = createKey(file, { scopes: ['predict'] });
    const errors: string[] = [];
    const store = new KeyStore(file, { refreshMs: 0, onError: (e) => errors.push(e.message) });
    fs.writeFileSync(file, '{"keys": [ oops');
    expect(store.authenticate(`Bearer ${key}`, 'predict').ok).toBe(true);
    expect(errors[0]).toContain(`The key file ${file} is not JSON`);
  });

  it('serves /metrics without a key with metricsPublic, and needs auth to be given explicitly', async () => {
    const file = path.join(tmpDir('keys'), 'keys.json');
    createKey(file, { scopes: ['predict'] });
    const port = await start({ auth: { keysFile: file }, metricsPublic: true });
    expect((await callWithKey(port, 'GET', '/metrics')).status).toBe(200);
    expect((await callWithKey(port, 'POST', '/v1/predict', undefined, PREDICT)).status).toBe(401);
    expect(() => createServer({ model: modelDir } as unknown as ServeOptions)).toThrow(
      'Expected {keysFile} or false (serving without keys must be asked for explicitly) for options.auth but received undefined',
    );
    expect(() => createServer({ model: modelDir, auth: { keysFile: path.join(tmpDir('keys'), 'none.json') } })).toThrow(
      /^Cannot read the key file/,
    );
  });
});
