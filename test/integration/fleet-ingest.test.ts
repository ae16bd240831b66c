import type { MqttClient } from 'mqtt';
import { afterEach, describe, expect, it } from 'vitest';
import { MAX_PAYLOAD_BYTES } from '../../shared/src/mqtt/messages.js';
import { AGENT_TOPIC_KINDS, topicFor, type AgentTopicKind } from '../../shared/src/mqtt/topics.js';
import { manualClock } from '../../fleet-server/src/storage/clock.js';
import { connectDevice, enrollDevice, eventually, startFleet, type EnrolledDevice, type RunningFleet } from '../helpers/fleet.js';
import { parseMetrics, samples, type Sample } from '../helpers/prom-text.js';

// A real enrolled device (mqtt.js with its own credentials) publishing to the embedded broker, whose
// publish hook feeds the ingest before the PUBACK; results are read back through REST, /metrics and SQLite.
const open: { fleets: RunningFleet[]; clients: MqttClient[] } = { fleets: [], clients: [] };
afterEach(async () => {
  for (const c of open.clients.splice(0)) c.end(true);
  for (const f of open.fleets.splice(0).reverse()) await f.stop();
});

async function setup(dataDir?: string): Promise<{ f: RunningFleet; d: EnrolledDevice; device: MqttClient }> {
  const f = await startFleet(dataDir ? { dataDir } : {});
  open.fleets.push(f);
  const d = await enrollDevice(f, { tags: { site: 'test' } });
  const device = await connectDevice(f.mqttUrl, d);
  open.clients.push(device);
  return { f, d, device };
}

const now = () => new Date().toISOString();

/** A valid message of each agent kind, as the agent's outbox would send it. */
function valid(kind: AgentTopicKind, deviceId: string, seq: number, extra: Record<string, unknown> = {}): Record<string, unknown> {
  const envelope = { v: 1, deviceId, seq, ts: now() };
  switch (kind) {
    case 'telemetry':
      return {
        ...envelope, windowStart: new Date(Date.now() - 10_000).toISOString(), windowEnd: now(), system: null,
        models: [{ model: 'detector', version: 1, requests: 10, failures: 1, latencyMs: { p50: 5, p95: 9, p99: 9, hist: { '54': 10 } }, queueMs: { p50: 0, p95: 0, p99: 0, hist: {} }, batchSize: { mean: 1, max: 1 }, scoreBins: Array(10).fill(0), classes: {} }],
        ...extra,
      };
    case 'events':
      return { ...envelope, kind: 'model.loaded', severity: 'info', message: `event ${seq}`, data: {}, ...extra };
    case 'state':
      return {
        ...envelope, online: true, agentVersion: '1.0.0', startedAt: now(), provider: 'cpu',
        models: [{ name: 'detector', version: 1, state: 'active', provider: 'cpu', error: null }],
        outbox: { rows: 2, bytes: 300, droppedTelemetry: 0, deadLettered: 0 }, hardware: {}, update: {}, ...extra,
      };
    case 'cmd/result':
      return { ...envelope, id: `cmd-${seq}`, ok: true, result: { pong: true }, ...extra };
  }
}

async function publish(client: MqttClient, deviceId: string, kind: AgentTopicKind, payload: unknown): Promise<void> {
  const bytes = Buffer.isBuffer(payload) ? payload : Buffer.from(JSON.stringify(payload));
  await client.publishAsync(topicFor(deviceId, kind), bytes, { qos: 1, retain: kind === 'state' });
}

async function scrape(f: RunningFleet): Promise<Sample[]> {
  return parseMetrics((await f.api('GET', '/metrics', undefined, null)).body as string);
}

function count(all: Sample[], name: string, labels: Record<string, string> = {}): number {
  return samples(all, name, labels).reduce((n, s) => n + s.value, 0);
}

function rows(f: RunningFleet, sql: string, ...params: unknown[]): Record<string, unknown>[] {
  return f.fleet.store.db.prepare(sql).all(...params) as Record<string, unknown>[];
}

/** Waits until the event with this seq is stored: the fleet handles one device's messages in order, so everything sent before it has been handled too. */
async function sentinel(f: RunningFleet, client: MqttClient, deviceId: string, seq: number): Promise<void> {
  await publish(client, deviceId, 'events', valid('events', deviceId, seq, { message: 'sentinel' }));
  await eventually(() => rows(f, 'SELECT 1 FROM events WHERE device_id = ? AND seq = ?', deviceId, seq).length === 1, `event ${seq} to be stored`);
}

describe('ingest of a real device', () => {
  it('stores telemetry, events, state and command results, each (device, seq) once', async () => {
    const { f, d, device } = await setup();
    await publish(device, d.deviceId, 'telemetry', valid('telemetry', d.deviceId, 1));
    await publish(device, d.deviceId, 'events', valid('events', d.deviceId, 2));
    await publish(device, d.deviceId, 'state', valid('state', d.deviceId, 3));
    await publish(device, d.deviceId, 'cmd/result', valid('cmd/result', d.deviceId, 4));
    // Redeliveries (same seq): the first copy wins even when the bytes differ.
    await publish(device, d.deviceId, 'telemetry', valid('telemetry', d.deviceId, 1, { models: [] }));
    await publish(device, d.deviceId, 'events', valid('events', d.deviceId, 2, { message: 'copy' }));
    await publish(device, d.deviceId, 'cmd/result', valid('cmd/result', d.deviceId, 4, { ok: false }));
    await sentinel(f, device, d.deviceId, 5);

    const metrics = await f.api('GET', `/api/v1/devices/${d.deviceId}/metrics?model=detector`);
    expect(metrics.body).toMatchObject({ requests: 10, failures: 1 });
    expect(metrics.body.points).toHaveLength(1);
    const events = (await f.api('GET', `/api/v1/devices/${d.deviceId}/events`)).body.events;
    expect(events.map((e: { seq: number; message: string }) => [e.seq, e.message])).toEqual([[2, 'event 2'], [5, 'sentinel']]);
    expect(rows(f, 'SELECT id, ok FROM cmd_results')).toEqual([{ id: 'cmd-4', ok: 1 }]);
    const view = (await f.api('GET', `/api/v1/devices/${d.deviceId}`)).body;
    expect(view).toMatchObject({
      online: true, agentVersion: '1.0.0', provider: 'cpu', models: [{ name: 'detector', version: 1, state: 'active' }],
      outbox: { rows: 2, bytes: 300, droppedTelemetry: 0, deadLettered: 0 }, reported: { seq: 3, agentVersion: '1.0.0' },
    });
    expect(Date.parse(view.lastSeen)).toBeGreaterThan(Date.now() - 60_000);

    const m = await scrape(f);
    expect(count(m, 'outpost_fleet_duplicate_messages_total')).toBe(3);
    for (const kind of AGENT_TOPIC_KINDS) expect(count(m, 'outpost_fleet_ingest_messages_total', { kind }), kind).toBe(kind === 'events' ? 2 : 1);
    expect(count(m, 'outpost_fleet_ingest_delay_seconds_count')).toBe(5);
    expect(count(m, 'outpost_fleet_connected_devices')).toBe(1);
  });

  it('keeps the newest state when an older one arrives late, and the last will marks the device offline', async () => {
    const { f, d, device } = await setup();
    await publish(device, d.deviceId, 'state', valid('state', d.deviceId, 10, { agentVersion: '2.0.0' }));
    await publish(device, d.deviceId, 'state', valid('state', d.deviceId, 9, { agentVersion: '1.9.0' }));
    await sentinel(f, device, d.deviceId, 11);
    expect((await f.api('GET', `/api/v1/devices/${d.deviceId}`)).body).toMatchObject({ online: true, agentVersion: '2.0.0' });

    // A clean shutdown (with seq) goes offline but keeps the last full report.
    await publish(device, d.deviceId, 'state', { v: 1, deviceId: d.deviceId, seq: 12, ts: now(), online: false, reason: 'shutdown' });
    await eventually(async () => (await f.api('GET', `/api/v1/devices/${d.deviceId}`)).body.online === false, 'shutdown state');
    expect((await f.api('GET', `/api/v1/devices/${d.deviceId}`)).body.agentVersion).toBe('2.0.0');
    await publish(device, d.deviceId, 'state', valid('state', d.deviceId, 13, { agentVersion: '2.0.1' }));
    await eventually(async () => (await f.api('GET', `/api/v1/devices/${d.deviceId}`)).body.online === true, 'online again');

    // The broker publishes the last will when the connection drops without DISCONNECT.
    const will = { v: 1, deviceId: d.deviceId, online: false, reason: 'connection-lost', ts: now() };
    const withWill = await connectDevice(f.mqttUrl, d, { will: { topic: topicFor(d.deviceId, 'state'), payload: Buffer.from(JSON.stringify(will)), qos: 1, retain: true } });
    open.clients.push(withWill);
    withWill.stream.destroy();
    await eventually(async () => (await f.api('GET', `/api/v1/devices/${d.deviceId}`)).body.online === false, 'the last will to mark the device offline');
    const view = (await f.api('GET', `/api/v1/devices/${d.deviceId}`)).body;
    expect(view).toMatchObject({ agentVersion: '2.0.1', reported: { seq: 13 } });
    // The will has no seq and is not a stored message.
    expect(rows(f, 'SELECT seq FROM received WHERE kind = ? ORDER BY seq', 'state').map((r) => r.seq)).toEqual([9, 10, 12, 13]);
  });

  it('deduplicates across a fleet restart: the dedup record is in SQLite, not in the MQTT session', async () => {
    const first = await setup();
    await publish(first.device, first.d.deviceId, 'telemetry', valid('telemetry', first.d.deviceId, 1));
    await sentinel(first.f, first.device, first.d.deviceId, 2);
    const dataDir = first.f.dataDir;
    first.device.end(true);
    await first.f.fleet.stop();

    // New process state: new broker, new fleet client session, same database and credentials.
    const f = await startFleet({ dataDir });
    open.fleets.push(f);
    const device = await connectDevice(f.mqttUrl, first.d);
    open.clients.push(device);
    await publish(device, first.d.deviceId, 'telemetry', valid('telemetry', first.d.deviceId, 1, { models: [] }));
    await publish(device, first.d.deviceId, 'events', valid('events', first.d.deviceId, 2, { message: 'again' }));
    await publish(device, first.d.deviceId, 'telemetry', valid('telemetry', first.d.deviceId, 3));
    await eventually(() => rows(f, 'SELECT 1 FROM model_points WHERE seq = 3').length === 1, 'seq 3 stored');
    expect(rows(f, 'SELECT seq, requests FROM model_points ORDER BY seq')).toEqual([{ seq: 1, requests: 10 }, { seq: 3, requests: 10 }]);
    expect(rows(f, 'SELECT seq, message FROM events')).toEqual([{ seq: 2, message: 'sentinel' }]);
    expect(count(await scrape(f), 'outpost_fleet_duplicate_messages_total')).toBe(2);
    expect((await f.api('GET', `/api/v1/devices/${first.d.deviceId}/metrics?model=detector`)).body.requests).toBe(20);
  });
});

describe('retention', () => {
  it('deletes data older than retentionDays and still treats a redelivery of pruned data as a duplicate', async () => {
    const DAY = 86_400_000;
    const t0 = Date.parse('2030-03-01T00:00:00Z');
    const clock = manualClock(t0);
    const f = await startFleet({ clock, config: { telemetry: { retentionDays: 30 } } });
    open.fleets.push(f);
    const d = await enrollDevice(f);
    const at = (ms: number) => new Date(ms).toISOString();
    const telemetryAt = (seq: number, ms: number) => valid('telemetry', d.deviceId, seq, { ts: at(ms), windowStart: at(ms - 10_000), windowEnd: at(ms) });
    const send = (kind: AgentTopicKind, msg: unknown) => f.fleet.ingest(topicFor(d.deviceId, kind), Buffer.from(JSON.stringify(msg)));

    send('telemetry', telemetryAt(1, t0));
    send('events', valid('events', d.deviceId, 2, { ts: at(t0) }));
    clock.set(t0 + 30.5 * DAY);
    send('telemetry', telemetryAt(3, t0 + 30.5 * DAY));
    clock.set(t0 + 31 * DAY);
    expect(f.fleet.retention.runOnce()).toEqual({ modelPoints: 1, systemPoints: 0, events: 1, cmdResults: 0, received: 2 });
    expect(rows(f, 'SELECT seq FROM model_points')).toEqual([{ seq: 3 }]);
    expect(rows(f, 'SELECT seq FROM received')).toEqual([{ seq: 3 }]);

    // seq 1's dedup record is gone, yet its redelivery is still a duplicate; seq 3's record is still there.
    send('telemetry', telemetryAt(1, t0));
    send('telemetry', telemetryAt(3, t0 + 30.5 * DAY));
    send('telemetry', telemetryAt(4, t0 + 31 * DAY));
    expect(rows(f, 'SELECT seq FROM model_points ORDER BY seq')).toEqual([{ seq: 3 }, { seq: 4 }]);
    const m = await scrape(f);
    expect(count(m, 'outpost_fleet_duplicate_messages_total', { kind: 'telemetry' })).toBe(2);
    expect(count(m, 'outpost_fleet_retention_deleted_rows_total', { table: 'received' })).toBe(2);
  });
});

describe('garbage from a device', () => {
  it('drops and counts every malformed message on every topic kind, stays up, and still ingests the next valid one', async () => {
    const { f, d, device } = await setup();
    const cases: { kind: AgentTopicKind; reason: string; payload: unknown }[] = [];
    for (const kind of AGENT_TOPIC_KINDS) {
      const { seq: _seq, ...noSeq } = valid(kind, d.deviceId, 1);
      cases.push(
        { kind, reason: 'not-json', payload: Buffer.from('{"v":1, this is not json') },
        { kind, reason: 'not-json', payload: Buffer.from([0xff, 0xfe, 0x00, 0x01]) },
        { kind, reason: 'invalid', payload: { v: 1, hello: 'world' } },
        { kind, reason: 'invalid', payload: [] },
        { kind, reason: 'invalid', payload: valid(kind, d.deviceId, 1, { v: 99 }) },
        { kind, reason: 'invalid', payload: noSeq },
        { kind, reason: 'invalid', payload: valid(kind, d.deviceId, -1) },
        { kind, reason: 'oversized', payload: valid(kind, d.deviceId, 1, { padding: 'x'.repeat(MAX_PAYLOAD_BYTES) }) },
        { kind, reason: 'wrong-device', payload: valid(kind, 'dev-someone-else', 1) },
      );
    }
    for (const c of cases) await publish(device, d.deviceId, c.kind, c.payload);
    await sentinel(f, device, d.deviceId, 1000);

    expect((await f.api('GET', '/healthz', undefined, null)).status).toBe(200);
    const m = await scrape(f);
    for (const kind of AGENT_TOPIC_KINDS) {
      for (const reason of new Set(cases.map((c) => c.reason))) {
        const expected = cases.filter((c) => c.kind === kind && c.reason === reason).length;
        expect({ kind, reason, n: count(m, 'outpost_fleet_rejected_messages_total', { kind, reason }) }).toEqual({ kind, reason, n: expected });
      }
    }
    expect(count(m, 'outpost_fleet_rejected_messages_total')).toBe(cases.length);
    // Nothing but the sentinel was stored, and the device's reported state was not touched.
    expect(rows(f, 'SELECT seq FROM received')).toEqual([{ seq: 1000 }]);
    expect(rows(f, 'SELECT COUNT(*) AS n FROM model_points UNION ALL SELECT COUNT(*) FROM system_points UNION ALL SELECT COUNT(*) FROM cmd_results')).toEqual([{ n: 0 }, { n: 0 }, { n: 0 }]);
    expect((await f.api('GET', `/api/v1/devices/${d.deviceId}`)).body.reported).toBeNull();

    // A valid message after all that is ingested, over the same connection.
    await publish(device, d.deviceId, 'telemetry', valid('telemetry', d.deviceId, 1001));
    await eventually(async () => (await f.api('GET', `/api/v1/devices/${d.deviceId}/metrics?model=detector`)).body.requests === 10, 'telemetry after garbage');
    expect(device.connected).toBe(true);
  });

  it('drops messages for unknown devices and non-agent topics that reach the ingest', async () => {
    const { f, d } = await setup();
    f.fleet.ingest(topicFor('dev-nobody', 'events'), Buffer.from(JSON.stringify(valid('events', 'dev-nobody', 1))));
    f.fleet.ingest(topicFor(d.deviceId, 'desired'), Buffer.from('{}'));
    f.fleet.ingest('somewhere/else', Buffer.from('{}'));
    await f.api('POST', `/api/v1/devices/${d.deviceId}/revoke`);
    f.fleet.ingest(topicFor(d.deviceId, 'events'), Buffer.from(JSON.stringify(valid('events', d.deviceId, 1))));
    const m = await scrape(f);
    expect(count(m, 'outpost_fleet_rejected_messages_total', { kind: 'events', reason: 'unknown-device' })).toBe(1);
    expect(count(m, 'outpost_fleet_rejected_messages_total', { reason: 'unknown-topic' })).toBe(2);
    expect(count(m, 'outpost_fleet_rejected_messages_total', { kind: 'events', reason: 'revoked' })).toBe(1);
    expect(rows(f, 'SELECT COUNT(*) AS n FROM received')).toEqual([{ n: 0 }]);
  });
});
