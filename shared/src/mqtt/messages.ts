import { z } from 'zod';
import { HIST_MAX_INDEX } from '../telemetry/histogram.js';
import type { TopicKind } from './topics.js';

/**
 * Payloads of the agent ↔ fleet link (DESIGN §5), one schema per topic kind, used by both sides to
 * validate what they receive. MQTT 3.1.1 has no reason codes, expiry or user properties, so what the
 * protocol lacks travels in the payload: the schema version `v`, the per-device `seq`, timestamps.
 *
 * Every agent → fleet message except the last will carries `seq`: a per-device number that grows by one
 * with every message the outbox accepts, across restarts. The fleet stores each (deviceId, seq) once.
 */
export const PROTOCOL_VERSION = 1;
/** Largest payload either side accepts; bigger messages are dropped and counted, never parsed. */
export const MAX_PAYLOAD_BYTES = 256 * 1024;

const iso = z.iso.datetime({ offset: true });
const seq = z.number().int().min(1).max(Number.MAX_SAFE_INTEGER);
const count = z.number().int().min(0).max(Number.MAX_SAFE_INTEGER);
const ms = z.number().min(0).max(86_400_000);
const name = z.string().min(1).max(128);
const version = z.number().int().min(1).max(2 ** 31 - 1);

/** Fields every agent message starts with. `deviceId` must match the topic's device. */
const agentEnvelope = {
  v: z.literal(PROTOCOL_VERSION),
  deviceId: z.string().min(1).max(64),
  seq,
  ts: iso,
};

export const LatencySummarySchema = z.strictObject({
  p50: ms,
  p95: ms,
  p99: ms,
  /** Sparse histogram: bucket index (see shared/src/telemetry/histogram.ts) → count. Mergeable across windows. */
  hist: z.record(
    // Canonical indexes only ("7", never "007": the key is looked up by String(index) when merged), ≤ HIST_MAX_INDEX.
    z.string().regex(/^(0|[1-9]\d{0,2})$/).refine((k) => Number(k) <= HIST_MAX_INDEX, `bucket index above ${HIST_MAX_INDEX}`),
    count,
  ),
});

/** What one model version served in one telemetry window. */
export const ModelPointSchema = z.strictObject({
  model: name,
  version,
  requests: count,
  failures: count,
  latencyMs: LatencySummarySchema,
  queueMs: LatencySummarySchema,
  batchSize: z.strictObject({ mean: z.number().min(0).max(1e6), max: count }),
  /** Detection/classification scores in 10 equal bins over [0, 1] (drift input). */
  scoreBins: z.array(count).length(10),
  /** Count per predicted class label (drift input), at most 1000 labels. */
  classes: z.record(z.string().max(128), count).refine((c) => Object.keys(c).length <= 1000, 'at most 1000 classes'),
});

export const SystemPointSchema = z.strictObject({
  cpuPercent: z.number().min(0).max(100).nullable(),
  memUsedBytes: count.nullable(),
  memTotalBytes: count.nullable(),
  temperatureC: z.number().min(-100).max(200).nullable(),
  diskUsedBytes: count.nullable(),
  diskTotalBytes: count.nullable(),
  gpus: z.array(z.strictObject({ model: z.string().max(200), utilizationPercent: z.number().min(0).max(100).nullable(), memoryUsedBytes: count.nullable(), temperatureC: z.number().min(-100).max(200).nullable() })).max(16),
});

export const TelemetryMessageSchema = z.strictObject({
  ...agentEnvelope,
  /** The aggregation window, agent wall clock: (windowStart, windowEnd]. */
  windowStart: iso,
  windowEnd: iso,
  models: z.array(ModelPointSchema).max(256),
  system: SystemPointSchema.nullable(),
});

export const EventMessageSchema = z.strictObject({
  ...agentEnvelope,
  /** Dotted kind, e.g. model.loaded, model.failed, outbox.dropped, update.transition. */
  kind: z.string().regex(/^[a-z][a-z0-9_.-]{0,63}$/),
  severity: z.enum(['info', 'warn', 'error']),
  message: z.string().max(2000),
  data: z.record(z.string(), z.unknown()).default({}),
});

export const ReportedModelSchema = z.strictObject({
  name,
  version,
  state: z.string().max(32),
  /** True for the version unversioned requests go to (during probation the previous one is loaded too). */
  active: z.boolean().optional(),
  provider: z.string().max(32).nullable(),
  error: z.string().max(2000).nullable(),
});

/** Reported state (retained). The last will is the short form {v, deviceId, online: false, ts, reason}. */
export const StateMessageSchema = z.union([
  z.strictObject({
    ...agentEnvelope,
    online: z.literal(true),
    agentVersion: z.string().max(64),
    startedAt: iso,
    provider: z.string().max(32).nullable(),
    models: z.array(ReportedModelSchema).max(256),
    outbox: z.strictObject({ rows: count, bytes: count, droppedTelemetry: count, deadLettered: count }),
    hardware: z.record(z.string(), z.unknown()).default({}),
    update: z.record(z.string(), z.unknown()).default({}),
  }),
  z.strictObject({
    ...agentEnvelope,
    online: z.literal(false),
    reason: z.enum(['shutdown']),
  }),
  // The last will is fixed at CONNECT time, so it cannot carry a seq; the fleet never stores it as a message.
  z.strictObject({
    v: z.literal(PROTOCOL_VERSION),
    deviceId: z.string().min(1).max(64),
    online: z.literal(false),
    reason: z.literal('connection-lost'),
    ts: iso,
  }),
]);

export const CmdResultMessageSchema = z.strictObject({
  ...agentEnvelope,
  id: z.string().min(1).max(64),
  ok: z.boolean(),
  result: z.record(z.string(), z.unknown()).optional(),
  error: z.strictObject({ code: z.string().max(64), message: z.string().max(2000) }).optional(),
});

export const DesiredModelSchema = z.strictObject({
  name,
  version,
  sha256: z.string().regex(/^[0-9a-f]{64}$/),
  size: count,
  /** Where the artifact is (relative to the fleet URL); empty for a removal. */
  url: z.string().max(2048),
  /** The manifest the version is loaded with (the registry's copy), or null; signed through its digest. */
  manifest: z.record(z.string(), z.unknown()).nullable(),
  /** Fleet-wide monotonic counter of this deployment; the agent refuses one below the highest it accepted. */
  deployment: seq,
  /** After this instant the entry is stale: no new install starts from it (freeze-attack protection). */
  expires: iso,
  /** The rollout this entry belongs to, for the events the agent sends back (not signed: bookkeeping only). */
  rollout: z.string().max(64).nullable().default(null),
  /** A signed removal: the device unloads the model and deletes its files (sha256 all zeros, size 0). */
  remove: z.boolean().default(false),
  /** base64 ed25519 signature by the fleet key over deploymentStatement() (shared/src/signing.ts). */
  signature: z.string().min(1).max(256),
});

/** Probation and rollback thresholds the fleet may set per device; the agent's config supplies what is absent. */
export const ThresholdsSchema = z.strictObject({
  /** Probation ends (commit) after this long… */
  probationSeconds: z.number().int().min(0).max(7 * 86_400).optional(),
  /** …or after this many requests to the new version, whichever comes first. */
  probationRequests: z.number().int().min(1).max(1e9).optional(),
  /** Roll back when the failure share of the new version's requests exceeds this (0..1)… */
  maxErrorRate: z.number().min(0).max(1).optional(),
  /** …or its p95 latency exceeds this factor × the previous version's… */
  maxLatencyFactor: z.number().min(1).max(1000).optional(),
  /** …judged once at least this many requests reached it. */
  minRequests: z.number().int().min(1).max(1e6).optional(),
});

/** Desired state (fleet → agent, retained). `revision` grows with every change the fleet makes for the device. */
export const DesiredMessageSchema = z.strictObject({
  v: z.literal(PROTOCOL_VERSION),
  deviceId: z.string().min(1).max(64),
  revision: seq,
  ts: iso,
  models: z.array(DesiredModelSchema).max(64),
  maintenanceWindow: z.strictObject({ cron: z.string().max(128), durationMinutes: z.number().int().min(1).max(1440) }).nullable().default(null),
  thresholds: ThresholdsSchema.default({}),
});

/** The update machine's states (agent/src/update/states.ts holds the transition table). */
export const UPDATE_STATES = [
  'idle', 'downloading', 'verifying', 'staging', 'activating', 'probation', 'committed', 'rolling_back', 'rolled_back', 'failed',
] as const;
export type UpdateState = (typeof UPDATE_STATES)[number];

/** `data` of an `update.transition` event: one step of one model's update on one device. */
export const UpdateTransitionSchema = z.object({
  model: name,
  version,
  /** The version serving before this update (null: none). */
  previousVersion: version.nullable(),
  from: z.enum(UPDATE_STATES),
  to: z.enum(UPDATE_STATES),
  deployment: seq,
  rollout: z.string().max(64).nullable(),
  /** Why, for rolled_back / failed / rolling_back: a stable code (docs/updates.md "Rollback triggers") and a message. */
  reason: z.string().max(64).nullable(),
  detail: z.string().max(2000).nullable(),
});
export type UpdateTransition = z.infer<typeof UpdateTransitionSchema>;

export const CmdMessageSchema = z.strictObject({
  v: z.literal(PROTOCOL_VERSION),
  id: z.string().min(1).max(64),
  ts: iso,
  kind: z.enum(['ping', 'rollback', 'reload', 'diagnostics']),
  args: z.record(z.string(), z.unknown()).default({}),
  timeoutMs: z.number().int().min(1).max(3_600_000).default(60_000),
});

export type TelemetryMessage = z.infer<typeof TelemetryMessageSchema>;
export type ModelPoint = z.infer<typeof ModelPointSchema>;
export type SystemPoint = z.infer<typeof SystemPointSchema>;
export type EventMessage = z.infer<typeof EventMessageSchema>;
export type StateMessage = z.infer<typeof StateMessageSchema>;
export type CmdResultMessage = z.infer<typeof CmdResultMessageSchema>;
export type DesiredMessage = z.infer<typeof DesiredMessageSchema>;
export type DesiredModel = z.infer<typeof DesiredModelSchema>;
export type CmdMessage = z.infer<typeof CmdMessageSchema>;
export type Thresholds = z.infer<typeof ThresholdsSchema>;

export const MESSAGE_SCHEMAS = {
  state: StateMessageSchema,
  telemetry: TelemetryMessageSchema,
  events: EventMessageSchema,
  'cmd/result': CmdResultMessageSchema,
  desired: DesiredMessageSchema,
  cmd: CmdMessageSchema,
} as const satisfies Record<TopicKind, z.ZodType>;

export type MessageOf<K extends TopicKind> = z.infer<(typeof MESSAGE_SCHEMAS)[K]>;

/** Why a payload was refused; the label of the receivers' rejected-message counters. */
export type RejectReason = 'oversized' | 'not-json' | 'invalid' | 'wrong-device' | 'unknown-topic';

export type Decoded<K extends TopicKind> = { ok: true; message: MessageOf<K> } | { ok: false; reason: RejectReason; detail: string };

/**
 * Validates one received payload for a topic kind: size first (never parse an oversized payload),
 * then JSON, then the schema, then that the payload names the device its topic names.
 */
export function decodeMessage<K extends TopicKind>(kind: K, payload: Uint8Array, topicDeviceId?: string): Decoded<K> {
  if (payload.byteLength > MAX_PAYLOAD_BYTES) return { ok: false, reason: 'oversized', detail: `${payload.byteLength} bytes > ${MAX_PAYLOAD_BYTES}` };
  let value: unknown;
  try {
    value = JSON.parse(Buffer.from(payload.buffer, payload.byteOffset, payload.byteLength).toString('utf8'));
  } catch (err) {
    return { ok: false, reason: 'not-json', detail: (err as Error).message };
  }
  const parsed = MESSAGE_SCHEMAS[kind].safeParse(value);
  if (!parsed.success) {
    const issue = parsed.error.issues[0]!;
    return { ok: false, reason: 'invalid', detail: `${issue.path.join('.') || '(root)'}: ${issue.message}` };
  }
  const message = parsed.data as MessageOf<K>;
  const named = (message as { deviceId?: string }).deviceId;
  if (topicDeviceId !== undefined && named !== undefined && named !== topicDeviceId) {
    return { ok: false, reason: 'wrong-device', detail: `payload names device ${named}, topic names ${topicDeviceId}` };
  }
  return { ok: true, message };
}
