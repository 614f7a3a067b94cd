/**
 * Native f32 tensors and a few CPU kernels that run in place on caller memory.
 *
 * Zero-copy both ways: a {@link NativeTensor}'s `data` is a Float32Array over native memory
 * (no copy; freed when the tensor is disposed and the last view is collected), and the
 * {@link ops} read and write the caller's Float32Array / Int32Array where they are.
 * The ops run synchronously on the calling thread: they are the building blocks the tests and
 * benchmarks drive; model-level work runs off the JS thread.
 */
import { DisposedError, InputError, expected } from './errors';
import { native } from './native';
import type { NativeF32, NativeTensorHandle } from './native';

/**
 * An f32 tensor in native memory, allocated on the CPU backend (64-byte aligned, zero-filled).
 *
 * @example
 * ```ts
 * using t = NativeTensor.alloc([2, 3]);
 * t.data.set([1, 2, 3, 4, 5, 6]);      // writes native memory, no copy
 * ops.geluForward({ out: t, inp: t });  // in place
 * ```
 */
export class NativeTensor implements Disposable {
  readonly #handle: NativeTensorHandle;
  readonly #shape: readonly number[];

  private constructor(handle: NativeTensorHandle) {
    this.#handle = handle;
    this.#shape = Object.freeze(handle.shape.slice());
  }

  /** Allocates a zero-filled f32 tensor of 1 to 4 dimensions. */
  static alloc(shape: readonly number[]): NativeTensor {
    const untyped: unknown = shape;
    if (!Array.isArray(untyped)) throw expected(InputError, 'an array of 1 to 4 dimensions', 'shape', shape);
    return new NativeTensor(new (native().TensorHandle)([...shape]));
  }

  /** The tensor's memory as a Float32Array, with no copy (the same object on every read). */
  get data(): Float32Array {
    return this.#handle.data;
  }

  /** Dimensions, outermost first. */
  get shape(): readonly number[] {
    return this.#shape;
  }

  /** Number of elements. */
  get size(): number {
    return this.#shape.reduce((a, b) => a * b, 1);
  }

  /** Whether {@link dispose} was called. */
  get disposed(): boolean {
    return this.#handle.disposed;
  }

  /**
   * Releases the memory. Idempotent. Every later use throws {@link DisposedError}; a `data`
   * view taken before stays valid (it keeps the memory alive until it is collected).
   */
  dispose(): void {
    this.#handle.dispose();
  }

  [Symbol.dispose](): void {
    this.dispose();
  }

  /** @internal The native handle, for passing to the addon. */
  get handle(): NativeTensorHandle {
    if (this.#handle.disposed) throw new DisposedError('Expected a live tensor but received a disposed tensor');
    return this.#handle;
  }
}

/** An f32 operand: a Float32Array or a {@link NativeTensor}, used in place. */
export type F32 = Float32Array | NativeTensor;

function arg(value: F32): NativeF32;
function arg(value: F32 | undefined): NativeF32 | null;
function arg(value: F32 | undefined): NativeF32 | null {
  if (value === undefined) return null;
  // Anything else goes to the addon as is, which reports it as "Expected ... but received ...".
  return value instanceof NativeTensor ? value.handle : value;
}

function lengthOf(value: unknown, what: string): number {
  if (value instanceof NativeTensor) return value.size;
  // Realm-independent: a typed array from another context (vm, worker) is still one. Its kind
  // is checked by the addon (ERR_DTYPE).
  if (ArrayBuffer.isView(value) && 'length' in value && typeof value.length === 'number') return value.length;
  throw expected(InputError, 'a Float32Array or a tensor', what, value);
}

function options<T>(value: T, what: string): T {
  if (typeof value !== 'object' || value === null) throw expected(InputError, 'an options object', what, value);
  return value;
}

/** {@link ops.gemm} options. `out [m, n] = op(a) · op(b)`, then the epilogue. */
export interface GemmOptions {
  out: F32;
  /** `[m, k]` for `'nn'`/`'nt'`, `[k, m]` for `'tn'`. */
  a: F32;
  /** `[k, n]` for `'nn'`/`'tn'`, `[n, k]` for `'nt'`. */
  b: F32;
  m: number;
  n: number;
  k: number;
  /** Which operand is transposed. Default `'nn'`. */
  op?: 'nn' | 'nt' | 'tn';
  /** Applied in order: `+bias[n]`, GELU (saving `preGelu`), `+residual[m, n]`. Default `'none'`. */
  epilogue?: 'none' | 'bias' | 'bias-gelu' | 'residual' | 'bias-residual';
  bias?: F32;
  residual?: F32;
  preGelu?: F32;
  /** `out += result` instead of `out = result` (epilogue `'none'` only). */
  accumulate?: boolean;
}

/** {@link ops.layernormForward} options. `x = inp + residual; out = (x - mean) · rstd · weight + bias`. */
export interface LayerNormOptions {
  out: F32;
  inp: F32;
  weight: F32;
  bias: F32;
  /** Rows (tokens). */
  rows: number;
  /** Columns (hidden size). */
  cols: number;
  /** Default 1e-12 (BERT). */
  eps?: number;
  residual?: F32;
  /** Receives `x = inp + residual`. */
  sumOut?: F32;
  /** Receive the per-row statistics `[rows]`. */
  mean?: F32;
  rstd?: F32;
}

/** {@link ops.softmaxForward} options: softmax along each row of `inp [rows, cols]`. */
export interface SoftmaxOptions {
  out: F32;
  inp: F32;
  rows: number;
  cols: number;
}

/** {@link ops.geluForward} options: erf GELU, elementwise; `out` may be `inp`. */
export interface GeluOptions {
  out: F32;
  inp: F32;
}

/** {@link ops.attentionForward} options: fused attention over a packed batch. */
export interface AttentionOptions {
  /** `[T, numHeads · headDim]`. */
  out: F32;
  /** `[numHeads, T]`: log-sum-exp of the scaled scores. */
  lse: F32;
  /** `[T, 3 · numHeads · headDim]`: rows `[q | k | v]`. */
  qkv: F32;
  /** Sequence boundaries `[B + 1]` (cu_seqlens): `0 = o[0] <= ... <= o[B] = T`. */
  offsets: Int32Array;
  numHeads: number;
  headDim: number;
  /** Default 0. */
  dropoutP?: number;
  seed?: number | bigint;
  stream?: number | bigint;
}

/**
 * CPU backend kernels run synchronously on caller memory (typed arrays or {@link NativeTensor}s).
 * Every length is checked against the dims first: wrong typed-array kind → `ERR_DTYPE`, wrong
 * length → `ERR_SHAPE`, not a typed array → `ERR_INPUT`, disposed tensor → `ERR_DISPOSED`.
 */
export const ops = {
  /** General matrix multiply with a fused epilogue (see {@link GemmOptions}). */
  gemm(o: GemmOptions): void {
    options(o, 'gemm options');
    native().ops.gemm(
      arg(o.out),
      arg(o.a),
      arg(o.b),
      o.m,
      o.n,
      o.k,
      o.op ?? 'nn',
      o.epilogue ?? 'none',
      arg(o.bias),
      arg(o.residual),
      arg(o.preGelu),
      o.accumulate ?? false,
    );
  },

  /** Layer norm fused with the residual add (see {@link LayerNormOptions}). */
  layernormForward(o: LayerNormOptions): void {
    options(o, 'layernorm options');
    native().ops.layernormForward(
      arg(o.out),
      arg(o.inp),
      arg(o.weight),
      arg(o.bias),
      o.rows,
      o.cols,
      o.eps ?? 1e-12,
      arg(o.residual),
      arg(o.sumOut),
      arg(o.mean),
      arg(o.rstd),
    );
  },

  /** GELU, erf form: `x · ½ · (1 + erf(x / √2))`. */
  geluForward(o: GeluOptions): void {
    options(o, 'gelu options');
    native().ops.geluForward(arg(o.out), arg(o.inp), lengthOf(o.inp, 'inp'));
  },

  /** Row softmax. */
  softmaxForward(o: SoftmaxOptions): void {
    options(o, 'softmax options');
    native().ops.softmaxForward(arg(o.out), arg(o.inp), o.rows, o.cols);
  },

  /** Fused attention: per sequence and head, `softmax(q kᵀ / √headDim) v` over its own keys. */
  attentionForward(o: AttentionOptions): void {
    options(o, 'attention options');
    native().ops.attentionForward(
      arg(o.out),
      arg(o.lse),
      arg(o.qkv),
      o.offsets,
      o.numHeads,
      o.headDim,
      o.dropoutP ?? 0,
      o.seed ?? 0,
      o.stream ?? 0,
    );
  },
};
