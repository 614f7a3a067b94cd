/**
 * `ChatAgent`: the dialogue service a backend calls on every turn. It keeps conversations in the
 * store, understands each user turn with the active {@link ChatModel} version (the last turns as
 * context), answers through a {@link ResponsePolicy}, takes feedback, and refines the model from
 * it: fine-tuning on the corrections plus a replay sample of the original training data, a
 * shadow evaluation of the candidate against the live model on a held-out set, and an atomic
 * swap only when the candidate is not worse. Every version is kept; `rollback()` restores one.
 *
 * Files: `modelsDir/<version>/` per model version (a {@link ChatModel} directory), written under
 * a temporary name and renamed into place; which version is live is the store's
 * `activateModelVersion`, one transaction. A process killed mid-refine leaves at most a
 * temporary directory (removed at the next open) and the old version live.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';

import { BusyError, DisposedError, ElmoError, InputError, NotFoundError, StoreError, expected } from '../errors';
import { maskPII } from '../serve/pii';
import type { MaskOptions } from '../serve/pii';
import type { BertLoadOptions } from '../bert';
import { Rng } from '../train/rng';
import { ResponsePolicy } from './answers';
import type { Reply, ResponsesConfig } from './answers';
import { ChatModel, readChatExamples } from './chat-model';
import type { ChatExample, ChatFineTuneOptions, ChatMetrics } from './chat-model';
import type { KnowledgeBase } from './knowledge';
import { openStore } from './store';
import type { ChatStore, ModelVersion, StoredFeedback } from './store';
import type { Feedback, Turn, Understanding } from './types';

/** Options of {@link ChatAgent.open}. */
export interface ChatAgentOptions {
  /** Directory of the model versions (`<modelsDir>/<version>/`). Created if needed. */
  modelsDir: string;
  /** The store, or its URL; default SQLite at `<modelsDir>/chat.db`. An agent closes a store it opened. */
  store?: ChatStore | string;
  /** A chat model directory to register as the first version when the store has none. */
  initialModel?: string;
  /** Responses: a policy, its configuration, or a `responses.json` path. Default: fallbacks only. */
  responses?: ResponsePolicy | ResponsesConfig | string;
  /** Answers `'kb'` intents and out-of-scope turns (given to the policy built from `responses`). */
  knowledge?: KnowledgeBase;
  /** Earlier turns (both speakers) read as context; default 6. */
  contextTurns?: number;
  /**
   * PII masking of what is stored and understood: e-mails, phone numbers, card numbers and
   * IBANs become `[EMAIL]` etc. before the model or the store sees the text. Default on;
   * `false` turns it off, an object passes options to `maskPII`.
   */
  mask?: boolean | MaskOptions;
  /** How the model versions are loaded (device, threads, ...). */
  model?: BertLoadOptions;
}

/** What {@link ChatAgent.reply} returns. */
export interface AgentReply {
  conversationId: string;
  /** Index of the user turn in the conversation (what feedback names). */
  turn: number;
  /** The turn as the model and the store saw it (masked). */
  text: string;
  understanding: Understanding;
  reply: Reply;
  modelVersion: string;
  /** False when the store could not keep the turn (locked, full, unreachable): answered anyway. */
  stored: boolean;
  /** Why the turn was not stored, or was answered without its context. */
  warnings?: string[];
}

/** Options of {@link ChatAgent.refine}. */
export interface RefineOptions extends Omit<ChatFineTuneOptions, 'evalSet'> {
  /** The original training data: replayed beside the feedback so that the model does not forget. */
  replay: readonly ChatExample[] | string;
  /** The held-out set of the shadow evaluation (the original test or dev set). */
  heldOut: readonly ChatExample[] | string;
  /**
   * Replay examples per feedback example; default 8. The learning rate defaults to 0.3 of the
   * live version's own (as chat.json records it), else 2e-5; epochs to 2.
   */
  replayRatio?: number;
  /** Times each feedback example is seen per epoch; default 2. */
  feedbackRepeat?: number;
  /** How far the candidate may fall below the live model on the held-out set and still go live; default 0. */
  tolerance?: number;
  /** Do not swap even if the candidate is better (evaluate only); default false. */
  dryRun?: boolean;
}

/** What {@link ChatAgent.refine} did. */
export interface RefineReport {
  /** The candidate went live. */
  accepted: boolean;
  /** The new version (accepted), or null. */
  version: string | null;
  parent: string;
  /** Why it was not accepted. */
  reason?: string;
  feedback: {
    /** Corrections trained on. */
    used: number;
    /** Naming a label the model does not have: set aside (status `pending-label`), used once a version has the label. */
    pendingLabel: number;
    /** Ratings or comments without a correction: nothing to train on. */
    ratingOnly: number;
    /** Feedback on turns that are gone (or not user turns): skipped. */
    skipped: number;
  };
  replayed: number;
  /** The held-out metrics of the live model and of the candidate, and the score compared. */
  current: ChatMetrics;
  candidate: ChatMetrics;
  score: { current: number; candidate: number };
  /** Accuracy of each model on the corrected turns themselves (did refinement fix them?). */
  fixed: { current: number; candidate: number; count: number };
  seconds: number;
}

/** One conversation of an agent: say something, read the turns. */
export class Conversation {
  constructor(
    private readonly agent: ChatAgent,
    readonly id: string,
  ) {}

  /** The user says `text`; the agent answers. */
  say(text: string): Promise<AgentReply> {
    return this.agent.reply({ conversationId: this.id, text });
  }

  /** The turns so far (both speakers), oldest first. */
  turns(options: { last?: number } = {}): Promise<Turn[]> {
    return this.agent.store.getTurns(this.id, options);
  }
}

const TMP_PREFIX = '.tmp-';

/**
 * The dialogue service: conversations, answers, feedback, refinement and model versions.
 *
 * @example
 * ```ts
 * const agent = await ChatAgent.open({ modelsDir: 'models/support', initialModel: 'models/support-chat',
 *   responses: 'responses.json' });
 * const r = await agent.reply({ text: 'my card has not arrived' });
 * await agent.feedback({ conversationId: r.conversationId, turn: r.turn, intent: 'card_arrival' });
 * const report = await agent.refine({ replay: 'data/train.jsonl', heldOut: 'data/dev.jsonl' });
 * ```
 */
export class ChatAgent {
  readonly store: ChatStore;
  readonly #ownsStore: boolean;
  readonly #dir: string;
  readonly #policy: ResponsePolicy;
  readonly #contextTurns: number;
  readonly #mask: MaskOptions | null;
  readonly #modelOptions: BertLoadOptions;
  #model: ChatModel;
  #version: ModelVersion;
  #refining = false;
  #closed = false;

  private constructor(
    store: ChatStore,
    ownsStore: boolean,
    dir: string,
    policy: ResponsePolicy,
    options: ChatAgentOptions,
    model: ChatModel,
    version: ModelVersion,
  ) {
    this.store = store;
    this.#ownsStore = ownsStore;
    this.#dir = dir;
    this.#policy = policy;
    this.#contextTurns = options.contextTurns ?? 6;
    this.#mask =
      options.mask === false ? null : options.mask === true || options.mask === undefined ? {} : options.mask;
    this.#modelOptions = options.model ?? {};
    this.#model = model;
    this.#version = version;
  }

  /** Opens the store and the live model version (registering `initialModel` when there is none). */
  static async open(options: ChatAgentOptions): Promise<ChatAgent> {
    if (typeof options !== 'object' || (options as unknown) === null) {
      throw expected(InputError, 'an object { modelsDir, ... }', 'options', options);
    }
    const dir = options.modelsDir;
    if (typeof dir !== 'string' || dir === '') throw expected(InputError, 'a directory path', 'options.modelsDir', dir);
    const ctx = options.contextTurns;
    if (ctx !== undefined && (!Number.isSafeInteger(ctx) || ctx < 0)) {
      throw expected(InputError, 'an integer >= 0', 'options.contextTurns', ctx);
    }
    fs.mkdirSync(dir, { recursive: true });
    // A refinement killed before its rename leaves a temporary directory: never a version.
    for (const name of fs.readdirSync(dir)) {
      if (name.startsWith(TMP_PREFIX)) fs.rmSync(path.join(dir, name), { recursive: true, force: true });
    }
    const policy =
      options.responses instanceof ResponsePolicy
        ? options.responses
        : typeof options.responses === 'string'
          ? ResponsePolicy.fromFile(options.responses, knowledgeOption(options))
          : new ResponsePolicy(options.responses ?? { intents: {} }, knowledgeOption(options));
    const ownsStore = typeof options.store !== 'object';
    const store =
      typeof options.store === 'object' ? options.store : await openStore(options.store ?? path.join(dir, 'chat.db'));
    try {
      let active = await store.activeModelVersion();
      if (active === null) {
        if (options.initialModel === undefined) {
          throw new InputError(
            'Expected options.initialModel (a chat model directory) for a store without a model version but received none',
          );
        }
        const version = 'v1';
        const target = path.join(dir, version);
        if (path.resolve(options.initialModel) !== path.resolve(target)) {
          copyDir(options.initialModel, path.join(dir, `${TMP_PREFIX}${version}`));
          fs.renameSync(path.join(dir, `${TMP_PREFIX}${version}`), target);
        }
        await store.addModelVersion({ version, dir: target, note: `initial model from ${options.initialModel}` });
        await store.activateModelVersion(version);
        active = await store.activeModelVersion();
        if (active === null) throw new ElmoError('The store has no active model version after activating one');
      }
      const model = await ChatModel.load(active.dir, options.model ?? {});
      return new ChatAgent(store, ownsStore, dir, policy, options, model, active);
    } catch (err) {
      if (ownsStore) await store.close().catch(() => undefined);
      throw err;
    }
  }

  /** The live model. */
  get model(): ChatModel {
    return this.#model;
  }

  /** The live model version. */
  get version(): string {
    return this.#version.version;
  }

  /** A conversation: a new one, or one by id (created on first use). */
  async conversation(id?: string): Promise<Conversation> {
    this.#checkOpen('conversation');
    if (id === undefined) return new Conversation(this, await this.store.createConversation());
    if (!(await this.store.hasConversation(id))) await this.store.createConversation({ id });
    return new Conversation(this, id);
  }

  /**
   * Understands and answers one user turn. The conversation is created when `conversationId`
   * is absent (a new id) or unknown (that id). A store that fails (locked, full, unreachable)
   * does not stop the answer: `stored` is then false and `warnings` says why.
   */
  async reply(input: { conversationId?: string; text: string }): Promise<AgentReply> {
    this.#checkOpen('reply');
    if (typeof input !== 'object' || (input as unknown) === null) {
      throw expected(InputError, 'an object { conversationId?, text }', 'input', input);
    }
    const raw = input.text;
    if (typeof raw !== 'string' || raw.trim() === '') throw expected(InputError, 'a non-empty turn', 'text', raw);
    const text = this.#mask === null ? raw : maskPII(raw, this.#mask).text;
    const warnings: string[] = [];
    let id = input.conversationId;
    let history: Turn[] = [];
    let stored = true;
    try {
      if (id === undefined) id = await this.store.createConversation();
      else if (!(await this.store.hasConversation(id))) await this.store.createConversation({ id });
      history = await this.store.getTurns(id, { last: Math.max(this.#contextTurns, 12) });
    } catch (err) {
      if (!(err instanceof StoreError)) throw err;
      stored = false;
      warnings.push(`store: ${err.message}; answered without the conversation's context`);
      id ??= 'unsaved';
    }
    const context = history.slice(-this.#contextTurns).map((t) => t.text);
    const model = this.#model; // taken after the awaits above: a swap meanwhile is seen here
    const version = this.#version.version;
    const understanding = await model.understand(text, { context });
    const earlier = history.filter((t) => t.speaker === 'user' && t.understanding !== undefined);
    const reply = await this.#policy.respond(understanding, {
      text,
      history: earlier.map((t) => t.understanding as Understanding),
      slots: knownSlots(earlier),
      turn: history.length,
      conversationId: id,
    });
    let turn = history.length;
    if (stored) {
      try {
        const userTurn = await this.store.appendTurn(id, {
          speaker: 'user',
          text,
          understanding,
          modelVersion: version,
        });
        turn = userTurn.index;
        await this.store.appendTurn(id, { speaker: 'bot', text: reply.text });
      } catch (err) {
        if (!(err instanceof StoreError)) throw err;
        stored = false;
        warnings.push(`store: ${err.message}; the turn was not kept`);
      }
    }
    const out: AgentReply = { conversationId: id, turn, text, understanding, reply, modelVersion: version, stored };
    if (warnings.length > 0) out.warnings = warnings;
    return out;
  }

  /**
   * Keeps a correction or rating of a user turn. Unknown conversations and turns are
   * {@link NotFoundError}s; labels the model does not have are kept (and set aside by the next
   * refinement until a version has them).
   */
  async feedback(input: Feedback): Promise<{ id: string }> {
    this.#checkOpen('feedback');
    return this.store.addFeedback(input);
  }

  /** Every model version, oldest first. */
  versions(): Promise<ModelVersion[]> {
    return this.store.listModelVersions();
  }

  /**
   * Fine-tunes a candidate on the new feedback plus replayed original data, compares it with the
   * live model on `heldOut`, and makes it live only if it is not worse (by `tolerance`). One
   * refinement at a time; replies go on meanwhile (from the live model).
   */
  async refine(options: RefineOptions): Promise<RefineReport> {
    this.#checkOpen('refine');
    if (typeof options !== 'object' || (options as unknown) === null) {
      throw expected(InputError, 'an object { replay, heldOut, ... }', 'options', options);
    }
    if (this.#refining) throw new BusyError('A refinement is already running on this agent');
    this.#refining = true;
    const t0 = performance.now();
    try {
      const replayAll = await readChatExamples(options.replay, 'options.replay');
      const heldOut = await readChatExamples(options.heldOut, 'options.heldOut');
      if (heldOut.length === 0) throw new InputError('Expected a non-empty options.heldOut for the shadow evaluation');
      const ratio = options.replayRatio ?? 8;
      const repeat = options.feedbackRepeat ?? 2;
      const tolerance = options.tolerance ?? 0;
      for (const [v, what] of [
        [ratio, 'options.replayRatio'],
        [repeat, 'options.feedbackRepeat'],
      ] as const) {
        if (!Number.isSafeInteger(v) || v < 0) throw expected(InputError, 'an integer >= 0', what, v);
      }
      if (typeof tolerance !== 'number' || !(tolerance >= 0)) {
        throw expected(InputError, 'a number >= 0', 'options.tolerance', tolerance);
      }
      const live = this.#model;
      const parent = this.#version;
      const { examples, ids, pending, ratingOnly, skipped } = await this.#feedbackExamples(live);
      if (pending.length > 0) await this.store.markFeedback(pending, 'pending-label');
      const base: Omit<RefineReport, 'current' | 'candidate' | 'score' | 'fixed'> = {
        accepted: false,
        version: null,
        parent: parent.version,
        feedback: { used: examples.length, pendingLabel: pending.length, ratingOnly, skipped },
        replayed: 0,
        seconds: 0,
      };
      const current = await live.evaluate(heldOut);
      if (examples.length === 0) {
        return {
          ...base,
          reason: 'no feedback to train on',
          current,
          candidate: current,
          score: { current: score(current), candidate: score(current) },
          fixed: { current: 0, candidate: 0, count: 0 },
          seconds: (performance.now() - t0) / 1000,
        };
      }
      const rng = new Rng(options.seed ?? 42, 7);
      const replay = rng.shuffle([...replayAll]).slice(0, ratio * examples.length);
      const train: ChatExample[] = [...replay];
      for (let r = 0; r < repeat; r++) train.push(...examples);
      // An int8 model cannot be trained: the candidate trains in fp32 and is then run (evaluated,
      // served) as the live versions are.
      const int8 = this.#modelOptions.precision === 'int8';
      let candidate = await ChatModel.load(
        parent.dir,
        int8 ? { ...this.#modelOptions, precision: 'fp32' } : this.#modelOptions,
      );
      let accepted = false;
      let version: string | null = null;
      try {
        candidate.outOfScopeThreshold = live.outOfScopeThreshold;
        candidate.emotionThreshold = live.emotionThreshold;
        // A refinement moves less than the training did: by default 0.3 of the live version's
        // own peak learning rate (3e-4 for a model trained at 1e-3: bench/refine.js), else 2e-5.
        const learningRate = 0.3 * (live.trainedLearningRate ?? 2e-5 / 0.3);
        await candidate.fineTune(train, { epochs: 2, learningRate, ...fineTuneOptions(options) });
        if (int8) candidate = await this.#reloadServed(candidate);
        const cand = await candidate.evaluate(heldOut);
        const fixedCurrent = await live.evaluate(examples);
        const fixedCand = await candidate.evaluate(examples);
        const report: RefineReport = {
          ...base,
          replayed: replay.length,
          current,
          candidate: cand,
          score: { current: score(current), candidate: score(cand) },
          fixed: { current: score(fixedCurrent), candidate: score(fixedCand), count: examples.length },
          seconds: 0,
        };
        if (report.score.candidate + tolerance < report.score.current) {
          report.reason = `the candidate scores ${fmt(report.score.candidate)} on the held-out set against ${fmt(report.score.current)} for ${parent.version}`;
        } else if (options.dryRun === true) {
          report.reason = 'dry run';
        } else {
          version = await this.#nextVersion();
          const tmp = path.join(this.#dir, `${TMP_PREFIX}${version}`);
          const target = path.join(this.#dir, version);
          fs.rmSync(tmp, { recursive: true, force: true });
          await candidate.save(tmp);
          fs.renameSync(tmp, target);
          await this.store.addModelVersion({
            version,
            dir: target,
            parent: parent.version,
            metrics: { heldOut: report.score, fixed: report.fixed, feedback: report.feedback },
            note: `refined from ${parent.version} on ${String(examples.length)} corrections + ${String(replay.length)} replayed`,
          });
          await this.store.activateModelVersion(version);
          await this.store.markFeedback(ids, 'used', version);
          this.#swap(candidate, await this.#versionInfo(version));
          accepted = true;
          report.accepted = true;
          report.version = version;
        }
        report.seconds = (performance.now() - t0) / 1000;
        return report;
      } finally {
        if (!accepted) candidate.dispose();
      }
    } finally {
      this.#refining = false;
    }
  }

  /** A trained candidate as the live versions run: saved to a scratch directory, loaded back with
   * the agent's model options (e.g. int8), the trained one disposed. */
  async #reloadServed(trained: ChatModel): Promise<ChatModel> {
    const scratch = path.join(this.#dir, `${TMP_PREFIX}candidate`);
    try {
      fs.rmSync(scratch, { recursive: true, force: true });
      await trained.save(scratch);
      return await ChatModel.load(scratch, this.#modelOptions);
    } finally {
      trained.dispose();
      fs.rmSync(scratch, { recursive: true, force: true });
    }
  }

  /**
   * Deploys a chat model trained elsewhere (e.g. `elmo train-chat` on data with a new intent) as
   * the next version and makes it live: copied into `modelsDir/vN` (under a temporary name, then
   * renamed), registered with the live version as its parent, activated in one transaction, and
   * swapped in. Feedback set aside for a label this model has is used by the next refinement.
   */
  async deploy(dir: string, options: { note?: string } = {}): Promise<ModelVersion> {
    this.#checkOpen('deploy');
    if (typeof dir !== 'string' || dir === '') throw expected(InputError, 'a chat model directory', 'dir', dir);
    const model = await ChatModel.load(dir, this.#modelOptions); // refuses what is not a chat model
    try {
      const version = await this.#nextVersion();
      const tmp = path.join(this.#dir, `${TMP_PREFIX}${version}`);
      const target = path.join(this.#dir, version);
      copyDir(dir, tmp, 'dir');
      fs.renameSync(tmp, target);
      await this.store.addModelVersion({
        version,
        dir: target,
        parent: this.#version.version,
        note: options.note ?? `deployed from ${dir}`,
      });
      await this.store.activateModelVersion(version);
      const info = await this.#versionInfo(version);
      this.#swap(model, info);
      return info;
    } catch (err) {
      model.dispose();
      throw err;
    }
  }

  /**
   * Makes an earlier version live again: `version`, or by default the live version's parent.
   * The swap is the store's one transaction, then the model in memory.
   */
  async rollback(version?: string): Promise<ModelVersion> {
    this.#checkOpen('rollback');
    const target = version ?? this.#version.parent;
    if (target === undefined) {
      throw new InputError(`Expected a version to roll back to but ${this.#version.version} has no parent`);
    }
    const info = await this.#versionInfo(target);
    const model = await ChatModel.load(info.dir, this.#modelOptions);
    try {
      await this.store.activateModelVersion(target);
    } catch (err) {
      model.dispose();
      throw err;
    }
    const now = await this.#versionInfo(target);
    this.#swap(model, now);
    return now;
  }

  /** Frees the model and closes a store the agent opened. */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    this.#model.dispose();
    if (this.#ownsStore) await this.store.close();
  }

  // ---------------------------------------------------------------------------------------------

  #checkOpen(what: string): void {
    if (this.#closed) throw new DisposedError(`Expected an open agent for ${what} but received a closed one`);
  }

  /** The live model becomes `model`; the old one is freed once its queued calls have run. */
  #swap(model: ChatModel, version: ModelVersion): void {
    const old = this.#model;
    this.#model = model;
    this.#version = version;
    old.dispose();
  }

  async #versionInfo(version: string): Promise<ModelVersion> {
    const v = (await this.store.listModelVersions()).find((x) => x.version === version);
    if (v === undefined) throw new NotFoundError(`No model version '${version}' in the store`);
    return v;
  }

  /** `v<n+1>` for the highest n among the store's versions and the directory's entries. */
  async #nextVersion(): Promise<string> {
    const names = [...(await this.store.listModelVersions()).map((v) => v.version), ...fs.readdirSync(this.#dir)];
    let n = 0;
    for (const name of names) {
      const m = /^v(\d+)$/.exec(name);
      if (m) n = Math.max(n, Number(m[1]));
    }
    return `v${String(n + 1)}`;
  }

  /** New feedback as training examples: the corrected turn with its context. */
  async #feedbackExamples(model: ChatModel): Promise<{
    examples: ChatExample[];
    ids: string[];
    pending: string[];
    ratingOnly: number;
    skipped: number;
  }> {
    const fresh = await this.store.listFeedback({ status: 'new' });
    // Set-aside feedback whose label the live model now has is used again.
    const pendingBefore = await this.store.listFeedback({ status: 'pending-label' });
    const all: StoredFeedback[] = [...fresh, ...pendingBefore.filter((f) => knowsLabels(model, f))];
    const examples: ChatExample[] = [];
    const ids: string[] = [];
    const pending: string[] = [];
    let ratingOnly = 0;
    let skipped = 0;
    const turnsOf = new Map<string, Turn[]>();
    for (const f of all) {
      if (f.intent === undefined && f.emotions === undefined && f.slots === undefined) {
        ratingOnly++;
        continue;
      }
      if (!knowsLabels(model, f)) {
        if (f.status !== 'pending-label') pending.push(f.id);
        continue;
      }
      let turns = turnsOf.get(f.conversationId);
      if (turns === undefined) {
        turns = await this.store.getTurns(f.conversationId);
        turnsOf.set(f.conversationId, turns);
      }
      const t = turns[f.turn];
      if (t === undefined || t.speaker !== 'user') {
        skipped++;
        continue;
      }
      const ex: ChatExample = {
        text: t.text,
        context: turns.slice(Math.max(0, f.turn - this.#contextTurns), f.turn).map((x) => x.text),
      };
      if (f.intent !== undefined && model.intents.length > 0) ex.intent = f.intent;
      if (f.emotions !== undefined && model.emotions.length > 0) ex.emotions = f.emotions;
      if (f.slots !== undefined && model.slots.length > 0) ex.slots = f.slots;
      examples.push(ex);
      ids.push(f.id);
    }
    return { examples, ids, pending, ratingOnly, skipped };
  }
}

/** The fine-tuning options among refine's. */
function fineTuneOptions(options: RefineOptions): ChatFineTuneOptions {
  const refineOnly = new Set(['replay', 'heldOut', 'replayRatio', 'feedbackRepeat', 'tolerance', 'dryRun']);
  return Object.fromEntries(Object.entries(options).filter(([k]) => !refineOnly.has(k)));
}

function knowledgeOption(options: ChatAgentOptions): { knowledge?: KnowledgeBase } {
  return options.knowledge !== undefined ? { knowledge: options.knowledge } : {};
}

/** Every label the feedback names exists in the model. */
function knowsLabels(model: ChatModel, f: Feedback): boolean {
  if (f.intent !== undefined && !model.intents.includes(f.intent)) return false;
  if (f.emotions?.some((e) => !model.emotions.includes(e)) === true) return false;
  if (f.slots?.some((s) => !model.slots.includes(s.name)) === true) return false;
  return true;
}

/** Slot values of earlier user turns, the newest winning. */
function knownSlots(turns: readonly Turn[]): Record<string, string> {
  const out: Record<string, string> = {};
  for (const t of turns) for (const s of t.understanding?.slots ?? []) out[s.name] = s.value;
  return out;
}

/** The number the shadow evaluation compares: the mean of the heads' main metrics. */
function score(m: ChatMetrics): number {
  const parts: number[] = [];
  if (m.intent) parts.push(m.intent.accuracy);
  if (m.emotions) parts.push(m.emotions.macroF1);
  if (m.slots) parts.push(m.slots.f1);
  return parts.length > 0 ? parts.reduce((a, b) => a + b, 0) / parts.length : 0;
}

function fmt(x: number): string {
  return (100 * x).toFixed(2);
}

function copyDir(from: string, to: string, what = 'options.initialModel'): void {
  if (!fs.existsSync(path.join(from, 'chat.json'))) {
    throw new InputError(`Expected a chat model directory (with chat.json) for ${what} but received '${from}'`);
  }
  fs.rmSync(to, { recursive: true, force: true });
  fs.cpSync(from, to, { recursive: true });
}
