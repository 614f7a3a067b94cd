// ChatAgent: conversations in the store, answers, feedback, refinement with replay and shadow
// evaluation, atomic swaps, rollback, PII masking, a failing store.
import * as fs from 'node:fs';
import * as path from 'node:path';

import { Bert } from '../lib';
import { ChatAgent } from '../lib/chat/agent';
import { ChatModel } from '../lib/chat/chat-model';
import { openStore } from '../lib/chat/store';
import type { ChatStore } from '../lib/chat/store';
import { StoreError } from '../lib/errors';
import { createServer } from '../lib/serve';
import pino from 'pino';
import { CITIES, SMALL, tokenizer, toy } from './chat-toy';
import { rejection, tmpDir } from './helpers';

const small = SMALL;

let modelDir = '';
beforeAll(async () => {
  const chat = await ChatModel.create(Bert.create(small, { tokenizer, device: 'cpu', seed: 1 }), {
    intents: ['music', 'support', 'travel'],
  });
  await chat.fineTune(toy(90, 0), { epochs: 20, batchSize: 16, learningRate: 3e-3, dropout: 0 });
  modelDir = tmpDir('agent-model');
  await chat.save(modelDir);
  chat.dispose();
}, 120_000);

describe('ChatAgent', () => {
  jest.setTimeout(120_000);

  test('answers with context, keeps the conversation, masks PII, survives a restart', async () => {
    const dir = tmpDir('agent');
    let agent = await ChatAgent.open({
      modelsDir: dir,
      initialModel: modelDir,
      responses: { intents: { travel: ['Off to {city}? Let me book it.', 'Where to?'] } },
    });
    const r1 = await agent.reply({ text: 'i want to go to london, mail me at ann@example.com' });
    expect(r1.modelVersion).toBe('v1');
    expect(r1.stored).toBe(true);
    expect(r1.turn).toBe(0);
    expect(r1.text).toBe('i want to go to london, mail me at [EMAIL]');
    expect(r1.understanding.intent?.label).toBe('travel');
    const conv = await agent.conversation(r1.conversationId);
    const r2 = await conv.say('play some music from paris');
    expect(r2.turn).toBe(2);
    const turns = await conv.turns();
    expect(turns.map((t) => t.speaker)).toEqual(['user', 'bot', 'user', 'bot']);
    expect(turns.some((t) => t.text.includes('ann@example.com'))).toBe(false);
    expect(turns[0]?.understanding?.intent?.label).toBe('travel');
    expect(turns[1]?.text).toBe(r1.reply.text);
    await agent.close();
    // a new process: the same conversation and version
    agent = await ChatAgent.open({ modelsDir: dir });
    expect(agent.version).toBe('v1');
    expect((await (await agent.conversation(r1.conversationId)).turns()).length).toBe(4);
    await agent.close();
  });

  test('an int8 agent refines: the candidate trains in fp32, then is evaluated and served in int8', async () => {
    const dir = tmpDir('agent-int8');
    const agent = await ChatAgent.open({ modelsDir: dir, initialModel: modelDir, model: { precision: 'int8' } });
    try {
      expect(agent.model.model.precision).toBe('int8');
      const texts = ['please help me travel to london', 'i need help getting to paris'];
      for (let i = 0; i < 8; i++) {
        const r = await agent.reply({ text: texts[i % 2] as string });
        await agent.feedback({ conversationId: r.conversationId, turn: r.turn, intent: 'travel' });
      }
      const report = await agent.refine({
        replay: toy(90, 0),
        heldOut: toy(30, 1),
        epochs: 4,
        learningRate: 1e-3,
        batchSize: 16,
        dropout: 0,
      });
      expect(report.feedback.used).toBe(8);
      expect(report.accepted).toBe(true);
      expect(agent.model.model.precision).toBe('int8');
      for (const text of texts) expect((await agent.model.understand(text)).intent?.label).toBe('travel');
      expect(fs.readdirSync(dir).some((n) => n.startsWith('.tmp-'))).toBe(false);
    } finally {
      await agent.close();
    }
  });

  test('refine fixes the corrected turns, swaps atomically, keeps every version, rolls back', async () => {
    const dir = tmpDir('agent-refine');
    const agent = await ChatAgent.open({ modelsDir: dir, initialModel: modelDir });
    try {
      // Phrasings of travel the model gets wrong (they borrow other intents' words), corrected
      // by users a few times.
      const candidates = [
        'please help me travel to',
        'i need help getting to',
        'music festival trip to',
        'help me in going to',
      ];
      const fresh: string[] = [];
      for (const c of candidates) {
        if ((await agent.model.understand(`${c} london`)).intent?.label !== 'travel') fresh.push(c);
      }
      expect(fresh.length).toBeGreaterThanOrEqual(2);
      const corrected: string[] = [];
      for (let i = 0; i < 8; i++) {
        const text = `${fresh[i % fresh.length] as string} ${CITIES[i % 4] as string}`;
        const r = await agent.reply({ text });
        await agent.feedback({ conversationId: r.conversationId, turn: r.turn, intent: 'travel' });
        corrected.push(text);
      }
      // Feedback that cannot be used now: a label the model lacks, a rating without a correction.
      const other = await agent.reply({ text: 'what is the weather in york' });
      await agent.feedback({ conversationId: other.conversationId, turn: other.turn, intent: 'weather' });
      await agent.feedback({ conversationId: other.conversationId, turn: other.turn, rating: -1 });
      expect((await rejection(agent.feedback({ conversationId: 'nope', turn: 0, intent: 'travel' }))).code).toBe(
        'ERR_NOT_FOUND',
      );

      const replay = toy(90, 0);
      const heldOut = toy(30, 1);
      const report = await agent.refine({ replay, heldOut, epochs: 4, learningRate: 1e-3, batchSize: 16, dropout: 0 });
      expect(report.feedback).toEqual({ used: 8, pendingLabel: 1, ratingOnly: 1, skipped: 0 });
      expect(report.replayed).toBe(64);
      expect(report.accepted).toBe(true);
      expect(report.version).toBe('v2');
      expect(report.fixed.candidate).toBeGreaterThan(report.fixed.current);
      expect(report.fixed.candidate).toBe(1);
      expect(report.score.candidate).toBeGreaterThanOrEqual(report.score.current);
      expect(agent.version).toBe('v2');
      for (const text of corrected) expect((await agent.model.understand(text)).intent?.label).toBe('travel');
      const versions = await agent.versions();
      expect(versions.map((v) => [v.version, v.active, v.parent])).toEqual([
        ['v1', false, undefined],
        ['v2', true, 'v1'],
      ]);
      expect(fs.existsSync(path.join(dir, 'v2', 'chat.json'))).toBe(true);
      expect(fs.readdirSync(dir).some((n) => n.startsWith('.tmp-'))).toBe(false);
      const fb = await agent.store.listFeedback();
      expect(fb.filter((f) => f.status === 'used' && f.usedBy === 'v2')).toHaveLength(8);
      expect(fb.filter((f) => f.status === 'pending-label').map((f) => f.intent)).toEqual(['weather']);

      // Nothing new: no candidate.
      const again = await agent.refine({ replay, heldOut });
      expect(again.accepted).toBe(false);
      expect(again.reason).toMatch(/no feedback/);

      // A candidate worse than the live model is refused: train it on wrong labels.
      const r = await agent.reply({ text: 'play some music from london' });
      for (let i = 0; i < 3; i++)
        await agent.feedback({ conversationId: r.conversationId, turn: r.turn, intent: 'support' });
      const bad = await agent.refine({
        replay: [],
        heldOut,
        replayRatio: 0,
        feedbackRepeat: 30,
        epochs: 6,
        learningRate: 5e-3,
        dropout: 0,
      });
      expect(bad.accepted).toBe(false);
      expect(bad.reason).toMatch(/held-out/);
      expect(agent.version).toBe('v2');

      // A model trained with the missing label, deployed: the set-aside feedback is used now.
      const withWeather = await ChatModel.create(Bert.create(small, { tokenizer, device: 'cpu', seed: 1 }), {
        intents: ['music', 'support', 'travel', 'weather'],
      });
      await withWeather.fineTune([...toy(60, 0), { text: 'what is the weather in london', intent: 'weather' }], {
        epochs: 2,
        batchSize: 16,
        learningRate: 3e-3,
      });
      const weatherDir = tmpDir('agent-weather');
      await withWeather.save(weatherDir);
      withWeather.dispose();
      const deployed = await agent.deploy(weatherDir);
      expect(deployed.version).toBe('v3');
      expect(deployed.parent).toBe('v2');
      expect(agent.model.intents).toContain('weather');
      const used = await agent.refine({
        replay,
        heldOut,
        epochs: 1,
        learningRate: 1e-3,
        batchSize: 16,
        dropout: 0,
        tolerance: 1,
      });
      expect(used.feedback.used).toBe(4); // the 'weather' correction and the three wrong ones
      expect((await agent.store.listFeedback({ status: 'pending-label' })).length).toBe(0);
      await agent.rollback('v2');

      const back = await agent.rollback();
      expect(back.version).toBe('v1');
      expect(agent.version).toBe('v1');
      expect((await agent.versions()).filter((v) => v.active).map((v) => v.version)).toEqual(['v1']);
      expect((await rejection(agent.rollback())).message).toMatch(/no parent/);
    } finally {
      await agent.close();
    }
  });

  test('a failing store: the answer still comes, said not stored; a killed refine leaves the old version', async () => {
    const dir = tmpDir('agent-store');
    const real = await openStore(path.join(dir, 'chat.db'));
    // A store whose writes fail as a locked database does.
    const failing: ChatStore = Object.create(real) as ChatStore;
    failing.appendTurn = () => Promise.reject(new StoreError('database is locked', 'locked'));
    const agent = await ChatAgent.open({ modelsDir: dir, initialModel: modelDir, store: failing });
    try {
      const r = await agent.reply({ text: 'take me to paris' });
      expect(r.stored).toBe(false);
      expect(r.warnings?.[0]).toMatch(/locked/);
      expect(r.understanding.intent?.label).toBe('travel');
      expect(r.reply.text.length).toBeGreaterThan(0);
      expect(await real.getTurns(r.conversationId)).toEqual([]);
    } finally {
      await agent.close();
    }
    // A temporary version directory left by a killed refinement is never a version.
    fs.mkdirSync(path.join(dir, '.tmp-v2'));
    fs.writeFileSync(path.join(dir, '.tmp-v2', 'model.safetensors'), 'half');
    const reopened = await ChatAgent.open({ modelsDir: dir, store: real });
    expect(reopened.version).toBe('v1');
    expect(fs.existsSync(path.join(dir, '.tmp-v2'))).toBe(false);
    await reopened.close();
    await real.close();
  });

  test('behind the HTTP service: POST /v1/chat and /v1/feedback', async () => {
    const agent = await ChatAgent.open({ modelsDir: tmpDir('agent-http'), initialModel: modelDir });
    const server = createServer({
      model: modelDir,
      auth: false,
      chat: agent,
      logger: pino({ level: 'silent' }),
      defaultMetrics: false,
    });
    try {
      const { port } = await server.listen(0, '127.0.0.1');
      await server.ready();
      const post = async (route: string, body: unknown): Promise<{ status: number; body: Record<string, unknown> }> => {
        const r = await fetch(`http://127.0.0.1:${String(port)}${route}`, {
          method: 'POST',
          headers: { 'content-type': 'application/json' },
          body: JSON.stringify(body),
        });
        return { status: r.status, body: (await r.json()) as Record<string, unknown> };
      };
      const r = await post('/v1/chat', { text: 'take me to paris' });
      expect(r.status).toBe(200);
      const reply = r.body as unknown as {
        conversationId: string;
        turn: number;
        understanding: { intent: { label: string } };
      };
      expect(reply.understanding.intent.label).toBe('travel');
      const again = await post('/v1/chat', { conversationId: reply.conversationId, text: 'play songs of london' });
      expect((again.body as { turn: number }).turn).toBe(2);
      const fb = await post('/v1/feedback', { conversationId: reply.conversationId, turn: 0, intent: 'travel' });
      expect(fb.status).toBe(201); // created
      expect(typeof fb.body.id).toBe('string');
      expect((await post('/v1/feedback', { conversationId: 'nobody', turn: 0, intent: 'travel' })).status).toBe(404);
      expect(
        (await post('/v1/feedback', { conversationId: reply.conversationId, turn: 1, intent: 'travel' })).status,
      ).toBe(400); // a bot turn
      expect((await post('/v1/chat', { text: '  ' })).status).toBe(400);
    } finally {
      await server.close();
      await agent.close();
    }
  });

  test('bad input', async () => {
    expect((await rejection(ChatAgent.open({ modelsDir: tmpDir('agent-bad') }))).message).toMatch(/initialModel/);
    const agent = await ChatAgent.open({ modelsDir: tmpDir('agent-bad2'), initialModel: modelDir });
    try {
      expect((await rejection(agent.reply({ text: '   ' }))).code).toBe('ERR_INPUT');
      const big = await agent.reply({ text: 'take me to london '.repeat(60_000) });
      expect(big.understanding.truncated).toBe(true);
      expect((await rejection(agent.refine({ replay: [], heldOut: [] }))).code).toBe('ERR_INPUT');
    } finally {
      await agent.close();
    }
    expect((await rejection(agent.reply({ text: 'hi' }))).code).toBe('ERR_DISPOSED');
  });
});
