/**
 * A small seeded random number generator for data order: shuffling examples and batches,
 * splitting train/eval sets. Not cryptographic.
 *
 * The generator is xoshiro128** (Blackman and Vigna, 2018): 128 bits of state, period 2^128 - 1,
 * passes BigCrush, and runs on 32-bit integer math only (`Math.imul` and shifts), so it is fast
 * in JavaScript without BigInt. The state is filled by splitmix32 from the seed and a stream
 * number, so `new Rng(seed, epoch)` gives an unrelated sequence per epoch from one user seed.
 * The same (seed, stream) gives the same numbers on every platform and Node version.
 *
 * @example
 * ```ts
 * const rng = new Rng(42, epoch);
 * const order = rng.shuffle(Array.from({ length: n }, (_, i) => i));
 * ```
 */
import { InputError, expected } from '../errors';

export class Rng {
  private s0: number;
  private s1: number;
  private s2: number;
  private s3: number;

  /**
   * @param seed any safe integer (negative ones included); both 32-bit halves are used.
   * @param stream a second integer that selects an independent stream, e.g. the epoch.
   */
  constructor(seed: number, stream = 0) {
    checkSafeInteger(seed, 'seed');
    checkSafeInteger(stream, 'stream');
    // Absorb the four 32-bit words of (seed, stream) through splitmix32, then draw the state
    // from the same generator, as the xoshiro authors recommend for seeding.
    const words = [
      seed >>> 0,
      Math.floor(seed / 0x100000000) >>> 0,
      stream >>> 0,
      Math.floor(stream / 0x100000000) >>> 0,
    ];
    let x = 0;
    for (const w of words) x = splitmix32(x ^ w);
    this.s0 = x = splitmix32(x);
    this.s1 = x = splitmix32(x);
    this.s2 = x = splitmix32(x);
    this.s3 = splitmix32(x);
    if ((this.s0 | this.s1 | this.s2 | this.s3) === 0) this.s0 = 1; // the one state xoshiro forbids
  }

  /** The next 32 random bits, as an unsigned integer in [0, 2^32). */
  nextUint32(): number {
    const result = Math.imul(rotl(Math.imul(this.s1, 5), 7), 9) >>> 0;
    const t = this.s1 << 9;
    this.s2 ^= this.s0;
    this.s3 ^= this.s1;
    this.s1 ^= this.s2;
    this.s0 ^= this.s3;
    this.s2 ^= t;
    this.s3 = rotl(this.s3, 11);
    return result;
  }

  /** A float in [0, 1) with 53 random bits. */
  nextFloat(): number {
    const hi = this.nextUint32() >>> 5; // 27 bits
    const lo = this.nextUint32() >>> 6; // 26 bits
    return (hi * 67108864 + lo) / 9007199254740992;
  }

  /** An integer in [0, n), unbiased (rejection sampling); n in [1, 2^32]. */
  nextInt(n: number): number {
    if (!Number.isInteger(n) || n < 1 || n > 0x100000000) {
      throw expected(InputError, 'an integer in [1, 2^32]', 'n', n);
    }
    // Reject the top partial copy of [0, n) so that every residue is equally likely.
    const limit = 0x100000000 - (0x100000000 % n);
    for (;;) {
      const r = this.nextUint32();
      if (r < limit) return r % n;
    }
  }

  /** Shuffles `array` in place (Fisher-Yates) and returns it. */
  shuffle<T>(array: T[]): T[];
  shuffle<A extends Int32Array | Uint32Array | Float32Array | Float64Array>(array: A): A;
  shuffle<T>(array: T[] | Int32Array | Uint32Array | Float32Array | Float64Array): typeof array {
    const a = array as T[];
    for (let i = a.length - 1; i > 0; i--) {
      const j = this.nextInt(i + 1);
      const t = a[i] as T;
      a[i] = a[j] as T;
      a[j] = t;
    }
    return array;
  }
}

/** One step of splitmix32 (a 32-bit variant of splitmix64's finalizer, with a Weyl increment). */
function splitmix32(x: number): number {
  let z = (x + 0x9e3779b9) | 0;
  z = Math.imul(z ^ (z >>> 16), 0x21f0aaad);
  z = Math.imul(z ^ (z >>> 15), 0x735a2d97);
  return (z ^ (z >>> 15)) | 0;
}

function rotl(x: number, k: number): number {
  return (x << k) | (x >>> (32 - k));
}

function checkSafeInteger(v: unknown, what: string): void {
  if (typeof v !== 'number' || !Number.isSafeInteger(v)) throw expected(InputError, 'a safe integer', what, v);
}
