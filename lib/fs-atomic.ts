/** Writing files so that a crash leaves the old file or the new one, never half of one. */
import * as fs from 'node:fs';

import { CheckpointError } from './errors';

/** Writes `text` to a temporary file next to `file` and renames it into place (`ERR_CHECKPOINT` on failure). */
export function writeFileAtomic(file: string, text: string): void {
  const tmp = `${file}.tmp-${String(process.pid)}-${Math.random().toString(36).slice(2)}`;
  try {
    fs.writeFileSync(tmp, text);
    fs.renameSync(tmp, file);
  } catch (err) {
    fs.rmSync(tmp, { force: true });
    throw new CheckpointError(`Cannot write ${file}: ${(err as Error).message}`);
  }
}
