import { spawnSync } from 'node:child_process';
import Database from 'better-sqlite3';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { spawnJsonLines, type RunningChild } from '../helpers/child-lines.js';
import type { ChildConfig } from '../helpers/outbox-child.js';
import { tempDir } from '../helpers/outbox-db.js';
import { transpileForChild, type ChildBuild } from '../helpers/ts-child.js';

/** strace can inject syscall errors (research note §5.3 S1c) where ptrace is allowed. */
const strace = spawnSync('strace', ['-f', '-o', '/dev/null', '-e', 'trace=fsync', 'true'], { stdio: 'ignore' }).status === 0;
/** fsync calls that succeed before ONE fails with EIO (opening and migrating take a few); later ones succeed again. */
const FAILING_FSYNC = 40;

/**
 * The fsyncgate lesson: when fsync fails, the outbox must stop acknowledging and raise an alarm, never
 * retry and claim success. The child runs the real outbox under strace, which fails exactly one fsync with
 * EIO: the fsyncs after it succeed, so an outbox that retried would go on acknowledging (the pages the failed
 * fsync lost would be missing without anyone knowing).
 */
describe.skipIf(!strace)('outbox when fsync fails (strace fault injection)', () => {
  let build: ChildBuild;
  let tmp: { dir: string; remove(): void };
  let c: RunningChild | undefined;

  beforeAll(() => {
    build = transpileForChild(['test/helpers/outbox-child.ts']);
    tmp = tempDir('outpost-fsync-');
  });
  afterAll(() => {
    if (c && c.child.exitCode === null && c.child.signalCode === null) c.child.kill('SIGKILL');
    build?.remove();
    tmp?.remove();
  });

  it('stops acknowledging at the first failed fsync, raises the alarm, and every acknowledged message is on disk', async () => {
    const dbFile = path.join(tmp.dir, 'agent.db');
    const cfg: ChildConfig = { dbFile, round: 0, eventsPerTick: 5, burst: 2, tickMs: 2, windowEveryMs: 30, maxTicks: 5_000, exitAfterAlarm: true };
    c = spawnJsonLines('strace', [
      '-f', '-o', '/dev/null', '-e', 'trace=fsync,fdatasync', '-e', `inject=fsync,fdatasync:error=EIO:when=${FAILING_FSYNC}`,
      process.execPath, build.pathOf('test/helpers/outbox-child.ts'), JSON.stringify(cfg),
    ]);
    const exit = await c.exited;
    expect(exit.code).toBe(0);

    const facts = c.facts;
    const alarmAt = facts.findIndex((f) => f.t === 'alarm');
    expect(alarmAt).toBeGreaterThan(0);
    expect(String(facts[alarmAt]!.message)).toMatch(/SQLITE_IOERR/);
    const before = facts.slice(0, alarmAt);
    const after = facts.slice(alarmAt + 1);
    const acked = before.filter((f) => f.t === 'ack');
    expect(acked.length).toBeGreaterThan(0);
    // Nothing is acknowledged once the commit failed: its producers are told, and later ones are refused.
    expect(after.filter((f) => f.t === 'ack')).toEqual([]);
    const codes = new Set(after.filter((f) => f.t === 'rejected').map((f) => f.code));
    expect(codes.has('OUTBOX_COMMIT_FAILED')).toBe(true);
    expect(codes.has('OUTBOX_ALARM')).toBe(true);
    // The error was logged for an operator.
    expect(c.stderr.some((l) => /"level":"error"/.test(l) && /commit failed/.test(l))).toBe(true);

    // Every message acknowledged before the failure is on disk under its seq.
    const db = new Database(dbFile);
    try {
      expect(db.pragma('integrity_check', { simple: true })).toBe('ok');
      const stored = new Map((db.prepare("SELECT seq, body FROM outbox WHERE kind = 'events'").all() as { seq: number; body: string }[]).map((r) => [r.seq, (JSON.parse(r.body) as { data: { n: number } }).data.n]));
      for (const a of acked) expect(stored.get(a.seq as number)).toBe(a.n);
    } finally {
      db.close();
    }
  });
});
