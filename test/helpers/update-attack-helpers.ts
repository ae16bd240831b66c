import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs';
import type { KeyObject } from 'node:crypto';
import path from 'node:path';
import type { DesiredMessage, DesiredModel } from '../../shared/src/mqtt/messages.js';
import { deploymentStatement, loadPrivateKey, manifestDigest, signStatement } from '../../shared/src/signing.js';
import { reportedVersion } from '../../fleet-server/src/rollouts/engine.js';
import { eventually, type RunningFleet } from './fleet.js';
import { inferSimple, type EnrolledAgent } from './updates.js';

/**
 * Helpers for the update fault and attack tests: the fleet's signing key and desired messages (to forge from a
 * real entry), the events the fleet stored, a snapshot of the files an agent owns (to prove nothing was
 * written), and a client that keeps sending requests while an update runs.
 */

/** The fleet's own ed25519 key, read from its data dir as the fleet reads it. */
export function fleetSigningKey(f: RunningFleet): KeyObject {
  return loadPrivateKey(readFileSync(path.join(f.dataDir, 'fleet-signing-key.pem'), 'utf8'));
}

/** The entry re-signed with `key` for `deviceId`, over its fields as they are now (signature replaced). */
export function signEntry(key: KeyObject, deviceId: string, entry: DesiredModel): DesiredModel {
  const signature = signStatement(key, deploymentStatement({
    device: deviceId, name: entry.name, version: entry.version, sha256: entry.sha256, size: entry.size,
    manifestSha256: manifestDigest(entry.manifest), deployment: entry.deployment, expires: entry.expires, remove: entry.remove,
  }));
  return { ...entry, signature };
}

/** GET /devices/{id}/desired: the message the fleet signed and retained for the device. */
export async function desiredOf(f: RunningFleet, deviceId: string): Promise<DesiredMessage> {
  const r = await f.api('GET', `/api/v1/devices/${deviceId}/desired`);
  if (r.status !== 200 || !r.body.message) throw new Error(`desired of ${deviceId} answered ${r.status}: ${JSON.stringify(r.body)}`);
  return r.body.message as DesiredMessage;
}

export interface StoredEvent {
  seq: number;
  kind: string;
  severity: string;
  message: string;
  data: any;
}

/** Events the fleet stored for the device after `afterSeq` (all pages). */
export async function eventsAfter(f: RunningFleet, deviceId: string, afterSeq = 0): Promise<StoredEvent[]> {
  const out: StoredEvent[] = [];
  for (let after = afterSeq; ; ) {
    const r = await f.api('GET', `/api/v1/devices/${deviceId}/events?afterSeq=${after}&limit=1000`);
    if (r.status !== 200) throw new Error(`events of ${deviceId} answered ${r.status}: ${JSON.stringify(r.body)}`);
    const page = r.body.events as StoredEvent[];
    out.push(...page);
    if (page.length < 1000) return out;
    after = page.at(-1)!.seq;
  }
}

/** The highest event seq the fleet stored for the device (0: none). */
export async function lastSeq(f: RunningFleet, deviceId: string): Promise<number> {
  return (await eventsAfter(f, deviceId)).at(-1)?.seq ?? 0;
}

/** Waits until the fleet stored an update.transition event after `afterSeq` that `match` accepts; returns it. */
export function transitionReaches(f: RunningFleet, deviceId: string, afterSeq: number, match: (data: any) => boolean, what: string, timeoutMs = 10_000): Promise<StoredEvent> {
  return eventually(async () => (await eventsAfter(f, deviceId, afterSeq)).find((e) => e.kind === 'update.transition' && match(e.data)), `${deviceId}: ${what}`, timeoutMs);
}

/** Waits until the fleet's record of the device shows `version` of `model` active (rollouts read previousVersion from it). */
export function fleetSeesVersion(f: RunningFleet, deviceId: string, model: string, version: number): Promise<unknown> {
  return eventually(() => {
    const device = f.fleet.store.devices.get(deviceId);
    if (reportedVersion(device, model) === version) return true;
    throw new Error(`it reports ${JSON.stringify(device?.reported?.models ?? null)}`);
  }, `fleet sees ${deviceId} on ${model}@${version}`, 10_000);
}

/** Every file and directory under `dir` with its size and mtime ('' when the dir does not exist): equal snapshots = nothing written. */
export function snapshot(dir: string): string[] {
  if (!existsSync(dir)) return [];
  const out: string[] = [];
  const walk = (d: string) => {
    for (const e of readdirSync(d, { withFileTypes: true })) {
      const p = path.join(d, e.name);
      const st = statSync(p);
      out.push(`${path.relative(dir, p)} ${e.isDirectory() ? 'dir' : st.size} ${st.mtimeMs}`);
      if (e.isDirectory()) walk(p);
    }
  };
  walk(dir);
  return out.sort();
}

/** What the agent owns on disk for models: its repository and its staging directory. */
export function agentFiles(a: EnrolledAgent): { repository: string[]; staging: string[] } {
  return { repository: snapshot(a.agent.config.modelRepository), staging: snapshot(path.join(a.agent.config.dataDir, 'staging')) };
}

export interface LoadRecord {
  startedAt: number;
  endedAt: number;
  status: number;
  first: number | null;
  version: string | null;
}

/** A client that sends the standard `simple` request back to back until stop(); each answer is recorded. */
export function startLoad(url: string): { records: LoadRecord[]; stop(): Promise<LoadRecord[]> } {
  const records: LoadRecord[] = [];
  let running = true;
  const loop = (async () => {
    while (running) {
      const startedAt = Date.now();
      try {
        const r = await inferSimple(url);
        records.push({ startedAt, endedAt: Date.now(), ...r });
      } catch {
        records.push({ startedAt, endedAt: Date.now(), status: 0, first: null, version: null });
      }
    }
  })();
  return {
    records,
    async stop() {
      running = false;
      await loop;
      return records;
    },
  };
}
