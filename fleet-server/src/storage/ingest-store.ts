import type { Db } from '../../../shared/src/sqlite.js';
import type { IngestRows, IngestStore, PruneCounts, StoredEvent, StoredModelPoint } from './fleet-store.js';

interface PointRow {
  seq: number;
  version: number;
  window_start: string;
  window_end: string;
  requests: number;
  failures: number;
  p50: number;
  p95: number;
  p99: number;
  latency_hist: string;
}

interface EventRow {
  seq: number;
  ts: string;
  kind: string;
  severity: string;
  message: string;
  data: string;
}

/**
 * Exactly-once ingest in SQLite. The `received` table is the dedup record: a message is stored only when
 * INSERT OR IGNORE of its (device, seq) adds a row, in the same transaction as its data, so a crash between
 * the two cannot leave one without the other.
 */
export class SqliteIngestStore implements IngestStore {
  readonly accept: IngestStore['accept'];
  readonly prune: IngestStore['prune'];
  private readonly offline;
  private readonly selectPoints;
  private readonly selectEvents;

  constructor(db: Db) {
    const deviceSeqs = db.prepare<[string], { pruned_seq: number; state_seq: number }>('SELECT pruned_seq, state_seq FROM devices WHERE id = ?');
    const insertReceived = db.prepare('INSERT OR IGNORE INTO received (device_id, seq, kind, received_at) VALUES (?, ?, ?, ?)');
    const touch = db.prepare('UPDATE devices SET last_seen = ? WHERE id = ?');
    const advance = db.prepare('UPDATE devices SET last_seq = MAX(last_seq, ?) WHERE id = ?');
    // A model version listed twice in one window would be an agent bug; the first point wins.
    const insertPoint = db.prepare(
      `INSERT OR IGNORE INTO model_points (device_id, seq, model, version, window_start, window_end, requests, failures, p50, p95, p99, latency_hist, detail)
       VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
    );
    const insertSystem = db.prepare('INSERT INTO system_points (device_id, seq, window_end, data) VALUES (?, ?, ?, ?)');
    const insertEvent = db.prepare('INSERT INTO events (device_id, seq, ts, kind, severity, message, data, received_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)');
    const insertResult = db.prepare('INSERT INTO cmd_results (device_id, seq, id, ok, body, received_at) VALUES (?, ?, ?, ?, ?, ?)');
    // The command the result answers (deploy/commands.ts), if the fleet still waits for it: a result after the
    // command timed out is kept in cmd_results but does not change the command's outcome.
    const finishCommand = db.prepare(
      "UPDATE commands SET state = ?, result = ?, finished_at = ? WHERE id = ? AND device_id = ? AND state = 'sent'",
    );
    const setState = db.prepare('UPDATE devices SET state_seq = ?, online = ?, reported = COALESCE(?, reported) WHERE id = ?');
    this.offline = db.prepare('UPDATE devices SET online = 0 WHERE id = ?');

    this.accept = db.transaction((env: { deviceId: string; seq: number; receivedAt: string }, rows: IngestRows): 'stored' | 'duplicate' => {
      const { deviceId, seq, receivedAt } = env;
      const seqs = deviceSeqs.get(deviceId);
      if (!seqs) throw new Error(`device ${deviceId} is not enrolled`);
      touch.run(receivedAt, deviceId);
      // At or below pruned_seq the dedup record may be gone: such a message is older than retention anyway.
      if (seq <= seqs.pruned_seq) return 'duplicate';
      if (insertReceived.run(deviceId, seq, rows.kind, receivedAt).changes === 0) return 'duplicate';
      advance.run(seq, deviceId);
      switch (rows.kind) {
        case 'telemetry':
          for (const p of rows.points) {
            insertPoint.run(deviceId, seq, p.model, p.version, p.windowStart, p.windowEnd, p.requests, p.failures, p.p50, p.p95, p.p99, JSON.stringify(p.latencyHist), JSON.stringify(p.detail));
          }
          if (rows.system) insertSystem.run(deviceId, seq, rows.system.windowEnd, JSON.stringify(rows.system.data));
          break;
        case 'events':
          insertEvent.run(deviceId, seq, rows.event.ts, rows.event.kind, rows.event.severity, rows.event.message, JSON.stringify(rows.event.data), receivedAt);
          break;
        case 'cmd/result':
          insertResult.run(deviceId, seq, rows.result.id, rows.result.ok ? 1 : 0, JSON.stringify(rows.result.body), receivedAt);
          finishCommand.run(rows.result.ok ? 'ok' : 'failed', JSON.stringify(rows.result.body), receivedAt, rows.result.id, deviceId);
          break;
        case 'state':
          // INVARIANT: online/reported always come from the highest-seq state stored; an older one arriving
          // late (redelivery, out-of-order drain) is recorded as received but changes nothing.
          if (seq > seqs.state_seq) setState.run(seq, rows.online ? 1 : 0, rows.reported === null ? null : JSON.stringify(rows.reported), deviceId);
          break;
      }
      return 'stored';
    });

    this.selectPoints = db.prepare<[string, string, string, string], PointRow>(
      `SELECT seq, version, window_start, window_end, requests, failures, p50, p95, p99, latency_hist FROM model_points
       WHERE device_id = ? AND model = ? AND window_end > ? AND window_end <= ? ORDER BY window_end, seq`,
    );
    this.selectEvents = db.prepare<[string, string, string | null, string | null, number, number], EventRow>(
      `SELECT seq, ts, kind, severity, message, data FROM events
       WHERE device_id = ? AND ts > ? AND (? IS NULL OR ts <= ?) AND seq > ? ORDER BY seq LIMIT ?`,
    );

    const prunePoints = db.prepare('DELETE FROM model_points WHERE window_end < ?');
    const pruneSystem = db.prepare('DELETE FROM system_points WHERE window_end < ?');
    const pruneEvents = db.prepare('DELETE FROM events WHERE ts < ?');
    const pruneResults = db.prepare('DELETE FROM cmd_results WHERE received_at < ?');
    const raiseWatermark = db.prepare(
      `UPDATE devices SET pruned_seq = MAX(pruned_seq, (SELECT MAX(seq) FROM received WHERE device_id = devices.id AND received_at < ?))
       WHERE EXISTS (SELECT 1 FROM received WHERE device_id = devices.id AND received_at < ?)`,
    );
    const pruneReceived = db.prepare('DELETE FROM received WHERE received_at < ?');
    /*
     * Retention and exactly-once. Points and events go by their own (agent) time; `received` rows go by when
     * the fleet received them, which is never earlier than the data they carried in a healthy fleet, so the
     * dedup record outlives the data it guards. When a `received` row goes, its seq raises the device's
     * pruned_seq first (same transaction), and accept() treats any seq at or below that as a duplicate: a
     * redelivery after the record is gone is still dropped, and the only "new" messages it could drop are
     * ones older than the retention window, which would be pruned at the next run anyway.
     */
    this.prune = db.transaction((cutoff: string): PruneCounts => {
      const modelPoints = prunePoints.run(cutoff).changes;
      const systemPoints = pruneSystem.run(cutoff).changes;
      const events = pruneEvents.run(cutoff).changes;
      const cmdResults = pruneResults.run(cutoff).changes;
      raiseWatermark.run(cutoff, cutoff);
      const received = pruneReceived.run(cutoff).changes;
      return { modelPoints, systemPoints, events, cmdResults, received };
    });
  }

  markOffline(deviceId: string): void {
    this.offline.run(deviceId);
  }

  *modelPoints(q: { deviceId: string; model: string; since: string; until: string }): IterableIterator<StoredModelPoint> {
    for (const r of this.selectPoints.iterate(q.deviceId, q.model, q.since, q.until)) {
      yield {
        seq: r.seq, version: r.version, windowStart: r.window_start, windowEnd: r.window_end,
        requests: r.requests, failures: r.failures, p50: r.p50, p95: r.p95, p99: r.p99,
        latencyHist: JSON.parse(r.latency_hist) as Record<string, number>,
      };
    }
  }

  events(q: { deviceId: string; since: string; until: string | null; afterSeq: number; limit: number }): StoredEvent[] {
    return this.selectEvents.all(q.deviceId, q.since, q.until, q.until, q.afterSeq, q.limit).map((r) => ({
      seq: r.seq, ts: r.ts, kind: r.kind, severity: r.severity, message: r.message, data: JSON.parse(r.data) as unknown,
    }));
  }
}
