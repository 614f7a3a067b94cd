/**
 * The errors the HTTP layer answers with. Each becomes a response `{error: {code, message}}`
 * with its status and headers; they never leave the server.
 */

/** An HTTP error response: status, stable code, message, extra headers (`retry-after`, `allow`). */
export class HttpError extends Error {
  readonly status: number;
  readonly code: string;
  readonly headers: Readonly<Record<string, string>>;

  constructor(status: number, code: string, message: string, headers: Record<string, string> = {}) {
    super(message);
    this.name = 'HttpError';
    this.status = status;
    this.code = code;
    this.headers = headers;
  }
}

/**
 * The status of an error thrown by the model or a {@link ChatService}, by its `code`:
 * `ERR_INPUT` 400, `ERR_NOT_FOUND` 404, `ERR_CHECKPOINT` 422, `ERR_STORE` / `ERR_BUSY` /
 * `ERR_DISPOSED` 503, anything else 500.
 */
export function statusOf(err: unknown): number {
  if (err instanceof HttpError) return err.status;
  const code = (err as { code?: unknown } | null)?.code;
  switch (code) {
    case 'ERR_INPUT':
      return 400;
    case 'ERR_NOT_FOUND':
      return 404;
    case 'ERR_CHECKPOINT':
      return 422;
    case 'ERR_STORE':
    case 'ERR_BUSY':
    case 'ERR_DISPOSED':
      return 503;
    default:
      return 500;
  }
}
