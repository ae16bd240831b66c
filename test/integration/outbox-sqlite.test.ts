import { rmSync } from 'node:fs';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { isOutboxError } from '../../agent/src/outbox/errors.js';
import { eventBody, nextCommit, openOutbox, tempDir, type OutboxFixture } from '../helpers/outbox-db.js';

/** The outbox on a real SQLite file: what the link drains and the fleet eventually stores. */
describe('SQLite outbox', () => {
  const cleanups: (() => Promise<void> | void)[] = [];
  afterEach(async () => {
    for (const c of cleanups.splice(0).reverse()) await c();
  });

  function setup(overrides: Parameters<typeof openOutbox>[1] = {}): { dir: string; open: () => OutboxFixture } {
    const t = tempDir();
    const opened: OutboxFixture[] = [];
    cleanups.push(async () => {
      for (const f of opened) await f.shutdown();
      t.remove();
    });
    return {
      dir: t.dir,
      open: () => {
        const f = openOutbox(t.dir, overrides);
        opened.push(f);
        return f;
      },
    };
  }

  it('numbers messages from its creation time in µs, then +1 without gaps, and keeps counting after a close and reopen', async () => {
    const s = setup();
    const createdAfterUs = Date.now() * 1000;
    let f = s.open();
    const createdBeforeUs = Date.now() * 1000;
    const first = await Promise.all(Array.from({ length: 250 }, (_, i) => f.outbox.enqueue({ kind: i % 3 === 0 ? 'telemetry' : 'events', body: eventBody(i) })));
    await f.shutdown();
    f = s.open();
    const second = await Promise.all(Array.from({ length: 50 }, (_, i) => f.outbox.enqueue({ kind: 'events', body: eventBody(250 + i) })));
    const seqs = [...first, ...second].map((r) => r.seq);
    const base = seqs[0]!;
    expect(base).toBeGreaterThanOrEqual(createdAfterUs);
    expect(base).toBeLessThanOrEqual(createdBeforeUs);
    expect(seqs).toEqual(Array.from({ length: 300 }, (_, i) => base + i));
    // Drain order (id) and seq agree, and each stored body is the one enqueued under that seq.
    const rows = f.outbox.next(0, 1000);
    expect(rows.map((r) => r.seq)).toEqual(seqs);
    expect(rows.map((r) => (JSON.parse(r.body) as { data: { n: number } }).data.n)).toEqual(seqs.map((q) => q - base));
    expect(f.outbox.stats()).toMatchObject({ rows: 300, droppedTelemetry: 0, deadLettered: 0, alarm: null });
  });

  it('gives a fresh outbox (agent.db deleted, or a re-enrolled replacement box) seqs above every seq an earlier one used', async () => {
    // The fleet keeps each (deviceId, seq) once: a fresh database counting from 1 again would see its first N
    // messages dropped as duplicates of the ones the device id sent before.
    const s = setup();
    const ranges: number[][] = [];
    for (let round = 0; round < 2; round++) {
      const f = s.open();
      const got = await Promise.all(Array.from({ length: 200 }, (_, i) => f.outbox.enqueue({ kind: 'events', body: eventBody(i) })));
      ranges.push(got.map((r) => r.seq));
      await f.shutdown();
      // The box is reflashed: the agent database is gone, the device id (credentials) is the same.
      for (const suffix of ['', '-wal', '-shm']) rmSync(path.join(s.dir, `agent.db${suffix}`), { force: true });
    }
    const [a, b] = ranges as [number[], number[]];
    for (const r of ranges) expect(r).toEqual(Array.from({ length: 200 }, (_, i) => r[0]! + i));
    expect(b[0]!).toBeGreaterThan(a[a.length - 1]!);
  });

  it('resolves an enqueue only once its commit is durable: another connection sees the row by then, not before', async () => {
    const s = setup({ groupCommitMs: 10_000, groupCommitRows: 100 });
    const f = s.open();
    let seenAtResolve: number | undefined;
    const p = f.outbox.enqueue({ kind: 'events', body: eventBody(1) }).then((r) => {
      // Checked synchronously at resolution: the row must already be on disk for everyone.
      seenAtResolve = f.peek<{ n: number }>('SELECT COUNT(*) AS n FROM outbox WHERE seq = ?', r.seq)[0]!.n;
      return r;
    });
    await new Promise((r) => setImmediate(r));
    expect(seenAtResolve).toBeUndefined();
    expect(f.peek<{ n: number }>('SELECT COUNT(*) AS n FROM outbox')[0]!.n).toBe(0);
    expect(f.outbox.next(0, 10)).toEqual([]);
    expect(f.committer.flush()).toBe(true);
    const { seq } = await p;
    expect(seenAtResolve).toBe(1);
    expect(f.peek('SELECT seq FROM outbox')).toEqual([{ seq }]);
  });

  it('commits on its own within groupCommitMs when fewer than groupCommitRows are waiting', async () => {
    const f = setup({ groupCommitMs: 20, groupCommitRows: 100 }).open();
    const before = f.committer.commits;
    const r = await f.outbox.enqueue({ kind: 'events', body: eventBody(1) });
    expect(f.committer.commits - before).toBe(1);
    expect(f.peek('SELECT seq FROM outbox')).toEqual([{ seq: r.seq }]);
  });

  it('groups 1000 enqueues of one tick into a handful of transactions (group commit), not 1000 fsyncs', async () => {
    const f = setup({ groupCommitMs: 50, groupCommitRows: 100 }).open();
    const before = f.committer.commits;
    const all = await Promise.all(Array.from({ length: 1000 }, (_, i) => f.outbox.enqueue({ kind: 'telemetry', body: eventBody(i) })));
    expect(all).toHaveLength(1000);
    const commits = f.committer.commits - before;
    expect(commits).toBeGreaterThanOrEqual(1);
    expect(commits).toBeLessThanOrEqual(11);
    expect(f.peek<{ n: number }>('SELECT COUNT(*) AS n FROM outbox')[0]!.n).toBe(1000);
  });

  it('hands out rows oldest first, never again once acknowledged, and deletes them in the next commit', async () => {
    const f = setup({ groupCommitMs: 10_000 }).open();
    const p = Array.from({ length: 10 }, (_, i) => f.outbox.enqueue({ kind: 'events', body: eventBody(i) }));
    f.committer.flush();
    const base = (await Promise.all(p))[0]!.seq;
    const seqs = (...ordinals: number[]) => ordinals.map((i) => base + i - 1);
    const firstFive = f.outbox.next(0, 5);
    expect(firstFive.map((r) => r.seq)).toEqual(seqs(1, 2, 3, 4, 5));
    expect(firstFive.every((r, i) => i === 0 || r.id > firstFive[i - 1]!.id)).toBe(true);
    // Paging from the last id continues where the first page stopped.
    expect(f.outbox.next(firstFive[4]!.id, 100).map((r) => r.seq)).toEqual(seqs(6, 7, 8, 9, 10));

    for (const r of firstFive.slice(0, 3)) f.outbox.ack(r.id);
    // Before the delete is committed: no longer handed out, but still on disk (a lost delete is only a resend).
    expect(f.outbox.next(0, 100).map((r) => r.seq)).toEqual(seqs(4, 5, 6, 7, 8, 9, 10));
    expect(f.outbox.next(0, 2).map((r) => r.seq)).toEqual(seqs(4, 5));
    expect(f.peek<{ n: number }>('SELECT COUNT(*) AS n FROM outbox')[0]!.n).toBe(10);

    expect(f.committer.flush()).toBe(true);
    expect(f.peek<{ seq: number }>('SELECT seq FROM outbox ORDER BY id').map((r) => r.seq)).toEqual(seqs(4, 5, 6, 7, 8, 9, 10));
    expect(f.outbox.stats().rows).toBe(7);
    expect(f.outbox.next(0, 100).map((r) => r.seq)).toEqual(seqs(4, 5, 6, 7, 8, 9, 10));
  });

  it('wakes the drainer (onCommitted) after a commit, when the new rows can already be read', async () => {
    const f = setup({ groupCommitMs: 10 }).open();
    const seen: number[][] = [];
    const off = f.outbox.onCommitted(() => seen.push(f.outbox.next(0, 10).map((r) => r.seq)));
    const { seq } = await f.outbox.enqueue({ kind: 'events', body: eventBody(1) });
    off();
    await f.outbox.enqueue({ kind: 'events', body: eventBody(2) });
    expect(seen).toEqual([[seq]]);
  });

  it('when full, drops the oldest telemetry (never events), counts the drops and keeps the count across a reopen', async () => {
    const s = setup({ maxRows: 100 });
    let f = s.open();
    // 150 messages: every third an event (50), the rest telemetry (100).
    const kinds = Array.from({ length: 150 }, (_, i) => (i % 3 === 0 ? 'events' : 'telemetry') as 'events' | 'telemetry');
    await Promise.all(kinds.map((kind, i) => f.outbox.enqueue({ kind, body: eventBody(i) })));
    const rows = f.outbox.next(0, 1000).map((r) => ({ kind: r.kind, n: (JSON.parse(r.body) as { data: { n: number } }).data.n }));
    expect(rows).toHaveLength(100);
    const events = rows.filter((r) => r.kind === 'events').map((r) => r.n);
    expect(events).toEqual(kinds.flatMap((k, i) => (k === 'events' ? [i] : [])));
    // The 50 telemetry rows left are the newest 50.
    const telemetry = rows.filter((r) => r.kind === 'telemetry').map((r) => r.n);
    expect(telemetry).toEqual(kinds.flatMap((k, i) => (k === 'telemetry' ? [i] : [])).slice(-50));
    expect(f.outbox.stats()).toMatchObject({ rows: 100, droppedTelemetry: 50, overBounds: false });

    await f.shutdown();
    f = s.open();
    expect(f.outbox.stats()).toMatchObject({ rows: 100, droppedTelemetry: 50 });

    // Only events left to give: they are all kept beyond the bound, and the stats say so.
    await Promise.all(Array.from({ length: 80 }, (_, i) => f.outbox.enqueue({ kind: 'events', body: eventBody(1000 + i) })));
    const after = f.outbox.next(0, 1000);
    expect(after.filter((r) => r.kind === 'telemetry')).toHaveLength(0);
    expect(after.filter((r) => r.kind === 'events')).toHaveLength(50 + 80);
    expect(f.outbox.stats()).toMatchObject({ rows: 130, droppedTelemetry: 100, overBounds: true });
  });

  it('bounds bytes as well as rows, dropping the oldest telemetry first', async () => {
    const f = setup({ maxBytes: 64 * 1024 }).open();
    const pad = 'x'.repeat(2000);
    await Promise.all(Array.from({ length: 60 }, (_, i) => f.outbox.enqueue({ kind: i < 10 ? 'events' : 'telemetry', body: eventBody(i, { pad }) })));
    const st = f.outbox.stats();
    expect(st.bytes).toBeLessThanOrEqual(64 * 1024);
    const left = f.outbox.next(0, 100);
    expect(left.filter((r) => r.kind === 'events')).toHaveLength(10);
    expect(st.droppedTelemetry).toBe(60 - left.length);
    expect(st.droppedTelemetry).toBeGreaterThan(0);
    // What the stats say is what the file holds.
    expect(f.peek<{ b: number }>('SELECT SUM(bytes) AS b FROM outbox')[0]!.b).toBe(st.bytes);
  });

  it('moves a message the broker keeps rejecting to the dead-letter table after maxAttempts, and counts it', async () => {
    const s = setup({ maxAttempts: 3 });
    let f = s.open();
    const [s1, s2, s3] = (await Promise.all([1, 2, 3].map((n) => f.outbox.enqueue({ kind: 'events', body: eventBody(n) })))).map((r) => r.seq);
    const [poison, other] = f.outbox.next(0, 10);
    // The link calls failedAttempt synchronously; uncommitted attempts count too.
    expect(f.outbox.failedAttempt(poison!.id, 'connection closed by broker')).toBe(false);
    expect(f.outbox.failedAttempt(poison!.id, 'connection closed by broker')).toBe(false);
    expect(f.outbox.failedAttempt(other!.id, 'timeout')).toBe(false);
    expect(f.outbox.failedAttempt(poison!.id, 'connection closed by broker')).toBe(true);
    expect(f.outbox.next(0, 10).map((r) => r.seq)).toEqual([s2, s3]);
    expect(f.outbox.next(0, 10)[0]!.attempts).toBe(1);
    await nextCommit(f.committer);
    expect(f.peek('SELECT seq, attempts, reason FROM outbox_dead_letter')).toEqual([{ seq: s1, attempts: 3, reason: 'connection closed by broker' }]);
    expect(f.peek('SELECT seq, attempts FROM outbox ORDER BY id')).toEqual([{ seq: s2, attempts: 1 }, { seq: s3, attempts: 0 }]);
    expect(f.outbox.stats()).toMatchObject({ rows: 2, deadLettered: 1 });
    await f.shutdown();
    f = s.open();
    expect(f.outbox.stats()).toMatchObject({ rows: 2, deadLettered: 1 });
    // An acknowledged or unknown row is never dead-lettered.
    expect(f.outbox.failedAttempt(999_999, 'x')).toBe(false);
  });

  it('keeps only the latest unsent state, but never removes a state row the link has in flight', async () => {
    const f = setup().open();
    const state = (n: number) => ({ kind: 'state' as const, body: { ts: new Date().toISOString(), online: true, n } });
    const a = await f.outbox.enqueue(state(1));
    const inflight = f.outbox.next(0, 10);
    expect(inflight.map((r) => r.seq)).toEqual([a.seq]);
    expect(inflight[0]!.retain).toBe(true);
    await f.outbox.enqueue(state(2));
    await f.outbox.enqueue({ kind: 'events', body: eventBody(1) });
    const c = await f.outbox.enqueue(state(3));
    // State 2 was superseded before it was sent; state 1 is in flight and stays until its PUBACK.
    const body = (r: { body: string }) => (JSON.parse(r.body) as { n?: number }).n;
    expect(f.outbox.next(0, 10).map((r) => [r.kind, body(r)])).toEqual([['state', 1], ['events', undefined], ['state', 3]]);
    f.outbox.ack(inflight[0]!.id);
    await nextCommit(f.committer);
    expect(f.peek<{ seq: number }>("SELECT seq FROM outbox WHERE kind = 'state'").map((r) => r.seq)).toEqual([c.seq]);
    expect(f.outbox.stats().rows).toBe(2);
  });

  it('refuses what no broker would take with a clear error, and keeps working', async () => {
    const f = setup().open();
    const refused = async (p: Promise<unknown>) => p.then(() => 'accepted', (e: unknown) => (isOutboxError(e) ? e.code : String(e)));
    const before = await f.outbox.enqueue({ kind: 'events', body: eventBody(0) });
    expect(await refused(f.outbox.enqueue({ kind: 'desired' as never, body: {} }))).toBe('OUTBOX_INVALID_MESSAGE');
    expect(await refused(f.outbox.enqueue({ kind: 'events', body: [1, 2] as never }))).toBe('OUTBOX_INVALID_MESSAGE');
    expect(await refused(f.outbox.enqueue({ kind: 'events', body: { big: 1n } }))).toBe('OUTBOX_INVALID_MESSAGE');
    expect(await refused(f.outbox.enqueue({ kind: 'events', body: { pad: 'x'.repeat(300 * 1024) } }))).toBe('OUTBOX_TOO_LARGE');
    // Nothing refused took a seq: the next accepted message follows the one before the refusals.
    await expect(f.outbox.enqueue({ kind: 'events', body: eventBody(1) })).resolves.toEqual({ seq: before.seq + 1 });
    await f.outbox.close();
    expect(await refused(f.outbox.enqueue({ kind: 'events', body: eventBody(2) }))).toBe('OUTBOX_CLOSED');
  });
});
