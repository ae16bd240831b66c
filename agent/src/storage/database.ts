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
];

/** The agent database (WAL, synchronous=FULL on every open; see shared/src/sqlite.ts). */
export function openDatabase(file: string): Db {
  return openShared(file, MIGRATIONS, 'agent');
}
