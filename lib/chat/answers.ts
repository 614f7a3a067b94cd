/**
 * What the service says back to a turn: a per-intent template with the turn's slot values filled
 * in, an answer from the knowledge base, a clarifying question for a missing slot, a fallback, or
 * a hand-off to a person; with a short empathetic opening for an upset user that never replaces
 * the answer.
 *
 * @example
 * ```ts
 * const policy = ResponsePolicy.fromFile('responses.json', { knowledge: kb });
 * const understanding = await chat.understand(text);
 * const reply = await policy.respond(understanding, { text, history, turn });
 * // { text: 'Your debit card is on its way.', intent: 'card_arrival', kind: 'template' }
 * if (reply.handoff) queue.toHuman(conversationId, reply.handoff.reason);
 * ```
 *
 * `responses.json`:
 * ```json
 * {
 *   "intents": {
 *     "card_arrival": {
 *       "templates": ["Your {card_type} card is on its way.", "Your card is on its way."]
 *     },
 *     "transfer": {
 *       "templates": ["I have sent {amount} to {recipient}."],
 *       "requiredSlots": ["amount", "recipient"],
 *       "ask": { "amount": "How much would you like to send?" }
 *     },
 *     "fees": "kb"
 *   },
 *   "fallback": ["Sorry, I can't help with that yet."],
 *   "thresholds": { "handoff": 0.2, "kb": 0.6, "emotion": 0.5 },
 *   "handoff": { "intent": "human_agent", "upsetTurns": 3 }
 * }
 * ```
 */
import * as fs from 'node:fs';

import { InputError, describeValue, expected } from '../errors';
import type { KnowledgeBase } from './knowledge';
import type { Understanding } from './types';

/** How a turn was answered. */
export type ReplyKind = 'template' | 'kb' | 'fallback' | 'handoff' | 'clarify';

/** Why a conversation goes to a person: the model is unsure, the user is upset, or asked for one. */
export type HandoffReason = 'unsure' | 'upset' | 'asked';

/** What the service says back to one turn. Plain JSON-serializable data. */
export interface Reply {
  text: string;
  /** The understood intent's label (null for a model without an intent head). */
  intent: string | null;
  kind: ReplyKind;
  /** Present when `kind` is `'handoff'`. */
  handoff?: { reason: HandoffReason };
  /** The knowledge-base entry answered from (`kind` `'kb'`) and its similarity to the turn. */
  source?: { id: string; score: number };
  /** The slot a clarifying question asks for (`kind` `'clarify'`). */
  slot?: string;
  /** The text opens with an empathetic prefix (the user is upset). */
  empathy?: boolean;
}

/** The responses of one intent. */
export interface IntentResponses {
  /**
   * Templates with `{slot}` placeholders. A template is usable when every slot it names is known;
   * among the usable ones the most specific (most slots) are preferred, one picked by a seeded,
   * deterministic choice.
   */
  templates: string[];
  /** Slots the intent cannot be answered without: when one is missing, a clarifying question asks for it. */
  requiredSlots?: string[];
  /** The clarifying question per slot; `clarify` of the configuration otherwise. */
  ask?: Record<string, string>;
}

/** The configuration of a {@link ResponsePolicy}, as kept in `responses.json`. */
export interface ResponsesConfig {
  /** Per intent: its responses, a list of templates, or `'kb'` to answer from the knowledge base. */
  intents: Record<string, IntentResponses | string[] | 'kb'>;
  /** Said when nothing else fits (out of scope and no knowledge-base answer). One is picked. */
  fallback?: string[];
  /** The default clarifying question; `{slot}` is the slot's name in words. Default `"Could you tell me the {slot}?"`. */
  clarify?: string;
  thresholds?: {
    /** An intent score below this hands off (`'unsure'`). Default 0: never. */
    handoff?: number;
    /** An intent score below this is out of scope, besides the understanding's own `outOfScope`. */
    outOfScope?: number;
    /** Least cosine similarity of a knowledge-base answer. Default 0.5. */
    kb?: number;
    /** An emotion of `empathy.emotions` at this score or above makes the turn upset. Default 0.5. */
    emotion?: number;
  };
  handoff?: {
    /** The intent of asking for a person. Default `'human_agent'`. */
    intent?: string;
    /** Words or phrases of the user's text that ask for a person (whole words, any case). */
    keywords?: string[];
    /** Upset user turns in a row (this one included) that hand off. Default 3; 0: never. */
    upsetTurns?: number;
    /** What is said on a hand-off, per reason. */
    texts?: { unsure?: string; upset?: string; asked?: string };
  };
  empathy?: {
    /** The negative emotions. Default: anger, annoyance, disappointment, disapproval, sadness, fear, nervousness, grief. */
    emotions?: string[];
    /** Openings put before the answer for an upset user (one picked). */
    prefixes?: string[];
  };
  /** Seed of the template choice. Default 0. */
  seed?: number;
}

/** Options of {@link ResponsePolicy}. */
export interface ResponsePolicyOptions {
  /** Answers intents mapped to `'kb'`, unknown intents and out-of-scope turns. */
  knowledge?: KnowledgeBase;
}

/** What {@link ResponsePolicy.respond} knows of the conversation besides this turn's understanding. */
export interface RespondContext {
  /** The user's text of this turn: the knowledge-base query and where hand-off keywords are looked for. */
  text?: string;
  /** What was understood of the previous user turns, oldest first (for the upset streak). */
  history?: readonly Understanding[];
  /** Slot values known from earlier turns; this turn's slots take precedence. */
  slots?: Record<string, string>;
  /** Position of the turn and the conversation: the template choice is deterministic in them. */
  turn?: number;
  conversationId?: string;
}

const DEFAULT_FALLBACK = ["Sorry, I can't help with that. Could you put it another way?"];
const DEFAULT_CLARIFY = 'Could you tell me the {slot}?';
const DEFAULT_HANDOFF_TEXTS: Record<HandoffReason, string> = {
  unsure: "I'm not sure I understood. Let me connect you with a member of our team.",
  upset: "I'm sorry this has been frustrating. Let me connect you with a member of our team.",
  asked: 'Of course. Let me connect you with a member of our team.',
};
const DEFAULT_KEYWORDS = ['human', 'agent', 'real person', 'representative', 'operator'];
const DEFAULT_NEGATIVE = [
  'anger',
  'annoyance',
  'disappointment',
  'disapproval',
  'sadness',
  'fear',
  'nervousness',
  'grief',
];
const DEFAULT_PREFIXES = ["I'm sorry about the trouble."];
const PLACEHOLDER = /\{([A-Za-z0-9_.-]+)\}/g;

interface Template {
  text: string;
  slots: string[];
}

interface IntentPlan {
  kb: boolean;
  templates: Template[];
  requiredSlots: string[];
  ask: Map<string, string>;
}

/** The validated configuration with every default filled in. */
interface Plan {
  intents: Map<string, IntentPlan>;
  fallback: string[];
  clarify: string;
  handoffBelow: number;
  outOfScopeBelow: number;
  kbMin: number;
  emotionMin: number;
  handoffIntent: string;
  keywords: RegExp | null;
  upsetTurns: number;
  handoffTexts: Record<HandoffReason, string>;
  negative: Set<string>;
  prefixes: string[];
  seed: number;
}

/**
 * Turns what the model understood of a turn into what the service says back. The decision, in
 * order:
 * 1. the user asks for a person (the hand-off intent, or a keyword in the text): hand-off `'asked'`;
 * 2. the user was upset for `upsetTurns` user turns in a row: hand-off `'upset'`;
 * 3. the intent score is below `thresholds.handoff`: hand-off `'unsure'`;
 * 4. out of scope, an intent mapped to `'kb'`, or an intent without responses: the knowledge
 *    base's best entry at or above `thresholds.kb`, else a fallback;
 * 5. the intent's templates: a clarifying question when a required slot (or a slot every
 *    template needs) is missing, else the most specific usable template, filled.
 *
 * An upset turn (a negative emotion at or above `thresholds.emotion`) gets an empathetic opening
 * before the text; the rest of the text is what it would have been (except the upset hand-off,
 * whose text is already worded for it).
 */
export class ResponsePolicy {
  readonly #plan: Plan;
  readonly #knowledge: KnowledgeBase | undefined;

  /** Validates the configuration (`ERR_INPUT` naming the field). */
  constructor(config: ResponsesConfig, options: ResponsePolicyOptions = {}) {
    this.#plan = checkConfig(config, 'config');
    if (typeof options !== 'object' || options === null)
      throw expected(InputError, 'an options object', 'options', options);
    const knowledge: unknown = options.knowledge;
    if (knowledge !== undefined && (typeof knowledge !== 'object' || knowledge === null || !('search' in knowledge))) {
      throw expected(InputError, 'a KnowledgeBase', 'options.knowledge', knowledge);
    }
    this.#knowledge = options.knowledge;
  }

  /**
   * Reads and validates a `responses.json`. A missing file or bad JSON throws `ERR_INPUT` naming
   * the file; a bad field names the file and the field.
   */
  static fromFile(file: string, options: ResponsePolicyOptions = {}): ResponsePolicy {
    if (typeof file !== 'string' || file === '') throw expected(InputError, 'a file path', 'file', file);
    let text: string;
    try {
      text = fs.readFileSync(file, 'utf8');
    } catch (err) {
      throw new InputError(`Cannot read ${file}: ${(err as Error).message}`);
    }
    let config: unknown;
    try {
      config = JSON.parse(text);
    } catch (err) {
      throw new InputError(`${file} is not valid JSON: ${(err as Error).message}`);
    }
    try {
      return new ResponsePolicy(config as ResponsesConfig, options);
    } catch (err) {
      if (err instanceof InputError) throw new InputError(`${file}: ${err.message}`);
      throw err;
    }
  }

  /** Whether this intent has template responses (not `'kb'`). */
  hasTemplates(intent: string): boolean {
    const plan = this.#plan.intents.get(intent);
    return plan !== undefined && !plan.kb;
  }

  /** What to say back to a turn; see the class documentation for the order of decisions. */
  async respond(understanding: Understanding, context: RespondContext = {}): Promise<Reply> {
    checkUnderstanding(understanding, 'understanding');
    const ctx = checkContext(context);
    const p = this.#plan;
    const intent = understanding.intent?.label ?? null;
    const score = understanding.intent?.score;
    const upset = this.#isUpset(understanding);
    const pick = chooser(p.seed, ctx.conversationId ?? '', ctx.turn ?? 0, intent ?? '');

    const handoff = (reason: HandoffReason): Reply => {
      const reply: Reply = { text: p.handoffTexts[reason], intent, kind: 'handoff', handoff: { reason } };
      return reason === 'upset' ? reply : this.#soften(reply, upset, pick);
    };
    if ((intent !== null && intent === p.handoffIntent) || (p.keywords !== null && p.keywords.test(ctx.text ?? ''))) {
      return handoff('asked');
    }
    if (upset && p.upsetTurns > 0 && this.#upsetStreak(understanding, ctx.history ?? []) >= p.upsetTurns) {
      return handoff('upset');
    }
    if (score !== undefined && score < p.handoffBelow) return handoff('unsure');

    const outOfScope = understanding.outOfScope || (score !== undefined && score < p.outOfScopeBelow);
    const plan = intent === null ? undefined : p.intents.get(intent);
    if (outOfScope || plan === undefined || plan.kb) {
      const hit = await this.#lookup(ctx.text);
      const reply: Reply = hit
        ? { text: hit.answer, intent, kind: 'kb', source: { id: hit.id, score: hit.score } }
        : { text: pick(p.fallback), intent, kind: 'fallback' };
      return this.#soften(reply, upset, pick);
    }

    const known = new Map<string, string>(Object.entries(ctx.slots ?? {}));
    // This turn's slots win; of two values of one slot, the surer.
    const best = new Map<string, number>();
    for (const s of understanding.slots) {
      if ((best.get(s.name) ?? -Infinity) < s.score) {
        best.set(s.name, s.score);
        known.set(s.name, s.value.trim());
      }
    }
    const missing = plan.requiredSlots.find((slot) => !known.has(slot));
    const usable = plan.templates.filter((t) => t.slots.every((slot) => known.has(slot)));
    if (missing !== undefined || usable.length === 0) {
      const slot =
        missing ??
        // The template needing the fewest unknown slots; ask for the first of them.
        plan.templates.map((t) => t.slots.filter((s) => !known.has(s))).sort((a, b) => a.length - b.length)[0]?.[0] ??
        '';
      const question = plan.ask.get(slot) ?? p.clarify.replace(/\{slot\}/g, slot.replace(/[_.-]+/g, ' '));
      return this.#soften({ text: question, intent, kind: 'clarify', slot }, upset, pick);
    }
    const most = Math.max(...usable.map((t) => t.slots.length));
    const template = pick(usable.filter((t) => t.slots.length === most));
    const text = template.text.replace(PLACEHOLDER, (_, name: string) => known.get(name) ?? '');
    return this.#soften({ text, intent, kind: 'template' }, upset, pick);
  }

  /** Whether a turn shows a negative emotion at or above the emotion threshold. */
  #isUpset(u: Understanding): boolean {
    return u.emotions.some((e) => this.#plan.negative.has(e.label) && e.score >= this.#plan.emotionMin);
  }

  /** Upset user turns in a row, ending with this one. */
  #upsetStreak(current: Understanding, history: readonly Understanding[]): number {
    let streak = this.#isUpset(current) ? 1 : 0;
    for (let i = history.length - 1; streak > 0 && i >= 0; i--) {
      const u = history[i];
      if (u === undefined || !this.#isUpset(u)) break;
      streak++;
    }
    return streak;
  }

  /** Puts an empathetic opening before the text of an upset turn's reply; the text itself stays. */
  #soften(reply: Reply, upset: boolean, pick: <T>(items: readonly T[]) => T): Reply {
    if (!upset || this.#plan.prefixes.length === 0) return reply;
    return { ...reply, text: `${pick(this.#plan.prefixes)} ${reply.text}`, empathy: true };
  }

  async #lookup(text: string | undefined): Promise<{ id: string; answer: string; score: number } | null> {
    if (this.#knowledge === undefined || text === undefined || text.trim() === '') return null;
    const [hit] = await this.#knowledge.search(text, { k: 1, minScore: this.#plan.kbMin });
    return hit === undefined ? null : { id: hit.entry.id, answer: hit.entry.answer, score: hit.score };
  }
}

/**
 * A deterministic choice among items, from the seed and the turn's position (FNV-1a of both):
 * the same turn always gets the same template, and consecutive turns vary.
 */
function chooser(seed: number, conversationId: string, turn: number, intent: string): <T>(items: readonly T[]) => T {
  let h = 0x811c9dc5;
  for (const ch of `${seed}\u0000${conversationId}\u0000${turn}\u0000${intent}`) {
    h ^= ch.codePointAt(0) ?? 0;
    h = Math.imul(h, 0x01000193) >>> 0;
  }
  return <T>(items: readonly T[]): T => items[h % items.length] as T;
}

// ---- validation ----

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

function checkKeys(value: Record<string, unknown>, allowed: readonly string[], what: string): void {
  for (const key of Object.keys(value)) {
    if (!allowed.includes(key)) {
      throw new InputError(`Unknown field ${what}.${key} (expected one of ${allowed.join(', ')})`);
    }
  }
}

function stringList(value: unknown, what: string, nonEmpty: boolean): string[] {
  if (!Array.isArray(value) || (nonEmpty && value.length === 0)) {
    throw expected(InputError, nonEmpty ? 'a non-empty array of strings' : 'an array of strings', what, value);
  }
  return value.map((s: unknown, i) => {
    if (typeof s !== 'string' || s.trim() === '') throw expected(InputError, 'a non-empty string', `${what}[${i}]`, s);
    return s;
  });
}

function text(value: unknown, fallback: string, what: string): string {
  if (value === undefined) return fallback;
  if (typeof value !== 'string' || value.trim() === '') throw expected(InputError, 'a non-empty string', what, value);
  return value;
}

function unit(value: unknown, fallback: number, what: string): number {
  if (value === undefined) return fallback;
  if (typeof value !== 'number' || !(value >= 0 && value <= 1))
    throw expected(InputError, 'a number in [0, 1]', what, value);
  return value;
}

function template(t: string): Template {
  return { text: t, slots: [...new Set(Array.from(t.matchAll(PLACEHOLDER), (m) => m[1] ?? ''))] };
}

function checkIntent(value: unknown, what: string): IntentPlan {
  if (value === 'kb') return { kb: true, templates: [], requiredSlots: [], ask: new Map() };
  if (Array.isArray(value)) {
    return { kb: false, templates: stringList(value, what, true).map(template), requiredSlots: [], ask: new Map() };
  }
  if (!isRecord(value))
    throw expected(InputError, "an object { templates }, an array of templates or 'kb'", what, value);
  checkKeys(value, ['templates', 'requiredSlots', 'ask'], what);
  const templates = stringList(value.templates, `${what}.templates`, true).map(template);
  const requiredSlots =
    value.requiredSlots === undefined ? [] : stringList(value.requiredSlots, `${what}.requiredSlots`, false);
  const ask = new Map<string, string>();
  if (value.ask !== undefined) {
    if (!isRecord(value.ask)) throw expected(InputError, 'an object { slot: question }', `${what}.ask`, value.ask);
    for (const [slot, q] of Object.entries(value.ask)) ask.set(slot, text(q, '', `${what}.ask.${slot}`));
  }
  return { kb: false, templates, requiredSlots, ask };
}

function checkConfig(config: unknown, what: string): Plan {
  if (!isRecord(config)) throw expected(InputError, 'an object', what, config);
  checkKeys(config, ['intents', 'fallback', 'clarify', 'thresholds', 'handoff', 'empathy', 'seed'], what);
  if (!isRecord(config.intents)) throw expected(InputError, 'an object of intents', `${what}.intents`, config.intents);
  const intents = new Map<string, IntentPlan>();
  for (const [name, value] of Object.entries(config.intents)) {
    intents.set(name, checkIntent(value, `${what}.intents.${name}`));
  }

  const thresholds = config.thresholds ?? {};
  if (!isRecord(thresholds)) throw expected(InputError, 'an object', `${what}.thresholds`, thresholds);
  checkKeys(thresholds, ['handoff', 'outOfScope', 'kb', 'emotion'], `${what}.thresholds`);

  const handoff = config.handoff ?? {};
  if (!isRecord(handoff)) throw expected(InputError, 'an object', `${what}.handoff`, handoff);
  checkKeys(handoff, ['intent', 'keywords', 'upsetTurns', 'texts'], `${what}.handoff`);
  const upsetTurns = handoff.upsetTurns ?? 3;
  if (typeof upsetTurns !== 'number' || !Number.isInteger(upsetTurns) || upsetTurns < 0) {
    throw expected(InputError, 'an integer >= 0', `${what}.handoff.upsetTurns`, upsetTurns);
  }
  const texts = handoff.texts ?? {};
  if (!isRecord(texts)) throw expected(InputError, 'an object', `${what}.handoff.texts`, texts);
  checkKeys(texts, ['unsure', 'upset', 'asked'], `${what}.handoff.texts`);
  const keywords =
    handoff.keywords === undefined ? DEFAULT_KEYWORDS : stringList(handoff.keywords, `${what}.handoff.keywords`, false);

  const empathy = config.empathy ?? {};
  if (!isRecord(empathy)) throw expected(InputError, 'an object', `${what}.empathy`, empathy);
  checkKeys(empathy, ['emotions', 'prefixes'], `${what}.empathy`);

  const seed = config.seed ?? 0;
  if (typeof seed !== 'number' || !Number.isInteger(seed))
    throw expected(InputError, 'an integer', `${what}.seed`, seed);

  return {
    intents,
    fallback: config.fallback === undefined ? DEFAULT_FALLBACK : stringList(config.fallback, `${what}.fallback`, true),
    clarify: text(config.clarify, DEFAULT_CLARIFY, `${what}.clarify`),
    handoffBelow: unit(thresholds.handoff, 0, `${what}.thresholds.handoff`),
    outOfScopeBelow: unit(thresholds.outOfScope, 0, `${what}.thresholds.outOfScope`),
    kbMin: thresholdKb(thresholds.kb, `${what}.thresholds.kb`),
    emotionMin: unit(thresholds.emotion, 0.5, `${what}.thresholds.emotion`),
    handoffIntent: text(handoff.intent, 'human_agent', `${what}.handoff.intent`),
    keywords:
      keywords.length === 0
        ? null
        : new RegExp(`(?<![\\p{L}\\p{N}])(?:${keywords.map(escapeRegExp).join('|')})(?![\\p{L}\\p{N}])`, 'iu'),
    upsetTurns,
    handoffTexts: {
      unsure: text(texts.unsure, DEFAULT_HANDOFF_TEXTS.unsure, `${what}.handoff.texts.unsure`),
      upset: text(texts.upset, DEFAULT_HANDOFF_TEXTS.upset, `${what}.handoff.texts.upset`),
      asked: text(texts.asked, DEFAULT_HANDOFF_TEXTS.asked, `${what}.handoff.texts.asked`),
    },
    negative: new Set(
      empathy.emotions === undefined
        ? DEFAULT_NEGATIVE
        : stringList(empathy.emotions, `${what}.empathy.emotions`, false),
    ),
    prefixes:
      empathy.prefixes === undefined
        ? DEFAULT_PREFIXES
        : stringList(empathy.prefixes, `${what}.empathy.prefixes`, false),
    seed,
  };
}

/** A cosine threshold, in [-1, 1]. */
function thresholdKb(value: unknown, what: string): number {
  if (value === undefined) return 0.5;
  if (typeof value !== 'number' || !(value >= -1 && value <= 1)) {
    throw expected(InputError, 'a number in [-1, 1]', what, value);
  }
  return value;
}

function escapeRegExp(s: string): string {
  return s
    .trim()
    .replace(/[.*+?^${}()|[\]\\]/g, '\\$&')
    .replace(/\s+/g, '\\s+');
}

function checkScored(value: unknown, what: string): void {
  if (
    !isRecord(value) ||
    typeof value.label !== 'string' ||
    typeof value.score !== 'number' ||
    Number.isNaN(value.score)
  ) {
    throw expected(InputError, 'a { label, score }', what, value);
  }
}

function checkUnderstanding(u: unknown, what: string): void {
  if (!isRecord(u)) throw expected(InputError, 'an Understanding', what, u);
  if (u.intent !== null) checkScored(u.intent, `${what}.intent`);
  if (!Array.isArray(u.emotions)) throw expected(InputError, 'an array', `${what}.emotions`, u.emotions);
  u.emotions.forEach((e: unknown, i) => checkScored(e, `${what}.emotions[${i}]`));
  if (!Array.isArray(u.slots)) throw expected(InputError, 'an array', `${what}.slots`, u.slots);
  u.slots.forEach((s: unknown, i) => {
    if (!isRecord(s) || typeof s.name !== 'string' || typeof s.value !== 'string' || typeof s.score !== 'number') {
      throw expected(InputError, 'a slot { name, value, score }', `${what}.slots[${i}]`, s);
    }
  });
  if (typeof u.outOfScope !== 'boolean') throw expected(InputError, 'a boolean', `${what}.outOfScope`, u.outOfScope);
}

function checkContext(context: unknown): RespondContext {
  if (!isRecord(context)) throw expected(InputError, 'an object', 'context', context);
  const { text: t, history, slots, turn, conversationId } = context;
  if (t !== undefined && typeof t !== 'string') throw expected(InputError, 'a string', 'context.text', t);
  if (history !== undefined) {
    if (!Array.isArray(history)) throw expected(InputError, 'an array of Understanding', 'context.history', history);
    history.forEach((u: unknown, i) => checkUnderstanding(u, `context.history[${i}]`));
  }
  if (slots !== undefined) {
    if (!isRecord(slots)) throw expected(InputError, 'an object { slot: value }', 'context.slots', slots);
    for (const [name, v] of Object.entries(slots)) {
      if (typeof v !== 'string') {
        throw new InputError(`Expected a string for context.slots.${name} but received ${describeValue(v)}`);
      }
    }
  }
  if (turn !== undefined && (typeof turn !== 'number' || !Number.isInteger(turn) || turn < 0)) {
    throw expected(InputError, 'an integer >= 0', 'context.turn', turn);
  }
  if (conversationId !== undefined && typeof conversationId !== 'string') {
    throw expected(InputError, 'a string', 'context.conversationId', conversationId);
  }
  return context;
}
