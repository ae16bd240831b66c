import Database from 'better-sqlite3';
import type { Logger } from 'pino';
import type { Db } from '../storage/database.js';
import { isRetryableCommitError } from './commit-errors.js';
import { outboxError } from './errors.js';

/**
 * One writer that shares the group commit (the outbox, the telemetry aggregator). All four methods are
 * called synchronously by the committer; nothing else runs in between write() and committed()/failed().
 */
export interface CommitParticipant {
  /** Rows this participant would write now; 0 when nothing is pending. Called on every notify(), keep it O(1). */
  pending(): number;
  /** Writes everything pending inside the committer's transaction. Synchronous; never awaits. */
  write(db: Db): void;
  /** The transaction is durable (WAL fsync'd under synchronous=FULL). Called on every participant after each commit. */
  committed(): void;
  /**
   * The transaction failed: rolled back, or its durability is unknown (fsync error). Called on every participant.
   * isRetryableCommitError(err) tells which: true means cleanly rolled back, nothing of it is on disk.
   */
  failed(err: Error): void;
}

/** The timer functions the committer uses; a test may pass its own. */
export interface CommitTimers {
  setTimeout(fn: () => void, ms: number): unknown;
  clearTimeout(handle: unknown): void;
  setImmediate(fn: () => void): unknown;
  clearImmediate(handle: unknown): void;
}

const REAL_TIMERS: CommitTimers = {
  setTimeout: (fn, ms) => setTimeout(fn, ms),
  clearTimeout: (h) => clearTimeout(h as NodeJS.Timeout),
  setImmediate: (fn) => setImmediate(fn),
  clearImmediate: (h) => clearImmediate(h as NodeJS.Immediate),
};

export interface GroupCommitOptions {
  /** Longest a pending row waits for its commit, in ms (config.outbox.groupCommitMs). */
  groupCommitMs: number;
  /** Pending rows that trigger a commit at once, on the next turn of the event loop (config.outbox.groupCommitRows). */
  groupCommitRows: number;
  log: Pick<Logger, 'error' | 'warn' | 'info'>;
  timers?: CommitTimers;
  /**
   * A small real write each retry makes along with what is pending (createOutbox passes the outbox's), so
   * that an idle outbox can tell the disk takes writes again and a still-full one keeps the alarm up.
   * Without it a retry commits only what is pending, and clears the alarm at once when nothing is.
   */
  probe?: (db: Db) => void;
  /** First delay before retrying after a retryable failure, ms; doubles per failed retry. Default 1000. */
  retryMinMs?: number;
  /** Longest delay between retries, ms. Default 30 000. */
  retryMaxMs?: number;
}

const RETRY_MIN_MS = 1000;
const RETRY_MAX_MS = 30_000;

type Extra = (db: Db) => unknown;
type ExtraOutcome = { ok: true; value: unknown } | { ok: false; error: unknown };

export interface CommitInfo {
  /** Rows the participants reported pending when the commit started. */
  rows: number;
  /** Time inside the transaction, fsync included, in ms. */
  durationMs: number;
}

/**
 * Group commit for one database: every participant's pending writes go into ONE transaction (one fsync),
 * at most `groupCommitMs` after the first pending row, or on the next event-loop turn once
 * `groupCommitRows` are waiting. So rows produced at camera rate share an fsync instead of paying one each.
 *
 * A failed commit raises the alarm: its producers are told, and new enqueues are refused while it is up.
 * - Retryable failure (SQLITE_FULL, SQLITE_BUSY: cleanly rolled back, see commit-errors.ts): a retry runs
 *   after retryMinMs, doubling to retryMaxMs. Each retry is a real commit of what is pending now (acks,
 *   attempts, telemetry counts) plus the probe write; the first one that succeeds clears the alarm.
 *   What failed stays failed: its producers were rejected, nothing is re-acknowledged.
 * - Any other failure, SQLITE_IOERR* above all: sticky until restart (or clearAlarm()).
 * INVARIANT: after an fsync error nothing is committed again: the page cache may have dropped the very
 * pages a later commit would claim to have written (fsyncgate); only a clean rollback is ever retried.
 */
export class GroupCommitter {
  private readonly participants = new Set<CommitParticipant>();
  private readonly commitListeners = new Set<(info: CommitInfo) => void>();
  private readonly alarmListeners = new Set<(message: string, err: Error) => void>();
  private readonly timers: CommitTimers;
  private timer: unknown;
  private immediate: unknown;
  private alarmMessage: string | null = null;
  /** When the alarm went up, epoch ms (for the log line that clears it). */
  private alarmSinceMs = 0;
  /** The alarm is up for a cleanly rolled-back commit and a retry is (or will be) armed. */
  private alarmRetryable = false;
  private retryTimer: unknown;
  private retryDelayMs: number;
  private running = false;
  private closed = false;
  /** better-sqlite3 runs BEGIN … COMMIT around it and rolls back if anything throws before COMMIT. Built once. */
  private readonly transaction: (active: CommitParticipant[], extra: Extra | undefined) => ExtraOutcome | undefined;
  /** Successful commits since construction (tests and the bench read it). */
  commits = 0;
  /** Failed commits since construction. */
  failures = 0;

  constructor(private readonly db: Db, private readonly options: GroupCommitOptions) {
    this.timers = options.timers ?? REAL_TIMERS;
    this.retryDelayMs = options.retryMinMs ?? RETRY_MIN_MS;
    // Called inside the transaction below, a better-sqlite3 transaction function becomes a SAVEPOINT.
    const savepoint = db.transaction((extra: Extra) => extra(db));
    this.transaction = db.transaction((active: CommitParticipant[], extra: Extra | undefined): ExtraOutcome | undefined => {
      for (const p of active) p.write(db);
      if (!extra) return undefined;
      try {
        return { ok: true, value: savepoint(extra) };
      } catch (error) {
        // SQLite's own errors (disk full, I/O) concern the whole transaction: they fail it and raise the alarm.
        if (error instanceof Database.SqliteError) throw error;
        // Anything else (a refusal or a bug in `extra`) undid only extra's writes; the participants' rows commit.
        return { ok: false, error };
      }
    });
  }

  /** The reason commits stopped, or null. */
  get alarm(): string | null {
    return this.alarmMessage;
  }

  /** True while a commit's transaction (and its committed/failed callbacks) runs. */
  get inCommit(): boolean {
    return this.running;
  }

  register(participant: CommitParticipant): () => void {
    this.participants.add(participant);
    return () => this.participants.delete(participant);
  }

  onCommit(listener: (info: CommitInfo) => void): () => void {
    this.commitListeners.add(listener);
    return () => this.commitListeners.delete(listener);
  }

  onAlarm(listener: (message: string, err: Error) => void): () => void {
    this.alarmListeners.add(listener);
    return () => this.alarmListeners.delete(listener);
  }

  /** A participant has something new pending: arm the timer, or commit on the next turn when enough is waiting. */
  notify(): void {
    if (this.running || this.closed || this.alarmMessage !== null) return;
    const rows = this.pendingRows();
    if (rows === 0) return;
    if (rows >= this.options.groupCommitRows) {
      if (this.immediate === undefined) {
        this.immediate = this.timers.setImmediate(() => {
          this.immediate = undefined;
          this.flush();
        });
      }
    } else if (this.timer === undefined) {
      this.timer = this.timers.setTimeout(() => {
        this.timer = undefined;
        this.flush();
      }, this.options.groupCommitMs);
    }
  }

  /** Commits what is pending now. Returns false when nothing was pending or commits are stopped by the alarm. */
  flush(): boolean {
    if (this.alarmMessage !== null || this.running || this.db.inTransaction) return false;
    try {
      return this.commit(undefined).ran;
    } catch {
      return false; // already reported: producers rejected, alarm raised, logged
    }
  }

  /**
   * Commits what is pending plus `extra`, in one transaction, now; returns what `extra` returned.
   * Throws the alarm error when commits are stopped, or the commit's own error. When `extra` itself throws
   * something other than a SQLite error, only its writes are undone (a savepoint): the participants' rows
   * still commit, no alarm is raised, and commitNow rethrows extra's error afterwards.
   */
  commitNow<T>(extra: (db: Db) => T): T {
    if (this.alarmMessage !== null) throw outboxError('OUTBOX_ALARM', `outbox commits are stopped: ${this.alarmMessage}`);
    return this.commit(extra).result as T;
  }

  /** Operator action: commits may run again. What failed stays failed; its producers were told. */
  clearAlarm(): void {
    if (this.alarmMessage === null) return;
    this.options.log.warn({ alarm: this.alarmMessage }, 'outbox alarm cleared; commits resume');
    this.resetAlarm();
    this.notify();
  }

  /** Final commit, then no timer is armed again. */
  close(): void {
    this.flush();
    this.clearScheduled();
    this.cancelRetry();
    this.closed = true;
  }

  private pendingRows(): number {
    let n = 0;
    for (const p of this.participants) n += p.pending();
    return n;
  }

  private clearScheduled(): void {
    if (this.timer !== undefined) this.timers.clearTimeout(this.timer);
    if (this.immediate !== undefined) this.timers.clearImmediate(this.immediate);
    this.timer = undefined;
    this.immediate = undefined;
  }

  private commit(extra: Extra | undefined): { ran: boolean; result: unknown } {
    // Inside another transaction ours would be a mere savepoint, durable only when that one commits.
    if (this.running || this.db.inTransaction) throw new Error('group commit started inside another transaction');
    this.clearScheduled();
    const active = [...this.participants].filter((p) => p.pending() > 0);
    if (active.length === 0 && extra === undefined) return { ran: false, result: undefined };
    let rows = 0;
    for (const p of active) rows += p.pending();
    let outcome: ExtraOutcome | undefined;
    const started = performance.now();
    this.running = true;
    try {
      try {
        outcome = this.transaction(active, extra);
      } catch (e) {
        const err = e instanceof Error ? e : new Error(String(e));
        this.raiseAlarm(err);
        for (const p of this.participants) this.safely(() => p.failed(err), 'failed');
        throw err;
      }
      this.commits++;
      for (const p of this.participants) this.safely(() => p.committed(), 'committed');
    } finally {
      this.running = false;
    }
    const info = { rows, durationMs: performance.now() - started };
    for (const l of this.commitListeners) this.safely(() => l(info), 'commit listener');
    // Rows added by the callbacks above (a producer enqueueing again synchronously) get their own commit.
    this.notify();
    if (outcome && !outcome.ok) throw outcome.error;
    return { ran: true, result: outcome?.value };
  }

  private raiseAlarm(err: Error): void {
    this.failures++;
    const code = (err as { code?: unknown }).code;
    const first = this.alarmMessage === null;
    if (first) this.alarmSinceMs = Date.now();
    this.alarmMessage = `${typeof code === 'string' ? `${code}: ` : ''}${err.message}`;
    this.alarmRetryable = isRetryableCommitError(err);
    if (this.alarmRetryable) {
      const retryInMs = this.scheduleRetry();
      if (first) {
        this.options.log.error(
          { err: err.message, code, alarm: this.alarmMessage, retryInMs },
          'outbox commit failed and was rolled back: new messages are refused until a retried commit succeeds',
        );
      } else {
        this.options.log.warn({ err: err.message, code, retryInMs }, 'outbox commit retry failed; the alarm stays up');
      }
    } else {
      // Durability unknown (fsync/I/O error) or a bug: no retry can vouch for what failed.
      this.cancelRetry();
      this.options.log.error(
        { err: err.message, code, alarm: this.alarmMessage },
        'outbox commit failed: nothing is acknowledged as durable until the agent restarts (no retry after an I/O error)',
      );
    }
    if (first) for (const l of this.alarmListeners) this.safely(() => l(this.alarmMessage!, err), 'alarm listener');
  }

  /** Arms the next retry (once); returns its delay in ms. */
  private scheduleRetry(): number {
    const delayMs = this.retryDelayMs;
    if (this.closed || this.retryTimer !== undefined) return delayMs;
    this.retryDelayMs = Math.min(delayMs * 2, this.options.retryMaxMs ?? RETRY_MAX_MS);
    this.retryTimer = this.timers.setTimeout(() => {
      this.retryTimer = undefined;
      this.retry();
    }, delayMs);
    return delayMs;
  }

  /** A real commit of what is pending plus the probe; on success the alarm clears, on failure raiseAlarm re-arms. */
  private retry(): void {
    if (this.alarmMessage === null || this.closed) return;
    if (this.running || this.db.inTransaction) {
      this.scheduleRetry();
      return;
    }
    const alarm = this.alarmMessage;
    try {
      this.commit(this.options.probe ?? (() => undefined));
    } catch {
      // A failed transaction went through raiseAlarm, which re-armed a retry if the error is still retryable.
      // An error of the probe's own (not SQLite's) came after the participants committed: retry all the same.
      if (this.alarmRetryable) this.scheduleRetry();
      return;
    }
    const outageMs = Date.now() - this.alarmSinceMs;
    this.resetAlarm();
    this.options.log.info({ alarm, outageMs, failures: this.failures }, 'outbox alarm cleared: a retried commit succeeded; new messages are accepted again');
    this.notify();
  }

  private resetAlarm(): void {
    this.alarmMessage = null;
    this.alarmRetryable = false;
    this.cancelRetry();
    this.retryDelayMs = this.options.retryMinMs ?? RETRY_MIN_MS;
  }

  private cancelRetry(): void {
    if (this.retryTimer !== undefined) this.timers.clearTimeout(this.retryTimer);
    this.retryTimer = undefined;
  }

  /** A participant's or listener's bug must not break the commit protocol for the others. */
  private safely(fn: () => void, what: string): void {
    try {
      fn();
    } catch (err) {
      this.options.log.error({ err: (err as Error).message }, `group commit ${what} callback threw`);
    }
  }
}
