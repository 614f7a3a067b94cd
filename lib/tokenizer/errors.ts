/**
 * Error thrown by the tokenizer for invalid input or configuration.
 *
 * Carries the same `code` strings as the rest of the package (`ERR_INPUT`). Kept local to the
 * tokenizer so that it has no dependency on the native addon.
 */
export class TokenizerError extends Error {
  readonly code: 'ERR_INPUT';

  constructor(message: string) {
    super(message);
    this.name = 'TokenizerError';
    this.code = 'ERR_INPUT';
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
