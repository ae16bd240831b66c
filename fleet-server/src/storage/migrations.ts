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
  // 3: safe updates (issue 5). device_desired holds what each device should run, one row per (device, model),
  // each entry signed for that device (shared/src/signing.ts deploymentStatement); desired_revision numbers the
  // retained desired messages per device. fleet_counters.deployment is the fleet-wide monotonic deployment
  // counter. rollouts/rollout_devices are the rollout engine's (fleet-server/src/rollouts); commands the cmd
  // topic's (fleet-server/src/deploy/commands.ts); maintenance_windows restrict activation per device or tag.
  `CREATE TABLE fleet_counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
   INSERT INTO fleet_counters (name, value) VALUES ('deployment', 0);
   CREATE TABLE device_desired (
     device_id TEXT NOT NULL,
     model TEXT NOT NULL,
     version INTEGER NOT NULL,
     sha256 TEXT NOT NULL,
     size INTEGER NOT NULL,
     manifest TEXT,
     deployment INTEGER NOT NULL,
     expires TEXT NOT NULL,
     rollout_id TEXT,
     signature TEXT NOT NULL,
     removed INTEGER NOT NULL DEFAULT 0,   -- 1: a signed tombstone (the device must remove the model)
     updated_at TEXT NOT NULL,
     PRIMARY KEY (device_id, model)
   );
   CREATE TABLE desired_revision (device_id TEXT PRIMARY KEY, revision INTEGER NOT NULL, published_at TEXT);
   CREATE TABLE rollouts (
     id TEXT PRIMARY KEY,
     model TEXT NOT NULL,
     version INTEGER NOT NULL,
     target TEXT NOT NULL,                 -- JSON {deviceIds: string[], selector: {tag: value}}
     stages TEXT NOT NULL,                 -- JSON number[] of cumulative percentages, last = 100
     min_devices INTEGER NOT NULL,
     max_failure_pct REAL NOT NULL,
     thresholds TEXT NOT NULL,             -- JSON Thresholds sent to the devices (probation, error rate, latency)
     schedule TEXT,                        -- cron expression of a scheduled start, or NULL
     state TEXT NOT NULL,
     current_stage INTEGER NOT NULL DEFAULT 0,
     reason TEXT,
     created_at TEXT NOT NULL,
     started_at TEXT,
     updated_at TEXT NOT NULL,
     finished_at TEXT
   );
   CREATE TABLE rollout_devices (
     rollout_id TEXT NOT NULL REFERENCES rollouts (id),
     device_id TEXT NOT NULL,
     stage INTEGER NOT NULL,
     state TEXT NOT NULL,
     previous_version INTEGER,
     reason TEXT,
     detail TEXT,
     updated_at TEXT NOT NULL,
     PRIMARY KEY (rollout_id, device_id)
   );
   CREATE INDEX rollout_devices_by_device ON rollout_devices (device_id);
   CREATE TABLE commands (
     id TEXT PRIMARY KEY,
     device_id TEXT NOT NULL,
     kind TEXT NOT NULL,
     args TEXT NOT NULL,
     state TEXT NOT NULL,                  -- sent | ok | failed | timed_out
     created_at TEXT NOT NULL,
     deadline TEXT NOT NULL,
     finished_at TEXT,
     result TEXT                           -- JSON {result, error} from cmd/result
   );
   CREATE INDEX commands_by_device ON commands (device_id, created_at);
   CREATE TABLE maintenance_windows (
     id INTEGER PRIMARY KEY AUTOINCREMENT,
     device_id TEXT,                       -- one device, or
     tag_key TEXT, tag_value TEXT,         -- every device with this tag
     cron TEXT NOT NULL,
     duration_minutes INTEGER NOT NULL,
     created_at TEXT NOT NULL,
     CHECK ((device_id IS NULL) <> (tag_key IS NULL))
   );`,
];
