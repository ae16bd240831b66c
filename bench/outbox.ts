/**
 * Outbox benchmark: what durability costs, measured through the real outbox (agent/src/outbox) on a real
 * SQLite file, in one run so the rows compare with each other:
 *   enqueue rows/s with synchronous=FULL vs NORMAL, one row per transaction (a producer that waits for each
 *   message) vs group commit (100 messages waiting, groupCommitRows=100; and 1000 waiting, as producers that
 *   do not wait for each other), and the drain rate (next + ack + the commit that deletes).
 *   The target: ≥ 50,000 enqueued rows/s with FULL and group commit.
 * The file must be on the real disk: on tmpfs fsync is free and the FULL/NORMAL difference disappears
 * (the row says so). The bench runner calls benchOutbox(); running this file directly prints the rows.
 */
import { mkdtempSync, rmSync, statfsSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Logger } from 'pino';
import { AgentConfigSchema } from '../agent/src/config/schema.js';
import { createOutbox } from '../agent/src/outbox/create-outbox.js';
import { openDatabase } from '../agent/src/storage/database.js';

export interface OutboxBenchRow {
  case: 'enqueue' | 'drain';
  synchronous: 'FULL' | 'NORMAL';
  /** Enqueues waiting for their commit at once (1: each message is its own transaction). */
  inFlight: number;
  rows: number;
  seconds: number;
  rowsPerSecond: number;
  commits: number;
  meanRowsPerCommit: number;
  /** Time from enqueue() to its durable acknowledgement, ms (enqueue cases only). */
  ackP50Ms: number | null;
  ackP99Ms: number | null;
  note: string;
}

const TMPFS_MAGIC = 0x01021994;
/** A typical detection event, about 230 bytes of JSON. */
const BODY = { ts: '2026-11-22T10:00:00.000Z', kind: 'detection.batch', severity: 'info', message: 'camera-3', data: { model: 'yolov8n', version: 3, count: 4, labels: ['person', 'person', 'forklift', 'pallet'], scores: [0.91, 0.88, 0.77, 0.52] } };
const silent = { error: () => undefined, warn: () => undefined, info: () => undefined } as unknown as Logger;

export async function benchOutbox(opts: { quick: boolean; dir: string }): Promise<OutboxBenchRow[]> {
  const note = statfsSync(opts.dir).type === TMPFS_MAGIC ? 'tmpfs: fsync costs nothing here, numbers are not representative' : '';
  const single = opts.quick ? 500 : 5_000;
  const grouped = opts.quick ? 20_000 : 200_000;
  const rows: OutboxBenchRow[] = [];
  for (const sync of ['FULL', 'NORMAL'] as const) {
    rows.push(await enqueueCase(opts.dir, sync, 1, single, note));
    rows.push(await enqueueCase(opts.dir, sync, 100, grouped, note));
  }
  // Producers that do not wait for each other (detections at camera rate): commits grow with the load.
  rows.push(await enqueueCase(opts.dir, 'FULL', 1000, grouped, note));
  rows.push(await drainCase(opts.dir, 'FULL', grouped, note));
  return rows;
}

function open(dir: string, name: string, sync: 'FULL' | 'NORMAL', groupCommitRows = 100) {
  const file = path.join(dir, `${name}.db`);
  for (const suffix of ['', '-wal', '-shm']) rmSync(file + suffix, { force: true });
  const db = openDatabase(file);
  db.pragma(`synchronous = ${sync}`);
  const config = AgentConfigSchema.parse({ outbox: { maxRows: 10_000_000, maxBytes: 4 * 1024 ** 3, groupCommitRows, groupCommitMs: 50 } }).outbox;
  const { outbox, committer } = createOutbox({ db, config, log: silent });
  const done = async () => {
    await outbox.close();
    committer.close();
    db.close();
    for (const suffix of ['', '-wal', '-shm']) rmSync(file + suffix, { force: true });
  };
  return { db, outbox, committer, done };
}

/** `inFlight` producers, each enqueueing its next message as soon as the previous one is durable. */
async function enqueueCase(dir: string, sync: 'FULL' | 'NORMAL', inFlight: number, total: number, note: string): Promise<OutboxBenchRow> {
  // One in flight: groupCommitRows=1 commits each message on the next turn (one fsync per row) instead of
  // letting it wait groupCommitMs for company; 100 in flight: the agent's default group commit.
  const o = open(dir, `enqueue-${sync}-${inFlight}`, sync, inFlight === 1 ? 1 : 100);
  const latencies = new Float64Array(total);
  let issued = 0;
  const commits0 = o.committer.commits;
  const started = performance.now();
  const producer = async () => {
    while (issued < total) {
      const i = issued++;
      const t0 = performance.now();
      await o.outbox.enqueue({ kind: 'events', body: BODY });
      latencies[i] = performance.now() - t0;
    }
  };
  await Promise.all(Array.from({ length: inFlight }, producer));
  const seconds = (performance.now() - started) / 1000;
  const commits = o.committer.commits - commits0;
  await o.done();
  latencies.sort();
  const q = (p: number) => Math.round(latencies[Math.min(total - 1, Math.floor(p * total))]! * 100) / 100;
  return { case: 'enqueue', synchronous: sync, inFlight, rows: total, seconds: round(seconds), rowsPerSecond: Math.round(total / seconds), commits, meanRowsPerCommit: round(total / commits), ackP50Ms: q(0.5), ackP99Ms: q(0.99), note };
}

/** A full outbox emptied the way the link does it: next(), ack() per row, the commit that deletes them. */
async function drainCase(dir: string, sync: 'FULL' | 'NORMAL', total: number, note: string): Promise<OutboxBenchRow> {
  const o = open(dir, `drain-${sync}`, sync);
  for (let done = 0; done < total; done += 1000) {
    const batch = Array.from({ length: Math.min(1000, total - done) }, () => o.outbox.enqueue({ kind: 'telemetry', body: BODY }));
    o.committer.flush();
    await Promise.all(batch);
  }
  const commits0 = o.committer.commits;
  const started = performance.now();
  let drained = 0;
  let cursor = 0;
  for (;;) {
    const page = o.outbox.next(cursor, 100);
    if (page.length === 0) break;
    for (const r of page) {
      o.outbox.ack(r.id);
      cursor = r.id;
    }
    drained += page.length;
    o.committer.flush();
  }
  const seconds = (performance.now() - started) / 1000;
  const commits = o.committer.commits - commits0;
  const left = o.outbox.stats().rows;
  await o.done();
  if (drained !== total || left !== 0) throw new Error(`drain bench: drained ${drained} of ${total}, ${left} rows left`);
  return { case: 'drain', synchronous: sync, inFlight: 100, rows: total, seconds: round(seconds), rowsPerSecond: Math.round(total / seconds), commits, meanRowsPerCommit: round(total / commits), ackP50Ms: null, ackP99Ms: null, note };
}

function round(v: number): number {
  return Math.round(v * 1000) / 1000;
}

// Run directly: `node dist/bench/outbox.js [--quick]` prints the rows (the bench runner imports benchOutbox instead).
if (process.argv[1] && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'outpost-bench-outbox-'));
  benchOutbox({ quick: process.argv.includes('--quick'), dir })
    .then((rows) => {
      console.table(rows);
      console.log(JSON.stringify(rows));
    })
    .finally(() => rmSync(dir, { recursive: true, force: true }));
}
