import type { KeyObject } from 'node:crypto';
import type { Logger } from 'pino';
import { DesiredMessageSchema, PROTOCOL_VERSION, ThresholdsSchema, type DesiredMessage, type Thresholds } from '../../../shared/src/mqtt/messages.js';
import { topicFor } from '../../../shared/src/mqtt/topics.js';
import { deploymentStatement, manifestDigest, signStatement } from '../../../shared/src/signing.js';
import type { Db } from '../../../shared/src/sqlite.js';
import type { FleetClient } from '../broker/types.js';
import { fail } from '../errors.js';
import type { FleetMetrics } from '../metrics/fleet-metrics.js';
import { artifactUrl } from '../registry/model-ref.js';
import { createRegistryStore } from '../registry/registry-store.js';
import { isoAt, type Clock } from '../storage/clock.js';
import type { DeviceStore } from '../storage/fleet-store.js';
import { createDesiredStore, type DesiredEntry, type DesiredStore } from './desired-store.js';
import type { MaintenanceWindows } from './maintenance.js';

const HOUR_MS = 3_600_000;
/** The sha256 field of a removal entry (it names no artifact). */
export const TOMBSTONE_SHA256 = '0'.repeat(64);
/** Backoff of a failed publish: the retained message is the truth, so a retry just sends the current one. */
const RETRY_MIN_MS = 1_000;
const RETRY_MAX_MS = 60_000;
/** How long stop() waits for publishes in flight before the client is closed under them. */
const STOP_DEADLINE_MS = 2_000;

export interface DeployTarget {
  version: number;
  /** The rollout this entry belongs to (devices echo it in their update.transition events), or null. */
  rollout: string | null;
}

export interface DeployerDeps {
  db: Db;
  devices: DeviceStore;
  maintenance: MaintenanceWindows;
  signingKey: KeyObject;
  /** The fleet's MQTT client; undefined before start() (what is set meanwhile is published at start). */
  client(): FleetClient | undefined;
  clock: Clock;
  metrics: FleetMetrics;
  log: Logger;
  config: { signatureTtlHours: number; refreshMinutes: number };
}

/**
 * What each device should run (issue 5, DESIGN §3.4): one signed entry per (device, model) in device_desired,
 * and the whole set published retained on outpost/v1/{id}/desired. The database is the truth and commits
 * first; publishing follows asynchronously, one publish at a time per device, always of the current revision
 * (a change made while one is in flight triggers one more). A failed publish is logged and retried; a revision
 * not yet published when the fleet stopped is published at the next start.
 */
export interface Deployer {
  /**
   * Points `model` on `deviceId` at `target` (null removes the model from the device's desired state): signs a
   * new entry with the next deployment counter, stores it, bumps the device's revision, then publishes.
   * Synchronous up to the commit; `deployment` is 0 for a removal. FLEET_MODEL_NOT_FOUND when the registry has
   * no such version, FLEET_NOT_FOUND / FLEET_DEVICE_REVOKED for the device.
   */
  setDesired(deviceId: string, model: string, target: DeployTarget | null): { deployment: number; revision: number };
  /** The device's stored entries, by model name. */
  entries(deviceId: string): DesiredEntry[];
  entry(deviceId: string, model: string): DesiredEntry | undefined;
  /** Devices that have a desired message (ever had an entry). */
  deviceIds(): string[];
  /** The message that is (or is about to be) retained for the device; undefined when it never had one. */
  message(deviceId: string): DesiredMessage | undefined;
  /** Publishes the device's current desired message again; resolves once sent (or once a failure was logged and a retry scheduled). */
  republish(deviceId: string): Promise<void>;
  /** A new revision for each device (something outside its entries changed: its maintenance window), then publishes. */
  touch(deviceIds: readonly string[]): void;
  /** Re-signs entries within half the TTL of expiry; returns how many. Run by the refresh job. */
  refreshExpiring(): number;
  /** Resolves when no publish is in flight (tests, shutdown). */
  idle(): Promise<void>;
  /**
   * After the client connected: refreshes, publishes what is unpublished (or, with `republishAll`, every
   * device's message: the embedded broker keeps retained messages in memory only, so a restart lost them),
   * and starts the refresh job.
   */
  start(opts?: { republishAll?: boolean }): void;
  stop(): Promise<void>;
}

export function createDeployer(deps: DeployerDeps): Deployer {
  const { db, devices, clock, metrics, config } = deps;
  const log = deps.log.child({ component: 'deployer' });
  const store: DesiredStore = createDesiredStore(db);
  const registry = createRegistryStore(db);
  const ttlMs = config.signatureTtlHours * HOUR_MS;
  /** Devices whose publish loop runs, and those that changed since their loop last read the database. */
  const inflight = new Map<string, Promise<void>>();
  const dirty = new Set<string>();
  const retries = new Map<string, { timer: NodeJS.Timeout; attempt: number }>();
  let refreshTimer: NodeJS.Timeout | undefined;
  let started = false;
  let stopped = false;

  const sign = (deviceId: string, e: Omit<DesiredEntry, 'signature' | 'deviceId' | 'updatedAt' | 'rolloutId'>): string =>
    signStatement(deps.signingKey, deploymentStatement({
      device: deviceId, name: e.model, version: e.version, sha256: e.sha256, size: e.size,
      manifestSha256: manifestDigest(e.manifest), deployment: e.deployment, expires: e.expires, remove: e.removed,
    }));

  const setTx = db.transaction((deviceId: string, model: string, target: DeployTarget | null) => {
    const device = devices.get(deviceId);
    if (!device) throw fail('FLEET_NOT_FOUND', `no device ${deviceId}`);
    if (target === null) {
      // Removal is signed like any deployment (a tombstone with its own counter): an unsigned "absent from the
      // list" must never make a box delete a model.
      const current = store.entry(deviceId, model);
      if (!current || current.removed) return { deployment: current?.deployment ?? 0, revision: store.revision(deviceId)?.revision ?? 0 };
      const now = clock.now();
      const fields = {
        model, version: current.version, sha256: TOMBSTONE_SHA256, size: 0, manifest: null,
        deployment: store.nextDeployment(), expires: isoAt(now + ttlMs), removed: true,
      };
      store.upsert({ ...fields, deviceId, rolloutId: current.rolloutId, signature: sign(deviceId, fields), updatedAt: isoAt(now) });
      metrics.deployments.inc({ cause: 'set' });
      return { deployment: fields.deployment, revision: store.bumpRevision(deviceId) };
    }
    if (device.revokedAt !== null) throw fail('FLEET_DEVICE_REVOKED', `device ${deviceId} is revoked`);
    const version = registry.get(model, target.version);
    if (!version) throw fail('FLEET_MODEL_NOT_FOUND', `no model version ${model}@${target.version} in the registry`);
    const now = clock.now();
    const fields = {
      model, version: version.version, sha256: version.sha256, size: version.size, manifest: version.manifest,
      deployment: store.nextDeployment(), expires: isoAt(now + ttlMs), removed: false,
    };
    store.upsert({ ...fields, deviceId, rolloutId: target.rollout, signature: sign(deviceId, fields), updatedAt: isoAt(now) });
    metrics.deployments.inc({ cause: 'set' });
    return { deployment: fields.deployment, revision: store.bumpRevision(deviceId) };
  });

  const touchTx = db.transaction((ids: readonly string[]) => {
    for (const id of ids) store.bumpRevision(id);
  });

  function thresholdsOf(entries: DesiredEntry[]): Thresholds {
    const merged: Record<string, unknown> = {};
    // Entries of several rollouts: merged in model-name order (one set of thresholds per device message).
    for (const e of entries) if (e.rolloutId !== null) Object.assign(merged, store.rolloutThresholds(e.rolloutId) ?? {});
    const parsed = ThresholdsSchema.safeParse(merged);
    return parsed.success ? parsed.data : {};
  }

  function message(deviceId: string): DesiredMessage | undefined {
    const rev = store.revision(deviceId);
    if (!rev) return undefined;
    const entries = store.entries(deviceId);
    const device = devices.get(deviceId);
    // Validated like any boundary message: a bug here must not reach devices as a malformed retained message.
    return DesiredMessageSchema.parse({
      v: PROTOCOL_VERSION, deviceId, revision: rev.revision, ts: isoAt(clock.now()),
      models: entries.map((e) => ({
        name: e.model, version: e.version, sha256: e.sha256, size: e.size, url: e.removed ? '' : artifactUrl(e.model, e.version), manifest: e.manifest,
        deployment: e.deployment, expires: e.expires, rollout: e.rolloutId, signature: e.signature, ...(e.removed ? { remove: true } : {}),
      })),
      maintenanceWindow: device ? deps.maintenance.windowFor(device) : null,
      thresholds: thresholdsOf(entries),
    });
  }

  async function publishOnce(deviceId: string): Promise<void> {
    const client = deps.client();
    if (!client || stopped) return; // published by start(), or at the next start (published_at stays NULL)
    let msg: DesiredMessage | undefined;
    try {
      msg = message(deviceId);
    } catch (err) {
      log.error({ err, deviceId }, 'cannot build a valid desired message; not published');
      return;
    }
    if (!msg) return;
    try {
      await client.publish(topicFor(deviceId, 'desired'), JSON.stringify(msg), { retain: true });
    } catch (err) {
      metrics.desiredPublished.inc({ outcome: 'failed' });
      scheduleRetry(deviceId, err);
      return;
    }
    metrics.desiredPublished.inc({ outcome: 'ok' });
    const retry = retries.get(deviceId);
    if (retry) clearTimeout(retry.timer);
    retries.delete(deviceId);
    if (!stopped) store.markPublished(deviceId, msg.revision, isoAt(clock.now()));
  }

  function scheduleRetry(deviceId: string, err: unknown): void {
    const previous = retries.get(deviceId);
    if (previous) clearTimeout(previous.timer);
    const attempt = (previous?.attempt ?? 0) + 1;
    const delayMs = Math.min(RETRY_MAX_MS, RETRY_MIN_MS * 2 ** (attempt - 1));
    log.warn({ deviceId, attempt, retryInMs: delayMs, err: (err as Error).message }, 'publishing desired state failed; retrying');
    if (stopped) return;
    const timer = setTimeout(() => void schedule(deviceId), delayMs);
    timer.unref();
    retries.set(deviceId, { timer, attempt });
  }

  /** Single-flight per device; the loop re-reads the database for as long as changes keep arriving. */
  function schedule(deviceId: string): Promise<void> {
    dirty.add(deviceId);
    let running = inflight.get(deviceId);
    if (!running) {
      running = (async () => {
        try {
          // Yield first: a caller inside an outer transaction (the rollout engine entering a stage) must have
          // committed before the message is read and sent.
          await null;
          while (dirty.delete(deviceId)) await publishOnce(deviceId);
        } finally {
          inflight.delete(deviceId);
        }
      })();
      inflight.set(deviceId, running);
    }
    return running;
  }

  const refreshTx = db.transaction((): string[] => {
    const now = clock.now();
    const touched = new Set<string>();
    for (const e of store.expiringBy(isoAt(now + ttlMs / 2))) {
      // A revoked device gets nothing new signed: its entries expire, as the freeze protection intends.
      if (devices.get(e.deviceId)?.revokedAt != null) continue;
      // A new counter for the same version and sha256: the agent accepts it as fresher metadata, not as a change.
      const fields = { model: e.model, version: e.version, sha256: e.sha256, size: e.size, manifest: e.manifest, deployment: store.nextDeployment(), expires: isoAt(now + ttlMs), removed: e.removed };
      store.upsert({ ...e, ...fields, signature: sign(e.deviceId, fields), updatedAt: isoAt(now) });
      metrics.deployments.inc({ cause: 'refresh' });
      touched.add(e.deviceId);
    }
    for (const id of touched) store.bumpRevision(id);
    return [...touched];
  });

  function refreshExpiring(): number {
    const ids = refreshTx();
    for (const id of ids) void schedule(id);
    if (ids.length > 0) log.info({ devices: ids.length }, 're-signed desired entries nearing expiry');
    return ids.length;
  }

  return {
    setDesired(deviceId, model, target) {
      const result = setTx(deviceId, model, target);
      void schedule(deviceId);
      return result;
    },
    entries: (deviceId) => store.entries(deviceId),
    deviceIds: () => store.devicesWithRevision(),
    entry: (deviceId, model) => store.entry(deviceId, model),
    message,
    republish: (deviceId) => schedule(deviceId),
    touch(deviceIds) {
      const ids = deviceIds.filter((id) => store.revision(id) !== undefined);
      touchTx(ids);
      for (const id of ids) void schedule(id);
    },
    refreshExpiring,
    async idle() {
      while (inflight.size > 0) await Promise.all([...inflight.values()]);
    },
    start(opts = {}) {
      if (started || stopped) return;
      started = true;
      try {
        refreshExpiring();
      } catch (err) {
        log.error({ err }, 're-signing desired entries failed at start; the job retries');
      }
      for (const id of opts.republishAll ? store.devicesWithRevision() : store.unpublished()) void schedule(id);
      refreshTimer = setInterval(() => {
        try {
          refreshExpiring();
        } catch (err) {
          log.error({ err }, 're-signing desired entries failed; retrying at the next run');
        }
      }, config.refreshMinutes * 60_000);
      refreshTimer.unref();
    },
    async stop() {
      stopped = true;
      clearInterval(refreshTimer);
      for (const r of retries.values()) clearTimeout(r.timer);
      retries.clear();
      let timer: NodeJS.Timeout | undefined;
      const deadline = new Promise<void>((resolve) => {
        timer = setTimeout(resolve, STOP_DEADLINE_MS);
      });
      await Promise.race([Promise.all([...inflight.values()]), deadline]);
      clearTimeout(timer);
    },
  };
}
