import Database from 'better-sqlite3';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { openDatabase } from '../../agent/src/storage/database.js';
import { spawnJsonLines, type RunningChild } from '../helpers/child-lines.js';
import type { ChildConfig } from '../helpers/outbox-child.js';
import { tempDir } from '../helpers/outbox-db.js';
import { transpileForChild, type ChildBuild } from '../helpers/ts-child.js';

const ROUNDS = 4;
const BURST = 3;

/**
 * kill -9 in the middle of queueing and counting, several times on the same database file: everything the
 * outbox acknowledged is there exactly once, seq never repeats or skips, and every observed request is
 * counted exactly once (in a queued telemetry message or in the open window) up to the last commit — a
 * burst is either wholly counted or not at all, never twice.
 */
describe('outbox and telemetry survive kill -9', () => {
  let build: ChildBuild;
  let tmp: { dir: string; remove(): void };
  const children: RunningChild[] = [];

  beforeAll(() => {
    build = transpileForChild(['test/helpers/outbox-child.ts']);
    tmp = tempDir('outpost-crash-');
  });
  afterAll(() => {
    for (const c of children) if (c.child.exitCode === null && c.child.signalCode === null) c.child.kill('SIGKILL');
    build?.remove();
    tmp?.remove();
  });

  it('keeps every acknowledged message once and counts every durable request exactly once across four crashes', async () => {
    const dbFile = path.join(tmp.dir, 'agent.db');
    const acked = new Map<number, { round: number; n: number }>();
    const durableBursts: number[] = [];
    const observedBursts: number[] = [];
    const startedUs = Date.now() * 1000;

    for (let round = 0; round < ROUNDS; round++) {
      const cfg: ChildConfig = { dbFile, round, eventsPerTick: 4, burst: BURST, tickMs: 2, windowEveryMs: 40, maxTicks: 20_000 };
      const c = spawnJsonLines(process.execPath, [build.pathOf('test/helpers/outbox-child.ts'), JSON.stringify(cfg)]);
      children.push(c);
      const count = (t: string) => c.facts.filter((f) => f.t === t).length;
      await c.until(() => count('ack') >= 200 && count('window') >= 2 && count('durable') >= 10, 'acks, windows and durable commits');
      // Kill at a different point of the stream each round.
      for (let i = 0; i < round * 7; i++) await new Promise((r) => setImmediate(r));
      c.child.kill('SIGKILL');
      const exit = await c.exited;
      expect(exit.signal).toBe('SIGKILL');
      for (const f of c.facts) if (f.t === 'ack') acked.set(f.seq as number, { round, n: f.n as number });
      durableBursts.push(Math.max(...c.facts.filter((f) => f.t === 'durable').map((f) => f.bursts as number)));
      observedBursts.push(Math.max(...c.facts.filter((f) => f.t === 'observed').map((f) => f.burst as number)) + 1);
    }

    // The next boot opens the file normally (migrations, WAL recovery) and finds it intact.
    const db = openDatabase(dbFile);
    db.close();
    const check = new Database(dbFile, { readonly: true });
    try {
      expect(check.pragma('integrity_check', { simple: true })).toBe('ok');
      const rows = check.prepare('SELECT seq, kind, body FROM outbox ORDER BY id').all() as { seq: number; kind: string; body: string }[];

      // seq: unique, increasing with the drain order, and without gaps (nothing was acked, dropped or coalesced).
      const seqs = rows.map((r) => r.seq);
      // A fresh outbox starts at its creation time in µs, so the first seq is large; then +1 per message.
      expect(seqs[0]!).toBeGreaterThanOrEqual(startedUs);
      expect(seqs).toEqual(Array.from({ length: rows.length }, (_, i) => seqs[0]! + i));

      // Every acknowledged event is stored under the seq its producer was given.
      const events = new Map(rows.filter((r) => r.kind === 'events').map((r) => [r.seq, (JSON.parse(r.body) as { data: { round: number; n: number } }).data]));
      expect(acked.size).toBeGreaterThanOrEqual(ROUNDS * 200);
      for (const [seq, want] of acked) expect(events.get(seq)).toEqual(want);
      // Per round, the stored events are a prefix of what was enqueued: commits are durable in order, none half-applied.
      for (let round = 0; round < ROUNDS; round++) {
        const ns = [...events.values()].filter((e) => e.round === round).map((e) => e.n).sort((a, b) => a - b);
        expect(ns).toEqual(Array.from({ length: ns.length }, (_, i) => i));
      }

      // Requests: counts in queued telemetry messages plus the open window, per burst label.
      const perLabel = new Map<string, number>();
      let requests = 0;
      const add = (classes: Record<string, number>, req: number) => {
        requests += req;
        for (const [label, k] of Object.entries(classes)) perLabel.set(label, (perLabel.get(label) ?? 0) + k);
      };
      for (const r of rows.filter((x) => x.kind === 'telemetry')) {
        for (const m of (JSON.parse(r.body) as { models: { requests: number; classes: Record<string, number> }[] }).models) add(m.classes, m.requests);
      }
      for (const w of check.prepare('SELECT data FROM telemetry_window').all() as { data: string }[]) {
        const d = JSON.parse(w.data) as { requests: number; classes: Record<string, number> };
        add(d.classes, d.requests);
      }
      expect(perLabel.has('(other)')).toBe(false);
      let expectedRequests = 0;
      for (let round = 0; round < ROUNDS; round++) {
        const counted = [...perLabel.entries()].filter(([l]) => l.startsWith(`r${round}b`)).map(([l, k]) => ({ burst: Number(l.slice(`r${round}b`.length)), k }));
        // Exactly once: a burst is counted BURST times or not at all, never twice.
        expect(counted.every((c) => c.k === BURST)).toBe(true);
        // Everything a commit made durable is there; nothing that was never observed is.
        const bursts = counted.map((c) => c.burst).sort((a, b) => a - b);
        expect(bursts).toEqual(Array.from({ length: bursts.length }, (_, i) => i));
        expect(bursts.length).toBeGreaterThanOrEqual(durableBursts[round]!);
        expect(bursts.length).toBeLessThanOrEqual(observedBursts[round]!);
        expectedRequests += bursts.length * BURST;
      }
      expect(requests).toBe(expectedRequests);
    } finally {
      check.close();
    }
  });
});
