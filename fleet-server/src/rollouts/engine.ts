import { randomBytes } from 'node:crypto';
import type { Logger } from 'pino';
import { UpdateTransitionSchema, type MessageOf, type Thresholds, type UpdateTransition } from '../../../shared/src/mqtt/messages.js';
import type { AgentTopicKind } from '../../../shared/src/mqtt/topics.js';
import type { Db } from '../../../shared/src/sqlite.js';
import type { Deployer } from '../deploy/deployer.js';
import { cronProblem } from '../deploy/maintenance.js';
import { fail, isFleetError } from '../errors.js';
import type { FleetMetrics } from '../metrics/fleet-metrics.js';
import { createRegistryStore } from '../registry/registry-store.js';
import { isoAt, type Clock } from '../storage/clock.js';
import type { DeviceRecord, DeviceStore } from '../storage/fleet-store.js';
import {
  ACTIONS, BEFORE_ACTIVATION, deviceStateFor, orderDevices, overFailureThreshold, pickStage, planStages, ROLLOUT_STATES, SETTLED, stageSizes,
  stagesProblem, UNFINISHED_STATES, type DeviceState, type RolloutAction,
} from './plan.js';
import { createRolloutStore, type DevicePatch, type RolloutDeviceRecord, type RolloutRecord, type RolloutStore } from './store.js';
import { rolloutSummary, rolloutView, scheduledStart, type RolloutSummary, type RolloutView } from './view.js';

/** The reason a pending device carries when its stage took it while it was offline. */
const OFFLINE_AT_START = 'offline-at-start';

export interface CreateRolloutInput {
  model: string;
  version: number;
  deviceIds?: string[];
  /** Tag → value; every pair must match. `{}` selects every device. */
  selector?: Record<string, string>;
  /** Cumulative percentages, ascending, ending at 100 (default [100]). */
  stages?: number[];
  /** Smallest stage size (default 1). */
  minDevices?: number;
  /** Halt when more than this share of a stage's devices failed, 0–100 (default 0: the first failure halts). */
  maxFailurePct?: number;
  thresholds?: Thresholds;
  /** Cron expression: the rollout starts at its next fire time instead of now. */
  schedule?: string;
}

export interface RolloutEngineDeps {
  db: Db;
  devices: DeviceStore;
  deployer: Deployer;
  clock: Clock;
  metrics: FleetMetrics;
  log: Logger;
  tickMs: number;
}

/**
 * Staged rollouts (DESIGN §4 "Rollouts"). Every decision is persisted (rollouts, rollout_devices) in the
 * transaction that makes it, so a restarted fleet continues from the database. Devices move on their agents'
 * update.transition events (onStored, called by the ingest after the event is stored); the rollout moves on
 * evaluate(), run right after each transition and by a timer (scheduled starts, offline devices, rollback
 * progress shown by reported state). All methods are synchronous; publishing desired state is the Deployer's.
 */
export interface RolloutEngine {
  create(input: CreateRolloutInput): RolloutView;
  /** FLEET_ROLLOUT_NOT_FOUND when absent. */
  get(id: string): RolloutView;
  list(): RolloutSummary[];
  /** The operator actions; FLEET_ROLLOUT_STATE when the rollout's state does not allow it (plan.ts ACTIONS). */
  act(id: string, action: RolloutAction): RolloutView;
  /** The ingest hook: called after each stored agent message; never throws. */
  onStored<K extends AgentTopicKind>(kind: K, deviceId: string, message: MessageOf<K>): void;
  /** Records one device transition (also used by onStored). */
  onTransition(deviceId: string, t: UpdateTransition): void;
  /** Re-evaluates every unfinished rollout (the timer's job). */
  tick(): void;
  /** The version the device ran before its latest rollout of `model` (null when unknown). */
  previousVersionOf(deviceId: string, model: string): number | null;
  start(): void;
  stop(): void;
}

/** The version of `model` the device last reported serving (active first, then ready), or null. */
export function reportedVersion(device: DeviceRecord | undefined, model: string): number | null {
  const models = device?.reported?.models;
  if (!Array.isArray(models)) return null;
  const mine = (models as { name?: unknown; version?: unknown; state?: unknown; active?: unknown }[]).filter((m) => m.name === model && Number.isInteger(m.version));
  // The agent flags the version its unversioned requests go to; older agents only say ready.
  const active = mine.find((m) => m.active === true) ?? mine.find((m) => m.state === 'active') ?? mine.filter((m) => m.state === 'ready').sort((a, b) => Number(b.version) - Number(a.version))[0];
  return active ? Number(active.version) : null;
}

function reportedAt(device: DeviceRecord | undefined): string | null {
  const ts = device?.reported?.ts;
  return typeof ts === 'string' && !Number.isNaN(Date.parse(ts)) ? new Date(ts).toISOString() : null;
}

export function createRolloutEngine(deps: RolloutEngineDeps): RolloutEngine {
  const { db, devices, deployer, clock, metrics } = deps;
  const log = deps.log.child({ component: 'rollouts' });
  const store: RolloutStore = createRolloutStore(db);
  const registry = createRegistryStore(db);
  const now = () => isoAt(clock.now());
  let timer: NodeJS.Timeout | undefined;
  let stopped = false;
  const soon = new Set<string>();
  let soonScheduled = false;

  metrics.setRolloutSource(() => ({ ...Object.fromEntries(ROLLOUT_STATES.map((s) => [s, 0])), ...store.countByState() }));

  const rolloutOf = (id: string): RolloutRecord => {
    const r = store.get(id);
    if (!r) throw fail('FLEET_ROLLOUT_NOT_FOUND', `no rollout ${id}`);
    return r;
  };

  function setDevice(r: RolloutRecord, d: RolloutDeviceRecord, patch: DevicePatch): void {
    store.updateDevice(r.id, d.deviceId, patch, now());
    if (patch.state !== undefined && patch.state !== d.state) metrics.rolloutDeviceTransitions.inc({ state: patch.state });
  }

  /** Points a device at the new version and records what it ran before. */
  function touchDevice(r: RolloutRecord, d: RolloutDeviceRecord, stage: number, online: boolean): void {
    const device = devices.get(d.deviceId);
    const previous = reportedVersion(device, r.model) ?? d.previousVersion;
    try {
      deployer.setDesired(d.deviceId, r.model, { version: r.version, rollout: r.id });
    } catch (err) {
      const code = isFleetError(err) ? err.code : 'FLEET_INTERNAL';
      setDevice(r, d, { stage, state: 'failed', previousVersion: previous, reason: code, detail: (err as Error).message.slice(0, 2000) });
      return;
    }
    // Already serving it (a same-version deployment is no change for the agent): nothing will be reported.
    const already = previous === r.version;
    const reason = already ? 'already-running' : online ? null : OFFLINE_AT_START;
    setDevice(r, d, { stage, state: already ? 'committed' : 'pending', previousVersion: previous, reason, detail: null });
  }

  function enterStage(r: RolloutRecord, stage: number): void {
    const rows = store.devices(r.id);
    const online = new Set(devices.list().filter((d) => d.online && d.revokedAt === null).map((d) => d.id));
    const waiting = rows.filter((d) => d.state === 'waiting');
    const ordered = orderDevices(r.id, waiting.map((d) => ({ id: d.deviceId, online: online.has(d.deviceId) })));
    const sizes = stageSizes(rows.length, r.stages, r.minDevices);
    const { picked, plan } = pickStage(ordered, sizes, stage, rows.length - waiting.length);
    const byId = new Map(rows.map((d) => [d.deviceId, d]));
    for (const id of picked) touchDevice(r, byId.get(id)!, stage, online.has(id));
    for (const [id, planned] of plan) if (byId.get(id)!.stage !== planned) setDevice(r, byId.get(id)!, { stage: planned });
    store.update(r.id, { currentStage: stage }, now());
    log.info({ rollout: r.id, stage, devices: picked.length }, 'rollout stage started');
  }

  /** Points every touched device back at its previous version (none: the model is removed). */
  function rollbackDevices(r: RolloutRecord): void {
    const online = new Set(devices.list().filter((d) => d.online).map((d) => d.id));
    for (const d of store.devices(r.id)) {
      if (d.state === 'waiting' || d.state === 'rolled_back') continue;
      // A device a newer rollout (or an operator) has taken over since is left to it: rolling it back would fight it.
      const current = deployer.entry(d.deviceId, r.model);
      if (current && !current.removed && current.rolloutId !== r.id) {
        setDevice(r, d, { state: 'rolled_back', reason: 'superseded', detail: `now deployed by ${current.rolloutId ?? 'an operator'} (version ${current.version}); not rolled back` });
        continue;
      }
      const prev = d.previousVersion;
      if (d.state !== 'rolling_back') {
        try {
          deployer.setDesired(d.deviceId, r.model, prev === null ? null : { version: prev, rollout: r.id });
        } catch (err) {
          log.error({ rollout: r.id, deviceId: d.deviceId, err: (err as Error).message }, 'cannot point a device back at its previous version');
          setDevice(r, d, { state: 'rolled_back', reason: isFleetError(err) ? err.code : 'FLEET_INTERNAL', detail: (err as Error).message.slice(0, 2000) });
          continue;
        }
      }
      const device = devices.get(d.deviceId);
      // Devices that never ran the new version are back already: failed ones (the agent kept or restored the
      // old one), pending ones that are offline (they get the old desired state on reconnect), ones that had
      // not activated and still report the old version, and ones that were already on this version.
      const back =
        d.state === 'failed' || prev === r.version || (d.state === 'pending' && !online.has(d.deviceId)) ||
        (BEFORE_ACTIVATION.includes(d.state) && reportedVersion(device, r.model) === prev);
      setDevice(r, d, back ? { state: 'rolled_back' } : { state: 'rolling_back' });
    }
  }

  /** Rolling-back devices whose reported state (sent after the rollback began) shows them on the previous version. */
  function checkRollingBack(r: RolloutRecord): void {
    for (const d of store.devices(r.id)) {
      if (d.state !== 'rolling_back') continue;
      const device = devices.get(d.deviceId);
      if (!device || device.revokedAt !== null) {
        setDevice(r, d, { state: 'rolled_back', reason: 'device-revoked' });
        continue;
      }
      const at = reportedAt(device);
      if (at !== null && at >= d.updatedAt && reportedVersion(device, r.model) === d.previousVersion) setDevice(r, d, { state: 'rolled_back' });
    }
  }

  function halt(r: RolloutRecord, reason: string): void {
    store.update(r.id, { state: 'halted', reason }, now());
    log.warn({ rollout: r.id, reason }, 'rollout halted; rolling back');
    rollbackDevices(r);
  }

  /** One step of the state machine; true when the rollout changed in a way that may allow another step. */
  function step(r: RolloutRecord): boolean {
    const t = now();
    switch (r.state) {
      case 'scheduled': {
        const start = scheduledStart(r);
        if (start === null || start.getTime() > clock.now()) return false;
        store.update(r.id, { state: 'running', startedAt: t }, t);
        enterStage({ ...r, state: 'running' }, 0);
        return true;
      }
      case 'running':
      case 'paused': {
        const online = new Set(devices.list().filter((d) => d.online && d.revokedAt === null).map((d) => d.id));
        const inStage = store.devices(r.id).filter((d) => d.stage === r.currentStage && d.state !== 'waiting');
        // A device revoked since the rollout was created left the fleet: it says nothing about the model.
        const judged = inStage.filter((d) => !(d.state === 'failed' && d.reason === 'FLEET_DEVICE_REVOKED'));
        const failed = judged.filter((d) => d.state === 'failed').length;
        if (overFailureThreshold(failed, judged.length, r.maxFailurePct)) {
          halt(r, `stage ${r.currentStage}: ${failed} of ${judged.length} devices failed (maxFailurePct ${r.maxFailurePct})`);
          return true;
        }
        if (r.state === 'paused') return false;
        // A device that was offline when its stage took it (only when no online one was left) does not hold its
        // stage back while it stays offline: it keeps its desired state and reports when it is back (completion,
        // below, still waits for it). One that was online holds its stage (a fleet restart makes every device look
        // offline for a moment).
        const settled = inStage.every((d) => SETTLED.includes(d.state) || (d.state === 'pending' && d.reason === OFFLINE_AT_START && !online.has(d.deviceId)));
        if (!settled) return false;
        if (r.currentStage >= r.stages.length - 1) {
          // Completed means every targeted device committed or failed: an offline one keeps the rollout running
          // (shown pending) until it returns and reports, as an operator reading "completed" would expect.
          if (!store.devices(r.id).every((d) => d.state === 'waiting' || SETTLED.includes(d.state))) return false;
          store.update(r.id, { state: 'completed', finishedAt: t }, t);
          log.info({ rollout: r.id }, 'rollout completed');
          return false;
        }
        enterStage(r, r.currentStage + 1);
        return true;
      }
      case 'halted': {
        checkRollingBack(r);
        if (store.devices(r.id).some((d) => d.state === 'rolling_back')) return false;
        store.update(r.id, { state: 'rolled_back', finishedAt: t }, t);
        log.info({ rollout: r.id }, 'rollout rolled back');
        return false;
      }
      default:
        return false;
    }
  }

  const evaluateTx = db.transaction((id: string) => {
    // Bounded: each step either stops or moves the rollout forward (a stage, a state), never back.
    for (let guard = 0; guard < 1000; guard++) {
      const r = store.get(id);
      if (!r || !step(r)) return;
    }
  });

  function evaluate(id: string): void {
    try {
      evaluateTx(id);
    } catch (err) {
      log.error({ rollout: id, err }, 'evaluating a rollout failed; the next tick retries');
    }
  }

  /** Evaluates soon (after the current transaction, e.g. the ingest batch, has committed). */
  function evaluateSoon(id: string): void {
    soon.add(id);
    if (soonScheduled) return;
    soonScheduled = true;
    setImmediate(() => {
      soonScheduled = false;
      const ids = [...soon];
      soon.clear();
      if (!stopped) for (const i of ids) evaluate(i);
    });
  }

  const createTx = db.transaction((input: CreateRolloutInput): string => {
    if (!registry.get(input.model, input.version)) throw fail('FLEET_MODEL_NOT_FOUND', `no model version ${input.model}@${input.version} in the registry`);
    const stages = input.stages ?? [100];
    const problem = stagesProblem(stages);
    if (problem) throw fail('FLEET_BAD_REQUEST', `invalid stages: ${problem}`);
    if (input.schedule !== undefined) {
      const cron = cronProblem(input.schedule);
      if (cron) throw fail('FLEET_BAD_REQUEST', `invalid schedule "${input.schedule.slice(0, 128)}": ${cron}`);
    }
    if (input.deviceIds === undefined && input.selector === undefined) throw fail('FLEET_BAD_REQUEST', 'name the target: deviceIds, a selector, or both');
    const all = devices.list();
    const known = new Set(all.map((d) => d.id));
    const unknown = (input.deviceIds ?? []).filter((id) => !known.has(id));
    if (unknown.length > 0) throw fail('FLEET_BAD_REQUEST', `unknown device(s): ${unknown.slice(0, 10).join(', ')}`);
    const ids = new Set(input.deviceIds ?? []);
    const selector = input.selector;
    const targets = all.filter(
      (d) => d.revokedAt === null && (ids.has(d.id) || (selector !== undefined && Object.entries(selector).every(([k, v]) => Object.hasOwn(d.tags, k) && d.tags[k] === v))),
    );
    if (targets.length === 0) throw fail('FLEET_BAD_REQUEST', 'the target matches no active device');
    const conflicts = store.unfinishedFor(input.model, targets.map((d) => d.id), UNFINISHED_STATES);
    if (conflicts.length > 0) {
      const c = conflicts[0]!;
      throw fail('FLEET_ROLLOUT_CONFLICT', `${conflicts.length} target device(s) are in an unfinished rollout of ${input.model}, e.g. ${c.deviceId} in ${c.rolloutId}`);
    }
    const id = `ro-${randomBytes(6).toString('hex')}`;
    const t = now();
    const minDevices = input.minDevices ?? 1;
    const plan = planStages(orderDevices(id, targets.map((d) => ({ id: d.id, online: d.online }))), stageSizes(targets.length, stages, minDevices), -1, 0);
    const scheduled = input.schedule !== undefined;
    const record: RolloutRecord = {
      id, model: input.model, version: input.version, target: { deviceIds: [...ids], selector: selector ?? {} }, stages, minDevices,
      maxFailurePct: input.maxFailurePct ?? 0, thresholds: input.thresholds ?? {}, schedule: input.schedule ?? null,
      state: scheduled ? 'scheduled' : 'running', currentStage: 0, reason: null, createdAt: t, startedAt: scheduled ? null : t, updatedAt: t, finishedAt: null,
    };
    store.insert(record, targets.map((d) => ({
      rolloutId: id, deviceId: d.id, stage: plan.get(d.id) ?? 0, state: 'waiting' as DeviceState, previousVersion: reportedVersion(d, input.model),
      reason: null, detail: null, updatedAt: t,
    })));
    if (!scheduled) enterStage(record, 0);
    log.info({ rollout: id, model: input.model, version: input.version, devices: targets.length, stages, schedule: record.schedule }, 'rollout created');
    return id;
  });

  const actTx = db.transaction((id: string, action: RolloutAction) => {
    const r = rolloutOf(id);
    const rule = ACTIONS[action];
    if (!rule.from.includes(r.state)) {
      throw fail('FLEET_ROLLOUT_STATE', `cannot ${action} rollout ${id}: it is ${r.state} (${action} is allowed when ${rule.from.join(', ')})`);
    }
    const t = now();
    if (action === 'rollback' && r.state === 'scheduled') {
      store.update(id, { state: 'rolled_back', reason: 'rolled back by an operator before it started', finishedAt: t }, t); // nothing was touched
    } else if (action === 'rollback') {
      halt(r, 'rollback requested by an operator');
    } else if (action === 'abort') {
      store.update(id, { state: 'aborted', reason: 'aborted by an operator', finishedAt: t }, t);
    } else {
      store.update(id, { state: rule.to }, t);
    }
    log.info({ rollout: id, action, from: r.state }, 'rollout action');
  });

  const transitionTx = db.transaction((deviceId: string, t: UpdateTransition): string | undefined => {
    for (const { rollout: r, device: d } of store.forDevice(deviceId, t.model)) {
      if (t.rollout !== null && r.id !== t.rollout) continue;
      // An event with no rollout (an operator's device rollback) never rewrites a rollout that is over.
      if (t.rollout === null && ['completed', 'aborted', 'rolled_back'].includes(r.state)) continue;
      if (d.state === 'waiting') continue;
      if (t.version === r.version) {
        if (d.state === 'rolling_back') {
          // The new version failed or was undone on the device: it is back on the old one.
          if (t.to === 'rolled_back' || t.to === 'failed') setDevice(r, d, { state: 'rolled_back', reason: t.reason, detail: t.detail });
        } else if (d.state !== 'rolled_back') {
          const next = deviceStateFor(t.to);
          if (next !== null && next !== d.state) setDevice(r, d, { state: next, reason: t.reason, detail: t.detail });
        }
        return r.id;
      }
      if (d.state === 'rolling_back' && t.version === d.previousVersion) {
        if (t.to === 'committed') setDevice(r, d, { state: 'rolled_back' });
        // The way back failed on the box (expired, download or load failure): the rollout can still end, and the
        // device shows why it needs care.
        else if (t.to === 'failed' || t.to === 'rolled_back') setDevice(r, d, { state: 'rolled_back', reason: 'rollback_failed', detail: `${t.reason ?? ''} ${t.detail ?? ''}`.trim().slice(0, 2000) });
        return r.id;
      }
    }
    return undefined;
  });

  const engine: RolloutEngine = {
    create(input) {
      const id = createTx(input);
      evaluate(id);
      return engine.get(id);
    },
    get(id) {
      return rolloutView(rolloutOf(id), store.devices(id));
    },
    list() {
      return store.list().map((r) => rolloutSummary(r, store.devices(r.id)));
    },
    act(id, action) {
      actTx(id, action);
      evaluate(id);
      return engine.get(id);
    },
    onStored(kind, deviceId, message) {
      // Recorded even while the fleet stops: the event is stored and acknowledged, so the device never sends it
      // again (the evaluation it would trigger is skipped when stopped; the next start's tick does it).
      if (kind !== 'events') return;
      const event = message as MessageOf<'events'>;
      if (event.kind !== 'update.transition') return;
      try {
        const parsed = UpdateTransitionSchema.safeParse(event.data);
        if (!parsed.success) {
          log.warn({ deviceId, seq: event.seq, issue: parsed.error.issues[0]?.message }, 'update.transition event with invalid data; ignored');
          return;
        }
        engine.onTransition(deviceId, parsed.data);
      } catch (err) {
        // Ingest must never fail because of the engine: the event is stored; the tick evaluates again.
        log.error({ deviceId, err }, 'rollout engine could not record a transition');
      }
    },
    onTransition(deviceId, t) {
      const id = transitionTx(deviceId, t);
      if (id !== undefined) evaluateSoon(id);
    },
    tick() {
      if (stopped) return;
      for (const r of store.inStates(UNFINISHED_STATES)) evaluate(r.id);
    },
    previousVersionOf(deviceId, model) {
      return store.forDevice(deviceId, model).find((x) => x.device.previousVersion !== null && x.device.state !== 'waiting')?.device.previousVersion ?? null;
    },
    start() {
      if (timer || stopped) return;
      timer = setInterval(() => {
        try {
          engine.tick();
        } catch (err) {
          log.error({ err }, 'rollout tick failed');
        }
      }, deps.tickMs);
      timer.unref();
      engine.tick(); // rollouts that were running when the fleet stopped continue now
    },
    stop() {
      stopped = true;
      clearInterval(timer);
    },
  };
  return engine;
}
