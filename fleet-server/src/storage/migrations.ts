/**
 * The fleet server's SQLite schema as numbered migrations (applied by shared/src/sqlite.ts); never edit one
 * that has shipped, append a new one. Times are ISO-8601 UTC text; JSON columns hold validated documents.
 */
export const FLEET_MIGRATIONS: readonly string[] = [
  // 1: operators, enrollment, devices, ingest, registry.
  `CREATE TABLE operator_tokens (
     id TEXT PRIMARY KEY,
     token_hash TEXT NOT NULL UNIQUE,      -- sha256 hex of the token; the token itself is never stored
     name TEXT NOT NULL,
     created_at TEXT NOT NULL,
     revoked_at TEXT
   );
   CREATE TABLE enrollment_tokens (
     token_hash TEXT PRIMARY KEY,          -- sha256 hex of the one-time token
     tags TEXT NOT NULL,                   -- JSON object of string → string
     created_at TEXT NOT NULL,
     expires_at TEXT NOT NULL,
     used_at TEXT,
     device_id TEXT
   );
   CREATE TABLE devices (
     id TEXT PRIMARY KEY,
     secret_hash TEXT NOT NULL,            -- PBKDF2-SHA512 in Mosquitto's $7$ format
     tags TEXT NOT NULL,
     enrolled_at TEXT NOT NULL,
     revoked_at TEXT,
     online INTEGER NOT NULL DEFAULT 0,
     last_seen TEXT,
     reported TEXT,                        -- JSON of the last state message
     last_seq INTEGER NOT NULL DEFAULT 0   -- highest seq stored
   );
   -- Exactly-once ingest: a message is stored only if its (device, seq) is new.
   CREATE TABLE received (
     device_id TEXT NOT NULL,
     seq INTEGER NOT NULL,
     kind TEXT NOT NULL,
     received_at TEXT NOT NULL,
     PRIMARY KEY (device_id, seq)
   ) WITHOUT ROWID;
   CREATE TABLE model_points (
     device_id TEXT NOT NULL,
     seq INTEGER NOT NULL,
     model TEXT NOT NULL,
     version INTEGER NOT NULL,
     window_start TEXT NOT NULL,
     window_end TEXT NOT NULL,
     requests INTEGER NOT NULL,
     failures INTEGER NOT NULL,
     p50 REAL NOT NULL, p95 REAL NOT NULL, p99 REAL NOT NULL,
     latency_hist TEXT NOT NULL,           -- sparse histogram JSON (shared/src/telemetry/histogram.ts)
     detail TEXT NOT NULL,                 -- the rest of the point: queue time, batch sizes, score bins, classes
     PRIMARY KEY (device_id, seq, model, version)
   );
   CREATE INDEX model_points_by_window ON model_points (device_id, model, window_end);
   CREATE TABLE system_points (
     device_id TEXT NOT NULL,
     seq INTEGER NOT NULL,
     window_end TEXT NOT NULL,
     data TEXT NOT NULL,
     PRIMARY KEY (device_id, seq)
   );
   CREATE INDEX system_points_by_window ON system_points (device_id, window_end);
   CREATE TABLE events (
     device_id TEXT NOT NULL,
     seq INTEGER NOT NULL,
     ts TEXT NOT NULL,
     kind TEXT NOT NULL,
     severity TEXT NOT NULL,
     message TEXT NOT NULL,
     data TEXT NOT NULL,
     received_at TEXT NOT NULL,
     PRIMARY KEY (device_id, seq)
   );
   CREATE INDEX events_by_time ON events (device_id, ts);
   CREATE TABLE cmd_results (
     device_id TEXT NOT NULL,
     seq INTEGER NOT NULL,
     id TEXT NOT NULL,
     ok INTEGER NOT NULL,
     body TEXT NOT NULL,
     received_at TEXT NOT NULL,
     PRIMARY KEY (device_id, seq)
   );
   CREATE TABLE artifacts (
     sha256 TEXT PRIMARY KEY,
     size INTEGER NOT NULL,
     created_at TEXT NOT NULL
   );
   CREATE TABLE model_versions (
     name TEXT NOT NULL,
     version INTEGER NOT NULL,
     sha256 TEXT NOT NULL REFERENCES artifacts (sha256),
     size INTEGER NOT NULL,
     manifest TEXT,                        -- validated manifest JSON, or NULL for a bare ONNX file
     signature TEXT NOT NULL,              -- base64 ed25519 over modelStatement(name, version, sha256)
     created_at TEXT NOT NULL,
     PRIMARY KEY (name, version)
   );`,
  // 2: ingest ordering and retention. state_seq is the seq of the state message devices.online/reported come
  // from, so an older state delivered late cannot overwrite a newer one. pruned_seq is the highest seq whose
  // `received` row retention deleted: a message at or below it is a duplicate of data already aged out.
  `ALTER TABLE devices ADD COLUMN state_seq INTEGER NOT NULL DEFAULT 0;
   ALTER TABLE devices ADD COLUMN pruned_seq INTEGER NOT NULL DEFAULT 0;
   CREATE INDEX received_by_time ON received (received_at);`,
];
