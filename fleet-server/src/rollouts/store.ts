import type { Thresholds } from '../../../shared/src/mqtt/messages.js';
import type { Db } from '../../../shared/src/sqlite.js';
import type { DeviceState, RolloutState } from './plan.js';

export interface RolloutTarget {
  deviceIds: string[];
  /** Tag → value; a device matches when it carries every pair. */
  selector: Record<string, string>;
}

/** One rollout (table rollouts). Times are ISO-8601 UTC. */
export interface RolloutRecord {
  id: string;
  model: string;
  version: number;
  target: RolloutTarget;
  /** Cumulative percentages, ascending, last = 100. */
  stages: number[];
  minDevices: number;
  maxFailurePct: number;
  thresholds: Thresholds;
  schedule: string | null;
  state: RolloutState;
  currentStage: number;
  reason: string | null;
  createdAt: string;
  startedAt: string | null;
  updatedAt: string;
  finishedAt: string | null;
}

/** One device of a rollout (table rollout_devices). */
export interface RolloutDeviceRecord {
  rolloutId: string;
  deviceId: string;
  /** The stage that took the device, or (state waiting) the stage it is planned for. */
  stage: number;
  state: DeviceState;
  /** The version it ran before (what a rollback returns it to), or null for none. */
  previousVersion: number | null;
  reason: string | null;
  detail: string | null;
  updatedAt: string;
}

interface RolloutRow {
  id: string;
  model: string;
  version: number;
  target: string;
  stages: string;
  min_devices: number;
  max_failure_pct: number;
  thresholds: string;
  schedule: string | null;
  state: string;
  current_stage: number;
  reason: string | null;
  created_at: string;
  started_at: string | null;
  updated_at: string;
  finished_at: string | null;
}

interface DeviceRow {
  rollout_id: string;
  device_id: string;
  stage: number;
  state: string;
  previous_version: number | null;
  reason: string | null;
  detail: string | null;
  updated_at: string;
}

function toRollout(r: RolloutRow): RolloutRecord {
  return {
    id: r.id, model: r.model, version: r.version, target: JSON.parse(r.target) as RolloutTarget, stages: JSON.parse(r.stages) as number[],
    minDevices: r.min_devices, maxFailurePct: r.max_failure_pct, thresholds: JSON.parse(r.thresholds) as Thresholds, schedule: r.schedule,
    state: r.state as RolloutState, currentStage: r.current_stage, reason: r.reason, createdAt: r.created_at, startedAt: r.started_at,
    updatedAt: r.updated_at, finishedAt: r.finished_at,
  };
}

function toDevice(r: DeviceRow): RolloutDeviceRecord {
  return {
    rolloutId: r.rollout_id, deviceId: r.device_id, stage: r.stage, state: r.state as DeviceState, previousVersion: r.previous_version,
    reason: r.reason, detail: r.detail, updatedAt: r.updated_at,
  };
}

export type RolloutPatch = Partial<Pick<RolloutRecord, 'state' | 'currentStage' | 'reason' | 'startedAt' | 'finishedAt'>>;
export type DevicePatch = Partial<Pick<RolloutDeviceRecord, 'stage' | 'state' | 'previousVersion' | 'reason' | 'detail'>>;

const ROLLOUT_COLUMNS: Record<keyof RolloutPatch, string> = {
  state: 'state', currentStage: 'current_stage', reason: 'reason', startedAt: 'started_at', finishedAt: 'finished_at',
};
const DEVICE_COLUMNS: Record<keyof DevicePatch, string> = {
  stage: 'stage', state: 'state', previousVersion: 'previous_version', reason: 'reason', detail: 'detail',
};

/** The rollout engine's tables; every method synchronous (the engine groups them into transactions). */
export interface RolloutStore {
  insert(rollout: RolloutRecord, devices: readonly RolloutDeviceRecord[]): void;
  get(id: string): RolloutRecord | undefined;
  /** Newest first. */
  list(): RolloutRecord[];
  /** Rollouts in any of these states, oldest first. */
  inStates(states: readonly RolloutState[]): RolloutRecord[];
  update(id: string, patch: RolloutPatch, now: string): void;
  devices(rolloutId: string): RolloutDeviceRecord[];
  updateDevice(rolloutId: string, deviceId: string, patch: DevicePatch, now: string): void;
  /** The device's rows in rollouts of `model`, newest rollout first. */
  forDevice(deviceId: string, model: string): { rollout: RolloutRecord; device: RolloutDeviceRecord }[];
  /** Rows of devices in `ids` that are in an unfinished rollout of `model` (the create-time conflict check). */
  unfinishedFor(model: string, ids: readonly string[], unfinished: readonly RolloutState[]): { rolloutId: string; deviceId: string }[];
  countByState(): Record<string, number>;
}

export function createRolloutStore(db: Db): RolloutStore {
  const insertRollout = db.prepare(
    `INSERT INTO rollouts (id, model, version, target, stages, min_devices, max_failure_pct, thresholds, schedule, state, current_stage, reason,
       created_at, started_at, updated_at, finished_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
  );
  const insertDevice = db.prepare(
    'INSERT INTO rollout_devices (rollout_id, device_id, stage, state, previous_version, reason, detail, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)',
  );
  const selectOne = db.prepare<[string], RolloutRow>('SELECT * FROM rollouts WHERE id = ?');
  const selectAll = db.prepare<[], RolloutRow>('SELECT * FROM rollouts ORDER BY created_at DESC, id DESC');
  const selectDevices = db.prepare<[string], DeviceRow>('SELECT * FROM rollout_devices WHERE rollout_id = ? ORDER BY stage, device_id');
  const selectForDevice = db.prepare<[string, string], RolloutRow & { d_stage: number; d_state: string; d_previous: number | null; d_reason: string | null; d_detail: string | null; d_updated: string }>(
    `SELECT r.*, d.stage AS d_stage, d.state AS d_state, d.previous_version AS d_previous, d.reason AS d_reason, d.detail AS d_detail, d.updated_at AS d_updated
     FROM rollout_devices d JOIN rollouts r ON r.id = d.rollout_id WHERE d.device_id = ? AND r.model = ? ORDER BY r.created_at DESC, r.id DESC`,
  );
  const counts = db.prepare<[], { state: string; n: number }>('SELECT state, COUNT(*) AS n FROM rollouts GROUP BY state');
  const insertTx = db.transaction((r: RolloutRecord, devices: readonly RolloutDeviceRecord[]) => {
    insertRollout.run(
      r.id, r.model, r.version, JSON.stringify(r.target), JSON.stringify(r.stages), r.minDevices, r.maxFailurePct, JSON.stringify(r.thresholds),
      r.schedule, r.state, r.currentStage, r.reason, r.createdAt, r.startedAt, r.updatedAt, r.finishedAt,
    );
    for (const d of devices) insertDevice.run(d.rolloutId, d.deviceId, d.stage, d.state, d.previousVersion, d.reason, d.detail, d.updatedAt);
  });

  const cache = new Map<string, ReturnType<typeof db.prepare<unknown[]>>>();
  const prepared = (sql: string) => {
    let stmt = cache.get(sql);
    if (!stmt) cache.set(sql, (stmt = db.prepare<unknown[]>(sql)));
    return stmt;
  };
  // Patches name only known columns (the maps above), so the SQL text is built from constants.
  const updateSql = (table: string, columns: Record<string, string>, patch: Record<string, unknown>, where: string) => {
    const keys = Object.keys(patch).filter((k) => Object.hasOwn(columns, k) && patch[k] !== undefined);
    return { sql: `UPDATE ${table} SET ${[...keys.map((k) => `${columns[k]} = ?`), 'updated_at = ?'].join(', ')} WHERE ${where}`, values: keys.map((k) => patch[k]) };
  };

  return {
    insert: (r, devices) => insertTx(r, devices),
    get: (id) => {
      const row = selectOne.get(id);
      return row && toRollout(row);
    },
    list: () => selectAll.all().map(toRollout),
    inStates: (states) =>
      db.prepare<string[], RolloutRow>(`SELECT * FROM rollouts WHERE state IN (${states.map(() => '?').join(', ')}) ORDER BY created_at, id`).all(...states).map(toRollout),
    update(id, patch, now) {
      const { sql, values } = updateSql('rollouts', ROLLOUT_COLUMNS, patch, 'id = ?');
      prepared(sql).run(...values, now, id);
    },
    devices: (rolloutId) => selectDevices.all(rolloutId).map(toDevice),
    updateDevice(rolloutId, deviceId, patch, now) {
      const { sql, values } = updateSql('rollout_devices', DEVICE_COLUMNS, patch, 'rollout_id = ? AND device_id = ?');
      prepared(sql).run(...values, now, rolloutId, deviceId);
    },
    forDevice: (deviceId, model) =>
      selectForDevice.all(deviceId, model).map((r) => ({
        rollout: toRollout(r),
        device: { rolloutId: r.id, deviceId, stage: r.d_stage, state: r.d_state as DeviceState, previousVersion: r.d_previous, reason: r.d_reason, detail: r.d_detail, updatedAt: r.d_updated },
      })),
    unfinishedFor(model, ids, unfinished) {
      if (ids.length === 0) return [];
      const rows = db
        .prepare<string[], { rollout_id: string; device_id: string }>(
          `SELECT d.rollout_id, d.device_id FROM rollout_devices d JOIN rollouts r ON r.id = d.rollout_id
           WHERE r.model = ? AND r.state IN (${unfinished.map(() => '?').join(', ')})`,
        )
        .all(model, ...unfinished);
      const wanted = new Set(ids);
      return rows.filter((r) => wanted.has(r.device_id)).map((r) => ({ rolloutId: r.rollout_id, deviceId: r.device_id }));
    },
    countByState: () => Object.fromEntries(counts.all().map((r) => [r.state, r.n])),
  };
}
