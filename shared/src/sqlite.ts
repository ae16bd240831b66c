import Database from 'better-sqlite3';
import { mkdirSync } from 'node:fs';
import path from 'node:path';

export type Db = Database.Database;
export { Database };

/**
 * Opens (creating) a database: WAL, and synchronous=FULL on every open because better-sqlite3's SQLite
 * drops a reopened WAL database to NORMAL (../shared/research §0), where a commit can roll back on power
 * loss. Then applies the numbered migrations (each in its own transaction; never edit one that shipped).
 */
export function openDatabase(file: string, migrations: readonly string[], owner: string): Db {
  mkdirSync(path.dirname(file), { recursive: true });
  const db = new Database(file);
  db.pragma('journal_mode = WAL');
  db.pragma('synchronous = FULL');
  db.pragma('foreign_keys = ON');
  db.pragma('busy_timeout = 5000');
  migrate(db, migrations, owner);
  return db;
}

export function migrate(db: Db, migrations: readonly string[], owner: string): number {
  db.exec('CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, applied_at TEXT NOT NULL)');
  const current = (db.prepare('SELECT COALESCE(MAX(version), 0) AS v FROM schema_migrations').get() as { v: number }).v;
  if (current > migrations.length) {
    throw new Error(`database schema version ${current} is newer than this ${owner} knows (${migrations.length}); refusing to run an older ${owner} on it`);
  }
  for (let v = current + 1; v <= migrations.length; v++) {
    db.transaction(() => {
      db.exec(migrations[v - 1]!);
      db.prepare('INSERT INTO schema_migrations (version, applied_at) VALUES (?, ?)').run(v, new Date().toISOString());
    })();
  }
  return migrations.length;
}
