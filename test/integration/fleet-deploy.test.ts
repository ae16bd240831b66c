/**
 * Desired state, maintenance windows, device rollback and commands on a real fleet (SQLite file, embedded
 * aedes, HTTP on 127.0.0.1), with raw mqtt.js devices that verify what they receive the way the agent does.
 * The fleet runs on a manual clock so signature expiry can be moved without waiting.
 */
import { createHash } from 'node:crypto';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { topicFor } from '../../shared/src/mqtt/topics.js';
import { deploymentStatement, manifestDigest, verifyStatement } from '../../shared/src/signing.js';
import { OutpostError } from '../../shared/src/errors.js';
import { manualClock } from '../../fleet-server/src/storage/clock.js';
import { FakeUpdater, pushModel } from '../helpers/fake-updater.js';
import { deviceAuth, enrollDevice, eventually, startFleet, type EnrolledDevice, type RunningFleet } from '../helpers/fleet.js';

const HOUR_MS = 3_600_000;
const clock = manualClock(Date.now());
let f: RunningFleet;
const updaters: FakeUpdater[] = [];

async function device(tags: Record<string, string> = {}, connect = true): Promise<{ d: EnrolledDevice; u: FakeUpdater }> {
  const d = await enrollDevice(f, { tags });
  const u = new FakeUpdater(f.mqttUrl, d);
  updaters.push(u);
  if (connect) await u.connect();
  return { d, u };
}

beforeAll(async () => {
  f = await startFleet({ clock, config: { rollouts: { tickMs: 50 } } });
  await pushModel(f, 'simple', 1);
  await pushModel(f, 'simple', 2);
});

afterEach(async () => {
  for (const u of updaters.splice(0)) await u.close();
});

afterAll(async () => {
  await f?.stop();
});

describe('desired state', () => {
  it('publishes a retained desired message signed for each device, with growing deployment counters and revisions', async () => {
    const a = await device();
    const b = await device();
    const deployer = f.fleet.deployer;
    const r1 = deployer.setDesired(a.d.deviceId, 'simple', { version: 1, rollout: null });
    const r2 = deployer.setDesired(b.d.deviceId, 'simple', { version: 1, rollout: null });
    const r3 = deployer.setDesired(a.d.deviceId, 'simple', { version: 2, rollout: null });
    expect(r1.deployment).toBeLessThan(r2.deployment);
    expect(r2.deployment).toBeLessThan(r3.deployment);
    await eventually(() => a.u.entry('simple')?.version === 2, 'device a to receive version 2');
    await eventually(() => b.u.entry('simple')?.version === 1, 'device b to receive version 1');

    const e = a.u.entry('simple')!;
    const registry = await f.api('GET', '/api/v1/models/simple/versions/2');
    expect(e).toMatchObject({ sha256: registry.body.sha256, size: registry.body.size, manifest: registry.body.manifest, deployment: r3.deployment, rollout: null });
    expect(e.url).toBe('/api/v1/models/simple/versions/2/artifact');
    expect(Date.parse(e.expires)).toBe(clock.now() + 168 * HOUR_MS);
    expect(a.u.badSignatures).toEqual([]);
    expect(b.u.badSignatures).toEqual([]);
    // Signed for THIS device: the same entry does not verify for another device id.
    const forB = deploymentStatement({ device: b.d.deviceId, name: e.name, version: e.version, sha256: e.sha256, size: e.size, manifestSha256: manifestDigest(e.manifest), deployment: e.deployment, expires: e.expires });
    expect(verifyStatement(a.d.fleetPublicKey, forB, e.signature)).toBe(false);
    // Messages only move forward: revisions and (per model) deployment counters grow.
    const revisions = a.u.received.map((m) => m.revision);
    expect(revisions).toEqual([...revisions].sort((x, y) => x - y));
    expect(new Set(revisions).size).toBe(revisions.length);
    expect(a.u.last()!.revision).toBe(r3.revision);

    // The relative URL resolves against the fleet and serves the signed bytes to the device's own credentials.
    const res = await fetch(`${f.httpUrl}${e.url}`, { headers: { authorization: deviceAuth(a.d) } });
    expect(res.status).toBe(200);
    expect(createHash('sha256').update(Buffer.from(await res.arrayBuffer())).digest('hex')).toBe(e.sha256);

    const shown = await f.api('GET', `/api/v1/devices/${a.d.deviceId}/desired`);
    expect(shown.body.message.models[0]).toMatchObject({ name: 'simple', version: 2, deployment: r3.deployment });
    const metrics = await f.api('GET', '/metrics', undefined, null);
    expect(metrics.body).toMatch(/outpost_fleet_desired_published_total\{outcome="ok"\} [1-9]/);
  });

  it('an offline device gets its desired state from the retained message when it connects', async () => {
    const c = await device({}, false);
    const { deployment } = f.fleet.deployer.setDesired(c.d.deviceId, 'simple', { version: 2, rollout: null });
    await f.fleet.deployer.idle();
    expect(c.u.received).toEqual([]);
    await c.u.connect();
    await eventually(() => c.u.entry('simple')?.deployment === deployment, 'the retained desired message on connect');
    expect(c.u.badSignatures).toEqual([]);
  });

  it('removes a model with null, refuses unknown versions and devices', async () => {
    const a = await device();
    f.fleet.deployer.setDesired(a.d.deviceId, 'simple', { version: 1, rollout: null });
    await eventually(() => a.u.entry('simple')?.version === 1, 'version 1');
    const removed = f.fleet.deployer.setDesired(a.d.deviceId, 'simple', null);
    expect(removed.deployment).toBeGreaterThan(0);
    await eventually(() => a.u.last()?.revision === removed.revision, 'the message with the removal');
    // A removal is a signed tombstone with its own counter, never just an absent entry.
    expect(a.u.last()!.models).toMatchObject([{ name: 'simple', remove: true, url: '', size: 0, deployment: removed.deployment }]);
    expect(a.u.badSignatures).toEqual([]);
    expect(a.u.running.has('simple')).toBe(false);
    const code = (fn: () => unknown) => {
      try {
        fn();
      } catch (err) {
        return (err as OutpostError).code;
      }
      return 'no error';
    };
    expect(code(() => f.fleet.deployer.setDesired(a.d.deviceId, 'simple', { version: 9, rollout: null }))).toBe('FLEET_MODEL_NOT_FOUND');
    expect(code(() => f.fleet.deployer.setDesired('dev-nope', 'simple', { version: 1, rollout: null }))).toBe('FLEET_NOT_FOUND');
  });

  it('re-signs entries nearing expiry with a new deployment counter for the same version', async () => {
    const a = await device();
    f.fleet.deployer.setDesired(a.d.deviceId, 'simple', { version: 2, rollout: null });
    await eventually(() => a.u.entry('simple')?.version === 2, 'version 2');
    const before = a.u.entry('simple')!;
    expect(f.fleet.deployer.refreshExpiring()).toBe(0); // nothing is near expiry yet
    clock.advance(85 * HOUR_MS); // past half of the 168 h lifetime
    expect(f.fleet.deployer.refreshExpiring()).toBeGreaterThanOrEqual(1);
    await eventually(() => (a.u.entry('simple')?.deployment ?? 0) > before.deployment, 'the re-signed entry');
    const after = a.u.entry('simple')!;
    expect(after).toMatchObject({ version: 2, sha256: before.sha256 });
    expect(Date.parse(after.expires)).toBe(clock.now() + 168 * HOUR_MS);
    expect(a.u.badSignatures).toEqual([]);
  });
});

describe('maintenance windows', () => {
  it('validates, stores and sends each device its window (own row first, then a tag), republishing on change', async () => {
    const a = await device({ site: 'mw' });
    const b = await device({ site: 'mw' });
    for (const x of [a, b]) f.fleet.deployer.setDesired(x.d.deviceId, 'simple', { version: 1, rollout: null });
    await eventually(() => a.u.entry('simple') && b.u.entry('simple'), 'both devices desired');
    expect(a.u.last()!.maintenanceWindow).toBeNull();

    const bad = async (windows: unknown) => (await f.api('PUT', '/api/v1/maintenance-windows', { windows })).body.code;
    expect(await bad([{ deviceId: a.d.deviceId, cron: 'not a cron', durationMinutes: 30 }])).toBe('FLEET_BAD_REQUEST');
    expect(await bad([{ deviceId: a.d.deviceId, cron: '0 2 * * *', durationMinutes: 0 }])).toBe('FLEET_BAD_REQUEST');
    expect(await bad([{ deviceId: a.d.deviceId, cron: '0 2 * * *', durationMinutes: 1441 }])).toBe('FLEET_BAD_REQUEST');
    expect(await bad([{ deviceId: a.d.deviceId, tag: { key: 'site', value: 'mw' }, cron: '0 2 * * *', durationMinutes: 30 }])).toBe('FLEET_BAD_REQUEST');
    expect(await bad([{ cron: '0 2 * * *', durationMinutes: 30 }])).toBe('FLEET_BAD_REQUEST');

    const put = await f.api('PUT', '/api/v1/maintenance-windows', {
      windows: [
        { tag: { key: 'site', value: 'mw' }, cron: '0 3 * * *', durationMinutes: 60 },
        { deviceId: a.d.deviceId, cron: '30 1 * * 6', durationMinutes: 90 },
      ],
    });
    expect(put.status).toBe(200);
    expect(put.body.republished).toBe(2);
    await eventually(() => a.u.last()?.maintenanceWindow?.cron === '30 1 * * 6', 'device a: its own window');
    await eventually(() => b.u.last()?.maintenanceWindow?.cron === '0 3 * * *', 'device b: the tag window');
    expect(b.u.last()!.maintenanceWindow).toEqual({ cron: '0 3 * * *', durationMinutes: 60 });
    const listed = await f.api('GET', '/api/v1/maintenance-windows');
    expect(listed.body.windows).toHaveLength(2);
    expect(listed.body.windows[1]).toMatchObject({ deviceId: a.d.deviceId, tag: null, cron: '30 1 * * 6', durationMinutes: 90 });

    // Clearing them sends both devices a message without a window.
    expect((await f.api('PUT', '/api/v1/maintenance-windows', { windows: [] })).body.republished).toBeGreaterThanOrEqual(2);
    await eventually(() => a.u.last()?.maintenanceWindow === null && b.u.last()?.maintenanceWindow === null, 'windows cleared');
  });
});

describe('device rollback', () => {
  it('points a device back at the previous version (202) and validates the request', async () => {
    const a = await device();
    f.fleet.deployer.setDesired(a.d.deviceId, 'simple', { version: 2, rollout: null });
    const res = await f.api('POST', `/api/v1/devices/${a.d.deviceId}/rollback`, { model: 'simple' });
    expect(res.status).toBe(202);
    expect(res.body).toMatchObject({ deviceId: a.d.deviceId, model: 'simple', version: 1 });
    await eventually(() => a.u.entry('simple')?.deployment === res.body.deployment, 'the rollback entry');
    expect(a.u.entry('simple')!.version).toBe(1);

    expect((await f.api('POST', `/api/v1/devices/${a.d.deviceId}/rollback`, { model: 'simple', version: 2 })).status).toBe(202);
    const missing = await f.api('POST', `/api/v1/devices/${a.d.deviceId}/rollback`, { model: 'simple', version: 7 });
    expect([missing.status, missing.body.code]).toEqual([404, 'FLEET_MODEL_NOT_FOUND']);
    const none = await f.api('POST', `/api/v1/devices/${a.d.deviceId}/rollback`, { model: 'other' });
    expect([none.status, none.body.code]).toEqual([400, 'FLEET_BAD_REQUEST']);
    expect((await f.api('POST', '/api/v1/devices/dev-unknown/rollback', { model: 'simple' })).status).toBe(404);
    expect((await f.api('POST', `/api/v1/devices/${a.d.deviceId}/rollback`, { model: 'simple', extra: 1 })).status).toBe(400);
    expect((await f.api('POST', `/api/v1/devices/${a.d.deviceId}/rollback`, { model: 'simple' }, deviceAuth(a.d))).status).toBe(403);
  });
});

describe('commands', () => {
  it('round trip: sent → ok / failed from cmd/result, and timed_out when the device does not answer', async () => {
    const a = await device();
    const client = a.u.client!;
    let answer: 'ok' | 'fail' | 'silent' = 'ok';
    await client.subscribeAsync(topicFor(a.d.deviceId, 'cmd'), { qos: 1 });
    client.on('message', (topic, payload) => {
      if (topic !== topicFor(a.d.deviceId, 'cmd') || answer === 'silent') return;
      const cmd = JSON.parse(payload.toString()) as { id: string; kind: string };
      void a.u.publish('cmd/result', answer === 'ok' ? { id: cmd.id, ok: true, result: { pong: cmd.kind } } : { id: cmd.id, ok: false, error: { code: 'E_BUSY', message: 'busy' } });
    });

    const sent = await f.api('POST', `/api/v1/devices/${a.d.deviceId}/commands`, { kind: 'ping' });
    expect(sent.status).toBe(202);
    expect(sent.body).toMatchObject({ kind: 'ping', state: 'sent', args: {}, result: null, finishedAt: null });
    const done = await eventually(async () => {
      const r = await f.api('GET', `/api/v1/devices/${a.d.deviceId}/commands/${sent.body.id}`);
      return r.body.state === 'ok' && r.body;
    }, 'the ping result');
    expect(done).toMatchObject({ result: { pong: 'ping' }, error: null });
    expect(done.finishedAt).not.toBeNull();

    answer = 'fail';
    const failed = await f.api('POST', `/api/v1/devices/${a.d.deviceId}/commands`, { kind: 'reload', args: { model: 'simple' } });
    await eventually(async () => (await f.api('GET', `/api/v1/devices/${a.d.deviceId}/commands/${failed.body.id}`)).body.state === 'failed', 'the failed result');
    expect((await f.api('GET', `/api/v1/devices/${a.d.deviceId}/commands/${failed.body.id}`)).body.error).toEqual({ code: 'E_BUSY', message: 'busy' });

    answer = 'silent';
    const lost = await f.api('POST', `/api/v1/devices/${a.d.deviceId}/commands`, { kind: 'diagnostics', timeoutMs: 150 });
    await eventually(async () => (await f.api('GET', `/api/v1/devices/${a.d.deviceId}/commands/${lost.body.id}`)).body.state === 'timed_out', 'the timeout');

    const list = await f.api('GET', `/api/v1/devices/${a.d.deviceId}/commands`);
    expect(list.body.commands.map((c: { kind: string; state: string }) => [c.kind, c.state]).sort()).toEqual([['diagnostics', 'timed_out'], ['ping', 'ok'], ['reload', 'failed']]);
    const unknown = await f.api('GET', `/api/v1/devices/${a.d.deviceId}/commands/cmd-nope`);
    expect([unknown.status, unknown.body.code]).toEqual([404, 'FLEET_COMMAND_NOT_FOUND']);
    expect((await f.api('POST', `/api/v1/devices/${a.d.deviceId}/commands`, { kind: 'reboot' })).body.code).toBe('FLEET_BAD_REQUEST');
    expect((await f.api('POST', `/api/v1/devices/${a.d.deviceId}/commands`, { kind: 'ping', timeoutMs: 0 })).body.code).toBe('FLEET_BAD_REQUEST');
    expect((await f.api('POST', '/api/v1/devices/dev-unknown/commands', { kind: 'ping' })).status).toBe(404);
  });
});
