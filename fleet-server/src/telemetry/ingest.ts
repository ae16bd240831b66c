import type { Logger } from 'pino';
import { decodeMessage, type MessageOf } from '../../../shared/src/mqtt/messages.js';
import { parseTopic, TOPIC_KINDS, type AgentTopicKind } from '../../../shared/src/mqtt/topics.js';
import type { FleetMetrics, IngestRejectReason } from '../metrics/fleet-metrics.js';
import { isoAt, type Clock } from '../storage/clock.js';
import type { DeviceStore, IngestStore } from '../storage/fleet-store.js';
import { dispatch } from './handlers/index.js';
import { rateLimitedLog } from './log-limiter.js';

export interface IngestDeps {
  devices: DeviceStore;
  ingest: IngestStore;
  metrics: FleetMetrics;
  clock: Clock;
  log: Logger;
  /**
   * Called synchronously after a message was stored (not for duplicates), e.g. the rollout engine watching
   * update.transition events. With the embedded broker it runs inside the batch transaction, so what it writes
   * commits together with the message. Errors it throws are logged and never affect the ingest.
   */
  onStored?<K extends AgentTopicKind>(kind: K, deviceId: string, message: MessageOf<K>): void;
}

/**
 * What ingest did with one agent message. 'rejected' is garbage (bad topic, payload, schema, unknown or revoked
 * device): dropped and counted, never going to become valid, so it is acknowledged like a stored one.
 * 'store-failed' is the one outcome that must NOT be acknowledged: the message is fine, the database is not.
 */
export type IngestOutcome = 'stored' | 'duplicate' | 'rejected' | 'store-failed';

/**
 * One agent message in, stored once or dropped and counted. Synchronous: when it returns 'stored' or 'duplicate'
 * the message is committed (SQLite synchronous=FULL), which is what lets the embedded broker send the PUBACK.
 */
export type IngestHandler = (topic: string, payload: Buffer) => IngestOutcome;

/**
 * Telemetry ingest (DESIGN §4, §5): topic → kind and device → decode and validate (size, JSON, schema, the
 * payload names the topic's device) → the device is enrolled and not revoked → the kind's handler stores it
 * exactly once. Anything wrong is logged (rate-limited), counted in outpost_fleet_rejected_messages_total and
 * dropped; nothing here throws, so one bad message can never stop the ingest or the server.
 */
export function createIngest(deps: IngestDeps): IngestHandler {
  const { devices, ingest, metrics, clock, log } = deps;
  const limited = rateLimitedLog(log, clock);
  const ctx = { store: ingest };

  const reject = (kind: string, reason: IngestRejectReason, fields: Record<string, unknown>, detail: string): IngestOutcome => {
    metrics.rejected.inc({ kind, reason });
    limited('warn', `${kind}:${reason}`, { kind, reason, ...fields }, `dropped an agent message: ${detail}`);
    return 'rejected';
  };

  return (topic, payload): IngestOutcome => {
    let kind = 'unknown';
    try {
      const parsed = parseTopic(topic);
      if (!parsed || TOPIC_KINDS[parsed.kind].from !== 'agent') {
        return reject(kind, 'unknown-topic', { topic: topic.slice(0, 200) }, 'not an agent topic');
      }
      kind = parsed.kind;
      const { deviceId } = parsed;
      const decoded = decodeMessage(parsed.kind as AgentTopicKind, payload, deviceId);
      if (!decoded.ok) return reject(kind, decoded.reason, { deviceId }, decoded.detail.slice(0, 300));
      // Checked after decoding so a flood of garbage costs no database read.
      const standing = devices.standing(deviceId);
      if (standing !== 'active') return reject(kind, standing === 'revoked' ? 'revoked' : 'unknown-device', { deviceId }, `device ${standing ?? 'not enrolled'}`);
      const receivedMs = clock.now();
      const outcome = dispatch(ctx, parsed.kind as AgentTopicKind, deviceId, decoded.message, isoAt(receivedMs));
      if (outcome === 'duplicate') {
        metrics.duplicates.inc({ kind });
        return 'duplicate';
      }
      metrics.ingested.inc({ kind });
      if (outcome === 'stored' && deps.onStored) {
        try {
          deps.onStored(parsed.kind as AgentTopicKind, deviceId, decoded.message);
        } catch (err) {
          limited('error', `${kind}:observer`, { kind, deviceId, err: (err as Error).message }, 'a stored-message observer failed');
        }
      }
      if (outcome === 'stored') {
        const sentMs = Date.parse((decoded.message as { ts: string }).ts);
        // A device clock ahead of ours would give a negative delay; count it as immediate.
        metrics.ingestDelay.observe(Math.max(0, receivedMs - sentMs) / 1000);
      }
      return 'stored'; // also the last will ('offline'): the device row was updated
    } catch (err) {
      // A storage failure (disk full, I/O error). The caller must not acknowledge the message: the embedded
      // broker closes the device's connection instead, so its outbox (which deletes a row only on PUBACK)
      // resends it later. Counted loudly either way.
      metrics.rejected.inc({ kind, reason: 'store-failed' });
      limited('error', `${kind}:store-failed`, { kind, topic: topic.slice(0, 200), err: (err as Error).message }, 'cannot store an agent message');
      return 'store-failed';
    }
  };
}
