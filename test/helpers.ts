// Shared helpers of the jest tests: float64 references and comparisons.
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import * as v8 from 'node:v8';
import * as vm from 'node:vm';

/** A deterministic generator of floats in [lo, hi) (xorshift). */
export function rng(seed: number): (lo?: number, hi?: number) => number {
  let s = seed >>> 0 || 1;
  return (lo = -1, hi = 1) => {
    s ^= s << 13;
    s >>>= 0;
    s ^= s >>> 17;
    s ^= s << 5;
    s >>>= 0;
    return lo + ((hi - lo) * s) / 2 ** 32;
  };
}

export function randomF32(n: number, seed: number, lo = -1, hi = 1): Float32Array {
  const next = rng(seed);
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) out[i] = next(lo, hi);
  return out;
}

/** Largest violation of |a - b| <= atol + rtol·|ref| (<= 0 when all close), and where. */
export function closeness(
  got: ArrayLike<number>,
  ref: ArrayLike<number>,
  atol: number,
  rtol: number,
): { worst: number; index: number } {
  if (got.length !== ref.length) throw new Error(`length ${String(got.length)} != ${String(ref.length)}`);
  let worst = -Infinity;
  let index = -1;
  for (let i = 0; i < ref.length; i++) {
    const r = ref[i] ?? NaN;
    const excess = Math.abs((got[i] ?? NaN) - r) - (atol + rtol * Math.abs(r));
    if (!(excess <= worst)) {
      worst = Number.isNaN(excess) ? Infinity : excess;
      index = i;
    }
  }
  return { worst, index };
}

export function expectClose(got: ArrayLike<number>, ref: ArrayLike<number>, atol = 1e-5, rtol = 1e-4): void {
  const { worst, index } = closeness(got, ref, atol, rtol);
  if (worst > 0) {
    throw new Error(
      `not close at [${String(index)}]: got ${String(got[index])}, reference ${String(ref[index])} ` +
        `(atol ${String(atol)}, rtol ${String(rtol)})`,
    );
  }
}

/** erf in double: Taylor series, accurate to ~1e-11 on [-4, 4] (the tests stay inside). */
export function erf(x: number): number {
  if (Math.abs(x) > 4) throw new Error('erf reference only covers [-4, 4]');
  let term = x;
  let sum = x;
  for (let n = 1; n < 120; n++) {
    term *= (-x * x) / n;
    const add = term / (2 * n + 1);
    sum += add;
    if (Math.abs(add) < 1e-17) break;
  }
  return (2 / Math.sqrt(Math.PI)) * sum;
}

/** The JS garbage collector, reachable without --expose-gc. */
export function gcFunction(): () => void {
  v8.setFlagsFromString('--expose-gc');
  return vm.runInNewContext('gc') as () => void;
}

/** Runs gc until cond() holds (finalizers run asynchronously), up to `tries` rounds. */
export async function collectUntil(cond: () => boolean, tries = 20): Promise<boolean> {
  const gc = gcFunction();
  for (let i = 0; i < tries && !cond(); i++) {
    gc();
    await new Promise((resolve) => setTimeout(resolve, 5));
  }
  return cond();
}

/**
 * Collects garbage until `count()` stops changing, so that buffers left behind by earlier
 * tests are gone before a test takes its baseline.
 */
export async function settle(count: () => number): Promise<number> {
  const gc = gcFunction();
  let last = count();
  for (let i = 0, still = 0; i < 20 && still < 2; i++) {
    gc();
    await new Promise((resolve) => setTimeout(resolve, 5));
    const now = count();
    still = now === last ? still + 1 : 0;
    last = now;
  }
  return last;
}

/** A fresh temporary directory, `elmo-<prefix>-XXXXXX`. */
export function tmpDir(prefix: string): string {
  return fs.mkdtempSync(path.join(os.tmpdir(), `elmo-${prefix}-`));
}

/** Rejection of a promise as an error object (fails the test when it resolves). */
export async function rejection(p: Promise<unknown>): Promise<Error & { code?: string }> {
  try {
    await p;
  } catch (err) {
    return err as Error & { code?: string };
  }
  throw new Error('expected the promise to reject');
}
