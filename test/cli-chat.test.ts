// `elmo train-chat`, `elmo chat`, `elmo refine` and `elmo feedback`, run as a user runs them: the
// CLI built into build-cli-chat/ in a child process, on a toy dialogue written to a tmp dir.
import { execFileSync, spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';

import { Bert } from '../lib';
import { SMALL, tokenizer, toy } from './chat-toy';
import { tmpDir } from './helpers';

const ROOT = path.join(__dirname, '..');
const OUT_DIR = path.join(ROOT, 'build-cli-chat');
const CLI = path.join(OUT_DIR, 'cli.js');

function elmo(args: string[], input = ''): { code: number; out: string[]; err: string } {
  const r = spawnSync(process.execPath, [CLI, ...args], {
    encoding: 'utf8',
    input,
    env: { ...process.env, ELMO_NUM_THREADS: '1' },
  });
  return { code: r.status ?? -1, out: r.stdout.split('\n').filter((l) => l !== ''), err: r.stderr };
}

const toyLines = (n: number, seed: number): string[] => toy(n, seed).map((e) => JSON.stringify(e));

let dir = '';
let encoder = '';
beforeAll(() => {
  execFileSync(
    process.execPath,
    [require.resolve('typescript/bin/tsc'), '-p', 'tsconfig.build.json', '--outDir', OUT_DIR, '--declaration', 'false'],
    { cwd: ROOT, stdio: 'pipe' },
  );
  dir = tmpDir('cli-chat');
  fs.writeFileSync(path.join(dir, 'train.jsonl'), `${toyLines(90, 0).join('\n')}\n`);
  fs.writeFileSync(path.join(dir, 'dev.jsonl'), `${toyLines(30, 1).join('\n')}\n`);
  encoder = path.join(dir, 'encoder');
  const bert = Bert.create({ ...SMALL, hiddenDropout: 0, attentionDropout: 0 }, { tokenizer, device: 'cpu', seed: 1 });
  return bert.save(encoder).finally(() => {
    bert.dispose();
  });
}, 180_000);

describe('elmo train-chat, chat, refine, feedback (built CLI)', () => {
  jest.setTimeout(180_000);

  test('train, talk, correct, refine', () => {
    const model = path.join(dir, 'chat');
    const train = path.join(dir, 'train.jsonl');
    const dev = path.join(dir, 'dev.jsonl');
    const t = elmo([
      'train-chat',
      '--train',
      train,
      '--eval',
      dev,
      '--encoder',
      encoder,
      '--out',
      model,
      '--epochs',
      '20',
      '--batch-size',
      '16',
      '--lr',
      '3e-3',
      '--calibrate',
    ]);
    expect(t.err).not.toContain('ERR_');
    expect(t.code).toBe(0);
    expect(t.out[0]).toBe('heads    3 intents, 0 emotions, 1 slots (3 tags); 90 examples');
    expect(t.out.find((l) => l.startsWith('eval'))).toMatch(/intent accuracy (9\d|100)\.\d\d%.*slot F1/);
    expect(t.out.find((l) => l.startsWith('oos'))).toMatch(/threshold 0\.\d+ \(keep-fraction\)/);
    const meta = JSON.parse(fs.readFileSync(path.join(model, 'chat.json'), 'utf8')) as { outOfScopeThreshold: number };
    expect(meta.outOfScopeThreshold).toBeGreaterThan(0);

    const c = elmo(['chat', '--model', model, '--json'], 'i want to go to london\nplay songs of paris\n');
    expect(c.code).toBe(0);
    const turns = c.out.map(
      (l) =>
        JSON.parse(l) as {
          understanding: { intent: { label: string }; slots: { name: string; value: string }[] };
          reply: { text: string };
        },
    );
    expect(turns.map((x) => x.understanding.intent.label)).toEqual(['travel', 'music']);
    expect(turns[0]?.understanding.slots).toEqual([expect.objectContaining({ name: 'city', value: 'london' })]);
    expect(turns[0]?.reply.text.length).toBeGreaterThan(0);

    const readable = elmo(['chat', '--model', model], 'take me to york\n');
    expect(readable.out[0]).toMatch(/^ {2}intent {3}travel \d\.\d\d/);
    expect(readable.out).toContain('  slots    city="york"');
    expect(readable.out[readable.out.length - 1]).toMatch(/^bot> /);

    const agentDir = path.join(dir, 'agent');
    const a = elmo(
      ['chat', '--agent', agentDir, '--model', model],
      'please help me travel to boston\n:intent travel\n:bad\n',
    );
    expect(a.err).not.toContain('ERR_');
    expect(a.code).toBe(0);
    expect(a.out.filter((l) => l.includes('feedback kept'))).toHaveLength(2);

    const exported = elmo(['feedback', 'export', '--store', path.join(agentDir, 'chat.db')]);
    expect(exported.code).toBe(0);
    const fb = exported.out.map((l) => JSON.parse(l) as { intent?: string; rating?: number; text: string });
    expect(fb.map((f) => [f.intent, f.rating])).toEqual([
      ['travel', undefined],
      [undefined, -1],
    ]);

    const r = elmo(['refine', '--agent', agentDir, '--replay', train, '--held-out', dev, '--lr', '1e-3', '--json']);
    expect(r.err).not.toContain('ERR_');
    expect(r.code).toBe(0);
    const report = JSON.parse(r.out.join('\n')) as { feedback: { used: number; ratingOnly: number }; parent: string };
    expect(report.feedback).toEqual(expect.objectContaining({ used: 1, ratingOnly: 1 }));
    expect(report.parent).toBe('v1');
  });

  test('usage errors exit 2, model errors 1', () => {
    expect(elmo(['chat']).code).toBe(2);
    const missing = elmo(['chat', '--model', path.join(dir, 'nope')]);
    expect(missing.code).toBe(1);
    expect(missing.err).toMatch(/ERR_CHECKPOINT/);
    expect(elmo(['train-chat', '--train', 'x.jsonl']).code).toBe(2);
  });
});
