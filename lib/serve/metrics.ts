/**
 * Prometheus metrics of one server, in a registry of its own (not prom-client's global one), so
 * that two servers in one process, or a server inside an application with its own metrics, do
 * not collide. The names are listed in docs/serving.md.
 */
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';

const LATENCY_BUCKETS = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30];
const SIZE_BUCKETS = [1, 2, 4, 8, 16, 32, 64, 128, 256, 512];
const TOKEN_BUCKETS = [16, 64, 256, 1024, 2048, 4096, 8192, 16384, 32768];

/** The metrics of one server. */
export class ServeMetrics {
  readonly registry: Registry;
  readonly requests: Counter<'route' | 'method' | 'status'>;
  readonly requestSeconds: Histogram<'route' | 'method' | 'status'>;
  readonly batchTexts: Histogram<'kind'>;
  readonly batchRequests: Histogram<'kind'>;
  readonly batchTokens: Histogram<'kind'>;
  readonly batchSeconds: Histogram<'kind' | 'result'>;
  readonly tokens: Counter<'kind'>;
  readonly texts: Counter<'kind'>;
  readonly cancelled: Counter<'reason'>;
  readonly modelInfo: Gauge<'version'>;
  readonly reloads: Counter<'result'>;

  constructor(options: { defaultMetrics: boolean; queueDepth: () => number; inFlight: () => number }) {
    const registry = new Registry();
    this.registry = registry;
    const registers = [registry];
    if (options.defaultMetrics) collectDefaultMetrics({ register: registry });
    this.requests = new Counter({
      name: 'elmo_http_requests_total',
      help: 'HTTP requests answered, by route, method and status',
      labelNames: ['route', 'method', 'status'],
      registers,
    });
    this.requestSeconds = new Histogram({
      name: 'elmo_http_request_duration_seconds',
      help: 'Time from the request to the end of the response, by route, method and status',
      labelNames: ['route', 'method', 'status'],
      buckets: LATENCY_BUCKETS,
      registers,
    });
    this.batchTexts = new Histogram({
      name: 'elmo_batch_size',
      help: 'Texts per model call (a batch merges concurrent requests)',
      labelNames: ['kind'],
      buckets: SIZE_BUCKETS,
      registers,
    });
    this.batchRequests = new Histogram({
      name: 'elmo_batch_requests',
      help: 'Requests merged into one model call',
      labelNames: ['kind'],
      buckets: SIZE_BUCKETS,
      registers,
    });
    this.batchTokens = new Histogram({
      name: 'elmo_batch_tokens',
      help: 'Tokens per model call (special tokens included)',
      labelNames: ['kind'],
      buckets: TOKEN_BUCKETS,
      registers,
    });
    this.batchSeconds = new Histogram({
      name: 'elmo_batch_duration_seconds',
      help: 'Wall time of one model call',
      labelNames: ['kind', 'result'],
      buckets: LATENCY_BUCKETS,
      registers,
    });
    this.tokens = new Counter({
      name: 'elmo_tokens_processed_total',
      help: 'Tokens run through the model (rate() of it is tokens per second)',
      labelNames: ['kind'],
      registers,
    });
    this.texts = new Counter({
      name: 'elmo_texts_processed_total',
      help: 'Texts run through the model',
      labelNames: ['kind'],
      registers,
    });
    this.cancelled = new Counter({
      name: 'elmo_requests_cancelled_total',
      help: 'Requests withdrawn before their batch ran: the client went away, or the request timed out',
      labelNames: ['reason'],
      registers,
    });
    this.modelInfo = new Gauge({
      name: 'elmo_model_info',
      help: 'The model being served (1 for its version)',
      labelNames: ['version'],
      registers,
    });
    this.reloads = new Counter({
      name: 'elmo_model_reloads_total',
      help: 'Model reloads, by result (ok, failed)',
      labelNames: ['result'],
      registers,
    });
    new Gauge({
      name: 'elmo_queue_depth',
      help: 'Requests waiting for a batch',
      registers,
      collect() {
        this.set(options.queueDepth());
      },
    });
    new Gauge({
      name: 'elmo_http_requests_in_flight',
      help: 'HTTP requests being handled',
      registers,
      collect() {
        this.set(options.inFlight());
      },
    });
  }

  /** Records the model now served. */
  setModel(version: string): void {
    this.modelInfo.reset();
    this.modelInfo.set({ version }, 1);
  }
}
