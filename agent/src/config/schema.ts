import { z } from 'zod';

/**
 * The agent's whole configuration: one schema, defaults here, documented in README "Configuration".
 * Layers (lowest first): these defaults → YAML file (--config) → OUTPOST_* env → command-line flags.
 * Objects are strict so a misspelt key is an error, not a silently ignored setting.
 */
const int = (min: number, max = Number.MAX_SAFE_INTEGER) => z.number().int().min(min).max(max);

export const PROVIDERS = ['tensorrt', 'cuda', 'openvino', 'cpu'] as const;
export type ProviderName = (typeof PROVIDERS)[number];

export const AgentConfigSchema = z.strictObject({
  /** Directory for the agent's SQLite database, caches and (by default) the model repository. */
  dataDir: z.string().min(1).default('./data'),
  /** Triton-style model repository: <dir>/<name>/<version>/model.onnx (+ manifest.json). Default <dataDir>/models. */
  modelRepository: z.string().min(1).optional(),
  http: z
    .strictObject({
      host: z.string().min(1).default('0.0.0.0'),
      port: int(0, 65535).default(8500),
      /** Time for a client to send all request headers; slowloris guard (Node's default is 60 s). */
      headersTimeoutMs: int(100).default(10_000),
      /** Time for a client to send the whole request, body included. */
      requestTimeoutMs: int(100).default(30_000),
      keepAliveTimeoutMs: int(100).default(5_000),
      /** Most simultaneous sockets; more are refused at accept. 0 = unlimited. */
      maxConnections: int(0).default(1024),
    })
    // Node refuses to start a server whose headers timeout exceeds its request timeout; say so up front.
    .refine((h) => h.headersTimeoutMs <= h.requestTimeoutMs, { message: 'headersTimeoutMs must not exceed requestTimeoutMs', path: ['headersTimeoutMs'] })
    .prefault({}),
  limits: z
    .strictObject({
      /** Largest request body in bytes (images, JSON and binary tensors). Enforced while streaming. */
      maxBodyBytes: int(1024).default(32 * 1024 * 1024),
      /** Largest decoded image in pixels (width × height). A 20 MP camera fits; decompression bombs do not. */
      maxImagePixels: int(1).default(40_000_000),
      /** Largest element count of one input tensor (shape product). */
      maxTensorElements: int(1).default(16 * 1024 * 1024),
      /** Deepest JSON nesting accepted. */
      maxJsonDepth: int(2, 1000).default(32),
      /** Longest time a request may wait and run for an inference answer (queue + compute). */
      inferenceTimeoutMs: int(1).default(10_000),
    })
    .prefault({}),
  models: z
    .strictObject({
      /** Which versions of each model to serve: the highest only, or every version found. */
      versionPolicy: z.enum(['latest', 'all']).default('latest'),
      /** Pin models to specific versions, overriding versionPolicy: { yolov8n: [3] }. */
      pinned: z.record(z.string(), z.array(int(1)).min(1)).default({}),
      /** Dummy-input runs when a version loads, so the first real request does not pay for lazy init. */
      warmupRuns: int(0, 100).default(1),
    })
    .prefault({}),
  inference: z
    .strictObject({
      /** Execution providers in order of preference; the first one this runtime and box can use wins. */
      providers: z.array(z.enum(PROVIDERS)).min(1).default(['tensorrt', 'cuda', 'openvino', 'cpu']),
      /** onnxruntime intra-op threads per session; 0 = onnxruntime's default (one per core). */
      intraOpThreads: int(0, 1024).default(0),
      /** onnxruntime inter-op threads per session; 0 = onnxruntime's default. */
      interOpThreads: int(0, 1024).default(0),
      /** Let onnxruntime's idle intra-op threads spin (lower latency, but they compete with image decoding for cores). */
      allowSpinning: z.boolean().default(true),
      /** Directory holding a GPU build of onnxruntime (libonnxruntime.so.1 and provider libraries), e.g. JetPack's. */
      runtimeLibraryPath: z.string().min(1).optional(),
      /** TensorRT engine cache; default <dataDir>/trt-cache. */
      tensorrtCacheDir: z.string().min(1).optional(),
    })
    .prefault({}),
  batching: z
    .strictObject({
      /** Batch requests that arrive together when the model has a dynamic batch dimension. */
      enabled: z.boolean().default(true),
      /** Defaults for models whose manifest has no batching section. */
      maxBatchSize: int(1, 1024).default(8),
      maxQueueDelayMs: z.number().min(0).max(10_000).default(0),
      /** Requests waiting per model version beyond which new ones get 503 + Retry-After. */
      maxQueueSize: int(1, 100_000).default(64),
    })
    .prefault({}),
  fleet: z
    .strictObject({
      /** MQTT keepalive; a silent (half-open) link is declared dead within 1.5 × this. */
      keepaliveSeconds: int(5, 3600).default(30),
      /** Time allowed for TCP + CONNECT/CONNACK before the attempt counts as failed. */
      connectTimeoutMs: int(100).default(10_000),
      /** Reconnect backoff: exponential from min to max, full jitter, so a fleet of boxes does not reconnect in step. */
      reconnectMinMs: int(10).default(1_000),
      reconnectMaxMs: int(10).default(60_000),
      /** Outbox messages published and awaiting PUBACK at once. */
      inflightWindow: int(1, 1000).default(16),
      /** CA certificate (PEM) to verify the fleet's TLS listener (mqtts://); default: the system's CAs. */
      caFile: z.string().min(1).optional(),
    })
    .refine((f) => f.reconnectMinMs <= f.reconnectMaxMs, { message: 'reconnectMinMs must not exceed reconnectMaxMs', path: ['reconnectMinMs'] })
    .prefault({}),
  outbox: z
    .strictObject({
      /** Most messages kept while the link is down; beyond it the oldest telemetry is dropped (never events). */
      maxRows: int(100).default(100_000),
      /** Most payload bytes kept, same policy as maxRows. */
      maxBytes: int(64 * 1024).default(64 * 1024 * 1024),
      /** Group commit: one fsync'd transaction at most this often… */
      groupCommitMs: int(1, 10_000).default(50),
      /** …or as soon as this many rows are waiting. */
      groupCommitRows: int(1, 100_000).default(100),
      /** Times the broker may drop the link on a message before it moves to the dead-letter table. */
      maxAttempts: int(1, 1000).default(5),
    })
    .prefault({}),
  update: z
    .strictObject({
      /** Most bytes the model repository and the staging directory may hold together; a download that would pass it is refused. */
      diskBudgetBytes: int(1024 * 1024).default(2 * 1024 ** 3),
      /** Free space the filesystem must keep after a download; refused before the first byte otherwise. */
      minFreeBytes: int(0).default(256 * 1024 * 1024),
      /** Download attempts per update before it fails (network errors and 5xx; a 4xx fails at once). */
      downloadAttempts: int(1, 1000).default(8),
      /** Backoff between attempts: exponential from min to max with full jitter. */
      backoffMinMs: int(1).default(500),
      backoffMaxMs: int(1).default(30_000),
      /** An attempt with no byte for this long is abandoned (and retried). */
      stallTimeoutMs: int(100).default(30_000),
      /** Probation ends after this long on the new version… */
      probationSeconds: int(0, 7 * 86_400).default(300),
      /** …or after this many requests to it, whichever comes first. */
      probationRequests: int(1).default(1000),
      /** Roll back when more than this share of the new version's requests fail (0..1)… */
      maxErrorRate: z.number().min(0).max(1).default(0.05),
      /** …or its p95 latency exceeds this factor × the previous version's… */
      maxLatencyFactor: z.number().min(1).max(1000).default(2),
      /** …judged once at least this many requests reached it. */
      minRequests: int(1).default(20),
      /** Times one deployment may be started (boot resumes included) before it fails: the loop guard. */
      maxAttempts: int(1, 100).default(3),
    })
    .refine((u) => u.backoffMinMs <= u.backoffMaxMs, { message: 'backoffMinMs must not exceed backoffMaxMs', path: ['backoffMinMs'] })
    .prefault({}),
  telemetry: z
    .strictObject({
      /** When a telemetry window closes and is queued, as a node-cron expression with seconds (default: every 10 s). */
      schedule: z.string().min(1).default('*/10 * * * * *'),
      /** Include CPU, memory, temperature, disk and GPU (systeminformation) in each window. */
      system: z.boolean().default(true),
    })
    .prefault({}),
  log: z
    .strictObject({
      level: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']).default('info'),
    })
    .prefault({}),
});

export type AgentConfigInput = z.input<typeof AgentConfigSchema>;
/** The validated, defaulted configuration with paths resolved. */
export type AgentConfig = Readonly<
  Omit<z.output<typeof AgentConfigSchema>, 'modelRepository' | 'inference'> & {
    modelRepository: string;
    inference: z.output<typeof AgentConfigSchema>['inference'] & { tensorrtCacheDir: string };
  }
>;
