import { afterEach, describe, expect, it } from 'vitest';
import { isOutboxError } from '../../agent/src/outbox/errors.js';
import { eventBody, openOutbox, tempDir, type OutboxFixture } from '../helpers/outbox-db.js';

/**
 * A commit that fails (here: disk full, SQLITE_FULL, from a database capped with max_page_count) must stop
 * the outbox from acknowledging anything: producers are told, an alarm is raised and logged, and nothing
 * is retried silently until an operator clears it.
 */
describe('outbox alarm on a failed commit', () => {
  let f: OutboxFixture | undefined;
  let remove: (() => void) | undefined;
  afterEach(async () => {
    await f?.shutdown();
    remove?.();
    f = undefined;
  });

  it('rejects the producers of the failed commit, raises the alarm, refuses new messages, and resumes only when cleared', async () => {
    const t = tempDir();
    remove = t.remove;
    f = openOutbox(t.dir, { groupCommitMs: 10, groupCommitRows: 100 });
    const fx = f;
    const ok = await Promise.all([1, 2, 3, 4, 5].map((n) => fx.outbox.enqueue({ kind: 'events', body: eventBody(n) })));
    expect(ok.map((r) => r.seq)).toEqual([1, 2, 3, 4, 5]);
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

    // While the alarm is up: new messages are refused at once, acks wait, nothing is committed.
    const commits = fx.committer.commits;
    await expect(fx.outbox.enqueue({ kind: 'events', body: eventBody(999) })).rejects.toSatisfy((e: unknown) => isOutboxError(e, 'OUTBOX_ALARM'));
    fx.outbox.ack(firstRow.id);
    expect(fx.committer.flush()).toBe(false);
    expect(fx.committer.commits).toBe(commits);
    expect(fx.peek('SELECT seq FROM outbox WHERE id = ?', firstRow.id)).toEqual([{ seq: 1 }]);

    // The operator frees space and clears the alarm: the outbox resumes, numbering where the durable rows stopped.
    fx.db.pragma('max_page_count = 1000000');
    fx.committer.clearAlarm();
    expect(fx.outbox.stats().alarm).toBeNull();
    const resumed = await fx.outbox.enqueue({ kind: 'events', body: eventBody(1000) });
    const lastDurable = Math.max(...ok.map((r) => r.seq), ...settled.flatMap((s) => (s.status === 'fulfilled' ? [s.value.seq] : [])));
    expect(resumed.seq).toBe(lastDurable + 1);
    // The ack held during the alarm is applied by the first commit after it.
    expect(fx.peek('SELECT seq FROM outbox WHERE id = ?', firstRow.id)).toEqual([]);
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
