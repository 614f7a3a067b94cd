export { Tokenizer, truncateLongestFirst } from './tokenizer';
export type {
  BatchEncoding,
  EncodeOptions,
  Encoding,
  NormalizerOptions,
  TokenizerInput,
  TokenizerOptions,
  WordSink,
  WordSplitter,
} from './tokenizer';
export { TokenizerError } from './errors';
export { CorpusError, trainWordPiece } from './train';
export type { CorpusErrorReason, TrainCorpus, TrainOptions, TrainProgress } from './train';
