import { mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import Database from 'better-sqlite3';
import { afterEach, describe, expect, it } from 'vitest';
import { openDatabase, type Db } from '../../shared/src/sqlite.js';
import { batchedIngest } from '../../fleet-server/src/telemetry/batched-ingest.js';
import type { IngestOutcome } from '../../fleet-server/src/telemetry/ingest.js';

// The embedded broker's group commit: a PUBACK (here: `done`) may only follow the COMMIT of its message, and
// messages arriving together share one commit. A real SQLite file; a second connection checks what is durable.
const MIGRATIONS = [
  `CREATE TABLE parent (id INTEGER PRIMARY KEY);
   CREATE TABLE msgs (seq INTEGER PRIMARY KEY, parent INTEGER REFERENCES parent (id) DEFERRABLE INITIALLY DEFERRED);`,
];
let dir: string;
let db: Db;
afterEach(() => {
  db.close();
  rmSync(dir, { recursive: true, force: true });
});

function setup(): { file: string; insert: (seq: number, parent?: number) => IngestOutcome } {
  dir = mkdtempSync(path.join(os.tmpdir(), 'outpost-batched-'));
  const file = path.join(dir, 'fleet.db');
  db = openDatabase(file, MIGRATIONS, 'test');
  const stmt = db.prepare('INSERT INTO msgs (seq, parent) VALUES (?, ?)');
  // Like the real ingest: each message in its own (nested → savepoint) transaction.
  const one = db.transaction((seq: number, parent: number | null) => stmt.run(seq, parent));
  return { file, insert: (seq, parent) => (one(seq, parent ?? null), 'stored') };
}

describe('batched ingest (embedded broker group commit)', () => {
  it('acknowledges each message only once its batch is committed, in submission order, in one commit per turn', async () => {
    const { file, insert } = setup();
    const reader = new Database(file, { readonly: true });
    const acked: { seq: number; visible: number }[] = [];
    let changes = 0;
    const ingest = batchedIngest(db, (_topic, payload) => {
      changes++;
      return insert(Number(payload.toString()));
    });
    const all = Array.from({ length: 300 }, (_, i) => i + 1).map(
      (seq) => new Promise<void>((resolve) => ingest.submit('t', Buffer.from(String(seq)), (stored) => {
        expect(stored).toBe(true);
        acked.push({ seq, visible: (reader.prepare('SELECT COUNT(*) AS n FROM msgs WHERE seq = ?').get(seq) as { n: number }).n });
        resolve();
      })),
    );
    expect(acked).toHaveLength(0); // nothing acknowledged in the turn the messages arrived
    await Promise.all(all);
    reader.close();
    expect(changes).toBe(300);
    expect(acked.map((a) => a.seq)).toEqual(Array.from({ length: 300 }, (_, i) => i + 1));
    expect(acked.every((a) => a.visible === 1), 'a message was acknowledged before it was committed').toBe(true);
    // Every commit appends at least one frame to the WAL, so 300 commits would leave ≥ 300 frames; the 300
    // messages of one turn shared a single commit and left a handful.
    const frames = db.pragma('wal_checkpoint(PASSIVE)') as { log: number }[];
    expect(frames[0]!.log).toBeLessThan(20);
  });

  it('withholds every acknowledgement of a batch whose COMMIT fails, and the next batch goes through', async () => {
    const { insert } = setup();
    const ingest = batchedIngest(db, (_topic, payload) => {
      const [seq, parent] = payload.toString().split(':').map(Number);
      return insert(seq!, parent);
    });
    const submit = (body: string) => new Promise<boolean>((resolve) => ingest.submit('t', Buffer.from(body), resolve));
    // seq 2 names a parent that does not exist: the deferred foreign key fails the COMMIT of the whole batch.
    const first = await Promise.all([submit('1'), submit('2:99'), submit('3')]);
    expect(first).toEqual([false, false, false]);
    expect((db.prepare('SELECT COUNT(*) AS n FROM msgs').get() as { n: number }).n).toBe(0);
    expect(await Promise.all([submit('1'), submit('3')])).toEqual([true, true]);
    expect((db.prepare('SELECT COUNT(*) AS n FROM msgs').get() as { n: number }).n).toBe(2);
  });
});
