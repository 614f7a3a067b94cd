// `elmo serve --workers 2`, run as a user runs it: the built CLI (dist/cli.js, compiled here
// first) in a child process, the primary of a node:cluster of two workers on one port.
import { execFileSync, spawn } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import * as http from 'node:http';
import * as path from 'node:path';

const ROOT = path.join(__dirname, '..');
const CLI = path.join(ROOT, 'dist', 'cli.js');
const MODEL = path.join(__dirname, 'fixtures', 'bert-a-cls');

interface LogLine {
  pid: number;
  msg: string;
  port?: number;
  route?: string;
  status?: number;
}

/** POSTs one text on a new connection (so that the primary hands each to the next worker). */
function predict(port: number, text: string): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = http.request({ host: '127.0.0.1', port, path: '/v1/predict', method: 'POST', agent: false }, (res) => {
      let body = '';
      res.on('data', (d: Buffer) => (body += d.toString()));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
    });
    req.on('error', reject);
    req.setHeader('content-type', 'application/json');
    req.end(JSON.stringify({ texts: [text] }));
  });
}

let child: ChildProcess | undefined;

beforeAll(() => {
  execFileSync(process.execPath, [require.resolve('typescript/bin/tsc'), '-p', 'tsconfig.build.json'], {
    cwd: ROOT,
    stdio: 'pipe',
  });
}, 180_000);

afterAll(() => {
  if (child?.exitCode === null) child.kill('SIGKILL');
});

describe('elmo serve --workers (built CLI)', () => {
  it('two workers answer on one port, and SIGTERM stops them all with exit code 0', async () => {
    const proc = spawn(
      process.execPath,
      [CLI, 'serve', '--model', MODEL, '--no-auth', '--port', '0', '--workers', '2'],
      {
        stdio: ['ignore', 'pipe', 'pipe'],
      },
    );
    child = proc;
    const lines: LogLine[] = [];
    let rest = '';
    let stderr = '';
    const waiters: { cond: () => boolean; resolve: () => void }[] = [];
    const until = (cond: () => boolean): Promise<void> =>
      cond() ? Promise.resolve() : new Promise((resolve) => waiters.push({ cond, resolve }));
    proc.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    proc.stdout.on('data', (d: Buffer) => {
      const parts = (rest + d.toString()).split('\n');
      rest = parts.pop() ?? '';
      for (const p of parts) lines.push(JSON.parse(p) as LogLine);
      for (const w of waiters.filter((x) => x.cond())) w.resolve();
    });
    const exited = new Promise<number | null>((resolve) => proc.once('exit', (code) => resolve(code)));

    await until(() => lines.some((l) => l.msg === 'all workers ready'));
    const listening = lines.filter((l) => l.msg === 'listening');
    expect(new Set(listening.map((l) => l.pid)).size).toBe(2);
    expect(new Set(listening.map((l) => l.port)).size).toBe(1); // one shared port
    const port = listening[0]?.port ?? 0;

    const answers = await Promise.all([predict(port, 'where is my order'), predict(port, 'hello')]);
    for (const a of answers) {
      expect(a.status).toBe(200);
      expect((JSON.parse(a.body) as { results: unknown[] }).results).toHaveLength(1);
    }
    await until(() => lines.filter((l) => l.msg === 'request').length === 2);
    const served = lines.filter((l) => l.msg === 'request');
    expect(served.every((l) => l.route === '/v1/predict' && l.status === 200)).toBe(true);

    proc.kill('SIGTERM');
    expect(await exited).toBe(0);
    expect(stderr).toBe('');
    expect(lines.filter((l) => l.msg === 'worker exited')).toHaveLength(2);
    expect(lines.at(-1)?.msg).toBe('all workers stopped');
  }, 30_000);
});
