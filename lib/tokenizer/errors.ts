import { InputError } from '../errors';

/**
 * Error thrown by the tokenizer for invalid input or configuration: an {@link InputError}
 * (code `ERR_INPUT`), so `instanceof ElmoError` holds as for every error of the package.
 */
export class TokenizerError extends InputError {
  constructor(message: string) {
    super(message);
    this.name = 'TokenizerError';
  }
}

/** Describes a received value for "Expected X for Y but received Z" messages. */
export function describe(value: unknown): string {
  if (value === null) return 'null';
  if (typeof value === 'string') {
    return value.length > 40 ? `string "${value.slice(0, 40)}..."` : `string "${value}"`;
  }
  if (typeof value === 'number' || typeof value === 'boolean') return `${typeof value} ${String(value)}`;
  if (Array.isArray(value)) return `array of length ${value.length}`;
  return typeof value;
}

export function invalid(expected: string, what: string, received: unknown): TokenizerError {
  return new TokenizerError(`Expected ${expected} for ${what} but received ${describe(received)}`);
}
