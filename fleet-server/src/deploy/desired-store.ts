import type { Db } from '../../../shared/src/sqlite.js';

/** One signed entry of a device's desired state (table device_desired). */
export interface DesiredEntry {
  deviceId: string;
  model: string;
  version: number;
  sha256: string;
  size: number;
  manifest: Record<string, unknown> | null;
  deployment: number;
  /** ISO-8601 UTC. */
  expires: string;
  rolloutId: string | null;
  signature: string;
  /** A signed tombstone: the device removes the model (a rollout rolling back a first install). */
  removed: boolean;
  updatedAt: string;
}

interface EntryRow {
  device_id: string;
  model: string;
  version: number;
  sha256: string;
  size: number;
  manifest: string | null;
  deployment: number;
  expires: string;
  rollout_id: string | null;
  signature: string;
  removed: number;
  updated_at: string;
}

function toEntry(r: EntryRow): DesiredEntry {
  return {
    deviceId: r.device_id, model: r.model, version: r.version, sha256: r.sha256, size: r.size,
    manifest: r.manifest === null ? null : (JSON.parse(r.manifest) as Record<string, unknown>),
    deployment: r.deployment, expires: r.expires, rolloutId: r.rollout_id, signature: r.signature, removed: r.removed === 1, updatedAt: r.updated_at,
  };
}

/**
 * The desired-state tables of migration 3 (device_desired, desired_revision, fleet_counters). Synchronous; the
 * Deployer groups calls into one transaction per change, so a counter, an entry and the revision that
 * publishes it commit together.
 */
export interface DesiredStore {
  /** The next fleet-wide deployment counter (≥ 1, never reused). Call inside the transaction that stores it. */
  nextDeployment(): number;
  upsert(entry: DesiredEntry): void;
  /** True when there was an entry to remove. */
  remove(deviceId: string, model: string): boolean;
  entries(deviceId: string): DesiredEntry[];
  entry(deviceId: string, model: string): DesiredEntry | undefined;
  /** Bumps the device's revision (creating it at 1) and marks it unpublished; returns the new revision. */
  bumpRevision(deviceId: string): number;
  revision(deviceId: string): { revision: number; publishedAt: string | null } | undefined;
  /** Records that `revision` went out; a no-op when a newer revision was made meanwhile. */
  markPublished(deviceId: string, revision: number, at: string): void;
  /** Devices whose current revision has not been published (a crash or a failed publish in between). */
  unpublished(): string[];
  /** Devices that have a desired message (a revision), for republishing after a maintenance-window change. */
  devicesWithRevision(): string[];
  /** Entries that expire at or before `iso`. */
  expiringBy(iso: string): DesiredEntry[];
  /** The thresholds JSON a rollout under way sends its devices, or undefined for an unknown or finished rollout. */
  rolloutThresholds(rolloutId: string): Record<string, unknown> | undefined;
}

export function createDesiredStore(db: Db): DesiredStore {
  const counter = db.prepare<[], { value: number }>("UPDATE fleet_counters SET value = value + 1 WHERE name = 'deployment' RETURNING value");
  const upsert = db.prepare(
    `INSERT INTO device_desired (device_id, model, version, sha256, size, manifest, deployment, expires, rollout_id, signature, removed, updated_at)
     VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
     ON CONFLICT (device_id, model) DO UPDATE SET version = excluded.version, sha256 = excluded.sha256, size = excluded.size,
       manifest = excluded.manifest, deployment = excluded.deployment, expires = excluded.expires, rollout_id = excluded.rollout_id,
       signature = excluded.signature, removed = excluded.removed, updated_at = excluded.updated_at`,
  );
  const remove = db.prepare('DELETE FROM device_desired WHERE device_id = ? AND model = ?');
  const entries = db.prepare<[string], EntryRow>('SELECT * FROM device_desired WHERE device_id = ? ORDER BY model');
  const entry = db.prepare<[string, string], EntryRow>('SELECT * FROM device_desired WHERE device_id = ? AND model = ?');
  const bump = db.prepare<[string], { revision: number }>(
    `INSERT INTO desired_revision (device_id, revision, published_at) VALUES (?, 1, NULL)
     ON CONFLICT (device_id) DO UPDATE SET revision = revision + 1, published_at = NULL RETURNING revision`,
  );
  const revision = db.prepare<[string], { revision: number; published_at: string | null }>('SELECT revision, published_at FROM desired_revision WHERE device_id = ?');
  const published = db.prepare('UPDATE desired_revision SET published_at = ? WHERE device_id = ? AND revision = ?');
  const unpublished = db.prepare<[], { device_id: string }>('SELECT device_id FROM desired_revision WHERE published_at IS NULL ORDER BY device_id');
  const withRevision = db.prepare<[], { device_id: string }>('SELECT device_id FROM desired_revision ORDER BY device_id');
  const expiring = db.prepare<[string], EntryRow>('SELECT * FROM device_desired WHERE expires <= ? ORDER BY device_id, model');
  // Only a rollout still under way sets thresholds: a finished one's must not override a running one's.
  const thresholds = db.prepare<[string], { thresholds: string }>(
    "SELECT thresholds FROM rollouts WHERE id = ? AND state IN ('scheduled', 'running', 'paused', 'halted')",
  );

  return {
    nextDeployment: () => {
      const row = counter.get();
      if (!row) throw new Error("fleet_counters has no 'deployment' row (migration 3 not applied?)");
      return row.value;
    },
    upsert: (e) => {
      upsert.run(e.deviceId, e.model, e.version, e.sha256, e.size, e.manifest === null ? null : JSON.stringify(e.manifest), e.deployment, e.expires, e.rolloutId, e.signature, e.removed ? 1 : 0, e.updatedAt);
    },
    remove: (deviceId, model) => remove.run(deviceId, model).changes > 0,
    entries: (deviceId) => entries.all(deviceId).map(toEntry),
    entry: (deviceId, model) => {
      const row = entry.get(deviceId, model);
      return row && toEntry(row);
    },
    bumpRevision: (deviceId) => bump.get(deviceId)!.revision,
    revision: (deviceId) => {
      const row = revision.get(deviceId);
      return row && { revision: row.revision, publishedAt: row.published_at };
    },
    markPublished: (deviceId, rev, at) => {
      published.run(at, deviceId, rev);
    },
    unpublished: () => unpublished.all().map((r) => r.device_id),
    devicesWithRevision: () => withRevision.all().map((r) => r.device_id),
    expiringBy: (iso) => expiring.all(iso).map(toEntry),
    rolloutThresholds: (rolloutId) => {
      const row = thresholds.get(rolloutId);
      return row && (JSON.parse(row.thresholds) as Record<string, unknown>);
    },
  };
}
