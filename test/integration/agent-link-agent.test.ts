import { chmodSync, cpSync } from 'node:fs';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { createAgent, type Agent } from '../../agent/src/agent.js';
import { loadConfig } from '../../agent/src/config/load.js';
import { credentialsPath, saveCredentials } from '../../agent/src/link/credentials.js';
import { GENERATED_REPOSITORY } from '../helpers/paths.js';
import { parseMetrics, value } from '../helpers/prom-text.js';
import { DEVICE, FleetObserver, log, startBroker, tempDir, until } from './agent-link-support.js';

/**
 * The whole agent (createAgent) enrolled to the fleet's embedded broker: it announces itself, reports model
 * loads as events, shows the link in /status and /metrics, answers commands through the outbox, ignores and
 * counts bad fleet messages, and says goodbye on stop. Everything over real MQTT and real HTTP.
 */
const cleanups: (() => Promise<void> | void)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

async function startEnrolledAgent(mqttUrl: string | undefined, beforeCreate?: (dataDir: string) => void): Promise<{ agent: Agent; url: string; dataDir: string }> {
  const tmp = tempDir('outpost-agent-link-');
  cleanups.push(() => tmp.remove());
  const repository = path.join(tmp.dir, 'models');
  // simple has versions 1 and 2; the default policy serves the latest.
  cpSync(path.join(GENERATED_REPOSITORY, 'simple'), path.join(repository, 'simple'), { recursive: true });
  if (mqttUrl) {
    saveCredentials(tmp.dir, { ...DEVICE, mqttUrl, fleetUrl: 'http://127.0.0.1:1', fleetPublicKey: 'test-key', tags: { site: 'test' }, enrolledAt: new Date().toISOString() });
  }
  beforeCreate?.(tmp.dir);
  const config = loadConfig({
    env: {},
    flags: { dataDir: tmp.dir, modelRepository: repository, http: { host: '127.0.0.1', port: 0 }, fleet: { keepaliveSeconds: 5, reconnectMinMs: 50, reconnectMaxMs: 500 }, telemetry: { system: false } },
  });
  const agent = await createAgent(config, { log });
  let stopped = false;
  cleanups.push(async () => {
    if (!stopped) await agent.stop();
  });
  const url = await agent.start();
  const stop = agent.stop.bind(agent);
  agent.stop = async () => {
    stopped = true;
    await stop();
  };
  return { agent, url, dataDir: tmp.dir };
}

const getJson = async (url: string) => (await fetch(url)).json() as Promise<any>;
const getText = async (url: string) => (await fetch(url)).text();
const metricValue = (text: string, name: string, labels: Record<string, string> = {}) => value(parseMetrics(text), name, labels);

describe('agent enrolled to a fleet', () => {
  it('connects, reports its state and model loads, and shows the link in /status and /metrics', async () => {
    const broker = await startBroker();
    cleanups.push(() => broker.close());
    const fleet = await FleetObserver.connect(broker);
    cleanups.push(() => fleet.close());
    const { url } = await startEnrolledAgent(`mqtt://127.0.0.1:${broker.port}`);

    await until('model.loaded event at the fleet', () => fleet.of('events').some((r) => r.message?.kind === 'model.loaded'));
    await until('a state listing the ready model', () => fleet.of('state').some((r) => (r.message?.models as { state: string }[] | undefined)?.some((m) => m.state === 'ready') === true));
    expect(fleet.received.filter((r) => r.invalid)).toEqual([]);
    const loaded = fleet.of('events').find((r) => r.message?.kind === 'model.loaded')!.message!;
    expect(loaded).toMatchObject({ deviceId: DEVICE.deviceId, severity: 'info', data: { name: 'simple', version: 2, provider: 'cpu', error: null } });
    expect((loaded.data as { loadMs: number }).loadMs).toBeGreaterThanOrEqual(0);
    const state = fleet.of('state').at(-1)!.message!;
    expect(state).toMatchObject({ online: true, provider: 'cpu', models: [{ name: 'simple', version: 2, state: 'ready', provider: 'cpu', error: null }] });

    const status = await getJson(`${url}/status`);
    expect(status.deviceId).toBe(DEVICE.deviceId);
    expect(status.link).toMatchObject({ state: 'connected', mqttUrl: `mqtt://127.0.0.1:${broker.port}`, reconnects: 0, lastError: null, desiredRevision: null });
    expect(Date.parse(status.link.connectedSince)).toBeLessThanOrEqual(Date.now());
    expect(status.outbox).toMatchObject({ droppedTelemetry: 0, deadLettered: 0, alarm: null });
    const metrics = await getText(`${url}/metrics`);
    expect(metricValue(metrics, 'outpost_link_connected')).toBe(1);
    expect(metricValue(metrics, 'outpost_outbox_alarm')).toBe(0);
  });

  it('answers ping through cmd/result with the command id, answers a rollback with nothing to roll back with its code, and keeps the newest desired state', async () => {
    const broker = await startBroker();
    cleanups.push(() => broker.close());
    const fleet = await FleetObserver.connect(broker);
    cleanups.push(() => fleet.close());
    const { agent, url } = await startEnrolledAgent(`mqtt://127.0.0.1:${broker.port}`);
    await until('link up', () => agent.link?.connected === true);
    const desiredSeen: number[] = [];
    agent.link!.on('desired', (d) => desiredSeen.push(d.revision));

    const ts = new Date().toISOString();
    await fleet.publish(DEVICE.deviceId, 'cmd', JSON.stringify({ v: 1, id: 'cmd-ping-1', ts, kind: 'ping' }));
    await fleet.publish(DEVICE.deviceId, 'cmd', JSON.stringify({ v: 1, id: 'cmd-rb-2', ts, kind: 'rollback', args: { model: 'simple' } }));
    await until('two command results', () => fleet.of('cmd/result').length >= 2);
    const results = fleet.of('cmd/result').map((r) => r.message!);
    expect(results.find((r) => r.id === 'cmd-ping-1')).toMatchObject({ deviceId: DEVICE.deviceId, ok: true, result: { pong: true } });
    // Nothing was ever deployed here: a rollback has nowhere to go, and says so with its stable code.
    expect(results.find((r) => r.id === 'cmd-rb-2')).toMatchObject({ ok: false, error: { code: 'AGENT_CMD_NOTHING_TO_ROLL_BACK' } });
    expect(typeof results[0]!.seq).toBe('number');

    const desired = (revision: number) => JSON.stringify({ v: 1, deviceId: DEVICE.deviceId, revision, ts, models: [] });
    await fleet.publish(DEVICE.deviceId, 'desired', desired(7), true);
    await fleet.publish(DEVICE.deviceId, 'desired', desired(5), true);
    await fleet.publish(DEVICE.deviceId, 'desired', desired(7), true);
    await until('desired revision in /status', () => agent.link!.status().desiredRevision === 7);
    expect((await getJson(`${url}/status`)).link.desiredRevision).toBe(7);
    // A final ping proves the older and repeated revisions were processed (QoS 1 keeps the order) and ignored.
    await fleet.publish(DEVICE.deviceId, 'cmd', JSON.stringify({ v: 1, id: 'cmd-ping-3', ts, kind: 'ping' }));
    await until('last ping answered', () => fleet.of('cmd/result').some((r) => r.message?.id === 'cmd-ping-3'));
    expect(desiredSeen).toEqual([7]);
  });

  it('counts and ignores invalid fleet messages without losing the link', async () => {
    const broker = await startBroker();
    cleanups.push(() => broker.close());
    const fleet = await FleetObserver.connect(broker);
    cleanups.push(() => fleet.close());
    const { agent, url } = await startEnrolledAgent(`mqtt://127.0.0.1:${broker.port}`);
    await until('link up', () => agent.link?.connected === true);
    const ts = new Date().toISOString();
    await fleet.publish(DEVICE.deviceId, 'desired', 'not json {');
    await fleet.publish(DEVICE.deviceId, 'desired', JSON.stringify({ v: 1, deviceId: 'other-box', revision: 3, ts, models: [] }));
    await fleet.publish(DEVICE.deviceId, 'desired', JSON.stringify({ v: 1, deviceId: DEVICE.deviceId, revision: 0, ts, models: [] }));
    await fleet.publish(DEVICE.deviceId, 'cmd', JSON.stringify({ v: 1, id: 'x', ts, kind: 'format-disk' }));
    await fleet.publish(DEVICE.deviceId, 'cmd', Buffer.alloc(300 * 1024, 0x7b));
    await fleet.publish(DEVICE.deviceId, 'cmd', JSON.stringify({ v: 1, id: 'after-junk', ts, kind: 'ping' }));
    await until('ping after the junk answered', () => fleet.of('cmd/result').some((r) => r.message?.id === 'after-junk'));

    const metrics = await getText(`${url}/metrics`);
    const rejected = (kind: string, reason: string) => metricValue(metrics, 'outpost_link_rejected_messages_total', { kind, reason });
    expect(rejected('desired', 'not-json')).toBe(1);
    expect(rejected('desired', 'wrong-device')).toBe(1);
    expect(rejected('desired', 'invalid')).toBe(1);
    expect(rejected('cmd', 'invalid')).toBe(1);
    expect(rejected('cmd', 'oversized')).toBe(1);
    expect(fleet.of('cmd/result').map((r) => r.message?.id)).toEqual(['after-junk']);
    expect(agent.link!.status()).toMatchObject({ state: 'connected', reconnects: 0, desiredRevision: null });
  });

  it('on stop, leaves {online:false, reason:"shutdown"} as its retained state', async () => {
    const broker = await startBroker();
    cleanups.push(() => broker.close());
    const fleet = await FleetObserver.connect(broker);
    cleanups.push(() => fleet.close());
    const { agent } = await startEnrolledAgent(`mqtt://127.0.0.1:${broker.port}`);
    await until('online state at the fleet', () => fleet.of('state').some((r) => r.message?.online === true));
    await agent.stop();
    await until('shutdown state at the fleet', () => fleet.of('state').some((r) => r.message?.reason === 'shutdown'));
    expect(fleet.of('state').some((r) => r.message?.reason === 'connection-lost')).toBe(false);
  });

  it('without credentials serves offline: link not-enrolled, outpost_link_connected 0', async () => {
    const { url } = await startEnrolledAgent(undefined);
    const status = await getJson(`${url}/status`);
    expect(status.deviceId).toBeNull();
    expect(status.link).toMatchObject({ state: 'not-enrolled', mqttUrl: null, lastError: null });
    expect(metricValue(await getText(`${url}/metrics`), 'outpost_link_connected')).toBe(0);
    expect((await fetch(`${url}/v2/health/ready`)).status).toBe(200);
  });

  it('refuses world-readable credentials: link off with the reason in /status, inference still serving', async () => {
    const { url } = await startEnrolledAgent('mqtt://127.0.0.1:1', (dataDir) => chmodSync(credentialsPath(dataDir), 0o644));
    const status = await getJson(`${url}/status`);
    expect(status.link.state).toBe('not-enrolled');
    expect(status.link.lastError).toMatch(/readable by every user.*chmod 600/);
    expect((await fetch(`${url}/v2/health/ready`)).status).toBe(200);
  });
});
