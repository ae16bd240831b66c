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
/** Kills the node process strace runs (its only child): killing strace itself would merely detach it. */
function killTraced(c: RunningChild): void {
  const ps = spawnSync('ps', ['-o', 'pid=', '--ppid', String(c.child.pid)], { encoding: 'utf8' });
  for (const pid of (ps.stdout ?? '').trim().split(/\s+/).map(Number).filter((n) => n > 0)) process.kill(pid, 'SIGKILL');
}

/** fsync calls that succeed before ONE fails with EIO (opening and migrating take a few); later ones succeed again. */
const FAILING_FSYNC = 40;

/**
 * The fsyncgate lesson: when fsync fails, the outbox must stop acknowledging and raise an alarm, never
 * retry and claim success. The child runs the real outbox under strace, which fails exactly one fsync with
 * EIO: the fsyncs after it succeed, so an outbox that retried would go on acknowledging (the pages the failed
 * fsync lost would be missing without anyone knowing). Unlike disk full (outbox-alarm.test.ts), whose alarm
 * clears once a retried commit succeeds, this one must stay up past every retry delay.
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
    if (c && c.child.exitCode === null && c.child.signalCode === null) {
      killTraced(c);
      c.child.kill('SIGKILL');
    }
    build?.remove();
    tmp?.remove();
  });

  it('stops acknowledging at the first failed fsync, keeps the alarm up (no retry), and every acknowledged message is on disk', async () => {
    const dbFile = path.join(tmp.dir, 'agent.db');
    // The child keeps producing after the alarm (every message must be refused) until it is killed.
    const cfg: ChildConfig = { dbFile, round: 0, eventsPerTick: 5, burst: 2, tickMs: 2, windowEveryMs: 30, maxTicks: 50_000 };
    const child = spawnJsonLines('strace', [
      '-f', '-o', '/dev/null', '-e', 'trace=fsync,fdatasync', '-e', `inject=fsync,fdatasync:error=EIO:when=${FAILING_FSYNC}`,
      process.execPath, build.pathOf('test/helpers/outbox-child.ts'), JSON.stringify(cfg),
    ]);
    c = child;
    await child.until((facts) => facts.some((f) => f.t === 'alarm'), 'the alarm after the failed fsync');
    const alarmSeenAt = Date.now();
    // Past the first two retry delays a disk-full alarm would wait (1 s, then 2 s): an I/O error must not clear.
    await child.until(() => Date.now() - alarmSeenAt >= 3_500, 'the retry delays to pass while the child keeps producing', 15_000);
    killTraced(child);
    await child.exited;

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
    // Still refused at the end, seconds later: the fsyncs after the failed one succeed, yet nothing cleared it.
    expect(after.filter((f) => f.t === 'rejected').at(-1)).toMatchObject({ code: 'OUTBOX_ALARM' });
    expect(c.stderr.some((l) => /"level":"error"/.test(l) && /until the agent restarts/.test(l))).toBe(true);
    expect(c.stderr.some((l) => /retry failed|alarm cleared/.test(l))).toBe(false);
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
