import { Cron } from 'croner';
import type { Db } from '../../../shared/src/sqlite.js';

/** When a device may activate a staged model: a cron start and a duration (DESIGN §3.4). */
export interface WindowSpec {
  cron: string;
  /** 1–1440. */
  durationMinutes: number;
}

/** One row of maintenance_windows: for one device, or for every device with a tag. */
export interface MaintenanceWindow extends WindowSpec {
  id: number;
  deviceId: string | null;
  tag: { key: string; value: string } | null;
  createdAt: string;
}

export type MaintenanceWindowInput = WindowSpec & ({ deviceId: string; tag?: undefined } | { tag: { key: string; value: string }; deviceId?: undefined });

interface WindowRow {
  id: number;
  device_id: string | null;
  tag_key: string | null;
  tag_value: string | null;
  cron: string;
  duration_minutes: number;
  created_at: string;
}

function toWindow(r: WindowRow): MaintenanceWindow {
  return {
    id: r.id, deviceId: r.device_id, tag: r.tag_key === null ? null : { key: r.tag_key, value: r.tag_value ?? '' },
    cron: r.cron, durationMinutes: r.duration_minutes, createdAt: r.created_at,
  };
}

/**
 * Why a cron expression is unusable, or null when it is fine. Parsed with croner, the library the agent
 * schedules with too, so an expression accepted here is one the device understands; one that never fires
 * (30 February) is refused as well, since its window would never open.
 */
export function cronProblem(expr: string): string | null {
  try {
    const next = new Cron(expr).nextRun();
    return next === null ? 'it never fires' : null;
  } catch (err) {
    return (err as Error).message;
  }
}

export interface MaintenanceWindows {
  list(): MaintenanceWindow[];
  /** Replaces every window in one transaction. */
  replace(windows: readonly MaintenanceWindowInput[], now: string): void;
  /** The window that applies to a device: its own row first, then the first (lowest id) tag row it matches. */
  windowFor(device: { id: string; tags: Record<string, string> }): WindowSpec | null;
}

export function createMaintenanceWindows(db: Db): MaintenanceWindows {
  const all = db.prepare<[], WindowRow>('SELECT * FROM maintenance_windows ORDER BY id');
  const forDevice = db.prepare<[string], WindowRow>('SELECT * FROM maintenance_windows WHERE device_id = ? ORDER BY id LIMIT 1');
  const tagRows = db.prepare<[], WindowRow>('SELECT * FROM maintenance_windows WHERE tag_key IS NOT NULL ORDER BY id');
  const clear = db.prepare('DELETE FROM maintenance_windows');
  const insert = db.prepare('INSERT INTO maintenance_windows (device_id, tag_key, tag_value, cron, duration_minutes, created_at) VALUES (?, ?, ?, ?, ?, ?)');
  const replace = db.transaction((windows: readonly MaintenanceWindowInput[], now: string) => {
    clear.run();
    for (const w of windows) insert.run(w.deviceId ?? null, w.tag?.key ?? null, w.tag?.value ?? null, w.cron, w.durationMinutes, now);
  });

  return {
    list: () => all.all().map(toWindow),
    replace: (windows, now) => replace(windows, now),
    windowFor(device) {
      const own = forDevice.get(device.id);
      const row = own ?? tagRows.all().find((r) => r.tag_key !== null && Object.hasOwn(device.tags, r.tag_key) && device.tags[r.tag_key] === r.tag_value);
      return row ? { cron: row.cron, durationMinutes: row.duration_minutes } : null;
    },
  };
}
