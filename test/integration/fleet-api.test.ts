import { createHash } from 'node:crypto';
import { statSync } from 'node:fs';
import type { MqttClient } from 'mqtt';
import { afterEach, describe, expect, it } from 'vitest';
import { TelemetryMessageSchema, type TelemetryMessage } from '../../shared/src/mqtt/messages.js';
import { topicFor } from '../../shared/src/mqtt/topics.js';
import { observe, quantile, type SparseHistogram } from '../../shared/src/telemetry/histogram.js';
import { SIGNING_KEY_FILE } from '../../fleet-server/src/auth/signing-key.js';
import { manualClock } from '../../fleet-server/src/storage/clock.js';
import { connectDevice, deviceAuth, enrollDevice, startFleet, type RunningFleet } from '../helpers/fleet.js';

// Everything here runs against a real fleet (SQLite file, aedes, fastify on 127.0.0.1:0) and real mqtt.js clients.
const open: { fleets: RunningFleet[]; clients: MqttClient[] } = { fleets: [], clients: [] };
afterEach(async () => {
  for (const c of open.clients.splice(0)) c.end(true);
  for (const f of open.fleets.splice(0).reverse()) await f.stop();
});

async function fleet(options: Parameters<typeof startFleet>[0] = {}): Promise<RunningFleet> {
  const f = await startFleet(options);
  open.fleets.push(f);
  return f;
}

async function connect(f: RunningFleet, d: { deviceId: string; secret: string }): Promise<MqttClient> {
  const c = await connectDevice(f.mqttUrl, d);
  open.clients.push(c);
  return c;
}

/** Resolves when the client's connection closes; fails after timeoutMs so a missing kick fails fast. */
function closed(client: MqttClient, timeoutMs = 5_000): Promise<void> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`connection not closed within ${timeoutMs} ms`)), timeoutMs);
    client.once('close', () => {
      clearTimeout(timer);
      resolve();
    });
  });
}

/** The CONNACK refusal code of a connect attempt that must fail (4 bad credentials, 5 not authorized). */
async function refusal(f: RunningFleet, d: { deviceId: string; secret: string }): Promise<number> {
  const err = await connectDevice(f.mqttUrl, d).then(
    (c) => {
      open.clients.push(c);
      throw new Error(`${d.deviceId} connected but should have been refused`);
    },
    (e: Error & { code?: number }) => e,
  );
  expect(typeof err.code, String(err)).toBe('number');
  return err.code!;
}

describe('operator authentication', () => {
  it('refuses every operator route without a valid token, and leaves /healthz and /metrics open', async () => {
    const f = await fleet();
    for (const [method, url] of [['GET', '/api/v1/devices'], ['GET', '/api/v1/info'], ['POST', '/api/v1/enrollment-tokens'], ['GET', '/api/v1/devices/dev-1/metrics?model=m']] as const) {
      const none = await f.api(method, url, method === 'POST' ? {} : undefined, null);
      expect([url, none.status, none.body.code]).toEqual([url, 401, 'FLEET_UNAUTHORIZED']);
      const wrong = await f.api(method, url, method === 'POST' ? {} : undefined, 'opt_not-a-real-token');
      expect([url, wrong.status, wrong.body.code]).toEqual([url, 401, 'FLEET_UNAUTHORIZED']);
    }
    expect((await f.api('GET', '/healthz', undefined, null)).body).toEqual({ ok: true });
    const metrics = await f.api('GET', '/metrics', undefined, null);
    expect(metrics.status).toBe(200);
    expect(metrics.body).toContain('outpost_fleet_http_refused_requests_total{code="FLEET_UNAUTHORIZED"} 8');
  });

  it('writes the first operator token to <dataDir>/admin-token with mode 0600, stores only its hash, and keeps it across restarts', async () => {
    const f = await fleet();
    expect(statSync(f.fleet.adminTokenFile).mode & 0o777).toBe(0o600);
    expect(statSync(`${f.dataDir}/${SIGNING_KEY_FILE}`).mode & 0o777).toBe(0o600);
    expect(f.fleet.adminTokenCreated).toBe(true);
    const rows = f.fleet.store.db.prepare('SELECT * FROM operator_tokens').all() as Record<string, unknown>[];
    expect(rows).toHaveLength(1);
    expect(rows[0]!.token_hash).toBe(createHash('sha256').update(f.adminToken).digest('hex'));
    expect(JSON.stringify(rows)).not.toContain(f.adminToken);
    expect((await f.api('GET', '/api/v1/devices')).status).toBe(200);
    const info = (await f.api('GET', '/api/v1/info')).body;

    // Same data dir again: no second token, the first still works, and the signing key is the same.
    const dataDir = f.dataDir;
    await f.fleet.stop();
    const again = await fleet({ dataDir });
    expect(again.fleet.adminTokenCreated).toBe(false);
    expect(again.adminToken).toBe(f.adminToken);
    const info2 = await again.api('GET', '/api/v1/info');
    expect(info2.status).toBe(200);
    expect(info2.body.publicKey).toBe(info.publicKey);
  });

  it('GET /api/v1/info names the version, the public key and the URLs devices are given', async () => {
    const f = await fleet();
    const { body } = await f.api('GET', '/api/v1/info');
    expect(body.publicKey).toMatch(/^-----BEGIN PUBLIC KEY-----/);
    expect(body.mqttUrl).toBe(f.mqttUrl);
    expect(body.fleetUrl).toBe(f.httpUrl);
    expect(typeof body.version).toBe('string');
  });
});

describe('enrollment', () => {
  it('trades a one-time token for a device id and secret that the broker accepts', async () => {
    const f = await fleet();
    const created = await f.api('POST', '/api/v1/enrollment-tokens', { tags: { site: 'plant-7', line: '3' }, ttlSeconds: 600 });
    expect(created.status).toBe(201);
    expect(created.body).toMatchObject({ tags: { site: 'plant-7', line: '3' }, deviceId: null });
    expect(Date.parse(created.body.expiresAt) - Date.now()).toBeGreaterThan(590_000);

    const enrolled = await f.api('POST', '/api/v1/enroll', { token: created.body.token }, null);
    expect(enrolled.status).toBe(201);
    const info = (await f.api('GET', '/api/v1/info')).body;
    expect(enrolled.body).toMatchObject({ mqttUrl: f.mqttUrl, fleetUrl: f.httpUrl, fleetPublicKey: info.publicKey, tags: { site: 'plant-7', line: '3' } });
    expect(enrolled.body.deviceId).toMatch(/^dev-[0-9a-f]{12}$/);
    expect(enrolled.body.secret.length).toBeGreaterThanOrEqual(32);

    const client = await connect(f, enrolled.body);
    expect(client.connected).toBe(true);
    expect(await refusal(f, { deviceId: enrolled.body.deviceId, secret: 'wrong-secret' })).toBeGreaterThan(0);

    const list = await f.api('GET', '/api/v1/devices');
    expect(list.body.devices).toEqual([
      { id: enrolled.body.deviceId, tags: { site: 'plant-7', line: '3' }, online: false, revoked: false, enrolledAt: expect.any(String), lastSeen: null, agentVersion: null, provider: null, models: [], outbox: null },
    ]);
    const one = await f.api('GET', `/api/v1/devices/${enrolled.body.deviceId}`);
    expect(one.body).toMatchObject({ id: enrolled.body.deviceId, reported: null });
    // The secret is stored hashed only.
    expect(JSON.stringify(f.fleet.store.db.prepare('SELECT * FROM devices').all())).not.toContain(enrolled.body.secret);
  });

  it('a token works once, even when several devices race for it', async () => {
    const f = await fleet();
    const { token } = (await f.api('POST', '/api/v1/enrollment-tokens', {})).body;
    const answers = await Promise.all(Array.from({ length: 6 }, () => f.api('POST', '/api/v1/enroll', { token }, null)));
    expect(answers.map((a) => a.status).sort()).toEqual([201, 401, 401, 401, 401, 401]);
    for (const a of answers.filter((x) => x.status === 401)) expect(a.body.code).toBe('FLEET_ENROLLMENT_TOKEN_INVALID');
    const again = await f.api('POST', '/api/v1/enroll', { token }, null);
    expect([again.status, again.body.code]).toEqual([401, 'FLEET_ENROLLMENT_TOKEN_INVALID']);
    expect(again.body.error).toContain('already used');
    expect((await f.api('GET', '/api/v1/devices')).body.devices).toHaveLength(1);
    const unknown = await f.api('POST', '/api/v1/enroll', { token: 'oet_made-up' }, null);
    expect([unknown.status, unknown.body.code]).toEqual([401, 'FLEET_ENROLLMENT_TOKEN_INVALID']);
  });

  it('a token expires after its ttl (fleet clock moved, no sleep), and ttl is capped by enrollment.maxTtlSeconds', async () => {
    const clock = manualClock(Date.parse('2030-01-01T00:00:00Z'));
    const f = await fleet({ clock, config: { enrollment: { maxTtlSeconds: 3600, defaultTtlSeconds: 600 } } });
    const short = (await f.api('POST', '/api/v1/enrollment-tokens', { ttlSeconds: 60 })).body;
    const other = (await f.api('POST', '/api/v1/enrollment-tokens', { ttlSeconds: 60 })).body;
    expect(short.expiresAt).toBe('2030-01-01T00:01:00.000Z');
    const byDefault = (await f.api('POST', '/api/v1/enrollment-tokens', {})).body;
    expect(byDefault.expiresAt).toBe('2030-01-01T00:10:00.000Z');

    clock.advance(59_000);
    expect((await f.api('POST', '/api/v1/enroll', { token: other.token }, null)).status).toBe(201);
    clock.advance(1_000);
    const late = await f.api('POST', '/api/v1/enroll', { token: short.token }, null);
    expect([late.status, late.body.code]).toEqual([401, 'FLEET_ENROLLMENT_TOKEN_INVALID']);
    expect(late.body.error).toContain('expired');

    const tooLong = await f.api('POST', '/api/v1/enrollment-tokens', { ttlSeconds: 3601 });
    expect([tooLong.status, tooLong.body.code]).toEqual([400, 'FLEET_BAD_REQUEST']);
    expect(tooLong.body.error).toContain('maxTtlSeconds');
  });

  it('re-enrollment gives the same id a new secret, kicks the old connection, and the old secret stops working', async () => {
    const f = await fleet();
    const first = await enrollDevice(f, { tags: { site: 'a' } });
    const live = await connect(f, first);
    const kicked = closed(live);

    const second = await enrollDevice(f, { deviceId: first.deviceId });
    expect(second.deviceId).toBe(first.deviceId);
    expect(second.secret).not.toBe(first.secret);
    expect(second.tags).toEqual({ site: 'a' });
    await kicked;
    expect(await refusal(f, first)).toBeGreaterThan(0);
    expect((await connect(f, second)).connected).toBe(true);
    expect((await f.api('GET', '/api/v1/devices')).body.devices).toHaveLength(1);
  });

  it('a token may name the id of a new device', async () => {
    const f = await fleet();
    const d = await enrollDevice(f, { deviceId: 'line-3-camera', tags: { line: '3' } });
    expect(d.deviceId).toBe('line-3-camera');
    expect((await f.api('GET', '/api/v1/devices/line-3-camera')).body.tags).toEqual({ line: '3' });
  });
});

describe('revocation', () => {
  it('kicks the live connection, refuses MQTT and REST from then on, and re-enrollment restores the device', async () => {
    const f = await fleet();
    const d = await enrollDevice(f);
    expect((await f.api('GET', '/api/v1/info', undefined, deviceAuth(d))).body.code).toBe('FLEET_FORBIDDEN');
    const live = await connect(f, d);
    const kicked = closed(live);

    const revoked = await f.api('POST', `/api/v1/devices/${d.deviceId}/revoke`);
    expect(revoked.status).toBe(200);
    expect(revoked.body).toEqual({ id: d.deviceId, revokedAt: expect.stringMatching(/^\d{4}-\d\d-\d\dT/) });
    await kicked;
    expect(await refusal(f, d)).toBeGreaterThan(0);
    const asDevice = await f.api('GET', '/api/v1/devices', undefined, deviceAuth(d));
    expect([asDevice.status, asDevice.body.code]).toEqual([401, 'FLEET_UNAUTHORIZED']);
    expect((await f.api('GET', `/api/v1/devices/${d.deviceId}`)).body).toMatchObject({ revoked: true, online: false });
    // Revoking twice keeps the first time.
    expect((await f.api('POST', `/api/v1/devices/${d.deviceId}/revoke`)).body.revokedAt).toBe(revoked.body.revokedAt);
    const denied = await f.api('GET', '/metrics', undefined, null);
    expect(denied.body).toMatch(/outpost_fleet_mqtt_denied_total\{action="connect",reason="[^"]+"\} [1-9]/);

    const back = await enrollDevice(f, { deviceId: d.deviceId });
    expect((await connect(f, back)).connected).toBe(true);
    expect((await f.api('GET', `/api/v1/devices/${d.deviceId}`)).body.revoked).toBe(false);
  });

  it('answers 404 for an unknown device', async () => {
    const f = await fleet();
    for (const [method, url] of [['POST', '/api/v1/devices/dev-000000000000/revoke'], ['GET', '/api/v1/devices/dev-000000000000'], ['GET', '/api/v1/devices/nope/events']] as const) {
      const r = await f.api(method, url);
      expect([url, r.status, r.body.code]).toEqual([url, 404, 'FLEET_NOT_FOUND']);
    }
    const route = await f.api('GET', '/api/v1/no-such-route');
    expect([route.status, route.body.code]).toEqual([404, 'FLEET_NOT_FOUND']);
  });
});

describe('request validation', () => {
  it('answers 400 FLEET_BAD_REQUEST with {error, code} for every malformed body, path or query', async () => {
    const f = await fleet();
    const d = await enrollDevice(f);
    const cases: [string, string, unknown][] = [
      ['POST', '/api/v1/enrollment-tokens', { ttlSeconds: 'soon' }],
      ['POST', '/api/v1/enrollment-tokens', { ttlSeconds: 0 }],
      ['POST', '/api/v1/enrollment-tokens', { ttlSeconds: 1.5 }],
      ['POST', '/api/v1/enrollment-tokens', { tags: { 'bad key!': 'x' } }],
      ['POST', '/api/v1/enrollment-tokens', { tags: { site: 7 } }],
      ['POST', '/api/v1/enrollment-tokens', { deviceId: '../etc' }],
      ['POST', '/api/v1/enrollment-tokens', { deviceId: 'outpost-fleet' }],
      ['POST', '/api/v1/enrollment-tokens', { deviceId: 'refused-abc' }],
      ['POST', '/api/v1/enrollment-tokens', { surprise: true }],
      ['POST', '/api/v1/enrollment-tokens', [1, 2]],
      ['POST', '/api/v1/enroll', {}],
      ['POST', '/api/v1/enroll', { token: 42 }],
      ['POST', '/api/v1/enroll', { token: 'x'.repeat(300) }],
      ['GET', `/api/v1/devices/${d.deviceId}/metrics`, undefined],
      ['GET', `/api/v1/devices/${d.deviceId}/metrics?model=m&since=yesterday`, undefined],
      ['GET', `/api/v1/devices/${d.deviceId}/metrics?model=m&since=2030-01-02T00:00:00Z&until=2030-01-01T00:00:00Z`, undefined],
      ['GET', `/api/v1/devices/${d.deviceId}/metrics?model=m&extra=1`, undefined],
      ['GET', `/api/v1/devices/${d.deviceId}/events?limit=0`, undefined],
      ['GET', `/api/v1/devices/${d.deviceId}/events?limit=abc`, undefined],
      ['GET', '/api/v1/devices/bad%20id', undefined],
    ];
    for (const [method, url, body] of cases) {
      const r = await f.api(method, url, body);
      expect({ url, body, status: r.status, code: r.body.code }).toEqual({ url, body, status: 400, code: 'FLEET_BAD_REQUEST' });
      expect(typeof r.body.error).toBe('string');
    }
    const raw = await fetch(`${f.httpUrl}/api/v1/enrollment-tokens`, { method: 'POST', headers: { authorization: `Bearer ${f.adminToken}`, 'content-type': 'application/json' }, body: '{"tags": {' });
    expect([raw.status, ((await raw.json()) as { code: string }).code]).toEqual([400, 'FLEET_BAD_REQUEST']);
    const poisoned = await fetch(`${f.httpUrl}/api/v1/enroll`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{"token":"x","__proto__":{"admin":true}}' });
    expect(poisoned.status).toBe(400);
    const textBody = await fetch(`${f.httpUrl}/api/v1/enroll`, { method: 'POST', headers: { 'content-type': 'text/plain' }, body: 'token' });
    expect([textBody.status, ((await textBody.json()) as { code: string }).code]).toEqual([400, 'FLEET_BAD_REQUEST']);
    const xmlBody = await fetch(`${f.httpUrl}/api/v1/enroll`, { method: 'POST', headers: { 'content-type': 'application/xml' }, body: '<token/>' });
    expect([xmlBody.status, ((await xmlBody.json()) as { code: string }).code]).toEqual([415, 'FLEET_UNSUPPORTED_MEDIA_TYPE']);
    expect((await f.api('GET', '/healthz', undefined, null)).status).toBe(200);
  });
});

describe('metrics query', () => {
  /** A telemetry message whose model point has these latency samples (ms), built like an agent would. */
  function telemetry(deviceId: string, seq: number, windowEnd: string, points: { model: string; version: number; requests: number; failures: number; samples: number[] }[]): TelemetryMessage {
    const end = Date.parse(windowEnd);
    return TelemetryMessageSchema.parse({
      v: 1, deviceId, seq, ts: windowEnd, windowStart: new Date(end - 10_000).toISOString(), windowEnd, system: null,
      models: points.map((p) => {
        const hist: SparseHistogram = {};
        for (const s of p.samples) observe(hist, s);
        const summary = { p50: quantile(hist, 0.5), p95: quantile(hist, 0.95), p99: quantile(hist, 0.99), hist };
        return { model: p.model, version: p.version, requests: p.requests, failures: p.failures, latencyMs: summary, queueMs: { p50: 0, p95: 0, p99: 0, hist: {} }, batchSize: { mean: 1, max: 1 }, scoreBins: Array(10).fill(0), classes: {} };
      }),
    });
  }

  it('sums requests and failures over (since, until] and merges the windows\' histograms for the percentiles', async () => {
    const clock = manualClock(Date.parse('2030-05-01T12:00:00Z'));
    const f = await fleet({ clock });
    const d = await enrollDevice(f);
    const fast = Array.from({ length: 90 }, (_, i) => 2 + (i % 5));
    const slow = Array.from({ length: 10 }, (_, i) => 200 + i * 10);
    const windows = [
      { seq: 1, end: '2030-05-01T11:00:00.000Z', requests: 50, failures: 0, samples: fast.slice(0, 50) }, // == since: excluded
      { seq: 2, end: '2030-05-01T11:20:00.000Z', requests: 90, failures: 1, samples: fast },
      { seq: 4, end: '2030-05-01T11:40:00.000+00:00', requests: 10, failures: 4, samples: slow },
      { seq: 3, end: '2030-05-01T13:40:00+02:00', requests: 5, failures: 0, samples: [3, 3, 4, 5, 6] }, // 11:40Z, lower seq
      { seq: 5, end: '2030-05-01T12:00:00.000Z', requests: 7, failures: 2, samples: [8, 9, 10, 11, 12, 13, 14] }, // == until: included
      { seq: 6, end: '2030-05-01T12:00:10.000Z', requests: 99, failures: 99, samples: [999] }, // after until: excluded
    ];
    for (const w of windows) {
      const msg = telemetry(d.deviceId, w.seq, w.end, [
        { model: 'detector', version: 2, requests: w.requests, failures: w.failures, samples: w.samples },
        { model: 'other', version: 1, requests: 1000, failures: 1000, samples: [5000] },
      ]);
      f.fleet.ingest(topicFor(d.deviceId, 'telemetry'), Buffer.from(JSON.stringify(msg)));
    }
    const r = await f.api('GET', `/api/v1/devices/${d.deviceId}/metrics?model=detector`);
    expect(r.status).toBe(200);
    const included = windows.filter((w) => w.seq >= 2 && w.seq <= 5);
    const merged: SparseHistogram = {};
    for (const w of included) for (const s of w.samples) observe(merged, s);
    expect(r.body).toMatchObject({
      deviceId: d.deviceId,
      model: 'detector',
      since: '2030-05-01T11:00:00.000Z',
      until: '2030-05-01T12:00:00.000Z',
      requests: included.reduce((n, w) => n + w.requests, 0),
      failures: included.reduce((n, w) => n + w.failures, 0),
      latency: { p50: quantile(merged, 0.5), p95: quantile(merged, 0.95), p99: quantile(merged, 0.99) },
      truncated: false,
    });
    // The slow window dominates p95/p99 only when histograms are merged; averaging window p95s would not show it.
    expect(r.body.latency.p99).toBeGreaterThanOrEqual(200);
    expect(r.body.points.map((p: { seq: number }) => p.seq)).toEqual([2, 3, 4, 5]);
    expect(r.body.points[1]).toMatchObject({ seq: 3, windowEnd: '2030-05-01T11:40:00.000Z', version: 2, requests: 5, failures: 0 });

    const narrow = await f.api('GET', `/api/v1/devices/${d.deviceId}/metrics?model=detector&since=2030-05-01T11:40:00Z&until=2030-05-01T12:00:10Z`);
    expect(narrow.body.points.map((p: { seq: number }) => p.seq)).toEqual([5, 6]);
    expect(narrow.body.requests).toBe(7 + 99);
    const none = await f.api('GET', `/api/v1/devices/${d.deviceId}/metrics?model=unknown-model`);
    expect(none.body).toMatchObject({ requests: 0, failures: 0, latency: { p50: null, p95: null, p99: null }, points: [] });
  });

  it('lists events in seq order with paging', async () => {
    const clock = manualClock(Date.parse('2030-05-01T12:00:00Z'));
    const f = await fleet({ clock });
    const d = await enrollDevice(f);
    for (const seq of [3, 1, 2]) {
      const ev = { v: 1, deviceId: d.deviceId, seq, ts: `2030-05-01T11:5${seq}:00Z`, kind: 'model.loaded', severity: 'info', message: `event ${seq}`, data: { n: seq } };
      f.fleet.ingest(topicFor(d.deviceId, 'events'), Buffer.from(JSON.stringify(ev)));
    }
    const all = await f.api('GET', `/api/v1/devices/${d.deviceId}/events`);
    expect(all.body.events).toEqual([1, 2, 3].map((seq) => ({ seq, ts: `2030-05-01T11:5${seq}:00.000Z`, kind: 'model.loaded', severity: 'info', message: `event ${seq}`, data: { n: seq } })));
    const page = await f.api('GET', `/api/v1/devices/${d.deviceId}/events?afterSeq=1&limit=1`);
    expect(page.body.events.map((e: { seq: number }) => e.seq)).toEqual([2]);
    const bounded = await f.api('GET', `/api/v1/devices/${d.deviceId}/events?since=2030-05-01T11:51:00Z&until=2030-05-01T11:52:00Z`);
    expect(bounded.body.events.map((e: { seq: number }) => e.seq)).toEqual([2]);
    expect((await f.api('GET', `/api/v1/devices/${d.deviceId}`)).body.lastSeen).toBe('2030-05-01T12:00:00.000Z');
  });
});
