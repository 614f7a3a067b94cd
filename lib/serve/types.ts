/** The shapes the HTTP service shares with the code around it: the model it serves, the chat service. */
import type { BertModelInfo, EmbedOptions, Prediction } from '../bert';
import type { Tokenizer } from '../tokenizer';

/**
 * What the service needs of a model; {@link Bert} is one. Any object of this shape can be served,
 * e.g. a `Bert` wrapped to count its calls.
 */
export interface ServeModel {
  readonly labels: readonly string[];
  readonly tokenizer: Tokenizer;
  /** Longest sequence in tokens; texts are cut to it. */
  readonly maxSeqLen: number;
  readonly config: BertModelInfo;
  predict(texts: readonly string[]): Promise<Prediction[]>;
  embed(texts: readonly string[], options: EmbedOptions): Promise<Float32Array>;
  dispose(): void;
}

/**
 * The dialogue layer, as the service calls it for `POST /v1/chat` and `POST /v1/feedback` (both
 * routes exist only when a ChatService is given). Errors it throws are answered by their `code`:
 * `ERR_INPUT` 400, `ERR_NOT_FOUND` 404, `ERR_STORE` 503, anything else 500.
 *
 * @example
 * ```ts
 * const chat: ChatService = {
 *   async reply({ conversationId, text }) { return { conversationId: conversationId ?? 'c-1', reply: 'Hello!' }; },
 *   async feedback(input) { return { id: 'f-1' }; },
 * };
 * const server = createServer({ model: 'models/intent', auth: false, chat });
 * ```
 */
export interface ChatService {
  /** One user turn; resolves with a JSON-serializable reply. */
  reply(input: { conversationId?: string; text: string }): Promise<unknown>;
  /** A correction or rating; the service validates `input` itself. */
  feedback(input: unknown): Promise<{ id: string }>;
}
