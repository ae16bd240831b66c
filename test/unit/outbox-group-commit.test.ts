import Database from 'better-sqlite3';
import { afterEach, describe, expect, it } from 'vitest';
import { isOutboxError } from '../../agent/src/outbox/errors.js';
import { GroupCommitter, type CommitParticipant, type CommitTimers } from '../../agent/src/outbox/group-commit.js';
import { recordingLog } from '../helpers/outbox-db.js';

/** Timers the test fires by hand: which are armed, and for how long. */
function manualTimers() {
  let next = 1;
  const timeouts = new Map<number, { fn: () => void; ms: number }>();
  const immediates = new Map<number, () => void>();
  const timers: CommitTimers = {
    setTimeout: (fn, ms) => (timeouts.set(next, { fn, ms }), next++),
    clearTimeout: (h) => void timeouts.delete(h as number),
    setImmediate: (fn) => (immediates.set(next, fn), next++),
    clearImmediate: (h) => void immediates.delete(h as number),
  };
  const first = <V>(m: Map<number, V>): V => {
    const [id, v] = [...m.entries()][0]!;
    m.delete(id);
    return v;
  };
  return {
    timers, timeouts, immediates,
    fireTimeout: () => first(timeouts).fn(),
    fireImmediate: () => first(immediates)(),
  };
}

/** A participant that inserts its pending numbers into table `t` (in-memory SQLite: no disk in a unit test). */
function numbers(db: Database.Database) {
  db.exec('CREATE TABLE IF NOT EXISTS t (n INTEGER NOT NULL CHECK (n >= 0))');
  const insert = db.prepare('INSERT INTO t (n) VALUES (?)');
  const log: string[] = [];
  let pending: number[] = [];
  let inTxn: number[] = [];
  const p: CommitParticipant & { add(...n: number[]): void; log: string[] } = {
    log,
    add: (...n) => pending.push(...n),
    pending: () => pending.length,
    write: () => {
      inTxn = pending;
      pending = [];
      for (const n of inTxn) insert.run(n);
    },
    committed: () => {
      if (inTxn.length) log.push(`committed ${inTxn.join(',')}`);
      inTxn = [];
    },
    failed: (err) => {
      log.push(`failed ${inTxn.join(',')}: ${(err as { code?: string }).code}`);
      inTxn = [];
    },
  };
  return p;
}

describe('group committer', () => {
  const dbs: Database.Database[] = [];
  afterEach(() => dbs.splice(0).forEach((d) => d.close()));
  function setup(groupCommitRows = 3) {
    const db = new Database(':memory:');
    dbs.push(db);
    const t = manualTimers();
    const { log, entries } = recordingLog();
    const c = new GroupCommitter(db, { groupCommitMs: 50, groupCommitRows, log, timers: t.timers });
    const p = numbers(db);
    c.register(p);
    const count = () => (db.prepare('SELECT COUNT(*) AS n FROM t').get() as { n: number }).n;
    return { db, c, p, t, entries, count };
  }

  it('arms one timer of groupCommitMs when the first row is pending, and commits everything pending in one transaction', () => {
    const { c, p, t, count } = setup();
    c.notify();
    expect(t.timeouts.size).toBe(0);
    p.add(1);
    c.notify();
    p.add(2);
    c.notify();
    expect([...t.timeouts.values()].map((x) => x.ms)).toEqual([50]);
    t.fireTimeout();
    expect(c.commits).toBe(1);
    expect(count()).toBe(2);
    expect(p.log).toEqual(['committed 1,2']);
    expect(t.timeouts.size).toBe(0);
  });

  it('commits on the next turn once groupCommitRows are waiting, and cancels the timer', () => {
    const { c, p, t } = setup(3);
    p.add(1);
    c.notify();
    p.add(2, 3);
    c.notify();
    expect(t.immediates.size).toBe(1);
    t.fireImmediate();
    expect(p.log).toEqual(['committed 1,2,3']);
    expect(t.timeouts.size).toBe(0);
  });

  it('on a failed commit: tells every participant, raises the alarm, logs, and commits nothing until it is cleared', () => {
    const { c, p, t, entries, count } = setup();
    const alarms: string[] = [];
    c.onAlarm((m) => alarms.push(m));
    p.add(1, -1); // -1 violates the CHECK: the transaction fails
    expect(c.flush()).toBe(false);
    expect(p.log).toEqual(['failed 1,-1: SQLITE_CONSTRAINT_CHECK']);
    expect(c.alarm).toMatch(/^SQLITE_CONSTRAINT_CHECK: /);
    expect(alarms).toHaveLength(1);
    expect(entries.filter((e) => e.level === 'error')).toHaveLength(1);
    expect(count()).toBe(0);

    p.add(2);
    c.notify();
    expect(t.timeouts.size + t.immediates.size).toBe(0);
    expect(c.flush()).toBe(false);
    expect(() => c.commitNow(() => 1)).toThrow(expect.objectContaining({ code: 'OUTBOX_ALARM' }));
    expect(count()).toBe(0);

    c.clearAlarm();
    expect(t.timeouts.size).toBe(1);
    t.fireTimeout();
    expect(p.log.at(-1)).toBe('committed 2');
    expect(count()).toBe(1);
  });

  it('after a clean rollback (disk full) retries with backoff, keeps the alarm up while it fails, and clears it on the first success', () => {
    const db = new Database(':memory:');
    dbs.push(db);
    const t = manualTimers();
    const { log, entries } = recordingLog();
    // The probe a retry writes (the outbox's is outbox-store.ts commitProbe): it needs pages, like real work.
    db.exec('CREATE TABLE probe (pad BLOB NOT NULL)');
    const probe = () => {
      db.prepare('INSERT INTO probe (pad) VALUES (zeroblob(65536))').run();
      db.prepare('DELETE FROM probe').run();
    };
    const c = new GroupCommitter(db, { groupCommitMs: 50, groupCommitRows: 10_000, log, timers: t.timers, probe });
    const p = numbers(db);
    c.register(p);
    const count = () => (db.prepare('SELECT COUNT(*) AS n FROM t').get() as { n: number }).n;
    const alarms: string[] = [];
    c.onAlarm((m) => alarms.push(m));

    // The disk is full: the database may not grow past its current size.
    db.pragma(`max_page_count = ${db.pragma('page_count', { simple: true }) as number}`);
    p.add(...Array.from({ length: 2000 }, (_, i) => i));
    expect(c.flush()).toBe(false);
    expect(c.alarm).toMatch(/^SQLITE_FULL: /);
    expect(p.log).toEqual([`failed ${Array.from({ length: 2000 }, (_, i) => i).join(',')}: SQLITE_FULL`]);
    // One retry armed, 1 s first; while the alarm is up nothing else commits.
    expect([...t.timeouts.values()].map((x) => x.ms)).toEqual([1000]);
    expect(() => c.commitNow(() => 1)).toThrow(expect.objectContaining({ code: 'OUTBOX_ALARM' }));

    // Each retry is a real commit (here only the probe is pending): while the disk stays full it fails and
    // the delay doubles up to 30 s.
    const delays: number[] = [];
    for (let i = 0; i < 6; i++) {
      t.fireTimeout();
      expect(c.alarm).toMatch(/^SQLITE_FULL: /);
      delays.push(...[...t.timeouts.values()].map((x) => x.ms));
    }
    expect(delays).toEqual([2000, 4000, 8000, 16000, 30000, 30000]);
    expect(c.failures).toBe(7);
    expect(alarms).toHaveLength(1);
    expect(count()).toBe(0);

    // Space is back: the next retry commits what is pending with it, clears the alarm and says so.
    db.pragma('max_page_count = 1000000');
    p.add(7, 8);
    c.notify();
    expect(t.timeouts.size).toBe(1);
    t.fireTimeout();
    expect(c.alarm).toBeNull();
    expect(p.log.at(-1)).toBe('committed 7,8');
    expect(count()).toBe(2);
    expect(db.prepare('SELECT COUNT(*) AS n FROM probe').get()).toEqual({ n: 0 });
    expect(entries.some((e) => e.level === 'info' && /alarm cleared/.test(e.msg ?? ''))).toBe(true);
    expect(t.timeouts.size).toBe(0);
    // Commits run as usual again, and the next failure starts the backoff at 1 s again.
    p.add(9);
    c.notify();
    t.fireTimeout();
    expect(p.log.at(-1)).toBe('committed 9');
    // (The probe left its pages free for reuse, so this commit needs more than those to hit the limit.)
    db.pragma(`max_page_count = ${db.pragma('page_count', { simple: true }) as number}`);
    p.add(...Array.from({ length: 30_000 }, (_, i) => i));
    expect(c.flush()).toBe(false);
    expect(c.alarm).toMatch(/^SQLITE_FULL: /);
    expect([...t.timeouts.values()].map((x) => x.ms)).toEqual([1000]);
  });

  it('an I/O error (durability unknown) is sticky: no retry is armed, even after a disk-full retry', () => {
    const { c, t, count } = setup();
    let failWith: Error | undefined = new Database.SqliteError('disk I/O error', 'SQLITE_IOERR_FSYNC');
    const writes: string[] = [];
    c.register({
      pending: () => (failWith ? 1 : 0),
      write: () => {
        writes.push(failWith!.message);
        throw failWith!;
      },
      committed: () => undefined,
      failed: () => undefined,
    });
    expect(c.flush()).toBe(false);
    expect(c.alarm).toMatch(/^SQLITE_IOERR_FSYNC: /);
    expect(t.timeouts.size + t.immediates.size).toBe(0);

    // Disk full first, then an I/O error during the retry: from then on it is sticky too.
    c.clearAlarm();
    t.timeouts.clear();
    failWith = new Database.SqliteError('database or disk is full', 'SQLITE_FULL');
    expect(c.flush()).toBe(false);
    expect([...t.timeouts.values()].map((x) => x.ms)).toEqual([1000]);
    failWith = new Database.SqliteError('disk I/O error', 'SQLITE_IOERR_WRITE');
    t.fireTimeout();
    expect(c.alarm).toMatch(/^SQLITE_IOERR_WRITE: /);
    expect(t.timeouts.size).toBe(0);
    expect(writes).toEqual(['disk I/O error', 'database or disk is full', 'disk I/O error']);
    expect(count()).toBe(0);
  });

  it('commitNow runs its function in the same transaction as the pending rows and returns its result', () => {
    const { db, c, p, count } = setup();
    p.add(7);
    const seen = c.commitNow((d) => (d.prepare('SELECT COUNT(*) AS n FROM t').get() as { n: number }).n);
    expect(seen).toBe(1);
    expect(count()).toBe(1);
    expect(db.inTransaction).toBe(false);
  });

  it('a refusal thrown by commitNow\'s function undoes only its own writes: the pending rows commit, no alarm', () => {
    const { db, c, p, count } = setup();
    p.add(5);
    expect(() =>
      c.commitNow((d) => {
        d.prepare('INSERT INTO t (n) VALUES (99)').run();
        throw new Error('window too large');
      }),
    ).toThrow('window too large');
    expect(c.alarm).toBeNull();
    expect(db.prepare('SELECT n FROM t').all()).toEqual([{ n: 5 }]);
    expect(p.log).toEqual(['committed 5']);
    // A SQLite error inside it fails the whole commit.
    p.add(6);
    expect(() => c.commitNow((d) => d.prepare('INSERT INTO t (n) VALUES (-5)').run())).toThrow(expect.objectContaining({ code: 'SQLITE_CONSTRAINT_CHECK' }));
    expect(c.alarm).not.toBeNull();
    expect(count()).toBe(1);
    expect(isOutboxError(new Error('x'))).toBe(false);
  });

  it('close() commits what is pending and arms nothing afterwards', () => {
    const { c, p, t, count } = setup();
    p.add(1);
    c.notify();
    c.close();
    expect(count()).toBe(1);
    expect(t.timeouts.size + t.immediates.size).toBe(0);
    p.add(2);
    c.notify();
    expect(t.timeouts.size + t.immediates.size).toBe(0);
  });
});
