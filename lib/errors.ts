/**
 * The error classes of elmo-chat. Every error the package throws is an {@link ElmoError} with a
 * stable `code`; native code throws the same classes (they are handed to the addon when it
 * loads), so `instanceof` and `err.code` work for errors from either side of the boundary.
 *
 * @example
 * ```ts
 * try {
 *   ops.geluForward({ out, inp });
 * } catch (err) {
 *   if (err instanceof ShapeError) console.error(err.code, err.message); // ERR_SHAPE ...
 * }
 * ```
 */

/** Every code an {@link ElmoError} can carry. */
export type ErrorCode =
  | 'ERR_SHAPE'
  | 'ERR_DTYPE'
  | 'ERR_OOM'
  | 'ERR_CUDA'
  | 'ERR_CHECKPOINT'
  | 'ERR_DISPOSED'
  | 'ERR_BUSY'
  | 'ERR_ABORTED'
  | 'ERR_INPUT'
  | 'ERR_UNSUPPORTED'
  | 'ERR_DEVICE_UNAVAILABLE'
  | 'ERR_NATIVE_LOAD'
  | 'ERR_NONFINITE'
  | 'ERR_STORE'
  | 'ERR_NOT_FOUND';

/** Base class of every error thrown by elmo-chat. */
export class ElmoError extends Error {
  /** Stable, machine-readable code, e.g. `'ERR_SHAPE'`. */
  readonly code: ErrorCode;

  constructor(message: string, code: ErrorCode = 'ERR_INPUT', options?: ErrorOptions) {
    super(message, options);
    this.name = 'ElmoError';
    this.code = code;
  }
}

/** Tensor shapes disagree with each other or with the dims (`ERR_SHAPE`). */
export class ShapeError extends ElmoError {
  constructor(message: string) {
    super(message, 'ERR_SHAPE');
    this.name = 'ShapeError';
  }
}

/** A buffer or tensor has a dtype the operation does not take (`ERR_DTYPE`). */
export class DTypeError extends ElmoError {
  constructor(message: string) {
    super(message, 'ERR_DTYPE');
    this.name = 'DTypeError';
  }
}

/** An allocation failed, on the host or on a device (`ERR_OOM`). */
export class OutOfMemoryError extends ElmoError {
  constructor(message: string) {
    super(message, 'ERR_OOM');
    this.name = 'OutOfMemoryError';
  }
}

/** A CUDA call or kernel launch failed (`ERR_CUDA`). */
export class CudaError extends ElmoError {
  constructor(message: string) {
    super(message, 'ERR_CUDA');
    this.name = 'CudaError';
  }
}

/** A weights or config file is malformed or does not match the model (`ERR_CHECKPOINT`). */
export class CheckpointError extends ElmoError {
  constructor(message: string) {
    super(message, 'ERR_CHECKPOINT');
    this.name = 'CheckpointError';
  }
}

/** An object was used after `dispose()` (`ERR_DISPOSED`). */
export class DisposedError extends ElmoError {
  constructor(message: string) {
    super(message, 'ERR_DISPOSED');
    this.name = 'DisposedError';
  }
}

/** A model is already running an operation; one at a time (`ERR_BUSY`). */
export class BusyError extends ElmoError {
  constructor(message: string) {
    super(message, 'ERR_BUSY');
    this.name = 'BusyError';
  }
}

/** An operation was stopped through its `AbortSignal` (`ERR_ABORTED`). */
export class AbortedError extends ElmoError {
  constructor(message: string) {
    super(message, 'ERR_ABORTED');
    this.name = 'AbortedError';
  }
}

/** Any other bad argument: wrong type, out-of-range value, malformed input (`ERR_INPUT`). */
export class InputError extends ElmoError {
  constructor(message: string) {
    super(message, 'ERR_INPUT');
    this.name = 'InputError';
  }
}

/** The backend does not implement this operation or variant (`ERR_UNSUPPORTED`). */
export class UnsupportedError extends ElmoError {
  constructor(message: string) {
    super(message, 'ERR_UNSUPPORTED');
    this.name = 'UnsupportedError';
  }
}

/**
 * A device was asked for explicitly (`device: 'cuda'`) and cannot be had: not compiled in, no
 * driver, no device. `reason` says which (`ERR_DEVICE_UNAVAILABLE`).
 */
export class DeviceUnavailableError extends ElmoError {
  readonly reason: string;

  constructor(message: string, reason = message) {
    super(message, 'ERR_DEVICE_UNAVAILABLE');
    this.name = 'DeviceUnavailableError';
    this.reason = reason;
  }
}

/**
 * A training step met a NaN or infinite loss or gradient (`ERR_NONFINITE`); the message names
 * the step. The step was not applied: the weights are those of the step before.
 */
export class NonFiniteError extends ElmoError {
  constructor(message: string) {
    super(message, 'ERR_NONFINITE');
    this.name = 'NonFiniteError';
  }
}

/** The native addon (build/Release/elmo.node or a prebuilt binary) could not be loaded (`ERR_NATIVE_LOAD`). */
export class NativeLoadError extends ElmoError {
  constructor(message: string, options?: ErrorOptions) {
    super(message, 'ERR_NATIVE_LOAD', options);
    this.name = 'NativeLoadError';
  }
}

/** Why a {@link StoreError} happened; see docs/store.md. */
export type StoreErrorReason = 'locked' | 'full' | 'unreachable' | 'corrupt' | 'conflict' | 'other';

/**
 * The chat store's database failed (`ERR_STORE`). `reason` says how: `'locked'` (another
 * connection held the lock past the busy timeout; retry later), `'full'` (disk or size limit),
 * `'unreachable'` (no connection to the server), `'corrupt'` (not a database, or a damaged one),
 * `'conflict'` (the id is taken), `'other'`. Nothing of the failed call was written.
 */
export class StoreError extends ElmoError {
  readonly reason: StoreErrorReason;

  constructor(message: string, reason: StoreErrorReason = 'other', options?: ErrorOptions) {
    super(message, 'ERR_STORE', options);
    this.name = 'StoreError';
    this.reason = reason;
  }
}

/** A conversation, turn, feedback or model version id that the store does not have (`ERR_NOT_FOUND`). */
export class NotFoundError extends ElmoError {
  constructor(message: string) {
    super(message, 'ERR_NOT_FOUND');
    this.name = 'NotFoundError';
  }
}

/** The class thrown for each code, by code. Handed to the native addon at load. */
export const errorClasses = {
  ERR_SHAPE: ShapeError,
  ERR_DTYPE: DTypeError,
  ERR_OOM: OutOfMemoryError,
  ERR_CUDA: CudaError,
  ERR_CHECKPOINT: CheckpointError,
  ERR_DISPOSED: DisposedError,
  ERR_BUSY: BusyError,
  ERR_ABORTED: AbortedError,
  ERR_INPUT: InputError,
  ERR_UNSUPPORTED: UnsupportedError,
  ERR_DEVICE_UNAVAILABLE: DeviceUnavailableError,
  ERR_NATIVE_LOAD: NativeLoadError,
  ERR_NONFINITE: NonFiniteError,
  ERR_STORE: StoreError,
  ERR_NOT_FOUND: NotFoundError,
} as const satisfies Record<ErrorCode, new (message: string) => ElmoError>;

/**
 * Describes a received value for messages of the one shape "Expected X for Y but received Z":
 * `Float64Array(6)`, `number 3.5`, `string 'abc'`, `null`, `an instance of Map`.
 */
export function describeValue(value: unknown): string {
  if (value === null) return 'null';
  if (value === undefined) return 'undefined';
  if (ArrayBuffer.isView(value) && !(value instanceof DataView)) {
    return `${value.constructor.name}(${String((value as unknown as { length: number }).length)})`;
  }
  if (Array.isArray(value)) return `Array(${String(value.length)})`;
  switch (typeof value) {
    case 'number':
    case 'boolean':
    case 'bigint':
      return `${typeof value} ${String(value)}`;
    case 'string':
      return `string '${value.length > 24 ? `${value.slice(0, 21)}...` : value}'`;
    case 'function':
      return 'a function';
    case 'symbol':
      return 'a symbol';
    default: {
      const name = (value as { constructor?: { name?: unknown } }).constructor?.name;
      return typeof name === 'string' && name !== '' && name !== 'Object' ? `an instance of ${name}` : 'an object';
    }
  }
}

/** Builds the error "Expected `expected` for `what` but received `describeValue(received)`". */
export function expected(
  ErrorClass: new (message: string) => ElmoError,
  expectation: string,
  what: string,
  received: unknown,
): ElmoError {
  return new ErrorClass(`Expected ${expectation} for ${what} but received ${describeValue(received)}`);
}
