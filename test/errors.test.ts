import {
  AbortedError,
  BusyError,
  CheckpointError,
  CudaError,
  DTypeError,
  DeviceUnavailableError,
  DisposedError,
  ElmoError,
  InputError,
  NonFiniteError,
  NotFoundError,
  OutOfMemoryError,
  ShapeError,
  StoreError,
  UnsupportedError,
} from '../lib';
import { describeValue, errorClasses, expected } from '../lib/errors';
import { native } from '../lib/native';

const table: [string, new (message: string) => ElmoError][] = [
  ['ERR_SHAPE', ShapeError],
  ['ERR_DTYPE', DTypeError],
  ['ERR_OOM', OutOfMemoryError],
  ['ERR_CUDA', CudaError],
  ['ERR_CHECKPOINT', CheckpointError],
  ['ERR_DISPOSED', DisposedError],
  ['ERR_BUSY', BusyError],
  ['ERR_ABORTED', AbortedError],
  ['ERR_INPUT', InputError],
  ['ERR_UNSUPPORTED', UnsupportedError],
  ['ERR_DEVICE_UNAVAILABLE', DeviceUnavailableError],
  ['ERR_NONFINITE', NonFiniteError],
];

// Codes of the JavaScript side only (the store): no native code throws them.
const jsOnly: [string, new (message: string) => ElmoError][] = [
  ['ERR_STORE', StoreError],
  ['ERR_NOT_FOUND', NotFoundError],
];

describe('error classes', () => {
  it.each([...table, ...jsOnly])('%s is an ElmoError subclass with that code', (code, Cls) => {
    const err = new Cls('boom');
    expect(err).toBeInstanceOf(ElmoError);
    expect(err).toBeInstanceOf(Error);
    expect(err.code).toBe(code);
    expect(err.message).toBe('boom');
    expect(err.name).toBe(Cls.name);
    expect(errorClasses[code as keyof typeof errorClasses]).toBe(Cls);
  });

  it.each(table)('native code throws the registered class for %s', (code, Cls) => {
    let caught: unknown;
    try {
      native().testing.throwCode(code, `native ${code}`);
    } catch (err) {
      caught = err;
    }
    expect(caught).toBeInstanceOf(Cls);
    expect((caught as ElmoError).code).toBe(code);
    expect((caught as ElmoError).message).toBe(`native ${code}`);
    // The JS stack of the caller is kept.
    expect((caught as ElmoError).stack).toContain('errors.test.ts');
  });

  it('an unknown native code falls back to ElmoError with that code', () => {
    let caught: unknown;
    try {
      native().testing.throwCode('ERR_SOMETHING_NEW', 'x');
    } catch (err) {
      caught = err;
    }
    expect(caught).toBeInstanceOf(ElmoError);
    expect((caught as { code: string }).code).toBe('ERR_SOMETHING_NEW');
  });
});

describe('messages', () => {
  it('describeValue names what was received', () => {
    expect(describeValue(new Float64Array(6))).toBe('Float64Array(6)');
    expect(describeValue([1, 2])).toBe('Array(2)');
    expect(describeValue(3.5)).toBe('number 3.5');
    expect(describeValue('abc')).toBe("string 'abc'");
    expect(describeValue(null)).toBe('null');
    expect(describeValue(undefined)).toBe('undefined');
    expect(describeValue(new Map())).toBe('an instance of Map');
    expect(describeValue({})).toBe('an object');
    expect(describeValue(10n)).toBe('bigint 10');
  });

  it('expected() builds "Expected X for Y but received Z"', () => {
    const err = expected(InputError, 'a positive integer', 'steps', -1);
    expect(err).toBeInstanceOf(InputError);
    expect(err.message).toBe('Expected a positive integer for steps but received number -1');
  });
});
