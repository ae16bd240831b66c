import type { Logger } from 'pino';
import type { AgentTopicKind } from '../../../shared/src/mqtt/topics.js';
import type { Db } from '../storage/database.js';
import { outboxError } from './errors.js';
import type { CommitParticipant, GroupCommitter } from './group-commit.js';
import { OutboxStore } from './outbox-store.js';
import { prepare, type PreparedMessage } from './prepare-message.js';
import type { OutboxMessage, OutboxRow, OutboxStats, TransactionalOutbox } from './types.js';

/** Rows read per step of next() when some rows in range are acked or dead-lettered but not yet deleted. */
const NEXT_CHUNK_MIN = 64;

export interface SqliteOutboxOptions {
  /** config.outbox: bounds and the dead-letter threshold. */
  maxRows: number;
  maxBytes: number;
  maxAttempts: number;
  log: Pick<Logger, 'error' | 'warn' | 'info'>;
  /** Wall clock for created_at / dead_at, epoch ms. */
  now?: () => number;
}

interface Queued extends PreparedMessage {
  resolve: (r: { seq: number }) => void;
  reject: (err: Error) => void;
}

/** What the transaction being committed changes; applied to the in-memory totals only once it is durable. */
interface Txn {
  nextSeq: number;
  rows: number;
  bytes: number;
  droppedTelemetry: number;
  deadLettered: number;
  produced: { q: Queued; seq: number }[];
  acks: number[];
  attempts: number[];
  dead: number[];
  inserted: number;
  /** Highest id of a state row inserted in this transaction (0: none); older unsent state rows are coalesced. */
  latestState: number;
  overBounds: boolean;
}

/**
 * The agent's SQLite outbox (DESIGN §3.5): everything the agent sends is queued here and drained oldest
 * first by the link. A group-commit participant: enqueue() keeps the JSON in memory and resolves with the
 * message's seq once the commit holding it is durable; acks, attempts and dead-lettering ride the same
 * commits. seq is assigned inside the commit from outbox_meta.next_seq, so it is gap-free when assigned and
 * monotonic across restarts (dropped telemetry and coalesced state leave gaps the fleet may see); a fresh
 * outbox starts at its creation time in µs (firstSeq in outbox-store.ts), not at 1.
 */
export class SqliteOutbox implements TransactionalOutbox, CommitParticipant {
  private readonly store: OutboxStore;
  private readonly now: () => number;
  private queue: Queued[] = [];
  /** Acknowledged (PUBACK) rows not yet deleted; next() never returns them. */
  private readonly acked = new Set<number>();
  /** Failed attempts not yet committed, per row id. */
  private readonly attempts = new Map<number, number>();
  /** Rows past maxAttempts waiting to move to the dead-letter table; next() never returns them. */
  private readonly dead = new Map<number, { attempts: number; reason: string }>();
  /** State rows next() handed to the link and not yet acknowledged: the link may have them in flight, so they are not coalesced. */
  private readonly handedOutStates = new Set<number>();
  private readonly listeners = new Set<() => void>();
  /** The totals as of the last durable commit (stats() reads these). */
  private durable: { nextSeq: number; rows: number; bytes: number; droppedTelemetry: number; deadLettered: number; overBounds: boolean };
  private txn: Txn | undefined;
  private closed = false;
  private readonly unregister: () => void;

  constructor(private readonly db: Db, private readonly committer: GroupCommitter, private readonly options: SqliteOutboxOptions) {
    this.store = new OutboxStore(db);
    this.now = options.now ?? Date.now;
    const loaded = this.store.load(this.now());
    this.durable = { ...loaded, overBounds: loaded.rows > options.maxRows || loaded.bytes > options.maxBytes };
    this.unregister = committer.register(this);
  }

  enqueue(message: OutboxMessage): Promise<{ seq: number }> {
    if (this.closed) return Promise.reject(outboxError('OUTBOX_CLOSED', 'the outbox is closed'));
    if (this.committer.alarm !== null) return Promise.reject(outboxError('OUTBOX_ALARM', `outbox commits are stopped: ${this.committer.alarm}`));
    let prepared: PreparedMessage;
    try {
      prepared = prepare(message);
    } catch (err) {
      return Promise.reject(err);
    }
    return new Promise((resolve, reject) => {
      this.queue.push({ ...prepared, resolve, reject });
      this.committer.notify();
    });
  }

  enqueueInTransaction(db: Db, message: OutboxMessage): { seq: number } {
    if (db !== this.db || !db.inTransaction || !this.committer.inCommit) {
      throw new Error('enqueueInTransaction must run inside GroupCommitter.commitNow on the outbox database');
    }
    if (this.closed) throw outboxError('OUTBOX_CLOSED', 'the outbox is closed');
    const m = prepare(message);
    const t = this.begin();
    const seq = this.insert(t, m.kind, m.retain, m.body, m.bytes, this.now());
    this.finish(t);
    return { seq };
  }

  next(afterId: number, limit: number): OutboxRow[] {
    const out: OutboxRow[] = [];
    if (limit <= 0) return out;
    const excluded = this.acked.size + this.dead.size;
    const chunk = excluded === 0 ? limit : Math.max(NEXT_CHUNK_MIN, limit);
    let cursor = afterId;
    for (;;) {
      const rows = this.store.page(cursor, chunk);
      for (const r of rows) {
        cursor = r.id;
        if (excluded > 0 && (this.acked.has(r.id) || this.dead.has(r.id))) continue;
        if (r.kind === 'state') this.handedOutStates.add(r.id);
        out.push({ id: r.id, seq: r.seq, kind: r.kind, retain: r.retain === 1, body: r.body, bytes: r.bytes, attempts: r.attempts + (this.attempts.get(r.id) ?? 0) });
        if (out.length === limit) return out;
      }
      if (rows.length < chunk) return out;
    }
  }

  ack(id: number): void {
    this.acked.add(id);
    this.handedOutStates.delete(id);
    this.attempts.delete(id);
    this.dead.delete(id);
    this.committer.notify();
  }

  failedAttempt(id: number, reason: string): boolean {
    if (this.dead.has(id)) return true;
    if (this.acked.has(id)) return false;
    const stored = this.store.attemptsOf(id);
    if (stored === undefined) return false;
    const total = stored + (this.attempts.get(id) ?? 0) + 1;
    if (total >= this.options.maxAttempts) {
      this.dead.set(id, { attempts: total - stored, reason });
      this.attempts.delete(id);
      this.handedOutStates.delete(id);
    } else {
      this.attempts.set(id, total - stored);
    }
    this.committer.notify();
    return total >= this.options.maxAttempts;
  }

  stats(): OutboxStats {
    const c = this.durable;
    return { rows: c.rows, bytes: c.bytes, droppedTelemetry: c.droppedTelemetry, deadLettered: c.deadLettered, alarm: this.committer.alarm, overBounds: c.overBounds };
  }

  onCommitted(listener: () => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.committer.flush();
    this.unregister();
    // Whatever a failed final commit left queued was not durable; say so rather than leave promises hanging.
    this.rejectQueued(outboxError('OUTBOX_CLOSED', 'the outbox closed before this message was committed'));
  }

  // ---- CommitParticipant ----

  pending(): number {
    return this.queue.length + this.acked.size + this.attempts.size + this.dead.size;
  }

  write(): void {
    const t = this.begin();
    const nowMs = this.now();
    for (const id of this.acked) {
      const bytes = this.store.remove(id);
      if (bytes !== undefined) this.removed(t, bytes);
      t.acks.push(id);
    }
    for (const [id, n] of this.attempts) {
      this.store.addAttempts(id, n);
      t.attempts.push(id);
    }
    for (const [id, d] of this.dead) {
      const bytes = this.store.deadLetter(id, d.attempts, d.reason, nowMs);
      if (bytes !== undefined) {
        this.removed(t, bytes);
        t.deadLettered++;
      }
      t.dead.push(id);
    }
    const queued = this.queue;
    this.queue = [];
    // Recorded before the inserts, so that an insert that throws (disk full) still gets its producer told.
    const batch = queued.map((q) => ({ q, seq: 0 }));
    t.produced.push(...batch);
    for (const p of batch) p.seq = this.insert(t, p.q.kind, p.q.retain, p.q.body, p.q.bytes, nowMs);
    this.finish(t);
  }

  committed(): void {
    const t = this.txn;
    if (!t) return;
    this.txn = undefined;
    const wasOver = this.durable.overBounds;
    this.durable = { nextSeq: t.nextSeq, rows: t.rows, bytes: t.bytes, droppedTelemetry: t.droppedTelemetry, deadLettered: t.deadLettered, overBounds: t.overBounds };
    for (const id of t.acks) this.acked.delete(id);
    for (const id of t.attempts) this.attempts.delete(id);
    for (const id of t.dead) this.dead.delete(id);
    if (t.overBounds && !wasOver) {
      this.options.log.warn({ rows: t.rows, bytes: t.bytes, maxRows: this.options.maxRows, maxBytes: this.options.maxBytes }, 'outbox is over its bounds with no telemetry left to drop; events and state are kept');
    }
    for (const p of t.produced) p.q.resolve({ seq: p.seq });
    if (t.inserted > 0) {
      for (const l of this.listeners) {
        try {
          l();
        } catch (err) {
          this.options.log.error({ err: (err as Error).message }, 'outbox onCommitted listener threw');
        }
      }
    }
  }

  failed(err: Error): void {
    const t = this.txn;
    this.txn = undefined;
    const failure = outboxError('OUTBOX_COMMIT_FAILED', `the commit holding this message failed: ${err.message}`, { cause: err });
    for (const p of t?.produced ?? []) p.q.reject(failure);
    // Producers are told at once rather than made to wait for a retry that may never come (an I/O error is
    // sticky); the alarm refuses new messages until a retried commit succeeds (disk full/busy only).
    this.rejectQueued(failure);
    // Acks, attempts and dead-lettering stay pending: they are idempotent and ride the next commit (the retry).
  }

  // ---- inside the transaction ----

  private begin(): Txn {
    if (!this.txn) {
      const c = this.durable;
      this.txn = {
        nextSeq: c.nextSeq, rows: c.rows, bytes: c.bytes, droppedTelemetry: c.droppedTelemetry, deadLettered: c.deadLettered,
        produced: [], acks: [], attempts: [], dead: [], inserted: 0, latestState: 0, overBounds: c.overBounds,
      };
    }
    return this.txn;
  }

  private insert(t: Txn, kind: AgentTopicKind, retain: boolean, body: string, bytes: number, nowMs: number): number {
    const seq = t.nextSeq++;
    const id = this.store.insert(seq, kind, retain, body, bytes, nowMs);
    t.rows++;
    t.bytes += bytes;
    t.inserted++;
    if (kind === 'state') t.latestState = id;
    return seq;
  }

  private removed(t: Txn, bytes: number): void {
    t.rows--;
    t.bytes -= bytes;
  }

  /** After the inserts: coalesce older unsent state, enforce the bounds, persist the counters. */
  private finish(t: Txn): void {
    if (t.latestState > 0) {
      // Only the latest reported state matters; an older one the link may have in flight is left to its PUBACK.
      for (const r of this.store.olderStates(t.latestState)) {
        if (this.handedOutStates.has(r.id) || this.acked.has(r.id)) continue;
        if (this.store.remove(r.id) !== undefined) this.removed(t, r.bytes);
      }
    }
    const { maxRows, maxBytes } = this.options;
    if (t.rows > maxRows || t.bytes > maxBytes) {
      const dropped = this.store.dropOldestTelemetry(t.rows, t.bytes, maxRows, maxBytes);
      t.rows -= dropped.rows;
      t.bytes -= dropped.bytes;
      t.droppedTelemetry += dropped.rows;
    }
    t.overBounds = t.rows > maxRows || t.bytes > maxBytes;
    const c = this.durable;
    if (t.nextSeq !== c.nextSeq) this.store.setMeta('next_seq', t.nextSeq);
    if (t.droppedTelemetry !== c.droppedTelemetry) this.store.setMeta('dropped_telemetry', t.droppedTelemetry);
    if (t.deadLettered !== c.deadLettered) this.store.setMeta('dead_lettered', t.deadLettered);
  }

  private rejectQueued(err: Error): void {
    const queued = this.queue;
    this.queue = [];
    for (const q of queued) q.reject(err);
  }
}
