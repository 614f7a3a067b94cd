// A throwaway Postgres server for the store tests: initdb into a temporary folder, postgres on a
// free port of 127.0.0.1 with its socket in that folder, fsync off, trust authentication. Started
// once per test file (beforeAll) and stopped and removed in afterAll. Where no binaries are found,
// findPostgres() says why, and the tests report the Postgres cases as skipped under that name.
import { execFileSync, spawn, spawnSync } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';

import pg from 'pg';

/** Where the server binaries are, and the user to run them as (root may not run postgres). */
export type PostgresFound =
  { ok: true; bin: string; user: { name: string; uid: number; gid: number } | null } | { ok: false; reason: string };

export interface PostgresServer {
  port: number;
  /** `postgres://postgres@127.0.0.1:PORT/postgres` */
  adminUrl: string;
  /** Creates an empty database and returns its URL. */
  createDatabase(): Promise<string>;
  /** Stops the server and removes its folder. */
  stop(): Promise<void>;
}

function hasBinaries(dir: string): boolean {
  return ['initdb', 'postgres'].every((b) => {
    try {
      fs.accessSync(path.join(dir, b), fs.constants.X_OK);
      return true;
    } catch {
      return false;
    }
  });
}

/** initdb and postgres on PATH, else in the newest /usr/lib/postgresql/<version>/bin. */
export function findPostgres(): PostgresFound {
  const dirs = (process.env.PATH ?? '').split(path.delimiter).filter((d) => d !== '');
  let versions: string[] = [];
  try {
    versions = fs
      .readdirSync('/usr/lib/postgresql')
      .sort((a, b) => Number(b) - Number(a))
      .map((v) => path.join('/usr/lib/postgresql', v, 'bin'));
  } catch {
    versions = [];
  }
  const bin = [...dirs, ...versions].find(hasBinaries);
  if (bin === undefined) {
    return { ok: false, reason: 'no initdb and postgres binaries on PATH or in /usr/lib/postgresql/*/bin' };
  }
  if (process.getuid?.() !== 0) return { ok: true, bin, user: null };
  // postgres refuses to run as root: run it as an unprivileged user, through setpriv.
  for (const name of ['postgres', 'nobody']) {
    try {
      const uid = Number(execFileSync('id', ['-u', name], { encoding: 'utf8' }).trim());
      const gid = Number(execFileSync('id', ['-g', name], { encoding: 'utf8' }).trim());
      return { ok: true, bin, user: { name, uid, gid } };
    } catch {
      // try the next one
    }
  }
  return { ok: false, reason: 'running as root with no postgres or nobody user to run the server as' };
}

/** `[command, args]` that runs `file args` as `user` (or as is). */
function asUser(found: PostgresFound & { ok: true }, file: string, args: string[]): [string, string[]] {
  const exe = path.join(found.bin, file);
  if (found.user === null) return [exe, args];
  const { uid, gid } = found.user;
  return ['setpriv', [`--reuid=${String(uid)}`, `--regid=${String(gid)}`, '--clear-groups', '--', exe, ...args]];
}

/** A TCP port nothing listens on right now. */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address() as net.AddressInfo;
      server.close(() => resolve(port));
    });
  });
}

const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

async function waitReady(url: string, child: ChildProcess, log: string, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (child.exitCode !== null || child.signalCode !== null) {
      throw new Error(`postgres exited (${String(child.exitCode ?? child.signalCode)}):\n${readTail(log)}`);
    }
    const client = new pg.Client({ connectionString: url, connectionTimeoutMillis: 1000 });
    client.on('error', () => undefined);
    try {
      await client.connect();
      await client.query('SELECT 1');
      await client.end();
      return;
    } catch {
      await client.end().catch(() => undefined);
    }
    if (Date.now() > deadline) throw new Error(`postgres did not start in ${String(timeoutMs)} ms:\n${readTail(log)}`);
    await sleep(100);
  }
}

function readTail(file: string): string {
  try {
    return fs.readFileSync(file, 'utf8').split('\n').slice(-20).join('\n');
  } catch {
    return '(no log)';
  }
}

/** initdb + postgres in a fresh temporary folder; resolves once the server takes connections. */
export async function startPostgres(found: PostgresFound & { ok: true }): Promise<PostgresServer> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'elmo-pg-'));
  if (found.user !== null) fs.chownSync(dir, found.user.uid, found.user.gid);
  const data = path.join(dir, 'data');
  const log = path.join(dir, 'postgres.log');
  const [initCmd, initArgs] = asUser(found, 'initdb', [
    '-D',
    data,
    '-A',
    'trust',
    '-U',
    'postgres',
    '-E',
    'UTF8',
    '--locale=C',
    '--no-sync',
  ]);
  const init = spawnSync(initCmd, initArgs, { encoding: 'utf8', timeout: 120_000 });
  if (init.status !== 0) {
    fs.rmSync(dir, { recursive: true, force: true });
    throw new Error(`initdb failed (${String(init.status ?? init.signal)}): ${init.stderr}${init.stdout}`);
  }

  let child: ChildProcess | undefined;
  let port = 0;
  // The free port can be taken by another process before postgres binds it: try a few.
  for (let attempt = 0; attempt < 3 && child === undefined; attempt++) {
    port = await freePort();
    const [cmd, args] = asUser(found, 'postgres', [
      '-D',
      data,
      '-p',
      String(port),
      '-k',
      dir,
      '-c',
      'listen_addresses=127.0.0.1',
      '-c',
      'fsync=off',
      '-c',
      'full_page_writes=off',
      '-c',
      'synchronous_commit=off',
      '-c',
      'max_connections=100',
    ]);
    const out = fs.openSync(log, 'a');
    const proc = spawn(cmd, args, { stdio: ['ignore', out, out] });
    fs.closeSync(out);
    try {
      await waitReady(`postgres://postgres@127.0.0.1:${String(port)}/postgres`, proc, log, 30_000);
      child = proc;
    } catch (err) {
      proc.kill('SIGKILL');
      if (attempt === 2) {
        fs.rmSync(dir, { recursive: true, force: true });
        throw err;
      }
    }
  }
  const server = child as ChildProcess;
  const adminUrl = `postgres://postgres@127.0.0.1:${String(port)}/postgres`;
  let databases = 0;

  return {
    port,
    adminUrl,
    async createDatabase() {
      databases += 1;
      const name = `elmo_test_${String(databases)}`;
      const client = new pg.Client({ connectionString: adminUrl });
      await client.connect();
      try {
        await client.query(`CREATE DATABASE ${name}`);
      } finally {
        await client.end();
      }
      return `postgres://postgres@127.0.0.1:${String(port)}/${name}`;
    },
    async stop() {
      if (server.exitCode === null && server.signalCode === null) {
        const exited = new Promise<void>((resolve) => server.once('exit', () => resolve()));
        server.kill('SIGINT'); // fast shutdown: disconnect clients, then exit
        const timer = setTimeout(() => server.kill('SIGKILL'), 10_000);
        await exited;
        clearTimeout(timer);
      }
      fs.rmSync(dir, { recursive: true, force: true });
    },
  };
}
