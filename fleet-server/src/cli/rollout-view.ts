import type { Thresholds } from '../../../shared/src/mqtt/messages.js';
import { details, formatTags, table } from './output.js';

/**
 * The rollout as the fleet's REST API returns it (GET /api/v1/rollouts/{id}, docs/fleet-api.md) and how the CLI
 * shows it. Stage indexes are 0-based on the wire and shown 1-based ("stage 1 of 3").
 */

/**
 * Per-device states of a rollout, in the order of the update machine (columns of the stage table): `waiting`
 * for a later stage, `pending` once its desired state names the new version, then the agent's own steps.
 */
export const ROLLOUT_DEVICE_STATES = [
  'waiting', 'pending', 'downloading', 'verifying', 'staging', 'activating', 'probation', 'committed', 'failed', 'rolling_back', 'rolled_back',
] as const;
export type RolloutDeviceState = (typeof ROLLOUT_DEVICE_STATES)[number];

export type RolloutState = 'scheduled' | 'running' | 'paused' | 'halted' | 'completed' | 'aborted' | 'rolled_back';

/**
 * Where `watch` stops with a failure. `halted` is not final on the server (the engine is returning the touched
 * devices to their previous version, then marks the rollout rolled_back), but it no longer moves forward.
 */
export const FAILED_ROLLOUT_STATES: ReadonlySet<string> = new Set(['halted', 'aborted', 'rolled_back']);

export interface RolloutStage {
  index: number;
  percent: number;
  devices: number;
  counts: Partial<Record<RolloutDeviceState, number>>;
}

export interface RolloutDevice {
  deviceId: string;
  stage: number;
  state: RolloutDeviceState;
  previousVersion: number | null;
  reason: string | null;
  detail: string | null;
  updatedAt: string;
}

export interface Rollout {
  id: string;
  model: string;
  version: number;
  state: RolloutState;
  reason: string | null;
  currentStage: number;
  stages: RolloutStage[];
  devices: RolloutDevice[];
  target: { deviceIds?: string[]; selector?: Record<string, string> };
  maxFailurePct: number;
  minDevices: number;
  thresholds: Thresholds;
  schedule: string | null;
  createdAt: string;
  startedAt: string | null;
  updatedAt: string;
  finishedAt: string | null;
}

/** GET /api/v1/rollouts lists rollouts without their device rows. */
export type RolloutSummary = Omit<Rollout, 'devices'> & { devices?: RolloutDevice[] };

const stageNo = (index: number) => String(index + 1);

export function stageLabel(r: Pick<Rollout, 'currentStage' | 'stages' | 'state'>): string {
  const total = r.stages?.length ?? 0;
  if (total === 0) return '-';
  return `${stageNo(Math.min(r.currentStage, total - 1))} of ${total}`;
}

export function targetText(target: Rollout['target'] | undefined): string {
  const parts: string[] = [];
  if (target?.deviceIds && target.deviceIds.length > 0) parts.push(`devices ${target.deviceIds.join(',')}`);
  if (target?.selector && Object.keys(target.selector).length > 0) parts.push(`selector ${formatTags(target.selector)}`);
  return parts.length === 0 ? 'all devices' : parts.join('; ');
}

const pct = (fraction: number) => `${Number((fraction * 100).toFixed(4))}%`;

export function thresholdsText(t: Thresholds | undefined): string {
  const parts: string[] = [];
  if (t?.probationSeconds !== undefined) parts.push(`${t.probationSeconds} s`);
  if (t?.probationRequests !== undefined) parts.push(`${t.probationRequests} requests`);
  const probation = parts.length > 0 ? `probation ${parts.join(' or ')}` : 'probation: device default';
  const limits: string[] = [];
  if (t?.maxErrorRate !== undefined) limits.push(`error rate ≤ ${pct(t.maxErrorRate)}`);
  if (t?.maxLatencyFactor !== undefined) limits.push(`p95 ≤ ${t.maxLatencyFactor}× previous`);
  if (t?.minRequests !== undefined) limits.push(`judged after ${t.minRequests} requests`);
  return limits.length > 0 ? `${probation}; ${limits.join(', ')}` : probation;
}

/** "3 committed, 1 failed" from summed stage counts; "-" when nothing is counted. */
export function progressText(stages: RolloutStage[] | undefined): string {
  const totals = new Map<string, number>();
  for (const s of stages ?? []) for (const [state, n] of Object.entries(s.counts ?? {})) totals.set(state, (totals.get(state) ?? 0) + (n ?? 0));
  const parts = ROLLOUT_DEVICE_STATES.filter((s) => (totals.get(s) ?? 0) > 0).map((s) => `${totals.get(s)} ${s}`);
  return parts.length === 0 ? '-' : parts.join(', ');
}

export function renderRolloutList(rollouts: RolloutSummary[]): string {
  return table(
    ['ID', 'MODEL', 'STATE', 'STAGE', 'DEVICES', 'PROGRESS', 'CREATED'],
    rollouts.map((r) => [
      r.id,
      `${r.model}@${r.version}`,
      r.state,
      stageLabel(r),
      String((r.stages ?? []).reduce((n, s) => n + (s.devices ?? 0), 0)),
      progressText(r.stages),
      r.createdAt,
    ]),
  );
}

export function renderStages(stages: RolloutStage[]): string {
  return table(
    ['STAGE', 'PERCENT', 'DEVICES', ...ROLLOUT_DEVICE_STATES.map((s) => s.toUpperCase())],
    stages.map((s) => [stageNo(s.index), `${s.percent}%`, String(s.devices), ...ROLLOUT_DEVICE_STATES.map((state) => String(s.counts?.[state] ?? 0))]),
  );
}

const why = (d: Pick<RolloutDevice, 'reason' | 'detail'>) => [d.reason, d.detail].filter((x) => x !== null && x !== undefined && x !== '').join(': ');

export function renderDevices(devices: RolloutDevice[]): string {
  return table(
    ['DEVICE', 'STAGE', 'STATE', 'PREVIOUS', 'UPDATED', 'REASON'],
    devices.map((d) => [d.deviceId, stageNo(d.stage), d.state, d.previousVersion === null ? '-' : String(d.previousVersion), d.updatedAt, why(d)]),
  );
}

export function renderRollout(r: Rollout): string {
  const head = details([
    ['rollout', r.id],
    ['model', `${r.model}@${r.version}`],
    ['state', r.reason ? `${r.state} (${r.reason})` : r.state],
    ['stage', `${stageLabel(r)}${r.stages.length > 0 ? ` (${r.stages.map((s) => `${s.percent}%`).join(', ')})` : ''}`],
    ['target', targetText(r.target)],
    ['halts at', `more than ${r.maxFailurePct}% failed devices in a stage; stages of at least ${r.minDevices} device(s)`],
    ['thresholds', thresholdsText(r.thresholds)],
    ['schedule', r.schedule ?? '-'],
    ['created', r.createdAt],
    ['started', r.startedAt ?? '-'],
    ['finished', r.finishedAt ?? '-'],
  ]);
  const stages = r.stages.length > 0 ? `\n\n${renderStages(r.stages)}` : '';
  const devices = r.devices.length > 0 ? `\n\n${renderDevices(r.devices)}` : '\n\nno devices selected yet';
  return `${head}${stages}${devices}`;
}

/**
 * What changed between two snapshots, one line each (the non-terminal `watch` output): the rollout's state and
 * stage, and every device whose state changed, in the order of their times, so a device's failure comes before
 * the halt it caused. The first snapshot reports everything as new ("-" before).
 */
export function changeLines(prev: Rollout | undefined, next: Rollout): string[] {
  const lines: Array<{ at: string; text: string }> = [];
  const push = (at: string, text: string) => lines.push({ at, text: `${at}  ${text}` });
  if (!prev || prev.state !== next.state || prev.reason !== next.reason) {
    push(next.updatedAt, `rollout ${next.id}  ${prev?.state ?? '-'} → ${next.state}${next.reason ? `  (${next.reason})` : ''}`);
  }
  if (next.stages.length > 0 && (!prev || prev.currentStage !== next.currentStage)) {
    const stage = next.stages[Math.min(next.currentStage, next.stages.length - 1)];
    push(next.updatedAt, `rollout ${next.id}  stage ${stageLabel(next)}${stage ? ` (${stage.percent}%, ${stage.devices} device(s))` : ''}`);
  }
  const before = new Map((prev?.devices ?? []).map((d) => [d.deviceId, d]));
  for (const d of next.devices) {
    const old = before.get(d.deviceId);
    if (old && old.state === d.state && old.stage === d.stage) continue;
    const reason = why(d);
    push(d.updatedAt, `${d.deviceId}  stage ${stageNo(d.stage)}  ${old?.state ?? '-'} → ${d.state}${reason ? `  (${reason})` : ''}`);
  }
  // ISO-8601 UTC times sort as strings; the sort is stable, so equal times keep rollout-then-device order.
  return lines.sort((a, b) => (a.at < b.at ? -1 : a.at > b.at ? 1 : 0)).map((l) => l.text);
}
