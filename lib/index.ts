/**
 * elmo-chat: pretrain, fine-tune and run BERT encoders from Node.js on CPU and CUDA.
 *
 * What exists today: the model API for inference ({@link Bert}: `load`, `create`, `save`,
 * `forward`, `predict`, `embed`), the WordPiece {@link Tokenizer}, device discovery, native
 * tensors with zero-copy views, a few CPU kernels run in place on typed arrays, and the error
 * classes, and training: `pretrain` (masked-LM on unlabelled text), `fineTune`, `evaluate` and
 * the low-level `trainer()`. The dialogue layer: {@link ChatModel} (intent, emotions and slots
 * of a turn in one forward), {@link ChatAgent} (conversations, answers, feedback, refinement,
 * model versions), {@link ResponsePolicy}, {@link KnowledgeBase} and the store ({@link openStore}).
 *
 * @packageDocumentation
 */
export { Bert } from './bert';
export type {
  BertConfig,
  BertCreateOptions,
  BertInput,
  BertLoadOptions,
  BertModelInfo,
  BertOutput,
  BertRunOptions,
  EmbedOptions,
  PackedIds,
  Prediction,
  ProblemType,
} from './bert';
export type { Trainer, TrainerOptions, TrainerTask, TrainBatch, StepResult, LrSchedule } from './train/trainer';
export type {
  EvalMetrics,
  EvaluateOptions,
  ExampleSource,
  FineTuneOptions,
  FineTuneProgress,
  FineTuneResult,
} from './train/fine-tune';
export type { Example, TrainTask } from './train/data';
export type { PretrainOptions, PretrainProgress, PretrainResult } from './train/pretrain';
export type { CorpusEntry, CorpusSource, CorpusTexts } from './train/corpus';
export { CorpusError, Tokenizer, TokenizerError } from './tokenizer';
export type {
  BatchEncoding,
  CorpusErrorReason,
  EncodeOptions,
  Encoding,
  NormalizerOptions,
  TokenizerInput,
  TokenizerOptions,
  TrainCorpus,
  TrainOptions,
  TrainProgress,
  WordSink,
  WordSplitter,
} from './tokenizer';
export { devices, measureCpuPeak, resolveDevice } from './devices';
export type { CpuInfo, CpuPeak, CudaDevice, CudaInfo, DeviceKind, DeviceRequest, DevicesInfo } from './devices';
export { NativeTensor, ops } from './tensor';
export type { AttentionOptions, F32, GeluOptions, GemmOptions, LayerNormOptions, SoftmaxOptions } from './tensor';
export {
  AbortedError,
  BusyError,
  CheckpointError,
  CudaError,
  DTypeError,
  DeviceUnavailableError,
  ElmoError,
  InputError,
  NativeLoadError,
  NonFiniteError,
  OutOfMemoryError,
  ShapeError,
  UnsupportedError,
  DisposedError,
  NotFoundError,
  StoreError,
} from './errors';
export type { ErrorCode, StoreErrorReason } from './errors';
export { ChatModel, chatLabels } from './chat/chat-model';
export type {
  ChatExample,
  ChatFineTuneOptions,
  ChatFineTuneResult,
  ChatLabels,
  ChatMetrics,
  ChatModelOptions,
  ChatProgress,
  SlotSpan,
  TurnInput,
  TurnScores,
} from './chat/chat-model';
export { ChatEnsemble, averageChatModels, chatScore, greedySoup } from './chat/fusion';
export type {
  AverageOptions,
  AverageReport,
  ChatEnsembleOptions,
  GreedySoupOptions,
  GreedySoupReport,
  GreedySoupStep,
  SoupIngredient,
} from './chat/fusion';
export { decodeSafetensors, encodeSafetensors, readSafetensors, writeSafetensors } from './safetensors';
export type { F32Tensor, SafetensorsContents } from './safetensors';
export { ChatAgent, Conversation } from './chat/agent';
export type { AgentReply, ChatAgentOptions, RefineOptions, RefineReport } from './chat/agent';
export type { Feedback, Scored, Slot, Speaker, Turn, Understanding } from './chat/types';
export { ResponsePolicy } from './chat/answers';
export type {
  HandoffReason,
  IntentResponses,
  Reply,
  ReplyKind,
  RespondContext,
  ResponsePolicyOptions,
  ResponsesConfig,
} from './chat/answers';
export { KnowledgeBase } from './chat/knowledge';
export type {
  EmbedFunction,
  KnowledgeBaseOptions,
  KnowledgeEntry,
  KnowledgeHit,
  KnowledgeLoadOptions,
  KnowledgeSearchOptions,
} from './chat/knowledge';
export { calibrateThreshold, evaluateThreshold, expectedCalibrationError } from './chat/calibrate';
export type {
  CalibrateOptions,
  CalibrationExample,
  CalibrationObjective,
  CalibrationReport,
  ThresholdMetrics,
} from './chat/calibrate';
export {
  DEFAULT_LIMITS,
  KeyStore,
  ModelServer,
  SCOPES,
  createKey,
  createServer,
  hashKey,
  maskPII,
  readKeyFile,
  revokeKey,
} from './serve';
export type {
  AuthOptions,
  ChatService,
  CreateKeyOptions,
  KeyFile,
  KeyRecord,
  MaskOptions,
  MaskResult,
  PiiMatch,
  PiiPattern,
  PiiType,
  RateLimit,
  ReloadResult,
  Scope,
  ServeLimits,
  ServeModel,
  ServeOptions,
} from './serve';
export { openStore } from './chat/store';
export type {
  ChatStore,
  ConversationInfo,
  CreateConversationOptions,
  ExportFeedbackOptions,
  FeedbackStatus,
  GetTurnsOptions,
  ListFeedbackOptions,
  ModelVersion,
  NewModelVersion,
  NewTurn,
  OpenStoreOptions,
  StoredFeedback,
} from './chat/store';
export type { BuildInfo } from './native';
export {
  PRUNED_HEADS_KEY,
  headImportance,
  prune,
  pruneFfn,
  pruneHeads,
  readPrunedHeads,
  selectHeads,
  type HeadImportanceOptions,
  type HeadImportanceResult,
  type HeadScore,
  type PrunedHeads,
  type PruneFfnOptions,
  type PruneOptions,
  type PruneProgress,
  type PruneResult,
  type PruneRunOptions,
  type SelectHeadsOptions,
} from './prune';

import { native } from './native';
import type { BuildInfo } from './native';

/** How the native addon was built: build type, CUDA, compiler, N-API version. */
export function buildInfo(): BuildInfo {
  return native().buildInfo();
}
