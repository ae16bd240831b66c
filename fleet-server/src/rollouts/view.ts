import { Cron } from 'croner';
import type { Thresholds } from '../../../shared/src/mqtt/messages.js';
import { DEVICE_STATES, type DeviceState, type RolloutState } from './plan.js';
import type { RolloutDeviceRecord, RolloutRecord, RolloutTarget } from './store.js';

export type StateCounts = Record<DeviceState, number>;

export interface RolloutStageView {
  index: number;
  /** Cumulative percentage of the target this stage reaches. */
  percent: number;
  /** Devices taken by (or, while waiting, planned for) this stage. */
  devices: number;
  counts: StateCounts;
}

export interface RolloutDeviceView {
  deviceId: string;
  stage: number;
  state: DeviceState;
  previousVersion: number | null;
  reason: string | null;
  detail: string | null;
  updatedAt: string;
}

/** A rollout as GET /rollouts/{id} shows it (docs/fleet-api.md "Rollouts"). */
export interface RolloutView {
  id: string;
  model: string;
  version: number;
  state: RolloutState;
  reason: string | null;
  currentStage: number;
  stages: RolloutStageView[];
  devices: RolloutDeviceView[];
  target: RolloutTarget;
  maxFailurePct: number;
  minDevices: number;
  thresholds: Thresholds;
  schedule: string | null;
  /** A scheduled rollout: when it starts (the schedule's next fire time after creation); otherwise null. */
  startsAt: string | null;
  createdAt: string;
  startedAt: string | null;
  updatedAt: string;
  finishedAt: string | null;
}

/** A rollout in GET /rollouts: the same without the per-device list, with the total counts instead. */
export type RolloutSummary = Omit<RolloutView, 'devices'> & { deviceCount: number; counts: StateCounts };

export function countStates(rows: readonly RolloutDeviceRecord[]): StateCounts {
  const counts = Object.fromEntries(DEVICE_STATES.map((s) => [s, 0])) as StateCounts;
  for (const d of rows) counts[d.state]++;
  return counts;
}

/** When a scheduled rollout starts: the schedule's first fire time after the rollout was created. */
export function scheduledStart(r: Pick<RolloutRecord, 'schedule' | 'createdAt'>): Date | null {
  if (r.schedule === null) return null;
  return new Cron(r.schedule).nextRun(new Date(r.createdAt));
}

function base(r: RolloutRecord, rows: readonly RolloutDeviceRecord[]): Omit<RolloutView, 'devices'> {
  return {
    id: r.id, model: r.model, version: r.version, state: r.state, reason: r.reason, currentStage: r.currentStage,
    stages: r.stages.map((percent, index) => {
      const inStage = rows.filter((d) => d.stage === index);
      return { index, percent, devices: inStage.length, counts: countStates(inStage) };
    }),
    target: r.target, maxFailurePct: r.maxFailurePct, minDevices: r.minDevices, thresholds: r.thresholds, schedule: r.schedule,
    startsAt: r.state === 'scheduled' ? (scheduledStart(r)?.toISOString() ?? null) : null,
    createdAt: r.createdAt, startedAt: r.startedAt, updatedAt: r.updatedAt, finishedAt: r.finishedAt,
  };
}

export function rolloutView(r: RolloutRecord, rows: readonly RolloutDeviceRecord[]): RolloutView {
  return {
    ...base(r, rows),
    devices: rows.map((d) => ({ deviceId: d.deviceId, stage: d.stage, state: d.state, previousVersion: d.previousVersion, reason: d.reason, detail: d.detail, updatedAt: d.updatedAt })),
  };
}

export function rolloutSummary(r: RolloutRecord, rows: readonly RolloutDeviceRecord[]): RolloutSummary {
  return { ...base(r, rows), deviceCount: rows.length, counts: countStates(rows) };
}
