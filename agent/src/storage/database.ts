import { openDatabase as openShared, type Db } from '../../../shared/src/sqlite.js';

export type { Db };

/** Numbered migrations, applied in order, each in its own transaction; never edit one that has shipped. */
const MIGRATIONS: readonly string[] = [
  // 1: the agent's own state: what it serves and lifetime request counters.
  `CREATE TABLE model_versions (
     name TEXT NOT NULL, version INTEGER NOT NULL,
     state TEXT NOT NULL, provider TEXT, error TEXT,
     load_ms REAL, updated_at TEXT NOT NULL,
     PRIMARY KEY (name, version)
   );
   CREATE TABLE request_counters (
     name TEXT NOT NULL, version INTEGER NOT NULL,
     requests INTEGER NOT NULL DEFAULT 0, failures INTEGER NOT NULL DEFAULT 0,
     PRIMARY KEY (name, version)
   );`,
  // 2: the outbox (agent/src/outbox/) and the durable telemetry window (agent/src/telemetry/).
  // outbox.id orders the drain and is never reused (AUTOINCREMENT), so a drainer's cursor stays valid;
  // seq is the per-device number the fleet dedups by, assigned inside the commit from outbox_meta.next_seq.
  // next_seq is NOT inserted here: the outbox seeds it from the clock when it first opens (outbox-store.ts).
  // created_at / dead_at are epoch milliseconds. telemetry_window holds the counts of the open window,
  // one row per model version, merged by every group commit and emptied in the transaction that queues them.
  `CREATE TABLE outbox (
     id INTEGER PRIMARY KEY AUTOINCREMENT,
     seq INTEGER NOT NULL UNIQUE,
     kind TEXT NOT NULL,
     retain INTEGER NOT NULL DEFAULT 0,
     body TEXT NOT NULL,
     bytes INTEGER NOT NULL,
     attempts INTEGER NOT NULL DEFAULT 0,
     created_at INTEGER NOT NULL
   );
   -- Partial indexes: the queries that look rows up by kind (drop the oldest telemetry, coalesce state) stay
   -- indexed, while events, the high-rate kind, pay for no index beyond the two unique ones.
   CREATE INDEX outbox_telemetry ON outbox (id) WHERE kind = 'telemetry';
   CREATE INDEX outbox_state ON outbox (id) WHERE kind = 'state';
   CREATE TABLE outbox_dead_letter (
     id INTEGER PRIMARY KEY,
     seq INTEGER NOT NULL,
     kind TEXT NOT NULL,
     retain INTEGER NOT NULL,
     body TEXT NOT NULL,
     bytes INTEGER NOT NULL,
     attempts INTEGER NOT NULL,
     created_at INTEGER NOT NULL,
     dead_at INTEGER NOT NULL,
     reason TEXT NOT NULL
   );
   CREATE TABLE outbox_meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
   INSERT INTO outbox_meta (key, value) VALUES ('dropped_telemetry', 0), ('dead_lettered', 0);
   -- Always empty: the group commit's retry after a disk-full failure writes a row here and deletes it in
   -- the same transaction, to learn whether the disk takes writes again (outbox-store.ts commitProbe).
   CREATE TABLE outbox_probe (id INTEGER PRIMARY KEY, pad BLOB NOT NULL);
   CREATE TABLE telemetry_window (
     model TEXT NOT NULL, version INTEGER NOT NULL,
     window_start INTEGER NOT NULL,
     data TEXT NOT NULL,
     PRIMARY KEY (model, version)
   );`,
  // 3: the update machine (agent/src/update/). One `updates` row per accepted deployment of a model; its state
  // is written before each side effect (download, install, load, pointer flip, rollback) so a restart resumes
  // or rolls back. reported_state is the last state whose update.transition event the outbox accepted, so a
  // crash between the two re-sends the event at boot. model_pointer is what serves: the active version, the
  // previous one kept for rollback, and the highest deployment counter accepted (replay protection U3).
  // desired_state keeps the latest desired message so a box that boots offline still reconciles.
  `CREATE TABLE updates (
     id INTEGER PRIMARY KEY AUTOINCREMENT,
     model TEXT NOT NULL,
     version INTEGER NOT NULL,
     sha256 TEXT NOT NULL,
     size INTEGER NOT NULL,
     deployment INTEGER NOT NULL,
     rollout TEXT,
     entry TEXT NOT NULL,
     state TEXT NOT NULL,
     reported_state TEXT,
     previous_version INTEGER,
     attempts INTEGER NOT NULL DEFAULT 0,
     probation_boots INTEGER NOT NULL DEFAULT 0,
     reason TEXT,
     detail TEXT,
     received_bytes INTEGER NOT NULL DEFAULT 0,
     probation_started_at INTEGER,
     baseline_p95 REAL,                    -- the previous version's p95 at activation (latency judged after a restart too)
     clean_stop INTEGER NOT NULL DEFAULT 0, -- 1: the agent stopped gracefully while this row was unfinished (not a crash)
     created_at INTEGER NOT NULL,
     updated_at INTEGER NOT NULL
   );
   CREATE INDEX updates_by_model ON updates (model, id);
   CREATE TABLE model_pointer (
     model TEXT PRIMARY KEY,
     active INTEGER,
     previous INTEGER,
     highest_deployment INTEGER NOT NULL DEFAULT 0,
     updated_at INTEGER NOT NULL
   );
   CREATE TABLE desired_state (id INTEGER PRIMARY KEY CHECK (id = 1), revision INTEGER NOT NULL, body TEXT NOT NULL);`,
];

/** The agent database (WAL, synchronous=FULL on every open; see shared/src/sqlite.ts). */
export function openDatabase(file: string): Db {
  return openShared(file, MIGRATIONS, 'agent');
}
