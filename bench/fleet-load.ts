import os from 'node:os';
import type Database from 'better-sqlite3';
import { cpuBetween, cpuSnapshot, memoryOf, processJiffies } from './cpu.js';
import type { FleetApi, MetricsSnapshot } from './fleet-api.js';
import type { SimDevice } from './fleet-devices.js';
import { summarise } from './stats.js';

/**
 * One load step: every device publishes `events` (QoS 1) on an open-loop schedule at `ratePerS` in total, the
 * devices taken round-robin so each one sends every devices/ratePerS seconds; then the bench waits until every
 * publish has its PUBACK and the fleet has stored as many events as were acknowledged, and reads the step's
 * rows back from the fleet's own SQLite file. End-to-end delay = the row's received_at (the fleet's clock when
 * its ingest took the message, ms precision) − the message's ts (the publish time in this process, ms
 * precision); both are the same machine's clock.
 */
export interface StepPlan {
  label: string;
  multiplier: number;
  ratePerS: number;
  durationS: number;
  /** Warm-up steps are reported apart and never stop the stepping. */
  measured: boolean;
}

export interface StepResult extends StepPlan {
  /** Events published in the step and the rate this process achieved (below the target when it falls behind). */
  published: number;
  offeredPerS: number;
  publishSeconds: number;
  /** How late the publish loop ran against its schedule, ms (a busy load process shows here). */
  scheduleLagP99Ms: number;
  acked: number;
  /** Publishes that failed or still had no PUBACK when the drain wait ended. */
  publishErrors: number;
  unacked: number;
  ackP50Ms: number;
  ackP99Ms: number;
  /** Rows of this step in the fleet's events table. */
  stored: number;
  /** Rows of this step the fleet received while the step was publishing, per second. */
  storedPerS: number;
  delay: { n: number; p50Ms: number; p90Ms: number; p99Ms: number; maxMs: number };
  /** Acknowledged by the broker (PUBACK) but not stored by the fleet: after a complete drain this must be 0. */
  lost: number;
  /** Stored although this process never saw the PUBACK (a publish still unacked or failed when the drain ended). */
  storedUnacked: number;
  /** Deltas of the fleet's own counters over the step (outpost_fleet_duplicate/rejected_messages_total). */
  duplicates: number;
  rejected: number;
  drained: boolean;
  drainSeconds: number;
  fleetRssMiB: number | undefined;
  brokerRssMiB: number | undefined;
  loadRssMiB: number;
  /** % of one core while publishing. */
  fleetCpuPct: number | undefined;
  brokerCpuPct: number | undefined;
  loadCpuPct: number;
  /** Whole machine, % of all cores. */
  systemBusyPct: number | undefined;
  /** Processes outside the bench (fleet, broker, load process), % of one core: machine busy − the three. */
  otherCpuPct: number | undefined;
}

export interface LoadTarget {
  devices: SimDevice[];
  api: FleetApi;
  /** The fleet's fleet.db, opened read-only by the bench. */
  db: Database.Database;
  fleetPid: number;
  /** The external broker's pid (Mosquitto), if any. */
  brokerPid: number | undefined;
  drainTimeoutS: number;
}

/** Run-wide state the steps share: the round-robin position and the totals the drain compares against. */
export interface LoadState {
  nextDevice: number;
  ackedTotal: number;
  lastRowId: number;
  baseMetrics: { ingested: number; duplicates: number; rejected: number };
}

const TICK_MS = 5;
const DRAIN_POLL_MS = 250;
/** A drain that makes no progress for this long is given up (the step is reported as not drained). */
const DRAIN_STALL_MS = 15_000;

export function counters(m: MetricsSnapshot): { ingested: number; duplicates: number; rejected: number } {
  return {
    ingested: m.sum('outpost_fleet_ingest_messages_total', { kind: 'events' }),
    duplicates: m.sum('outpost_fleet_duplicate_messages_total'),
    rejected: m.sum('outpost_fleet_rejected_messages_total'),
  };
}

export async function runStep(target: LoadTarget, state: LoadState, plan: StepPlan, index: number): Promise<StepResult> {
  const { devices } = target;
  const tag = `bench step ${index}`;
  const total = Math.max(1, Math.round(plan.ratePerS * plan.durationS));
  const lags = new Float64Array(total);
  const acks: number[] = [];
  /** `deviceId seq` of every acknowledged publish, to find exactly which ones the fleet did not store. */
  const ackedKeys = new Set<string>();
  let published = 0;
  let acked = 0;
  let failed = 0;
  const before = counters(await target.api.metrics());
  const rss = { fleet: 0, broker: 0 };
  const sampleRss = () => {
    rss.fleet = Math.max(rss.fleet, memoryOf(target.fleetPid)?.rssMiB ?? 0);
    if (target.brokerPid !== undefined) rss.broker = Math.max(rss.broker, memoryOf(target.brokerPid)?.rssMiB ?? 0);
  };
  const sampler = setInterval(sampleRss, 1000);
  const cpu0 = cpuSnapshot(target.fleetPid);
  const broker0 = target.brokerPid === undefined ? undefined : processJiffies(target.brokerPid);
  const startWall = Date.now();
  const t0 = performance.now();

  const publishOne = (k: number): void => {
    const d = devices[state.nextDevice++ % devices.length]!;
    lags[k] = performance.now() - (t0 + (k * 1000) / plan.ratePerS);
    const seq = ++d.seq;
    const sentAt = performance.now();
    const payload = JSON.stringify({
      v: 1, deviceId: d.id, seq, ts: new Date().toISOString(), kind: 'detection.batch', severity: 'info', message: tag,
      data: { model: 'yolov8n', version: 3, count: 4, labels: ['person', 'person', 'forklift', 'pallet'], scores: [0.91, 0.88, 0.77, 0.52] },
    });
    published++;
    d.client!.publish(d.eventsTopic, payload, { qos: 1 }, (err) => {
      if (err) failed++;
      else {
        acked++;
        acks.push(performance.now() - sentAt);
        ackedKeys.add(`${d.id} ${seq}`);
      }
    });
  };
  // Open loop: message k is due at t0 + k/rate whatever happened to earlier ones, so a slow server shows as
  // delay instead of slowing the offered load (no coordinated omission in the schedule).
  await new Promise<void>((resolve) => {
    let k = 0;
    const tick = () => {
      const due = Math.min(total, Math.floor(((performance.now() - t0) / 1000) * plan.ratePerS) + 1);
      while (k < due) publishOne(k++);
      if (k >= total) {
        clearInterval(timer);
        resolve();
      }
    };
    const timer = setInterval(tick, TICK_MS);
    tick();
  });
  const publishSeconds = (performance.now() - t0) / 1000;
  const endWall = Date.now();
  const cpu = cpuBetween(cpu0, cpuSnapshot(target.fleetPid));
  const broker1 = target.brokerPid === undefined ? undefined : processJiffies(target.brokerPid);
  const brokerCpuPct = broker0 === undefined || broker1 === undefined ? undefined : ((broker1 - broker0) / 100 / publishSeconds) * 100;
  const otherCpuPct = cpu.systemBusyPct === undefined || cpu.watchedPct === undefined
    ? undefined
    : Math.max(0, cpu.systemBusyPct * os.cpus().length - cpu.watchedPct - (brokerCpuPct ?? 0) - cpu.selfPct);
  sampleRss();

  // Drain: every PUBACK in, and the fleet's stored count caught up with everything acknowledged so far.
  const drainStart = performance.now();
  let drained = false;
  let last = { ingested: -1, acked: -1, at: performance.now() };
  let after = before;
  for (;;) {
    after = counters(await target.api.metrics());
    sampleRss();
    const storedSoFar = after.ingested - state.baseMetrics.ingested;
    if (acked + failed === published && storedSoFar >= state.ackedTotal + acked) {
      drained = true;
      break;
    }
    if (after.ingested !== last.ingested || acked !== last.acked) last = { ingested: after.ingested, acked, at: performance.now() };
    const now = performance.now();
    if (now - last.at > DRAIN_STALL_MS || now - drainStart > target.drainTimeoutS * 1000) break;
    await new Promise((r) => setTimeout(r, DRAIN_POLL_MS));
  }
  const drainSeconds = (performance.now() - drainStart) / 1000;
  clearInterval(sampler);
  state.ackedTotal += acked;

  // The step's rows: inserted after the previous step's (rowid grows with inserts) and tagged with its message.
  const rows = target.db
    .prepare<[number, string], { id: number; device_id: string; seq: number; ts: string; received_at: string }>(
      'SELECT rowid AS id, device_id, seq, ts, received_at FROM events WHERE rowid > ? AND message = ?',
    )
    .all(state.lastRowId, tag);
  const delays = new Float64Array(rows.length);
  let inWindow = 0;
  let storedUnacked = 0;
  const startIso = new Date(startWall).toISOString();
  const endIso = new Date(endWall).toISOString();
  rows.forEach((r, i) => {
    delays[i] = Date.parse(r.received_at) - Date.parse(r.ts);
    if (r.received_at >= startIso && r.received_at <= endIso) inWindow++;
    if (r.id > state.lastRowId) state.lastRowId = r.id;
    // (device_id, seq) is the events table's primary key, so a stored row is never a duplicate.
    if (!ackedKeys.delete(`${r.device_id} ${r.seq}`)) storedUnacked++;
  });
  const delay = summarise(delays);
  const ack = summarise(acks);
  const lag = summarise(lags.subarray(0, published));
  return {
    ...plan, published, offeredPerS: published / publishSeconds, publishSeconds, scheduleLagP99Ms: lag.p99Ms,
    acked, publishErrors: failed, unacked: published - acked - failed, ackP50Ms: ack.p50Ms, ackP99Ms: ack.p99Ms,
    stored: rows.length, storedPerS: inWindow / ((endWall - startWall) / 1000),
    delay: { n: delay.n, p50Ms: delay.p50Ms, p90Ms: delay.p90Ms, p99Ms: delay.p99Ms, maxMs: delay.maxMs },
    lost: ackedKeys.size, storedUnacked, duplicates: after.duplicates - before.duplicates, rejected: after.rejected - before.rejected,
    drained, drainSeconds,
    fleetRssMiB: rss.fleet || undefined, brokerRssMiB: rss.broker || undefined, loadRssMiB: process.memoryUsage().rss / 2 ** 20,
    fleetCpuPct: cpu.watchedPct, brokerCpuPct, loadCpuPct: cpu.selfPct, systemBusyPct: cpu.systemBusyPct, otherCpuPct,
  };
}
