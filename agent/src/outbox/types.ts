import type { AgentTopicKind } from '../../../shared/src/mqtt/topics.js';
import type { Db } from '../storage/database.js';

/**
 * The contract between the outbox (agent/src/outbox/) and the fleet link (agent/src/link/).
 * Everything the agent sends to the fleet goes through it, online or not (DESIGN §3.5).
 */
export interface OutboxMessage {
  /** Topic kind; the link publishes to outpost/v1/{deviceId}/{kind}. */
  kind: AgentTopicKind;
  /**
   * The payload without the envelope fields v, deviceId and seq (the link adds them when it publishes,
   * so messages queued before enrollment still carry the right device id). Must include `ts`.
   */
  body: Record<string, unknown>;
  /** Published with the MQTT retain flag (state only). */
  retain?: boolean;
}

export interface OutboxRow {
  /** Drain order (oldest first). */
  id: number;
  /** Per-device sequence number, monotonic across restarts, starting at the outbox's creation time in µs; the fleet stores each (deviceId, seq) once. */
  seq: number;
  kind: AgentTopicKind;
  retain: boolean;
  /** The body as JSON text, exactly as stored. */
  body: string;
  bytes: number;
  attempts: number;
}

export interface OutboxStats {
  rows: number;
  bytes: number;
  /** Telemetry rows dropped (oldest first) because the outbox reached maxRows/maxBytes, lifetime. */
  droppedTelemetry: number;
  /** Rows moved to the dead-letter table, lifetime. */
  deadLettered: number;
  /**
   * Set while commits fail: the outbox refuses new messages. Disk full / busy clears by itself once a
   * retried commit succeeds; an fsync/IO error stays until restart.
   */
  alarm: string | null;
  /**
   * True when the last commit left the outbox above maxRows/maxBytes with no telemetry left to drop:
   * events, state and command results are never dropped, so they are kept beyond the bound.
   */
  overBounds?: boolean;
}

export interface Outbox {
  /**
   * Queues a message. Resolves with its seq once the group commit holding it is durable (fsync'd);
   * rejects if that commit fails, and from then on every enqueue rejects while the alarm is up.
   */
  enqueue(message: OutboxMessage): Promise<{ seq: number }>;
  /** Oldest rows first, with id > afterId, at most `limit`. Synchronous (SQLite). */
  next(afterId: number, limit: number): OutboxRow[];
  /** PUBACK received: the row is deleted (deletes are batched into the next group commit). */
  ack(id: number): void;
  /**
   * The link dropped while this row was the oldest unacknowledged one and nothing was acknowledged since
   * the connection came up: counts an attempt; after maxAttempts the row moves to the dead-letter table.
   * Returns true when it was dead-lettered.
   */
  failedAttempt(id: number, reason: string): boolean;
  stats(): OutboxStats;
  /** Subscribe to "rows were committed" (wakes the drainer). Returns an unsubscribe function. */
  onCommitted(listener: () => void): () => void;
  /** Commits what is pending and stops the timer; the database stays open (its owner closes it). */
  close(): Promise<void>;
}

/**
 * An outbox another component can write to inside a group commit it shares (the telemetry window is moved
 * into the outbox and deleted from its table in one transaction, so a count is never in both or neither).
 */
export interface TransactionalOutbox extends Outbox {
  /**
   * Inserts a message inside the transaction the group committer is running right now (GroupCommitter
   * commitNow); throws when called outside one. The seq is final once that transaction commits.
   * Call it last in commitNow's function: a non-SQLite error thrown after it would undo the row (savepoint)
   * but not the outbox's in-memory totals.
   */
  enqueueInTransaction(db: Db, message: OutboxMessage): { seq: number };
}
