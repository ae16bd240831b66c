import { createHash } from 'node:crypto';
import type { UpdateState } from '../../../shared/src/mqtt/messages.js';

/**
 * The rollout engine's pure parts: states and the action table, stage math, device order, and how an agent's
 * update transition maps onto a rollout device. No I/O (test/unit can run them in milliseconds).
 */

export const ROLLOUT_STATES = ['scheduled', 'running', 'paused', 'halted', 'completed', 'aborted', 'rolled_back'] as const;
export type RolloutState = (typeof ROLLOUT_STATES)[number];

/** States in which the engine still has work: starting, advancing, watching a rollback. */
export const UNFINISHED_STATES: readonly RolloutState[] = ['scheduled', 'running', 'paused', 'halted'];

/**
 * A device in a rollout. `waiting`: not yet picked for a stage (its `stage` is only the plan). `pending`: its
 * desired state names the new version, no transition heard yet. Then the agent's own states up to
 * `committed`, or `failed` (failed before activation, or rolled back by the agent). `rolling_back` →
 * `rolled_back`: the fleet pointed it back at its previous version and it got there.
 */
export const DEVICE_STATES = [
  'waiting', 'pending', 'downloading', 'verifying', 'staging', 'activating', 'probation', 'committed', 'failed', 'rolling_back', 'rolled_back',
] as const;
export type DeviceState = (typeof DEVICE_STATES)[number];

/** Device states after which the device is no longer moving toward the new version by itself. */
export const SETTLED: readonly DeviceState[] = ['committed', 'failed'];
/** Device states in which the new version may not have become active yet (so a report of the old one means "still on it"). */
export const BEFORE_ACTIVATION: readonly DeviceState[] = ['pending', 'downloading', 'verifying', 'staging'];

export type RolloutAction = 'pause' | 'resume' | 'abort' | 'rollback';

/**
 * The operator actions as a table: from which states each is allowed and where it leads. `rollback` leads to
 * `halted` (devices rolling back), which the engine turns into `rolled_back` once every touched device is back.
 */
export const ACTIONS: { readonly [A in RolloutAction]: { from: readonly RolloutState[]; to: RolloutState } } = {
  pause: { from: ['running'], to: 'paused' },
  resume: { from: ['paused'], to: 'running' },
  // From halted too: a rollback waiting for a device that never returns must not block the model for ever.
  abort: { from: ['scheduled', 'running', 'paused', 'halted'], to: 'aborted' },
  rollback: { from: ['scheduled', 'running', 'paused', 'halted', 'completed'], to: 'halted' },
};

/** Why `stages` is unusable, or null: cumulative percentages, strictly ascending, each in (0, 100], ending at 100. */
export function stagesProblem(stages: readonly number[]): string | null {
  if (stages.length === 0) return 'at least one stage is needed';
  for (let i = 0; i < stages.length; i++) {
    const p = stages[i]!;
    if (!(p > 0 && p <= 100)) return `stage ${i} is ${p}%; each stage is a cumulative percentage in (0, 100]`;
    if (i > 0 && p <= stages[i - 1]!) return `stages must be strictly ascending (cumulative percentages): ${stages.join(', ')}`;
  }
  if (stages.at(-1) !== 100) return `the last stage must be 100 (all devices), not ${stages.at(-1)}`;
  return null;
}

/** Cumulative device count after each stage: min(N, max(minDevices, ceil(pct·N/100))). */
export function stageSizes(n: number, stages: readonly number[], minDevices: number): number[] {
  return stages.map((pct) => Math.min(n, Math.max(minDevices, Math.ceil((pct * n) / 100))));
}

/** Stable per-rollout position of a device: the same rollout always orders its devices the same way. */
export function orderKey(rolloutId: string, deviceId: string): string {
  return createHash('sha256').update(`${rolloutId}\n${deviceId}`).digest('hex');
}

/** Online devices first (an offline one would hold its stage up), then the stable hash order. */
export function orderDevices(rolloutId: string, devices: readonly { id: string; online: boolean }[]): string[] {
  return [...devices]
    .map((d) => ({ id: d.id, online: d.online, key: orderKey(rolloutId, d.id) }))
    .sort((a, b) => (a.online === b.online ? (a.key < b.key ? -1 : a.key > b.key ? 1 : 0) : a.online ? -1 : 1))
    .map((d) => d.id);
}

/**
 * Plans devices (in order) into stages after `afterStage`, `base` devices having been taken already: each goes
 * to the first stage whose cumulative size reaches its position (the last stage takes whatever is left).
 */
export function planStages(ordered: readonly string[], sizes: readonly number[], afterStage: number, base: number): Map<string, number> {
  const plan = new Map<string, number>();
  ordered.forEach((id, k) => {
    let at = afterStage + 1;
    while (at < sizes.length - 1 && sizes[at]! < base + k + 1) at++;
    plan.set(id, Math.min(at, sizes.length - 1));
  });
  return plan;
}

/**
 * Which waiting devices a stage starts with, and the plan for the rest. `ordered` are the waiting devices in
 * orderDevices order, `touched` how many devices earlier stages already took. The last stage takes everyone.
 */
export function pickStage(ordered: readonly string[], sizes: readonly number[], stage: number, touched: number): { picked: string[]; plan: Map<string, number> } {
  const last = stage >= sizes.length - 1;
  const take = last ? ordered.length : Math.max(0, sizes[stage]! - touched);
  const picked = ordered.slice(0, take);
  return { picked, plan: planStages(ordered.slice(take), sizes, stage, touched + picked.length) };
}

/**
 * Where an agent transition of the rollout's NEW version moves the device (null: no change). The agent's own
 * rolling_back is an intermediate step of its rollback; the device counts as failed once it reaches
 * rolled_back (or failed, before activation), keeping the agent's reason and detail.
 */
export function deviceStateFor(to: UpdateState): DeviceState | null {
  switch (to) {
    case 'downloading':
    case 'verifying':
    case 'staging':
    case 'activating':
    case 'probation':
    case 'committed':
      return to;
    case 'rolled_back':
    case 'failed':
      return 'failed';
    default:
      return null;
  }
}

/** True when the failures of one stage exceed the rollout's tolerance. */
export function overFailureThreshold(failed: number, stageSize: number, maxFailurePct: number): boolean {
  return stageSize > 0 && failed / stageSize > maxFailurePct / 100;
}
