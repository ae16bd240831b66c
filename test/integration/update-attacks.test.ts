/**
 * The attacks on the update path (research performance-and-fault-testing.md §5.4, U1–U7; docs/updates.md
 * "Threat model") against a real agent enrolled to a real fleet. Each forged desired message is built from a
 * REAL entry the fleet signed for the device (GET /devices/{id}/desired) and then changed, and is handed to the
 * update machine directly with `updater.onDesired()`: the MQTT transport (schema validation, revision dedup,
 * topic ACLs) is tested elsewhere, and skipping it here means the update machine's own checks are what is
 * tested, with nothing in front of them.
 *
 * A real entry is only worth forging while the box has not seen it (a copy of a deployment it already knows is
 * dropped as known, and an older one is a replay). So the agent's MQTT link runs through a proxy the test cuts:
 * the fleet signs a fresh deployment for the device, the test reads it over REST and forges from it, and the
 * box's refusal events wait in its outbox until the link is restored; then they must all reach the fleet.
 *
 * For each refusal: nothing is written into the repository or the staging directory, no deployment row is
 * created and the replay counter does not move, the version serving before still serves, and an
 * update.transition event {to: 'failed', reason} reaches the fleet.
 * The endless-data attack (U5) is covered by the download unit tests (the body is cut at the signed size).
 */
import { existsSync, mkdtempSync } from 'node:fs';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { saveCredentials } from '../../agent/src/link/credentials.js';
import type { DesiredMessage, DesiredModel } from '../../shared/src/mqtt/messages.js';
import { generateSigningKey, loadPrivateKey } from '../../shared/src/signing.js';
import { buildSimpleHeavy } from '../../models/simple-variants.js';
import { enrollDevice, eventually, startFleet, type EnrolledDevice, type RunningFleet } from '../helpers/fleet.js';
import { startTcpProxy, type TcpProxy } from '../helpers/tcp-proxy.js';
import { agentFiles, desiredOf, fleetSigningKey, lastSeq, signEntry, transitionReaches } from '../helpers/update-attack-helpers.js';
import { activeVersion, inferSimple, pushVersion, simpleBytes, startEnrolledAgent, updateReaches, type EnrolledAgent } from '../helpers/updates.js';

let f: RunningFleet;
let a: EnrolledAgent;
let link: TcpProxy;
let other: EnrolledDevice;
let fleetKey: ReturnType<typeof fleetSigningKey>;
/** The desired message the fleet signed for the agent (its envelope is reused) and its entry for simple@1. */
let real: DesiredMessage;
let V1_ENTRY: DesiredModel;

const A = () => a.device.deviceId;
const V1 = { version: 1, first: 1 };
const V2 = { version: 2, first: 1001 };
const highest = () => a.agent.updater.store.pointer('simple')?.highestDeployment ?? 0;

async function deploy(deviceId: string, version: number): Promise<number> {
  const r = await f.api('POST', `/api/v1/devices/${deviceId}/rollback`, { model: 'simple', version });
  expect(r.status, JSON.stringify(r.body)).toBe(202);
  return r.body.deployment as number;
}

/** A deployment of `version` the fleet signs for the agent now: a real entry, above every counter the box holds. */
async function unseen(version = 2, deviceId = A()): Promise<DesiredModel> {
  const deployment = await deploy(deviceId, version);
  const entry = (await desiredOf(f, deviceId)).models.find((m) => m.name === 'simple')!;
  expect(entry.deployment).toBe(deployment);
  return entry;
}

/** The refusal event the agent queued in its outbox (the link is cut: it waits there for the fleet). */
function queuedRefusal(deployment: number, reason: string): Promise<unknown> {
  return eventually(() => a.agent.outbox.next(0, 100_000).some((row) => {
    if (row.kind !== 'events') return false;
    const body = JSON.parse(row.body) as { kind?: string; data?: { to?: string; reason?: string; deployment?: number } };
    return body.kind === 'update.transition' && body.data?.to === 'failed' && body.data.reason === reason && body.data.deployment === deployment;
  }), `agent queued the refusal ${reason} of deployment ${deployment}`);
}

interface Expected {
  deployment: number;
  reason: string;
  /** The state it failed from: idle for a refusal before acceptance (the default). */
  from?: string;
}

/**
 * Runs `body` with the agent's link cut; then points the device at the version it serves (so what it receives on
 * reconnect changes nothing), restores the link and checks that every refusal `body` expected reached the fleet.
 */
async function offline(serving: { version: number }, body: (refused: (e: Expected) => void, current: DesiredModel) => Promise<void>): Promise<void> {
  const seq = await lastSeq(f, A());
  const expected: Expected[] = [];
  // The entry the box holds now (its counter is the highest): a desired state may name it beside a forgery.
  const current = (await desiredOf(f, A())).models.find((m) => m.name === 'simple')!;
  expect(current.deployment).toBe(highest());
  link.cut();
  try {
    await body((e) => expected.push(e), current);
  } finally {
    const back = await deploy(A(), serving.version);
    link.restore();
    await eventually(() => highest() === back, `agent back online and at deployment ${back}`, 10_000);
    // The broker also hands over the revisions queued meanwhile: the real entries the forgeries were made from
    // arrive too, each starts and `back` supersedes it; the next case starts once nothing runs.
    await eventually(() => a.agent.updater.store.unfinished().length === 0, 'no deployment running', 10_000);
  }
  for (const e of expected) {
    const ev = await transitionReaches(f, A(), seq, (d) => d.to === 'failed' && d.reason === e.reason && d.deployment === e.deployment, `fleet got the refusal ${e.reason} of deployment ${e.deployment}`);
    expect(ev.data.from).toBe(e.from ?? 'idle');
  }
}

/** Hands `forged` to the agent (beside `companions`) and checks, on the box, that it was refused and changed nothing. */
async function refuse(forged: DesiredModel, reason: string, serving: { version: number; first: number }, opts: { companions?: DesiredModel[]; envelope?: Partial<DesiredMessage> } = {}): Promise<{ deployment: number; reason: string }> {
  const files = agentFiles(a);
  const rowBefore = a.agent.updater.store.latest('simple')?.id;
  const counterBefore = highest();
  a.agent.updater.onDesired({ ...real, ...opts.envelope, models: [...(opts.companions ?? []), forged] });
  await queuedRefusal(forged.deployment, reason);
  expect(agentFiles(a)).toEqual(files);
  expect(a.agent.updater.store.latest('simple')?.id).toBe(rowBefore);
  expect(highest()).toBe(counterBefore);
  expect(a.agent.models.active('simple')?.version).toBe(serving.version);
  expect(await inferSimple(a.url)).toMatchObject({ status: 200, first: serving.first });
  return { deployment: forged.deployment, reason };
}

beforeAll(async () => {
  f = await startFleet();
  await pushVersion(f, 'simple', 1, simpleBytes(1));
  await pushVersion(f, 'simple', 2, simpleBytes(2));
  fleetKey = fleetSigningKey(f);
  link = await startTcpProxy({ port: Number(new URL(f.mqttUrl).port) });
  const device = await enrollDevice(f);
  const dataDir = mkdtempSync(path.join(os.tmpdir(), 'outpost-update-attacks-'));
  saveCredentials(dataDir, { ...device, mqttUrl: `mqtt://127.0.0.1:${link.port}`, enrolledAt: new Date().toISOString() });
  // Deployments without a rollout carry no thresholds: the agent's own probation (0 s) commits at once.
  a = await startEnrolledAgent(f, { dataDir, device, config: { update: { probationSeconds: 0 } } });
  other = await enrollDevice(f);

  await deploy(A(), 1);
  await updateReaches(a, 'simple', ['committed']);
  real = await desiredOf(f, A());
  V1_ENTRY = real.models[0]!;
  expect(V1_ENTRY).toMatchObject({ name: 'simple', version: 1 });
}, 30_000);

afterAll(async () => {
  await a?.stop();
  await link?.close();
  await a?.cleanup();
  await f?.stop();
});

describe('update attacks (U1–U7): refused before anything is written, the fleet told why', () => {
  it('U1: an unsigned entry (unsigned) and one signed by another key (bad_signature) are refused', async () => {
    await offline(V1, async (refused) => {
      refused(await refuse({ ...(await unseen()), signature: '' }, 'unsigned', V1));
      const stranger = loadPrivateKey(generateSigningKey().privateKeyPem);
      // Right in every respect but the key.
      refused(await refuse(signEntry(stranger, A(), await unseen()), 'bad_signature', V1));
    });
  });

  it('U1/U6: each signed field changed after the fleet signed it is refused (bad_signature)', async () => {
    const changes: [string, (e: DesiredModel) => Partial<DesiredModel>][] = [
      ['version', () => ({ version: 3 })],
      ['sha256', () => ({ sha256: V1_ENTRY.sha256 })],
      ['size', (e) => ({ size: e.size + 1 })],
      ['expires', (e) => ({ expires: new Date(Date.parse(e.expires) + 365 * 86_400_000).toISOString() })],
      ['deployment', (e) => ({ deployment: e.deployment + 1000 })],
      ['manifest content', (e) => ({ manifest: { ...e.manifest, labels: ['forged'] } })],
      ['manifest of another version', () => ({ manifest: V1_ENTRY.manifest })],
      ['artifact of another version', () => ({ version: 1, sha256: V1_ENTRY.sha256, size: V1_ENTRY.size, manifest: V1_ENTRY.manifest, url: V1_ENTRY.url })],
    ];
    await offline(V1, async (refused) => {
      for (const [field, change] of changes) {
        const entry = await unseen();
        const forged = { ...entry, ...change(entry) };
        expect(forged, field).not.toEqual(entry);
        refused(await refuse(forged, 'bad_signature', V1));
      }
    });
  });

  it('U6 mix-and-match: an entry the fleet signed for another device is refused (bad_signature)', async () => {
    await offline(V1, async (refused) => {
      refused(await refuse(await unseen(2, other.deviceId), 'bad_signature', V1));
      // Whatever the envelope says: the signature binds the entry to the device that verifies it.
      refused(await refuse(await unseen(2, other.deviceId), 'bad_signature', V1, { envelope: { deviceId: A() } }));
    });
  });

  it('U2 path traversal: a correctly signed entry named ../../bin is refused by the name check (unsafe_name)', async () => {
    const outside = path.join(path.resolve(a.agent.config.modelRepository, '../../bin'), '2');
    expect(existsSync(outside)).toBe(false);
    await offline(V1, async (refused, current) => {
      for (const name of ['../../bin', '..', 'a/../../bin']) {
        // v2's artifact under a hostile name, signed with the fleet's own key: only the name check stops it. The
        // box's current entry stays beside it (a desired state without simple would mean "remove simple").
        const entry = await unseen();
        const forged = signEntry(fleetKey, A(), { ...entry, name, manifest: { ...entry.manifest, name } });
        refused(await refuse(forged, 'unsafe_name', V1, { companions: [current] }));
      }
    });
    expect(existsSync(outside)).toBe(false);
  });

  it('U4 freeze: a correctly signed entry whose expiry passed is refused (expired)', async () => {
    await offline(V1, async (refused) => {
      const entry = await unseen();
      refused(await refuse(signEntry(fleetKey, A(), { ...entry, expires: new Date(Date.now() - 60_000).toISOString() }), 'expired', V1));
    });
  });

  it('U7 fast-forward: 2^53−1 with a bad signature does not move the counter; the next real deployment installs', async () => {
    const huge = Number.MAX_SAFE_INTEGER;
    await offline(V1, async (refused) => {
      const entry = await unseen();
      // Correctly signed for another model name, then renamed to simple: the signature no longer covers it.
      const forOther = signEntry(fleetKey, A(), { ...entry, name: 'other', manifest: { ...entry.manifest, name: 'other' }, deployment: huge });
      refused(await refuse({ ...forOther, name: 'simple', manifest: entry.manifest }, 'bad_signature', V1));
      expect(highest()).toBeLessThan(entry.deployment);
    });
    // The fleet's next deployment (v2) installs and commits: the forged counter never reached the store.
    const d2 = await deploy(A(), 2);
    await activeVersion(a, 'simple', 2);
    expect(await updateReaches(a, 'simple', ['committed'])).toMatchObject({ version: 2, deployment: d2 });
    expect(highest()).toBe(d2);
    expect(await inferSimple(a.url)).toMatchObject({ status: 200, first: 1001 });
  });

  it('U3 replay: the older signed entry is refused after a newer one installed (replay), also after a restart', async () => {
    expect(a.agent.models.active('simple')?.version).toBe(2);
    await offline(V2, async (refused) => {
      refused(await refuse(V1_ENTRY, 'replay', V2));
    });

    // The counter is persisted with the accepted row: a restarted agent still refuses the old entry.
    const seq = await lastSeq(f, A());
    const counter = highest();
    await a.stop();
    a = await a.restart();
    await activeVersion(a, 'simple', 2);
    expect(highest()).toBe(counter);
    const files = agentFiles(a);
    a.agent.updater.onDesired({ ...real, models: [V1_ENTRY] });
    await transitionReaches(f, A(), seq, (d) => d.to === 'failed' && d.reason === 'replay' && d.deployment === V1_ENTRY.deployment, 'replay refused after the restart');
    expect(agentFiles(a)).toEqual(files);
    expect(highest()).toBe(counter);
    expect(await inferSimple(a.url)).toMatchObject({ status: 200, first: 1001 });
  });

  it('the artifact URL is not signed: a real entry pointed at another host never gets the device secret (bad_url)', async () => {
    await pushVersion(f, 'simple', 3, buildSimpleHeavy({ width: 8, layers: 1, seed: 3 }), { golden: 'none' });
    const seen: (string | undefined)[] = [];
    const evil = http.createServer((req, res) => {
      seen.push(req.headers.authorization);
      res.writeHead(404).end();
    });
    await new Promise<void>((resolve) => evil.listen(0, '127.0.0.1', resolve));
    try {
      const port = (evil.address() as AddressInfo).port;
      await offline(V2, async (refused) => {
        // The signature stays valid: url is bookkeeping outside the signed statement.
        const entry = await unseen(3);
        const forged = { ...entry, url: `http://127.0.0.1:${port}${new URL(entry.url, 'http://x').pathname}` };
        a.agent.updater.onDesired({ ...real, models: [forged] });
        await eventually(() => {
          const row = a.agent.updater.store.latest('simple');
          return row?.deployment === forged.deployment && row.state === 'failed' ? row : undefined;
        }, 'the off-fleet download fails');
        expect(a.agent.updater.store.latest('simple')).toMatchObject({ version: 3, reason: 'bad_url' });
        refused({ deployment: forged.deployment, reason: 'bad_url', from: 'downloading' });
      });
      expect(seen).toEqual([]);
      expect(agentFiles(a).repository.filter((p) => p.startsWith(`simple${path.sep}3`))).toEqual([]);
      expect(await inferSimple(a.url)).toMatchObject({ status: 200, first: 1001 });
    } finally {
      await new Promise<void>((resolve) => evil.close(() => resolve()));
    }
  });

  it('removal is not signed either: a desired state that no longer names simple leaves the serving version alone', async () => {
    const files = agentFiles(a);
    const seq = await lastSeq(f, A());
    // Names only another model, with an entry the box refuses: once that refusal is reported, the message was handled.
    const marker = { ...V1_ENTRY, name: 'marker', signature: '' };
    a.agent.updater.onDesired({ ...real, models: [marker] });
    await transitionReaches(f, A(), seq, (d) => d.model === 'marker' && d.reason === 'unsigned', 'the marker refused');
    // A forged "nothing wanted" must not wipe a box: removal carries no signature to check, unlike an install.
    expect(a.agent.updater.store.pointer('simple')).toMatchObject({ active: 2 });
    expect(a.agent.models.active('simple')?.version).toBe(2);
    expect(await inferSimple(a.url)).toMatchObject({ status: 200, first: 1001 });
    expect(agentFiles(a).repository).toEqual(files.repository);
  });
});
