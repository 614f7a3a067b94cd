// Lifecycle of the HTTP service: graceful close (requests in flight and queued are answered,
// /readyz fails first), the shutdown timeout, hot reload under concurrent load with no failed
// request, a reload from a directory with garbage that keeps the old model, `elmo serve` with
// its signals, and HTTPS. Timed bounds are hang detectors, never performance claims.
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as https from 'node:https';
import * as path from 'node:path';

import { Command, CommanderError } from 'commander';
import pino from 'pino';

import { Bert } from '../lib';
import { commanderExitCode, configureCommand } from '../lib/cli/args';
import { addServeCommand } from '../lib/cli/serve';
import { createServer } from '../lib/serve';
import type { ModelServer, ServeOptions } from '../lib/serve';
import { tmpDir } from './helpers';
import { call, closeServers, makeTinyModel, servers, spyModel, startServer, until } from './serve-helpers';

/** How long the pollers below wait (a hang detector). */
const WAIT_MS = 20000;

let dirA: string;
let dirB: string;

beforeAll(async () => {
  dirA = await makeTinyModel('serve-a', ['a', 'b', 'c'], 1);
  dirB = await makeTinyModel('serve-b', ['a', 'b', 'c'], 2);
});

afterEach(closeServers);

function start(options: Partial<ServeOptions> = {}): Promise<{ server: ModelServer; port: number }> {
  return startServer(options, { model: dirA });
}

function copyDir(from: string): string {
  const to = tmpDir('serve-copy');
  for (const f of fs.readdirSync(from)) fs.copyFileSync(path.join(from, f), path.join(to, f));
  return to;
}

describe('graceful close', () => {
  it('answers the requests in flight and queued, refuses new connections, then resolves', async () => {
    using model = await Bert.load(dirA, { device: 'cpu', threads: 1 });
    const spy = spyModel(model, { held: true });
    const { server, port } = await start({ model: spy.model, maxWaitMs: 0 });
    const running = call(port, 'POST', '/v1/predict', { texts: ['running'] });
    await until(() => spy.calls.length === 1, 'the first call', WAIT_MS);
    const queued = [
      call(port, 'POST', '/v1/predict', { texts: ['q1'] }),
      call(port, 'POST', '/v1/embed', { texts: ['q2'] }),
    ];
    await until(() => server.registry.metrics().then((t) => t.includes('elmo_queue_depth 2')), 'the queue', WAIT_MS);
    let closed = false;
    const closing = server.close().then(() => (closed = true));
    // No new connections once draining.
    await until(() => server.address() === null, 'the listener to close', WAIT_MS);
    await expect(call(port, 'GET', '/healthz')).rejects.toThrow(/ECONNREFUSED/);
    expect(closed).toBe(false);
    spy.release();
    const replies = await Promise.all([running, ...queued]);
    expect(replies.map((r) => r.status)).toEqual([200, 200, 200]);
    await closing;
    expect(closed).toBe(true);
    expect(spy.calls).toEqual([['running'], ['q1'], ['q2']]);
  });

  it('fails /readyz for drainDelayMs while still serving, then drains', async () => {
    const { server, port } = await start({ drainDelayMs: 400 });
    expect((await call(port, 'GET', '/readyz')).status).toBe(200);
    const closing = server.close();
    const ready = await call(port, 'GET', '/readyz');
    expect([ready.status, ready.body.error?.code]).toEqual([503, 'ERR_NOT_READY']);
    expect((await call(port, 'POST', '/v1/predict', { texts: ['still served'] })).status).toBe(200);
    expect((await call(port, 'GET', '/healthz')).status).toBe(200);
    await closing;
    expect(server.address()).toBeNull();
  });

  it('closes what is still open after shutdownTimeoutMs', async () => {
    using model = await Bert.load(dirA, { device: 'cpu', threads: 1 });
    const spy = spyModel(model, { held: true });
    const { server, port } = await start({ model: spy.model, shutdownTimeoutMs: 200 });
    const stuck = call(port, 'POST', '/v1/predict', { texts: ['never answered'] }).then(
      (r) => r.status,
      (e: unknown) => (e as Error).message,
    );
    await until(() => spy.calls.length === 1, 'the call', WAIT_MS);
    await server.close(); // resolves although the model call never ends
    expect(await stuck).toMatch(/socket hang up|ECONNRESET/);
    spy.release();
  });
});

describe('loading', () => {
  it('answers /healthz at once, and 503 on /readyz and the model routes when the model cannot load', async () => {
    const server = createServer({
      model: path.join(tmpDir('serve-missing'), 'nope'),
      auth: false,
      logger: pino({ level: 'silent' }),
      defaultMetrics: false,
    });
    servers.push(server);
    const { port } = await server.listen(0);
    await expect(server.ready()).rejects.toMatchObject({ code: 'ERR_CHECKPOINT' });
    expect((await call(port, 'GET', '/healthz')).status).toBe(200);
    const ready = await call(port, 'GET', '/readyz');
    expect([ready.status, ready.body.error?.message]).toEqual([503, 'The model failed to load; see the server log']);
    expect((await call(port, 'POST', '/v1/predict', { texts: ['x'] })).status).toBe(503);
  });
});

describe('reload', () => {
  it('swaps models under concurrent load with no failed request', async () => {
    const { server, port } = await start({ maxWaitMs: 1 });
    const before = server.modelVersion;
    const seen = new Map<string, number>();
    const failures: string[] = [];
    let reloaded = false;
    let afterReload = 0;
    const worker = async (w: number): Promise<void> => {
      for (let i = 0; !reloaded || afterReload < 20; i++) {
        const r = await call(port, 'POST', i % 2 === 0 ? '/v1/predict' : '/v1/embed', {
          texts: [`worker ${String(w)} request ${String(i)}`],
        });
        if (r.status !== 200) failures.push(`${String(r.status)} ${JSON.stringify(r.body)}`);
        const v = r.body.model?.version ?? 'none';
        seen.set(v, (seen.get(v) ?? 0) + 1);
        if (reloaded) afterReload++;
      }
    };
    const load = [0, 1, 2, 3].map(worker);
    await until(() => [...seen.values()].reduce((a, b) => a + b, 0) >= 20, 'load before the reload', WAIT_MS);
    const result = await server.reload(dirB);
    reloaded = true;
    await Promise.all(load);
    expect(failures).toEqual([]);
    expect(result.previous).toBe(before);
    expect(result.version).not.toBe(before);
    expect(server.modelVersion).toBe(result.version);
    expect(seen.get(before!)).toBeGreaterThan(0);
    expect(seen.get(result.version)).toBeGreaterThan(0);
    const text = await server.registry.metrics();
    expect(text).toContain('elmo_model_reloads_total{result="ok"} 1');
    expect(text).toContain(`elmo_model_info{version="${result.version}"} 1`);
    expect(text).not.toContain(`elmo_model_info{version="${before!}"}`);
  });

  it('keeps the old model when the new directory holds garbage (reload(dir) and POST /v1/admin/reload)', async () => {
    const served = copyDir(dirA);
    const { server, port } = await start({ model: served });
    const version = server.modelVersion;
    const garbage = copyDir(dirA);
    fs.writeFileSync(path.join(garbage, 'model.safetensors'), Buffer.from('this is not a safetensors file at all'));
    const err = await server.reload(garbage).then(
      () => undefined,
      (e: unknown) => e as Error & { code?: string },
    );
    expect(err?.code).toBe('ERR_CHECKPOINT');
    expect(err?.message).toMatch(/model\.safetensors/);
    expect(server.modelVersion).toBe(version);
    const r = await call(port, 'POST', '/v1/predict', { texts: ['still the old model'] });
    expect([r.status, r.body.model?.version]).toEqual([200, version]);

    // Over HTTP: the served directory itself is broken, the reload fails, serving goes on.
    fs.writeFileSync(path.join(served, 'config.json'), '{ not json');
    const http422 = await call(port, 'POST', '/v1/admin/reload', {});
    expect([http422.status, http422.body.error?.code]).toEqual([422, 'ERR_CHECKPOINT']);
    expect((await call(port, 'POST', '/v1/predict', { texts: ['still here'] })).body.model?.version).toBe(version);
    // Fixed again: the same route reloads.
    fs.copyFileSync(path.join(dirB, 'config.json'), path.join(served, 'config.json'));
    fs.copyFileSync(path.join(dirB, 'model.safetensors'), path.join(served, 'model.safetensors'));
    const ok = await call(port, 'POST', '/v1/admin/reload'); // no body needed
    expect(ok.status).toBe(200);
    expect(ok.body.previous).toEqual({ version });
    expect(ok.body.model?.version).not.toBe(version);
    const text = await server.registry.metrics();
    expect(text).toContain('elmo_model_reloads_total{result="failed"} 2');
  });
});

describe('elmo serve', () => {
  function program(lines: string[]): Command {
    const io = { write: (l: string) => lines.push(l), error: (l: string) => lines.push(l), isTTY: false };
    const p = configureCommand(new Command('elmo'), io);
    addServeCommand(p, io);
    return p;
  }

  it('serves until SIGTERM, reloads on SIGHUP, and logs JSON lines', async () => {
    const lines: string[] = [];
    const records = (): { msg?: string; port?: number; version?: string }[] =>
      lines.filter((l) => l.startsWith('{')).map((l) => JSON.parse(l) as { msg?: string });
    const run = program(lines).parseAsync(
      ['serve', '--model', dirA, '--port', '0', '--no-auth', '--device', 'cpu', '--threads', '1', '--max-wait-ms', '0'],
      { from: 'user' },
    );
    await until(() => records().some((r) => r.msg === 'ready'), 'the ready line', WAIT_MS);
    const port = records().find((r) => r.msg === 'listening')?.port ?? 0;
    const r = await call(port, 'POST', '/v1/predict', { texts: ['from the cli'] });
    expect(r.status).toBe(200);
    process.emit('SIGHUP', 'SIGHUP');
    await until(() => records().some((x) => x.msg === 'model reloaded'), 'the reload', WAIT_MS);
    process.emit('SIGTERM', 'SIGTERM');
    await run;
    const msgs = records().map((x) => x.msg);
    expect(msgs).toEqual(
      expect.arrayContaining([
        'listening',
        'ready',
        'request',
        'model reloaded',
        'shutting down',
        'draining',
        'closed',
      ]),
    );
  });

  it('fails with ERR_CHECKPOINT when the model cannot be loaded, and stops listening', async () => {
    const lines: string[] = [];
    const missing = path.join(tmpDir('serve-missing'), 'nope');
    const err = await program(lines)
      .parseAsync(['serve', '--model', missing, '--port', '0', '--no-auth'], { from: 'user' })
      .then(
        () => undefined,
        (e: unknown) => e as Error & { code?: string },
      );
    expect(err?.code).toBe('ERR_CHECKPOINT');
    const records = lines.map((l) => JSON.parse(l) as { msg: string });
    expect(records.map((r) => r.msg)).toEqual(expect.arrayContaining(['listening', 'model failed to load', 'closed']));
    expect(records.at(-1)?.msg).toBe('closed');
  });

  it('needs --keys FILE or --no-auth', async () => {
    const lines: string[] = [];
    const err = await program(lines)
      .parseAsync(['serve', '--model', dirA], { from: 'user' })
      .then(
        () => undefined,
        (e: unknown) => e,
      );
    expect(err).toBeInstanceOf(CommanderError);
    expect(commanderExitCode(err as CommanderError)).toBe(2);
    expect(lines.join('\n')).toContain(
      'elmo serve: no API keys: give --keys FILE (made by elmo keys create) or --no-auth',
    );
  });
});

describe('TLS', () => {
  let hasOpenssl = true;
  try {
    execFileSync('openssl', ['version'], { stdio: 'ignore' });
  } catch {
    hasOpenssl = false;
  }

  (hasOpenssl ? it : it.skip)('serves HTTPS with the tls options', async () => {
    const dir = tmpDir('serve-tls');
    const key = path.join(dir, 'key.pem');
    const cert = path.join(dir, 'cert.pem');
    execFileSync(
      'openssl',
      [
        'req',
        '-x509',
        '-newkey',
        'rsa:2048',
        '-nodes',
        '-keyout',
        key,
        '-out',
        cert,
        '-days',
        '1',
        '-subj',
        '/CN=localhost',
      ],
      { stdio: 'ignore' },
    );
    const { port } = await start({ tls: { key: fs.readFileSync(key), cert: fs.readFileSync(cert) } });
    const status = await new Promise<number>((resolve, reject) => {
      const req = https.request(
        { host: '127.0.0.1', port, path: '/healthz', ca: fs.readFileSync(cert), servername: 'localhost', agent: false },
        (res) => {
          res.resume();
          resolve(res.statusCode ?? 0);
        },
      );
      req.on('error', reject);
      req.end();
    });
    expect(status).toBe(200);
  });
});
