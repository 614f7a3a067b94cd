/**
 * The HTTP service: `createServer()` (lib/serve/server.ts), its API keys (auth.ts), PII masking
 * (pii.ts) and the shapes it shares with the dialogue layer (types.ts). docs/serving.md is the
 * guide.
 */
export { createServer, ModelServer } from './server';
export type { AuthOptions, ReloadResult, ServeOptions } from './server';
export type { ChatService, ServeModel } from './types';
export { DEFAULT_LIMITS } from './limits';
export type { ServeLimits } from './limits';
export { maskPII } from './pii';
export type { MaskOptions, MaskResult, PiiMatch, PiiPattern, PiiType } from './pii';
export { KeyStore, SCOPES, createKey, hashKey, readKeyFile, revokeKey } from './auth';
export type { CreateKeyOptions, KeyFile, KeyRecord, RateLimit, Scope } from './auth';
