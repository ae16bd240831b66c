import { afterEach, describe, expect, it } from 'vitest';
import { isOutboxError } from '../../agent/src/outbox/errors.js';
import { eventBody, openOutbox, tempDir, type OutboxFixture } from '../helpers/outbox-db.js';

/** Polls `check` every 20 ms until it holds; fails after `timeoutMs`. */
async function waitFor(what: string, check: () => boolean, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

/**
 * A commit that fails (here: disk full, SQLITE_FULL, from a database capped with max_page_count) must not
 * acknowledge anything it held: producers are told, an alarm is raised and logged, and new messages are
 * refused while it is up. Disk full rolls back cleanly, so the committer retries (1 s doubling to 30 s) with
 * real commits and the alarm clears by itself once one succeeds; an fsync error stays sticky
 * (outbox-fsync.test.ts).
 */
describe('outbox alarm on a failed commit', () => {
  let f: OutboxFixture | undefined;
  let remove: (() => void) | undefined;
  afterEach(async () => {
    await f?.shutdown();
    remove?.();
    f = undefined;
  });

  it('rejects the producers of the failed commit, refuses new messages while the disk is full, and clears by itself once space is back', async () => {
    const t = tempDir();
    remove = t.remove;
    f = openOutbox(t.dir, { groupCommitMs: 10, groupCommitRows: 100 });
    const fx = f;
    const ok = await Promise.all([1, 2, 3, 4, 5].map((n) => fx.outbox.enqueue({ kind: 'events', body: eventBody(n) })));
    const base = ok[0]!.seq;
    expect(ok.map((r) => r.seq)).toEqual([base, base + 1, base + 2, base + 3, base + 4]);
    const firstRow = fx.outbox.next(0, 1)[0]!;

    // The disk is full: the database may not grow by more than two pages.
    const pages = fx.db.pragma('page_count', { simple: true }) as number;
    fx.db.pragma(`max_page_count = ${pages + 2}`);
    const pad = 'x'.repeat(3000);
    const settled = await Promise.allSettled(Array.from({ length: 100 }, (_, i) => fx.outbox.enqueue({ kind: 'events', body: eventBody(100 + i, { pad }) })));

    // Nothing is reported durable that is not: every fulfilled seq is on disk, every rejected message is not.
    const onDisk = new Set(fx.peek<{ seq: number; n: number }>("SELECT seq, json_extract(body, '$.data.n') AS n FROM outbox").map((r) => r.n));
    const rejected = settled.flatMap((s, i) => (s.status === 'rejected' ? [{ i, reason: s.reason as unknown }] : []));
    expect(rejected.length).toBeGreaterThan(0);
    for (const s of settled.map((x, i) => ({ x, i }))) expect(onDisk.has(100 + s.i)).toBe(s.x.status === 'fulfilled');
    expect(rejected.every((r) => isOutboxError(r.reason, 'OUTBOX_COMMIT_FAILED'))).toBe(true);

    const alarm = fx.outbox.stats().alarm;
    expect(alarm).toMatch(/SQLITE_FULL/);
    expect(fx.entries.some((e) => e.level === 'error' && /commit failed/.test(e.msg ?? ''))).toBe(true);

    // While the disk stays full: new messages are refused at once, acks wait, and a retry fails without
    // clearing the alarm (it really tries to commit; it does not just wait and hope).
    const failures = fx.committer.failures;
    const commits = fx.committer.commits;
    await expect(fx.outbox.enqueue({ kind: 'events', body: eventBody(999) })).rejects.toSatisfy((e: unknown) => isOutboxError(e, 'OUTBOX_ALARM'));
    fx.outbox.ack(firstRow.id);
    expect(fx.committer.flush()).toBe(false);
    await waitFor('a retry that fails on the still-full disk', () => fx.committer.failures > failures, 5_000);
    expect(fx.outbox.stats().alarm).toMatch(/SQLITE_FULL/);
    expect(fx.committer.commits).toBe(commits);
    await expect(fx.outbox.enqueue({ kind: 'events', body: eventBody(998) })).rejects.toSatisfy((e: unknown) => isOutboxError(e, 'OUTBOX_ALARM'));
    expect(fx.peek('SELECT seq FROM outbox WHERE id = ?', firstRow.id)).toEqual([{ seq: base }]);

    // Space comes back (logs rotated): the next retry commits, the alarm clears by itself and says so.
    fx.db.pragma('max_page_count = 1000000');
    await waitFor('the alarm to clear by itself', () => fx.outbox.stats().alarm === null, 10_000);
    expect(fx.entries.some((e) => e.level === 'info' && /alarm cleared/.test(e.msg ?? ''))).toBe(true);
    // The ack held during the alarm rode that retry.
    expect(fx.peek('SELECT seq FROM outbox WHERE id = ?', firstRow.id)).toEqual([]);

    // New messages are accepted again, numbered where the durable rows stopped: no gap, no reuse.
    const resumed = await Promise.all([1000, 1001, 1002].map((n) => fx.outbox.enqueue({ kind: 'events', body: eventBody(n) })));
    const lastDurable = Math.max(...ok.map((r) => r.seq), ...settled.flatMap((s) => (s.status === 'fulfilled' ? [s.value.seq] : [])));
    expect(resumed.map((r) => r.seq)).toEqual([lastDurable + 1, lastDurable + 2, lastDurable + 3]);
    const stored = fx.peek<{ seq: number }>('SELECT seq FROM outbox ORDER BY id').map((r) => r.seq);
    expect(stored).toEqual(Array.from({ length: stored.length }, (_, i) => base + 1 + i));
  });

  it('rejects every message of a commit that fails, the one whose insert hit the full disk included, and stores none', async () => {
    const t = tempDir();
    remove = t.remove;
    f = openOutbox(t.dir, { groupCommitMs: 10_000, groupCommitRows: 100 });
    const fx = f;
    fx.db.pragma(`max_page_count = ${(fx.db.pragma('page_count', { simple: true }) as number) + 1}`);
    const pad = 'y'.repeat(5000);
    const a = fx.outbox.enqueue({ kind: 'events', body: eventBody(1, { pad }) });
    const b = fx.outbox.enqueue({ kind: 'telemetry', body: eventBody(2, { pad }) });
    expect(fx.committer.flush()).toBe(false);
    await expect(a).rejects.toSatisfy((e: unknown) => isOutboxError(e, 'OUTBOX_COMMIT_FAILED'));
    await expect(b).rejects.toSatisfy((e: unknown) => isOutboxError(e, 'OUTBOX_COMMIT_FAILED'));
    expect(fx.outbox.stats()).toMatchObject({ rows: 0, alarm: expect.stringMatching(/SQLITE_FULL/) });
    expect(fx.peek('SELECT seq FROM outbox')).toEqual([]);
  });
});
