import type { Statement } from 'better-sqlite3';
import type { Logger } from 'pino';
import type { ModelPoint, SystemPoint } from '../../../shared/src/mqtt/messages.js';
import { isRetryableCommitError } from '../outbox/commit-errors.js';
import type { CommitParticipant, GroupCommitter } from '../outbox/group-commit.js';
import { MAX_BODY_BYTES } from '../outbox/prepare-message.js';
import type { TransactionalOutbox } from '../outbox/types.js';
import type { Db } from '../storage/database.js';
import { splitToFit, type TelemetryBody } from './split-window.js';
import type { RequestObservation, RequestObserver } from './types.js';
import { emptyWindow, mergeWindow, observeRequest, parseWindow, toModelPoint, type WindowData } from './window-data.js';

interface StoredWindow {
  model: string;
  version: number;
  window_start: number;
  data: string;
}

export type { TelemetryBody };

/**
 * Per-model-version telemetry of the open window, kept so that it survives kill -9 and power loss.
 *
 * Requests add to in-memory deltas; as a group-commit participant the aggregator merges the deltas into
 * telemetry_window in every commit (≤ groupCommitMs later) and clears them once that commit is durable.
 * closeWindow() moves the stored window into ONE outbox row and deletes it, in one transaction.
 * INVARIANT: a request's counts are in the deltas, in telemetry_window, or in exactly one outbox row —
 * never two of them, so a crash loses at most the last commit window and never counts twice.
 */
export class TelemetryAggregator implements CommitParticipant {
  private deltas = new Map<string, { model: string; version: number; data: WindowData }>();
  /** True between write() and committed()/failed(): the deltas are inside the running transaction. */
  private written = false;
  /** Start of the open window, epoch ms: process start, then the end of the last closed window. */
  private windowStartMs: number;
  private readonly s: {
    get: Statement<[string, number], StoredWindow>;
    put: Statement<[string, number, number, string]>;
    all: Statement<[], StoredWindow>;
    clear: Statement<[]>;
  };
  /**
   * Requests whose counts were never made durable and were dropped: in a commit whose durability is unknown
   * (see failed()), or still pending at stop() because commits were stopped. Lifetime, this process
   * (outpost_telemetry_lost_requests_total).
   */
  lostRequests = 0;

  private readonly db: Db;
  private readonly committer: GroupCommitter;
  private readonly outbox: TransactionalOutbox;
  private readonly log: Pick<Logger, 'error' | 'warn'>;
  private readonly now: () => number;

  constructor(options: { db: Db; committer: GroupCommitter; outbox: TransactionalOutbox; log: Pick<Logger, 'error' | 'warn'>; now?: () => number }) {
    const db = (this.db = options.db);
    this.committer = options.committer;
    this.outbox = options.outbox;
    this.log = options.log;
    this.now = options.now ?? Date.now;
    this.windowStartMs = this.now();
    this.s = {
      get: db.prepare('SELECT model, version, window_start, data FROM telemetry_window WHERE model = ? AND version = ?'),
      put: db.prepare('INSERT OR REPLACE INTO telemetry_window (model, version, window_start, data) VALUES (?, ?, ?, ?)'),
      all: db.prepare('SELECT model, version, window_start, data FROM telemetry_window ORDER BY model, version'),
      clear: db.prepare('DELETE FROM telemetry_window'),
    };
    this.committer.register(this);
  }

  /** The RequestObserver for the inference service. */
  readonly observer: RequestObserver = (r: RequestObservation) => {
    const key = `${r.model}\u0000${r.version}`;
    let d = this.deltas.get(key);
    if (!d) this.deltas.set(key, (d = { model: r.model, version: r.version, data: emptyWindow() }));
    observeRequest(d.data, r);
    this.committer.notify();
  };

  /**
   * Closes the window: commits the pending deltas, builds one telemetry body from everything stored,
   * queues it in the outbox and empties the stored window — one transaction. `extraModels` get a zero
   * point when they had no traffic (so the fleet sees them served and idle). A window too large for one
   * MQTT payload is queued as several messages (splitToFit). Throws when the commit fails.
   */
  closeWindow(system: SystemPoint | null, extraModels: { model: string; version: number }[] = []): { seq: number; seqs: number[]; body: TelemetryBody } {
    const endMs = Math.max(this.now(), this.windowStartMs);
    const done = this.committer.commitNow((db) => {
      // The participants' writes, this aggregator's deltas included, ran first in this same transaction.
      const rows = this.s.all.all();
      let startMs = this.windowStartMs;
      const models: ModelPoint[] = [];
      for (const row of rows) {
        const data = parseWindow(row.data);
        if (!data) {
          this.log.error({ model: row.model, version: row.version }, 'unreadable telemetry_window row dropped');
          continue;
        }
        startMs = Math.min(startMs, row.window_start);
        models.push(toModelPoint(row.model, row.version, data));
      }
      for (const m of extraModels) {
        if (!models.some((p) => p.model === m.model && p.version === m.version)) models.push(toModelPoint(m.model, m.version, emptyWindow()));
      }
      const body: TelemetryBody = { ts: new Date(endMs).toISOString(), windowStart: new Date(startMs).toISOString(), windowEnd: new Date(endMs).toISOString(), models, system };
      // Split (and so able to throw) before anything is queued; the stored window is emptied only with it queued.
      const parts = splitToFit(body, MAX_BODY_BYTES);
      this.s.clear.run();
      const seqs = parts.map((part) => this.outbox.enqueueInTransaction(db, { kind: 'telemetry', body: part as unknown as Record<string, unknown> }).seq);
      return { seq: seqs[0]!, seqs, body };
    });
    this.windowStartMs = endMs;
    return done;
  }

  // ---- CommitParticipant ----

  pending(): number {
    return this.deltas.size;
  }

  write(): void {
    // Set first: if anything below throws, these deltas were part of the failed transaction.
    this.written = this.deltas.size > 0;
    for (const d of this.deltas.values()) {
      const row = this.s.get.get(d.model, d.version);
      const stored = row ? parseWindow(row.data) : undefined;
      if (row && !stored) this.log.error({ model: d.model, version: d.version }, 'unreadable telemetry_window row replaced');
      const merged = stored ? mergeWindow(stored, d.data) : d.data;
      this.s.put.run(d.model, d.version, row?.window_start ?? this.windowStartMs, JSON.stringify(merged));
    }
  }

  committed(): void {
    if (!this.written) return;
    this.written = false;
    this.deltas = new Map();
  }

  /**
   * The commit holding the deltas failed.
   * - Cleanly rolled back (disk full, busy: isRetryableCommitError): nothing of it is on disk, so the deltas
   *   are kept and go into the next commit (the committer's retry); counting them then counts them once.
   * - Otherwise (fsync/I/O error) they may or may not be on disk, so writing them again could count them
   *   twice: they are dropped, counted in lostRequests and logged.
   */
  failed(err: Error): void {
    if (!this.written) return;
    this.written = false;
    if (isRetryableCommitError(err)) return;
    const n = this.dropDeltas();
    this.log.error({ requests: n, err: err.message }, 'telemetry counts of a failed commit dropped (durability unknown; not retried)');
  }

  /**
   * The agent stops: counts that are still pending (the last commit failed or the alarm is up) are never
   * going to be durable. Counted in lostRequests and logged rather than vanishing. Call after the final flush.
   */
  discardPending(): void {
    if (this.deltas.size === 0) return;
    const n = this.dropDeltas();
    this.log.error({ requests: n }, 'telemetry counts still pending at stop dropped: the outbox could not commit them');
  }

  private dropDeltas(): number {
    let n = 0;
    for (const d of this.deltas.values()) n += d.data.requests;
    this.lostRequests += n;
    this.deltas = new Map();
    return n;
  }
}
