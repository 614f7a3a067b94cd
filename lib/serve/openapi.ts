/** The OpenAPI 3.1 document of the service, served at `GET /openapi.json`. */
import type { ServeLimits } from './limits';

/** What the document depends on. */
export interface OpenApiInput {
  /** The package version. */
  version: string;
  auth: boolean;
  chat: boolean;
  metricsPublic: boolean;
  limits: ServeLimits;
}

type Json = Record<string, unknown>;

const ref = (name: string): Json => ({ $ref: `#/components/schemas/${name}` });
const json = (schema: Json, description: string, example?: unknown): Json => ({
  description,
  content: { 'application/json': { schema, ...(example !== undefined ? { example } : {}) } },
});
const error = (description: string): Json => json(ref('Error'), description);

/** The routes, methods and scopes the server answers; the document and the router share it. */
export const ROUTES = [
  { method: 'POST', path: '/v1/predict', scope: 'predict' },
  { method: 'POST', path: '/v1/embed', scope: 'predict' },
  { method: 'POST', path: '/v1/chat', scope: 'predict', chat: true },
  { method: 'POST', path: '/v1/feedback', scope: 'feedback', chat: true },
  { method: 'POST', path: '/v1/admin/reload', scope: 'admin' },
  { method: 'GET', path: '/healthz', scope: null },
  { method: 'GET', path: '/readyz', scope: null },
  { method: 'GET', path: '/metrics', scope: 'admin' },
  { method: 'GET', path: '/openapi.json', scope: 'any' },
] as const;

/** The OpenAPI 3.1 document of a server with these settings. */
export function openApiDocument(input: OpenApiInput): Json {
  const { limits } = input;
  // The key each route needs: a scope, or any valid key ('any').
  const secured = (scope: string): Json => (input.auth ? { security: [{ apiKey: [] }], 'x-scope': scope } : {});
  const authErrors: Json = input.auth
    ? {
        '401': error('Missing, unknown or revoked API key'),
        '403': error('The key lacks the scope of this route'),
        '429': {
          ...error('Over the key rate limit, or the queue is full; see Retry-After'),
          headers: { 'Retry-After': { schema: { type: 'integer' }, description: 'Seconds to wait' } },
        },
      }
    : {
        '429': {
          ...error('The queue is full; see Retry-After'),
          headers: { 'Retry-After': { schema: { type: 'integer' }, description: 'Seconds to wait' } },
        },
      };
  const modelErrors: Json = {
    '400': error('Malformed JSON (ERR_JSON) or a wrong field (ERR_INPUT), "Expected X for Y but received Z"'),
    '413': error(`Body over ${String(limits.maxBodyBytes)} bytes (maxBodyBytes)`),
    '415': error('Content-Type other than application/json'),
    ...authErrors,
    '503': error('No model loaded yet, shutting down, or the request waited requestTimeoutMs in the queue'),
    '504': error('The model did not answer within requestTimeoutMs'),
  };
  const paths: Json = {
    '/v1/predict': {
      post: {
        operationId: 'predict',
        summary: 'Classify texts; concurrent requests are batched together',
        ...secured('predict'),
        requestBody: {
          required: true,
          ...json(ref('PredictRequest'), 'Texts to classify', { texts: ['where is my card?'] }),
        },
        responses: {
          '200': json(ref('PredictResponse'), 'One result per text, in order', {
            results: [{ label: 'card_arrival', score: 0.91, scores: { card_arrival: 0.91, lost_card: 0.09 } }],
            model: { version: '3f2a9c1b7e0d' },
          }),
          ...modelErrors,
          '501': error('The model has no classification head'),
        },
      },
    },
    '/v1/embed': {
      post: {
        operationId: 'embed',
        summary: 'Sentence embeddings; concurrent requests are batched together',
        ...secured('predict'),
        requestBody: {
          required: true,
          ...json(ref('EmbedRequest'), 'Texts to embed', { texts: ['hello', 'hi there'], pooling: 'mean' }),
        },
        responses: {
          '200': json(ref('EmbedResponse'), 'One vector of the hidden size per text', {
            embeddings: [
              [0.12, -0.03],
              [0.1, -0.01],
            ],
            model: { version: '3f2a9c1b7e0d' },
          }),
          ...modelErrors,
        },
      },
    },
    '/v1/admin/reload': {
      post: {
        operationId: 'reload',
        summary: 'Reload the model from its directory; the old one serves until the new one is loaded',
        ...secured('admin'),
        responses: {
          '200': json(ref('ReloadResponse'), 'The new model is served', {
            model: { version: '9b0e77d21c4a' },
            previous: { version: '3f2a9c1b7e0d' },
          }),
          '422': error('The directory does not hold a loadable model (ERR_CHECKPOINT); the old model keeps serving'),
          ...authErrors,
        },
      },
    },
    '/healthz': {
      get: {
        operationId: 'healthz',
        summary: 'The process is alive (no key needed)',
        responses: { '200': json({ type: 'object', properties: { status: { const: 'ok' } } }, 'Alive') },
      },
    },
    '/readyz': {
      get: {
        operationId: 'readyz',
        summary: 'A model is loaded and the server is not shutting down (no key needed)',
        responses: {
          '200': json({ type: 'object', properties: { status: { const: 'ready' }, model: ref('ModelInfo') } }, 'Ready'),
          '503': error('Loading the model, or shutting down (ERR_NOT_READY)'),
        },
      },
    },
    '/metrics': {
      get: {
        operationId: 'metrics',
        summary: 'Prometheus metrics (text exposition format)',
        ...(input.metricsPublic ? {} : secured('admin')),
        responses: {
          '200': {
            description: 'Metrics',
            content: { 'text/plain; version=0.0.4': { schema: { type: 'string' } } },
          },
          ...(input.metricsPublic ? {} : authErrors),
        },
      },
    },
    '/openapi.json': {
      get: {
        operationId: 'openapi',
        summary: 'This document',
        ...secured('any'),
        responses: { '200': json({ type: 'object' }, 'OpenAPI 3.1 document'), ...authErrors },
      },
    },
  };
  if (input.chat) {
    paths['/v1/chat'] = {
      post: {
        operationId: 'chat',
        summary: 'One turn of a conversation: the reply of the dialogue layer',
        ...secured('predict'),
        requestBody: {
          required: true,
          ...json(ref('ChatRequest'), 'The user turn', { conversationId: 'c-81f2', text: 'I lost my card' }),
        },
        responses: {
          '200': json({ type: 'object', description: "The dialogue layer's reply" }, 'The reply'),
          '404': error('Unknown conversationId (ERR_NOT_FOUND)'),
          ...modelErrors,
        },
      },
    };
    paths['/v1/feedback'] = {
      post: {
        operationId: 'feedback',
        summary: 'A correction or rating of a turn, kept by the dialogue layer',
        ...secured('feedback'),
        requestBody: {
          required: true,
          ...json({ type: 'object', description: 'Validated by the dialogue layer' }, 'The feedback', {
            conversationId: 'c-81f2',
            turn: 0,
            intent: 'lost_card',
          }),
        },
        responses: {
          '201': json({ type: 'object', required: ['id'], properties: { id: { type: 'string' } } }, 'Stored', {
            id: 'f-19ac',
          }),
          '404': error('Unknown conversation or turn (ERR_NOT_FOUND)'),
          ...modelErrors,
        },
      },
    };
  }
  return {
    openapi: '3.1.0',
    info: {
      title: 'elmo-chat model service',
      version: input.version,
      description:
        'Classification and embeddings from a BERT encoder, with dynamic batching across requests. ' +
        'Every error body is {"error": {"code", "message"}}.',
    },
    paths,
    components: {
      ...(input.auth
        ? {
            securitySchemes: {
              apiKey: {
                type: 'http',
                scheme: 'bearer',
                description: 'An API key made by `elmo keys create`; each route needs the scope in its x-scope',
              },
            },
          }
        : {}),
      schemas: {
        Error: {
          type: 'object',
          required: ['error'],
          properties: {
            error: {
              type: 'object',
              required: ['code', 'message'],
              properties: { code: { type: 'string', examples: ['ERR_INPUT'] }, message: { type: 'string' } },
            },
          },
        },
        ModelInfo: {
          type: 'object',
          required: ['version'],
          properties: {
            version: { type: 'string', description: 'sha256 of config.json and model.safetensors, 12 hex digits' },
          },
        },
        Texts: {
          type: 'array',
          minItems: 1,
          maxItems: limits.maxTexts,
          items: { type: 'string', maxLength: limits.maxTextChars },
        },
        PredictRequest: { type: 'object', required: ['texts'], properties: { texts: ref('Texts') } },
        PredictResponse: {
          type: 'object',
          required: ['results', 'model'],
          properties: {
            results: {
              type: 'array',
              items: {
                type: 'object',
                required: ['label', 'score', 'scores'],
                properties: {
                  label: { type: 'string' },
                  score: { type: 'number' },
                  scores: { type: 'object', additionalProperties: { type: 'number' } },
                },
              },
            },
            model: ref('ModelInfo'),
          },
        },
        EmbedRequest: {
          type: 'object',
          required: ['texts'],
          properties: { texts: ref('Texts'), pooling: { enum: ['mean', 'cls'], default: 'mean' } },
        },
        EmbedResponse: {
          type: 'object',
          required: ['embeddings', 'model'],
          properties: {
            embeddings: { type: 'array', items: { type: 'array', items: { type: 'number' } } },
            model: ref('ModelInfo'),
          },
        },
        ChatRequest: {
          type: 'object',
          required: ['text'],
          properties: {
            conversationId: { type: 'string' },
            text: { type: 'string', maxLength: limits.maxTextChars },
          },
        },
        ReloadResponse: {
          type: 'object',
          required: ['model', 'previous'],
          properties: { model: ref('ModelInfo'), previous: ref('ModelInfo') },
        },
      },
    },
  };
}
