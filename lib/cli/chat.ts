/**
 * The dialogue layer from the command line:
 *
 *   elmo train-chat --train F.jsonl --encoder DIR --out DIR   joint intent + emotion + slot model
 *   elmo chat --model DIR | --agent DIR                       an interactive conversation
 *   elmo refine --agent DIR --replay F --held-out F           refine the live version from feedback
 *
 * Examples are JSON lines `{"text", "context"?, "intent"?, "emotions"?, "slots"?: [{name, start, end}]}`.
 * An agent directory (`--agent`) holds the model versions and, by default, the SQLite store
 * (chat.db); `elmo chat --agent DIR --model CHATDIR` registers CHATDIR as its first version.
 */
import * as readline from 'node:readline';

import { Command, Option } from 'commander';

import { ChatAgent } from '../chat/agent';
import type { AgentReply, RefineReport } from '../chat/agent';
import { ChatModel, chatLabels, readChatExamples } from '../chat/chat-model';
import type { ChatMetrics } from '../chat/chat-model';
import { ResponsePolicy } from '../chat/answers';
import type { Reply } from '../chat/answers';
import type { Understanding } from '../chat/types';
import type { CliIo } from './args';
import { UsageError, configureCommand, deviceOption, integer, interruptible, number, usageError } from './args';

interface TrainChatFlags {
  train: string;
  eval?: string;
  encoder: string;
  out: string;
  epochs: number;
  batchSize: number;
  lr: number;
  maxSeqLen?: number;
  contextMaxTokens: number;
  seed: number;
  device: 'auto' | 'cpu' | 'cuda';
  calibrate?: boolean;
}

/** Adds `elmo train-chat`. */
export function addTrainChatCommand(program: Command, io: CliIo): void {
  const cmd = new Command('train-chat')
    .description(
      'train a chat model: one encoder with intent, emotion and slot heads, trained jointly on examples that carry any of them',
    )
    .requiredOption('--train <FILE>', 'JSON lines {text, context?, intent?, emotions?, slots?}')
    .option('--eval <FILE>', 'held-out examples: metrics, and the out-of-scope threshold with --calibrate')
    .requiredOption('--encoder <DIR>', 'the encoder to start from (a BERT checkpoint directory)')
    .requiredOption('--out <DIR>', 'where the chat model is written')
    .option('--epochs <N>', 'passes over the data', integer(1), 3)
    .option('--batch-size <N>', 'turns per step', integer(1), 32)
    .option('--lr <RATE>', 'peak learning rate', number(0, 1, true), 5e-5)
    .option('--max-seq-len <N>', 'longest input in tokens (context and turn)', integer(3))
    .option('--context-max-tokens <N>', 'most tokens of earlier turns read before the turn', integer(0), 64)
    .option('--seed <N>', 'shuffling and dropout', integer(0), 42)
    .option(
      '--calibrate',
      'set the out-of-scope threshold on --eval (keeps 95% of the right answers, or best F1 on out-of-scope turns)',
    )
    .addOption(deviceOption())
    .addHelpText(
      'after',
      `
Labels come from the training data: every intent, emotion and slot name it uses.

Example:
  elmo train-chat --train train.jsonl --eval dev.jsonl --encoder assets/support-encoder \\
    --out models/support-chat --epochs 5 --lr 1e-3 --calibrate`,
    )
    .action(async (flags: TrainChatFlags) => {
      await runTrainChat(flags, io);
    });
  program.addCommand(configureCommand(cmd, io));
}

async function runTrainChat(f: TrainChatFlags, io: CliIo): Promise<void> {
  const train = await readChatExamples(f.train, '--train');
  const evalSet = f.eval !== undefined ? await readChatExamples(f.eval, '--eval') : undefined;
  const labels = chatLabels(train);
  const interrupt = interruptible(() => {
    io.error('elmo train-chat: stopping after this step (Ctrl-C again to quit now)');
  });
  const chat = await ChatModel.create(f.encoder, labels, {
    device: f.device,
    contextMaxTokens: f.contextMaxTokens,
    ...(f.maxSeqLen !== undefined ? { maxSeqLen: f.maxSeqLen } : {}),
  });
  try {
    io.write(
      `heads    ${String(labels.intents.length)} intents, ${String(labels.emotions.length)} emotions, ` +
        `${String(labels.slots.length)} slots (${String(chat.slotTags.length)} tags); ${String(train.length)} examples`,
    );
    let lastLine = 0;
    const r = await chat.fineTune(train, {
      epochs: f.epochs,
      batchSize: f.batchSize,
      learningRate: f.lr,
      seed: f.seed,
      signal: interrupt.signal,
      onProgress: (p) => {
        if (p.seconds - lastLine < 5 && p.step !== p.totalSteps) return;
        lastLine = p.seconds;
        io.error(
          `elmo train-chat: step ${String(p.step)}/${String(p.totalSteps)} loss ${p.loss.toFixed(4)} ` +
            `(intent ${p.headLoss.intent.toFixed(3)}, emotion ${p.headLoss.emotion.toFixed(3)}, slots ${p.headLoss.slots.toFixed(3)})`,
        );
      },
    });
    io.write(`trained  ${String(r.steps)} steps in ${r.seconds.toFixed(1)} s, last epoch loss ${r.loss.toFixed(4)}`);
    if (evalSet !== undefined) {
      io.write(`eval     ${metricsLine(await chat.evaluate(evalSet))}`);
      if (f.calibrate === true) {
        const c = await chat.calibrate(evalSet);
        io.write(
          `oos      threshold ${c.threshold.toFixed(4)} (${c.method}): keeps ${pct(c.coverage)} of in-scope turns, ` +
            `ECE ${c.ece.toFixed(4)}`,
        );
      }
    } else if (f.calibrate === true) {
      throw new UsageError('--calibrate needs --eval');
    }
    await chat.save(f.out);
    io.write(`out      ${f.out}`);
  } finally {
    interrupt.dispose();
    chat.dispose();
  }
}

interface ChatFlags {
  model?: string;
  agent?: string;
  store?: string;
  responses?: string;
  conversation?: string;
  json?: boolean;
  device: 'auto' | 'cpu' | 'cuda';
}

/** Adds `elmo chat`, an interactive conversation (or JSON lines in and out with --json). */
export function addChatCommand(program: Command, io: CliIo, input: NodeJS.ReadableStream = process.stdin): void {
  const cmd = new Command('chat')
    .description('talk to a chat model: intent, emotions, slots and the answer of each turn')
    .option('--model <DIR>', 'a chat model directory (train-chat --out)')
    .option('--agent <DIR>', 'an agent directory: model versions and the store; turns are kept and feedback taken')
    .option('--store <URL>', 'the store of --agent (default sqlite at DIR/chat.db; or postgres://...)')
    .option('--responses <FILE>', 'responses.json: templates per intent, fallback, hand-off')
    .option('--conversation <ID>', 'continue a conversation of --agent')
    .option('--json', 'one JSON line per turn on stdout instead of the readable lines')
    .addOption(deviceOption())
    .addHelpText(
      'after',
      `
Each line of input is a user turn; an empty line or end of input ends the conversation.
With --agent, ":good" or ":bad" rates the last answer and ":intent NAME" corrects its intent
(feedback for "elmo refine").

Examples:
  elmo chat --model models/support-chat --responses responses.json
  echo "my card never arrived" | elmo chat --model models/support-chat --json`,
    )
    .action(async (flags: ChatFlags) => {
      if (flags.model === undefined && flags.agent === undefined) {
        usageError(cmd, new UsageError('--model DIR or --agent DIR is required'));
      }
      await runChat(flags, io, input);
    });
  program.addCommand(configureCommand(cmd, io));
}

async function runChat(f: ChatFlags, io: CliIo, input: NodeJS.ReadableStream): Promise<void> {
  const policy = f.responses !== undefined ? ResponsePolicy.fromFile(f.responses) : new ResponsePolicy({ intents: {} });
  let agent: ChatAgent | undefined;
  let chat: ChatModel | undefined;
  if (f.agent !== undefined) {
    agent = await ChatAgent.open({
      modelsDir: f.agent,
      responses: policy,
      model: { device: f.device },
      ...(f.store !== undefined ? { store: f.store } : {}),
      ...(f.model !== undefined ? { initialModel: f.model } : {}),
    });
  } else {
    chat = await ChatModel.load(f.model as string, { device: f.device });
  }
  const history: { text: string; understanding?: Understanding }[] = [];
  let conversationId = f.conversation;
  let last: AgentReply | undefined;
  const rl = readline.createInterface({ input, terminal: false });
  if (f.json !== true && io.isTTY) io.error('elmo chat: type a turn (an empty line ends)');
  try {
    for await (const line of rl) {
      const text = line.trim();
      if (text === '') break;
      if (agent !== undefined && text.startsWith(':')) {
        await command(text, agent, last, io);
        continue;
      }
      let understanding: Understanding;
      let reply: Reply;
      if (agent !== undefined) {
        last = await agent.reply({ text, ...(conversationId !== undefined ? { conversationId } : {}) });
        conversationId = last.conversationId;
        understanding = last.understanding;
        reply = last.reply;
      } else {
        const c = chat as ChatModel;
        understanding = await c.understand(text, { context: history.slice(-6).map((h) => h.text) });
        reply = await policy.respond(understanding, {
          text,
          history: history.flatMap((h) => (h.understanding ? [h.understanding] : [])),
          turn: history.length,
        });
        history.push({ text, understanding }, { text: reply.text });
      }
      if (f.json === true) {
        io.write(
          JSON.stringify({ ...(conversationId !== undefined ? { conversationId } : {}), text, understanding, reply }),
        );
      } else {
        for (const l of describeTurn(understanding, reply)) io.write(l);
      }
    }
  } finally {
    rl.close();
    if (agent !== undefined) await agent.close();
    chat?.dispose();
  }
}

/** `:good`, `:bad`, `:intent NAME`: feedback on the last turn. */
async function command(text: string, agent: ChatAgent, last: AgentReply | undefined, io: CliIo): Promise<void> {
  if (last === undefined) {
    io.error('elmo chat: no turn yet to give feedback on');
    return;
  }
  const [name, arg] = text.slice(1).split(/\s+/, 2);
  const at = { conversationId: last.conversationId, turn: last.turn };
  if (name === 'good' || name === 'bad') await agent.feedback({ ...at, rating: name === 'good' ? 1 : -1 });
  else if (name === 'intent' && arg !== undefined && arg !== '') await agent.feedback({ ...at, intent: arg });
  else {
    io.error('elmo chat: commands are :good, :bad and :intent NAME');
    return;
  }
  io.write(`  (feedback kept for turn ${String(last.turn)})`);
}

/** The readable lines of one turn. */
export function describeTurn(u: Understanding, reply: Reply): string[] {
  const lines: string[] = [];
  const intent = u.intent
    ? `${u.intent.label} ${u.intent.score.toFixed(2)}${u.outOfScope ? ' (out of scope)' : ''}`
    : '-';
  lines.push(`  intent   ${intent}`);
  if (u.emotions.length > 0)
    lines.push(`  emotions ${u.emotions.map((e) => `${e.label} ${e.score.toFixed(2)}`).join(', ')}`);
  if (u.slots.length > 0) lines.push(`  slots    ${u.slots.map((s) => `${s.name}="${s.value}"`).join(', ')}`);
  if (u.truncated) lines.push('  (the turn was longer than the model reads: cut)');
  lines.push(`bot> ${reply.text}${reply.handoff ? `   [hand-off: ${reply.handoff.reason}]` : ''}`);
  return lines;
}

interface RefineFlags {
  agent: string;
  store?: string;
  replay: string;
  heldOut: string;
  epochs: number;
  lr: number;
  replayRatio: number;
  tolerance: number;
  dryRun?: boolean;
  json?: boolean;
  device: 'auto' | 'cpu' | 'cuda';
}

/** Adds `elmo refine`. */
export function addRefineCommand(program: Command, io: CliIo): void {
  const cmd = new Command('refine')
    .description(
      "refine an agent's live model from its new feedback: fine-tune on the corrections plus replayed training data, " +
        'compare with the live model on a held-out set, and make it live only if it is not worse',
    )
    .requiredOption('--agent <DIR>', 'the agent directory (model versions, default store)')
    .option('--store <URL>', 'the store (default sqlite at DIR/chat.db)')
    .requiredOption('--replay <FILE>', 'the original training examples (JSON lines)')
    .requiredOption('--held-out <FILE>', 'the examples of the shadow evaluation (JSON lines)')
    .option('--epochs <N>', 'passes over feedback + replay', integer(1), 2)
    .option('--lr <RATE>', 'learning rate', number(0, 1, true), 2e-5)
    .option('--replay-ratio <N>', 'replayed examples per correction', integer(0), 8)
    .addOption(
      new Option('--tolerance <X>', 'how far below the live model (0-1) the candidate may score and still go live')
        .argParser(number(0, 1))
        .default(0),
    )
    .option('--dry-run', 'evaluate the candidate, change nothing')
    .option('--json', 'the report as JSON')
    .addOption(deviceOption())
    .action(async (flags: RefineFlags) => {
      await runRefine(flags, io);
    });
  program.addCommand(configureCommand(cmd, io));
}

async function runRefine(f: RefineFlags, io: CliIo): Promise<void> {
  const agent = await ChatAgent.open({
    modelsDir: f.agent,
    model: { device: f.device },
    ...(f.store !== undefined ? { store: f.store } : {}),
  });
  const interrupt = interruptible(() => {
    io.error('elmo refine: stopping after this step; the live model stays (Ctrl-C again to quit now)');
  });
  try {
    const report = await agent.refine({
      replay: f.replay,
      heldOut: f.heldOut,
      epochs: f.epochs,
      learningRate: f.lr,
      replayRatio: f.replayRatio,
      tolerance: f.tolerance,
      signal: interrupt.signal,
      ...(f.dryRun === true ? { dryRun: true } : {}),
    });
    if (f.json === true) io.write(JSON.stringify(report, null, 2));
    else for (const l of describeRefine(report)) io.write(l);
  } finally {
    interrupt.dispose();
    await agent.close();
  }
}

function describeRefine(r: RefineReport): string[] {
  const fb = r.feedback;
  return [
    `feedback ${String(fb.used)} corrections used, ${String(fb.pendingLabel)} set aside (unknown label), ` +
      `${String(fb.ratingOnly)} ratings only, ${String(fb.skipped)} skipped; ${String(r.replayed)} replayed`,
    `held-out ${r.parent} ${pct(r.score.current)} -> candidate ${pct(r.score.candidate)}`,
    `fixed    ${pct(r.fixed.current)} -> ${pct(r.fixed.candidate)} of the ${String(r.fixed.count)} corrected turns`,
    r.accepted ? `live     ${r.version ?? ''} (was ${r.parent})` : `kept     ${r.parent}: ${r.reason ?? ''}`,
  ];
}

function metricsLine(m: ChatMetrics): string {
  const parts: string[] = [];
  if (m.intent) parts.push(`intent accuracy ${pct(m.intent.accuracy)} (macro-F1 ${m.intent.macroF1.toFixed(3)})`);
  if (m.emotions) parts.push(`emotions macro-F1 ${m.emotions.macroF1.toFixed(3)}`);
  if (m.slots) parts.push(`slot F1 ${m.slots.f1.toFixed(3)}`);
  return `${parts.join(', ')} on ${String(m.count)} turns`;
}

function pct(x: number): string {
  return `${(100 * x).toFixed(2)}%`;
}
