/**
 * Checkpoint directories of the training loops (fine-tuning and pretraining): each written to
 * a temporary directory beside its final place and renamed into place, so that a crash leaves
 * either the old checkpoint or the new one, never half of one.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';

import { CheckpointError, InputError } from '../errors';

/** Writes a directory through `fill(tmp)` and renames it into place (replacing an older one). */
export async function saveAtomic(dir: string, fill: (tmp: string) => Promise<void>): Promise<void> {
  const parent = path.dirname(dir);
  fs.mkdirSync(parent, { recursive: true });
  const tmp = fs.mkdtempSync(path.join(parent, `.tmp-${path.basename(dir)}-`));
  try {
    await fill(tmp);
    const old = fs.existsSync(dir) ? `${tmp}-old` : undefined;
    if (old !== undefined) fs.renameSync(dir, old);
    fs.renameSync(tmp, dir);
    if (old !== undefined) fs.rmSync(old, { recursive: true, force: true });
  } catch (err) {
    fs.rmSync(tmp, { recursive: true, force: true });
    throw err;
  }
}

/** checkpoint-<step> directories of `dir`, oldest first. */
export function listCheckpoints(dir: string): string[] {
  if (!fs.existsSync(dir)) return [];
  return fs
    .readdirSync(dir)
    .map((n) => /^checkpoint-(\d+)$/.exec(n))
    .filter((m): m is RegExpExecArray => m !== null)
    .sort((a, b) => Number(a[1]) - Number(b[1]))
    .map((m) => path.join(dir, m[0]));
}

/** Removes all but the newest `keep` checkpoint-<step> directories of `dir`. */
export function pruneCheckpoints(dir: string, keep: number): void {
  const all = listCheckpoints(dir);
  for (const old of all.slice(0, Math.max(0, all.length - keep))) fs.rmSync(old, { recursive: true, force: true });
}

/** The checkpoint a `resume` option names: a path, or (true) the newest in `ckptDir`. */
export function resumeDir(resume: boolean | string, ckptDir: string | undefined): string {
  if (typeof resume === 'string') return resume;
  if (ckptDir === undefined) {
    throw new InputError(
      'Expected options.checkpointDir with resume: true but received none (or pass the checkpoint path)',
    );
  }
  const all = listCheckpoints(ckptDir);
  const newest = all[all.length - 1];
  if (newest === undefined) throw new CheckpointError(`${ckptDir}: no checkpoint-<step> directory to resume from`);
  return newest;
}

/** Reads and parses `file` of checkpoint `dir` (ERR_CHECKPOINT when missing or not JSON). */
export function readJsonState(dir: string, file: string): unknown {
  try {
    return JSON.parse(fs.readFileSync(path.join(dir, file), 'utf8'));
  } catch (err) {
    throw new CheckpointError(`${dir}: cannot read ${file}: ${(err as Error).message}`);
  }
}
