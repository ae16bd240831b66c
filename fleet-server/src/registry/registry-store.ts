import type { Db } from '../../../shared/src/sqlite.js';
import { fail } from '../errors.js';
import { runningKey, type ModelVersionRecord } from './model-version.js';

/**
 * The registry's rows in the fleet database (tables artifacts and model_versions, schema in
 * storage/migrations.ts). Every method is synchronous: callers rely on that to keep "place the artifact
 * file" and "insert the row", or "delete the row" and "unlink the file", free of interleaving.
 */
export interface RegistryStore {
  get(name: string, version: number): ModelVersionRecord | undefined;
  /** Versions of one model, ascending. */
  listVersions(name: string): ModelVersionRecord[];
  /** Every model name with its versions ascending, names sorted. */
  listModels(): Array<{ name: string; versions: number[] }>;
  /** Inserts the artifact row (when new) and the version in one transaction; FLEET_MODEL_EXISTS on a duplicate. */
  insert(record: ModelVersionRecord): void;
  /**
   * Deletes a version unless a device runs it (FLEET_MODEL_IN_USE), in one transaction. Returns undefined when
   * there is no such version; `artifactUnreferenced` is true when no other version points at the artifact,
   * whose row is then deleted too (the caller removes the file).
   */
  delete(name: string, version: number): { sha256: string; artifactUnreferenced: boolean } | undefined;
  isArtifactReferenced(sha256: string): boolean;
  /** name@version → ids of non-revoked devices whose last reported state lists it. */
  runningOn(): Map<string, string[]>;
}

interface VersionRow {
  name: string;
  version: number;
  sha256: string;
  size: number;
  manifest: string | null;
  signature: string;
  created_at: string;
}

function toRecord(row: VersionRow): ModelVersionRecord {
  return {
    name: row.name,
    version: row.version,
    sha256: row.sha256,
    size: row.size,
    manifest: row.manifest === null ? null : (JSON.parse(row.manifest) as Record<string, unknown>),
    signature: row.signature,
    createdAt: row.created_at,
  };
}

/** Reads `{models: [{name, version}]}` out of a device's stored state; anything malformed lists nothing. */
function reportedModels(reported: string): Array<{ name: string; version: number }> {
  let state: unknown;
  try {
    state = JSON.parse(reported);
  } catch {
    return [];
  }
  const models = (state as { models?: unknown } | null)?.models;
  if (!Array.isArray(models)) return [];
  return models.filter(
    (m): m is { name: string; version: number } =>
      typeof m === 'object' && m !== null && typeof m.name === 'string' && Number.isInteger(m.version),
  );
}

export function createRegistryStore(db: Db): RegistryStore {
  const selectOne = db.prepare<[string, number], VersionRow>('SELECT * FROM model_versions WHERE name = ? AND version = ?');
  const selectByName = db.prepare<[string], VersionRow>('SELECT * FROM model_versions WHERE name = ? ORDER BY version');
  const selectAll = db.prepare<[], { name: string; version: number }>('SELECT name, version FROM model_versions ORDER BY name, version');
  const insertArtifact = db.prepare('INSERT OR IGNORE INTO artifacts (sha256, size, created_at) VALUES (?, ?, ?)');
  const insertVersion = db.prepare(
    'INSERT INTO model_versions (name, version, sha256, size, manifest, signature, created_at) VALUES (?, ?, ?, ?, ?, ?, ?)',
  );
  const deleteVersion = db.prepare('DELETE FROM model_versions WHERE name = ? AND version = ?');
  const countRefs = db.prepare<[string], { n: number }>('SELECT COUNT(*) AS n FROM model_versions WHERE sha256 = ?');
  const deleteArtifact = db.prepare('DELETE FROM artifacts WHERE sha256 = ?');
  const selectReported = db.prepare<[], { id: string; reported: string }>(
    'SELECT id, reported FROM devices WHERE revoked_at IS NULL AND reported IS NOT NULL ORDER BY id',
  );

  function runningOn(): Map<string, string[]> {
    const index = new Map<string, string[]>();
    for (const row of selectReported.all()) {
      for (const m of reportedModels(row.reported)) {
        const key = runningKey(m.name, m.version);
        const ids = index.get(key) ?? [];
        if (!ids.includes(row.id)) ids.push(row.id);
        index.set(key, ids);
      }
    }
    return index;
  }

  const insertTx = db.transaction((r: ModelVersionRecord) => {
    insertArtifact.run(r.sha256, r.size, r.createdAt);
    insertVersion.run(r.name, r.version, r.sha256, r.size, r.manifest === null ? null : JSON.stringify(r.manifest), r.signature, r.createdAt);
  });

  const deleteTx = db.transaction((name: string, version: number) => {
    const row = selectOne.get(name, version);
    if (!row) return undefined;
    const devices = runningOn().get(runningKey(name, version)) ?? [];
    if (devices.length > 0) {
      throw fail('FLEET_MODEL_IN_USE', `${name}@${version} is running on ${devices.length} device(s): ${devices.slice(0, 10).join(', ')}${devices.length > 10 ? ', …' : ''}`);
    }
    deleteVersion.run(name, version);
    const unreferenced = countRefs.get(row.sha256)!.n === 0;
    if (unreferenced) deleteArtifact.run(row.sha256);
    return { sha256: row.sha256, artifactUnreferenced: unreferenced };
  });

  return {
    get: (name, version) => {
      const row = selectOne.get(name, version);
      return row ? toRecord(row) : undefined;
    },
    listVersions: (name) => selectByName.all(name).map(toRecord),
    listModels: () => {
      const models = new Map<string, number[]>();
      for (const { name, version } of selectAll.all()) {
        const versions = models.get(name);
        if (versions) versions.push(version);
        else models.set(name, [version]);
      }
      return [...models].map(([name, versions]) => ({ name, versions }));
    },
    insert: (record) => {
      try {
        insertTx(record);
      } catch (err) {
        if ((err as { code?: string }).code === 'SQLITE_CONSTRAINT_PRIMARYKEY') {
          throw fail('FLEET_MODEL_EXISTS', `${record.name}@${record.version} already exists; versions are immutable, push a new version`);
        }
        throw err;
      }
    },
    delete: (name, version) => deleteTx(name, version),
    isArtifactReferenced: (sha256) => countRefs.get(sha256)!.n > 0,
    runningOn,
  };
}
