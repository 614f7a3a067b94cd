export { Tokenizer, truncateLongestFirst } from './tokenizer';
export type { BatchEncoding, EncodeOptions, Encoding, TokenizerInput, TokenizerOptions } from './tokenizer';
export { TokenizerError } from './errors';
