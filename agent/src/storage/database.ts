import Database from 'better-sqlite3';
import { mkdirSync } from 'node:fs';
import path from 'node:path';

export type Db = Database.Database;

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
];

/**
 * Opens (creating) the agent database: WAL, and synchronous=FULL on every open because better-sqlite3's
 * SQLite drops a reopened WAL database to NORMAL (../shared/research §0), where a commit can roll back on power loss.
 */
export function openDatabase(file: string): Db {
  mkdirSync(path.dirname(file), { recursive: true });
  const db = new Database(file);
  db.pragma('journal_mode = WAL');
  db.pragma('synchronous = FULL');
  db.pragma('foreign_keys = ON');
  db.pragma('busy_timeout = 5000');
  migrate(db);
  return db;
}

export function migrate(db: Db): number {
  db.exec('CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, applied_at TEXT NOT NULL)');
  const current = (db.prepare('SELECT COALESCE(MAX(version), 0) AS v FROM schema_migrations').get() as { v: number }).v;
  if (current > MIGRATIONS.length) {
    throw new Error(`database schema version ${current} is newer than this agent knows (${MIGRATIONS.length}); refusing to run an older agent on it`);
  }
  for (let v = current + 1; v <= MIGRATIONS.length; v++) {
    db.transaction(() => {
      db.exec(MIGRATIONS[v - 1]!);
      db.prepare('INSERT INTO schema_migrations (version, applied_at) VALUES (?, ?)').run(v, new Date().toISOString());
    })();
  }
  return MIGRATIONS.length;
}
