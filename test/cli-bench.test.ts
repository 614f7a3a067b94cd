// `elmo bench`, run as a user runs it: the built CLI (dist/cli.js, compiled here first) in a
// child process, on the smallest fixture model and a short timing budget.
import { execFileSync, spawnSync } from 'node:child_process';
import * as path from 'node:path';

const ROOT = path.join(__dirname, '..');
const CLI = path.join(ROOT, 'dist', 'cli.js');
const MODEL = path.join(__dirname, 'fixtures', 'bert-a-cls');

function elmo(args: string[]): { code: number; out: string; err: string } {
  const r = spawnSync(process.execPath, [CLI, ...args], {
    encoding: 'utf8',
    env: { ...process.env, ELMO_NUM_THREADS: '1' },
    timeout: 60_000,
  });
  return { code: r.status ?? -1, out: r.stdout, err: r.stderr };
}

beforeAll(() => {
  execFileSync(process.execPath, [require.resolve('typescript/bin/tsc'), '-p', 'tsconfig.build.json'], {
    cwd: ROOT,
    stdio: 'pipe',
  });
}, 180_000);

describe('elmo bench (built CLI)', () => {
  it('tokenizer --json prints one JSON object with the throughput and latency fields', () => {
    const r = elmo(['bench', 'tokenizer', '--model', MODEL, '--json', '--time-ms', '50']);
    expect(r.err).toBe('');
    expect(r.code).toBe(0);
    const result = JSON.parse(r.out) as Record<string, unknown>;
    expect(result).toMatchObject({ bench: 'tokenizer', model: MODEL, texts: 424 });
    expect(result.machine).toMatchObject({ cores: expect.any(Number), node: process.version });
    for (const key of ['tokens', 'textsPerSecond', 'tokensPerSecond']) {
      expect(result[key]).toBeGreaterThan(0);
    }
    for (const key of ['batchMs', 'encodeMs']) {
      const l = result[key] as { p50: number; p99: number };
      expect(l.p50).toBeGreaterThan(0);
      expect(l.p99).toBeGreaterThanOrEqual(l.p50);
    }
  });

  it('refuses an unknown benchmark with exit code 2', () => {
    const r = elmo(['bench', 'kernels', '--model', MODEL]);
    expect(r.code).toBe(2);
    expect(r.err).toMatch(/tokenizer, predict, server/);
  });
});
