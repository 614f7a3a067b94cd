/**
 * The shapes the dialogue layer passes between its parts: what the model understood of a turn,
 * the turns of a conversation, user feedback. Plain JSON-serializable data, so that the store,
 * the HTTP service and a caller's own code can keep and send them as they are.
 */

/** A scored label. */
export interface Scored {
  label: string;
  /** Softmax probability (intent) or sigmoid (emotions), in [0, 1]. */
  score: number;
}

/** One slot value found in the user's text, BIO-decoded, with character offsets into it. */
export interface Slot {
  /** Slot name, e.g. `'city'` (the tag without its `B-` / `I-` prefix). */
  name: string;
  /** The user's text from `start` to `end`, as written. */
  value: string;
  /** Offsets into the turn's text (UTF-16 code units, `end` exclusive). */
  start: number;
  end: number;
  /** Mean probability of the slot's tags. */
  score: number;
}

/** What `ChatModel.understand` returns for one turn. */
export interface Understanding {
  /** The best intent, or null for a model without an intent head. */
  intent: Scored | null;
  /** The intents in descending score, the best first (empty without an intent head). */
  intents: Scored[];
  /** Emotions at or above the threshold, highest first (empty without an emotion head). */
  emotions: Scored[];
  slots: Slot[];
  /** The intent's score is below the model's out-of-scope threshold. */
  outOfScope: boolean;
  /** The turn (or its context) was longer than the model reads and was cut; said, never silent. */
  truncated: boolean;
}

export type Speaker = 'user' | 'bot';

/** One turn of a conversation as kept in the store. */
export interface Turn {
  /** 0-based position in the conversation. */
  index: number;
  speaker: Speaker;
  text: string;
  /** ISO 8601 time the turn was recorded. */
  at: string;
  /** For user turns that went through the model: what it understood. */
  understanding?: Understanding;
  /** Model version that understood the turn. */
  modelVersion?: string;
}

/** A correction or rating of one user turn. Every field but the ids is optional. */
export interface Feedback {
  conversationId: string;
  /** Index of the user turn the feedback is about. */
  turn: number;
  /** The intent the turn should have had. */
  intent?: string;
  /** The emotions the turn should have had (the full set; [] = none). */
  emotions?: string[];
  /** The slots the turn should have had (the full set), offsets into the turn's text. */
  slots?: { name: string; start: number; end: number }[];
  /** A rating of the answer: -1 (bad), 0, 1 (good). */
  rating?: -1 | 0 | 1;
  /** Free text from the reviewer. */
  comment?: string;
}
