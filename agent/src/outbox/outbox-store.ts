import type { Statement } from 'better-sqlite3';
import type { AgentTopicKind } from '../../../shared/src/mqtt/topics.js';
import type { Db } from '../storage/database.js';

/** A stored outbox row as SQLite returns it. */
export interface StoredRow {
  id: number;
  seq: number;
  kind: AgentTopicKind;
  retain: number;
  body: string;
  bytes: number;
  attempts: number;
}

export type MetaKey = 'next_seq' | 'dropped_telemetry' | 'dead_lettered';

/** Rows read per step while looking for the oldest telemetry to drop. */
const DROP_CHUNK = 256;

/**
 * The first seq of a fresh outbox: its creation time in microseconds since the epoch.
 *
 * WHY: the fleet dedups by (deviceId, seq) and keeps what it stored. A device id outlives its database: a
 * replaced or reflashed box re-enrolled under the same id (`outpost devices token --device <id>`), or an
 * agent.db deleted while fleet-credentials.json is kept, starts a fresh outbox while the fleet holds seqs
 * 1…N, so a fresh outbox counting from 1 would have everything ≤ N dropped as a duplicate. Starting at the
 * creation time in µs puts a later fresh outbox above every seq an earlier one used, unless the earlier one
 * averaged more than 1 000 000 messages/s over its life or the clock went backwards in between.
 * Range: now × 1000 stays below Number.MAX_SAFE_INTEGER (2^53 − 1) until about the year 2255.
 * After the seed seq stays gap-free when assigned and monotonic (+1 per message), across restarts.
 */
export function firstSeq(nowMs: number): number {
  return Math.max(1, Math.floor(nowMs) * 1000);
}

/** Bytes the commit probe writes: about one busy group commit (e.g. 50 events of ~1 KB). */
export const PROBE_BYTES = 64 * 1024;

/**
 * The write a retry makes after a cleanly rolled-back commit (GroupCommitOptions.probe): PROBE_BYTES into
 * outbox_probe, deleted again in the same transaction, so it needs the pages a real commit would and leaves
 * nothing behind. A success says a commit of that size is durable now, nothing more: a larger one may still
 * fail, which raises the alarm again and rejects only its own producers.
 */
export function commitProbe(db: Db): (db: Db) => void {
  const insert = db.prepare<[number]>('INSERT INTO outbox_probe (pad) VALUES (zeroblob(?))');
  const clear = db.prepare('DELETE FROM outbox_probe');
  return () => {
    insert.run(PROBE_BYTES);
    clear.run();
  };
}

/**
 * The outbox's SQL (migration 2 in storage/database.ts), as prepared statements. Every method is
 * synchronous and meant to run inside the group commit's transaction; none opens its own.
 */
export class OutboxStore {
  private readonly s: {
    insert: Statement<[number, string, number, string, number, number]>;
    remove: Statement<[number], { bytes: number }>;
    page: Statement<[number, number], StoredRow>;
    attemptsOf: Statement<[number], { attempts: number }>;
    bump: Statement<[number, number]>;
    copyDead: Statement<[number, number, string, number]>;
    olderStates: Statement<[number], { id: number; bytes: number }>;
    oldestTelemetry: Statement<[number, number], { id: number; bytes: number }>;
    dropTelemetryUpTo: Statement<[number]>;
    setMeta: Statement<[string, number]>;
  };

  constructor(private readonly db: Db) {
    this.s = {
      insert: db.prepare('INSERT INTO outbox (seq, kind, retain, body, bytes, attempts, created_at) VALUES (?, ?, ?, ?, ?, 0, ?)'),
      remove: db.prepare('DELETE FROM outbox WHERE id = ? RETURNING bytes'),
      page: db.prepare('SELECT id, seq, kind, retain, body, bytes, attempts FROM outbox WHERE id > ? ORDER BY id LIMIT ?'),
      attemptsOf: db.prepare('SELECT attempts FROM outbox WHERE id = ?'),
      bump: db.prepare('UPDATE outbox SET attempts = attempts + ? WHERE id = ?'),
      copyDead: db.prepare(
        `INSERT OR REPLACE INTO outbox_dead_letter (id, seq, kind, retain, body, bytes, attempts, created_at, dead_at, reason)
         SELECT id, seq, kind, retain, body, bytes, attempts + ?, created_at, ?, ? FROM outbox WHERE id = ?`,
      ),
      olderStates: db.prepare("SELECT id, bytes FROM outbox WHERE kind = 'state' AND id < ? ORDER BY id"),
      oldestTelemetry: db.prepare("SELECT id, bytes FROM outbox WHERE kind = 'telemetry' AND id > ? ORDER BY id LIMIT ?"),
      dropTelemetryUpTo: db.prepare("DELETE FROM outbox WHERE kind = 'telemetry' AND id <= ?"),
      setMeta: db.prepare('INSERT INTO outbox_meta (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value'),
    };
  }

  /**
   * The counters and totals the outbox keeps in memory, read once at open. A fresh outbox (no next_seq
   * stored yet) starts at firstSeq(nowMs); the seed is persisted by the first commit that assigns a seq.
   */
  load(nowMs: number): { nextSeq: number; droppedTelemetry: number; deadLettered: number; rows: number; bytes: number } {
    const meta = new Map((this.db.prepare('SELECT key, value FROM outbox_meta').all() as { key: string; value: number }[]).map((r) => [r.key, r.value]));
    const totals = this.db.prepare('SELECT COUNT(*) AS rows, COALESCE(SUM(bytes), 0) AS bytes FROM outbox').get() as { rows: number; bytes: number };
    const maxSeq = (this.db.prepare('SELECT MAX(m) AS m FROM (SELECT MAX(seq) AS m FROM outbox UNION ALL SELECT MAX(seq) FROM outbox_dead_letter)').get() as { m: number | null }).m ?? 0;
    // next_seq is written in the same transaction as the rows, so it is never behind; the max is a belt to the braces.
    return {
      nextSeq: Math.max(meta.get('next_seq') ?? firstSeq(nowMs), maxSeq + 1),
      droppedTelemetry: meta.get('dropped_telemetry') ?? 0,
      deadLettered: meta.get('dead_lettered') ?? 0,
      rows: totals.rows,
      bytes: totals.bytes,
    };
  }

  insert(seq: number, kind: AgentTopicKind, retain: boolean, body: string, bytes: number, createdAtMs: number): number {
    return Number(this.s.insert.run(seq, kind, retain ? 1 : 0, body, bytes, createdAtMs).lastInsertRowid);
  }

  /** Deletes one row; its byte count, or undefined when it was already gone. */
  remove(id: number): number | undefined {
    return this.s.remove.get(id)?.bytes;
  }

  /** Rows with id > afterId, oldest first. */
  page(afterId: number, limit: number): StoredRow[] {
    return this.s.page.all(afterId, limit);
  }

  attemptsOf(id: number): number | undefined {
    return this.s.attemptsOf.get(id)?.attempts;
  }

  addAttempts(id: number, n: number): void {
    this.s.bump.run(n, id);
  }

  /** Copies the row to the dead-letter table and deletes it; its byte count, or undefined when it was already gone. */
  deadLetter(id: number, extraAttempts: number, reason: string, nowMs: number): number | undefined {
    const copied = this.s.copyDead.run(extraAttempts, nowMs, reason.slice(0, 2000), id);
    return copied.changes > 0 ? this.remove(id) : undefined;
  }

  olderStates(beforeId: number): { id: number; bytes: number }[] {
    return this.s.olderStates.all(beforeId);
  }

  /**
   * Deletes the oldest telemetry rows until `rows ≤ maxRows` and `bytes ≤ maxBytes` hold or no telemetry is
   * left. Returns what it deleted.
   */
  dropOldestTelemetry(rows: number, bytes: number, maxRows: number, maxBytes: number): { rows: number; bytes: number } {
    let dropped = 0;
    let droppedBytes = 0;
    let lastId = 0;
    while (rows - dropped > maxRows || bytes - droppedBytes > maxBytes) {
      const chunk = this.s.oldestTelemetry.all(lastId, DROP_CHUNK);
      if (chunk.length === 0) break;
      for (const r of chunk) {
        if (rows - dropped <= maxRows && bytes - droppedBytes <= maxBytes) break;
        dropped++;
        droppedBytes += r.bytes;
        lastId = r.id;
      }
    }
    // Every telemetry row with id ≤ lastId was counted above (read in id order), so the range delete is exact.
    if (dropped > 0) this.s.dropTelemetryUpTo.run(lastId);
    return { rows: dropped, bytes: droppedBytes };
  }

  setMeta(key: MetaKey, value: number): void {
    this.s.setMeta.run(key, value);
  }
}
