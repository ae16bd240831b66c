import type { Logger } from 'pino';
import { MAX_PAYLOAD_BYTES, PROTOCOL_VERSION } from '../../../shared/src/mqtt/messages.js';
import { topicFor } from '../../../shared/src/mqtt/topics.js';
import type { Outbox, OutboxRow } from '../outbox/types.js';
import type { DisconnectCause } from './types.js';

/** The one thing the drainer needs from an MQTT client (mqtt.js' MqttClient fits). */
export interface PublishTarget {
  publish(topic: string, payload: string, options: { qos: 1; retain: boolean }, callback: (err?: Error) => void): unknown;
}

export interface DrainerOptions {
  outbox: Outbox;
  deviceId: string;
  /** Published rows awaiting PUBACK at once (config.fleet.inflightWindow). */
  inflightWindow: number;
  /** config.outbox.maxAttempts; bounds the dead-lettering of a row that can never be sent. */
  maxAttempts: number;
  log: Logger;
  maxPayloadBytes?: number;
}

/** One connection's view: what was sent on it and whether the broker acknowledged anything. */
interface Session {
  target: PublishTarget;
  /** Highest row id sent on this connection; the next read starts after it. */
  cursor: number;
  inflight: Map<number, OutboxRow>;
  acked: boolean;
}

/**
 * The envelope the fleet reads: {"v":1,"deviceId":…,"seq":…, …body}. Composed from the stored JSON text
 * without parsing it again (rows can be large and the drain is hot); the body is an object by contract
 * and never contains v, deviceId or seq. Returns undefined when the stored text is not a JSON object.
 */
export function envelope(deviceId: string, row: Pick<OutboxRow, 'seq' | 'body'>): string | undefined {
  const body = row.body.trim();
  if (!body.startsWith('{') || !body.endsWith('}')) return undefined;
  const head = `{"v":${PROTOCOL_VERSION},"deviceId":${JSON.stringify(deviceId)},"seq":${row.seq}`;
  const rest = body.slice(1).trimStart();
  return rest === '}' ? `${head}}` : `${head},${rest}`;
}

/**
 * Drains the outbox over one connection at a time: oldest row first, up to `inflightWindow` rows awaiting
 * PUBACK, a row deleted (outbox.ack) only once its PUBACK arrives. On a disconnect the in-flight set is
 * forgotten and the next connection starts again from the oldest unacknowledged row: a row may be sent
 * twice (the fleet keeps each (deviceId, seq) once), it is never lost.
 *
 * Poison rule: when the BROKER closes a connection (cause 'closed-by-peer': a clean close, no local timer
 * and no socket error before it) before ANY PUBACK arrived on it, the oldest row in flight is blamed
 * (outbox.failedAttempt; after maxAttempts it moves to the dead-letter table), and the next connection runs
 * in probe mode: it sends only that oldest row until one PUBACK proves the link healthy, then opens the
 * full window. So a message that makes the broker drop the link is isolated, and the healthy rows sent
 * behind it are never the ones blamed. Network failures blame nothing — the silence watchdog (a frozen
 * link, an MTU black hole that passes CONNACK but never a large PUBLISH), a keepalive timeout, ECONNRESET:
 * a MQTT 3.1.1 broker refusing a message closes the connection, it does not go silent, and counting such
 * drops would dead-letter healthy messages after maxAttempts outages. A body larger than MAX_PAYLOAD_BYTES
 * is dead-lettered at once.
 */
export class Drainer {
  private session: Session | undefined;
  private probe = false;
  private pumping = false;
  private readonly idleWaiters = new Set<() => void>();
  private readonly unsubscribe: () => void;
  private readonly maxPayloadBytes: number;

  constructor(private readonly options: DrainerOptions) {
    this.maxPayloadBytes = options.maxPayloadBytes ?? MAX_PAYLOAD_BYTES;
    this.unsubscribe = options.outbox.onCommitted(() => this.pump());
  }

  /** Rows published on the current connection and not yet acknowledged. */
  get inflight(): number {
    return this.session?.inflight.size ?? 0;
  }

  /** True while the next connection (or this one) may send only one row; see the poison rule. */
  get probing(): boolean {
    return this.probe;
  }

  /** A connection is up: start sending from the oldest unacknowledged row. */
  attach(target: PublishTarget): void {
    this.session = { target, cursor: 0, inflight: new Map(), acked: false };
    this.pump();
  }

  /**
   * The connection is gone. Only `cause` 'closed-by-peer' can blame a row (see the poison rule).
   * Returns the row blamed under the poison rule, if any.
   */
  detach(cause: DisconnectCause, reason: string): { blamedId: number; deadLettered: boolean } | undefined {
    const s = this.session;
    this.session = undefined;
    this.wakeIdle();
    if (!s || cause !== 'closed-by-peer' || s.acked || s.inflight.size === 0) return undefined;
    const blamedId = Math.min(...s.inflight.keys());
    const deadLettered = this.options.outbox.failedAttempt(blamedId, reason);
    this.probe = true;
    this.options.log.warn({ rowId: blamedId, seq: s.inflight.get(blamedId)?.seq, deadLettered, reason }, 'broker closed the link before any PUBACK; blaming the oldest message in flight and probing with it alone');
    return { blamedId, deadLettered };
  }

  /** True when nothing is in flight and nothing newer than what was sent is waiting. */
  idle(): boolean {
    const s = this.session;
    if (!s) return true;
    return s.inflight.size === 0 && this.options.outbox.next(s.cursor, 1).length === 0;
  }

  /** Resolves true once idle() holds, false if `timeoutMs` passes or the connection drops first. */
  whenIdle(timeoutMs: number): Promise<boolean> {
    if (!this.session) return Promise.resolve(false);
    if (this.idle()) return Promise.resolve(true);
    return new Promise((resolve) => {
      const done = () => {
        clearTimeout(timer);
        this.idleWaiters.delete(done);
        resolve(this.session !== undefined && this.idle());
      };
      const timer = setTimeout(done, timeoutMs);
      this.idleWaiters.add(done);
    });
  }

  /** Stops listening to the outbox; the drainer is not used again. */
  dispose(): void {
    this.unsubscribe();
    this.session = undefined;
    this.wakeIdle();
  }

  /** Fills the window from the outbox. Re-entrant calls (a wake-up while filling) are folded into the loop. */
  pump(): void {
    if (this.pumping) return;
    this.pumping = true;
    try {
      for (let guard = 0; guard < 10_000; guard++) {
        const s = this.session;
        if (!s) return;
        const window = this.probe && !s.acked ? 1 : this.options.inflightWindow;
        const room = window - s.inflight.size;
        if (room <= 0) return;
        const rows = this.options.outbox.next(s.cursor, room);
        if (rows.length === 0) break;
        for (const row of rows) {
          s.cursor = Math.max(s.cursor, row.id);
          this.send(s, row);
          if (this.session !== s) return;
        }
      }
    } finally {
      this.pumping = false;
    }
    if (this.idle()) this.wakeIdle();
  }

  private send(s: Session, row: OutboxRow): void {
    const payload = envelope(this.options.deviceId, row);
    if (payload === undefined) return this.deadLetter(row, 'body is not a JSON object');
    const bytes = Buffer.byteLength(payload);
    if (bytes > this.maxPayloadBytes) return this.deadLetter(row, `payload of ${bytes} bytes exceeds MAX_PAYLOAD_BYTES (${this.maxPayloadBytes})`);
    s.inflight.set(row.id, row);
    s.target.publish(topicFor(this.options.deviceId, row.kind), payload, { qos: 1, retain: row.retain }, (err) => {
      // A callback from a connection that is already gone: its rows are resent on the next one.
      if (this.session !== s || !s.inflight.has(row.id)) return;
      if (err) {
        this.options.log.debug({ rowId: row.id, err: err.message }, 'publish failed; the row stays queued');
        return;
      }
      s.inflight.delete(row.id);
      s.acked = true;
      this.probe = false;
      this.options.outbox.ack(row.id);
      this.pump();
    });
  }

  /** A row no broker will take: out of the queue at once, so it cannot block the rows behind it. */
  private deadLetter(row: OutboxRow, reason: string): void {
    let dead = false;
    // failedAttempt moves the row after maxAttempts calls; the bound protects against an outbox that never does.
    for (let i = 0; i <= this.options.maxAttempts && !dead; i++) dead = this.options.outbox.failedAttempt(row.id, reason);
    this.options.log.error({ rowId: row.id, seq: row.seq, kind: row.kind, reason, deadLettered: dead }, 'outbox message can never be sent; moved to the dead-letter table');
  }

  private wakeIdle(): void {
    for (const w of [...this.idleWaiters]) w();
  }
}
