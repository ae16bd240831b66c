import { describe, expect, it } from 'vitest';
import { asSeenBy } from '../../fleet-server/src/http/routes/enrollment.js';
import { decodeMessage } from '../../shared/src/mqtt/messages.js';
import { HIST_MAX_INDEX } from '../../shared/src/telemetry/histogram.js';

describe('URLs told to an enrolling device', () => {
  it('replace a loopback fallback with the host name the device reached the fleet by', () => {
    expect(asSeenBy('mqtt://127.0.0.1:1883', 'fleet.lan')).toBe('mqtt://fleet.lan:1883');
    expect(asSeenBy('http://127.0.0.1:8080', '10.0.0.5')).toBe('http://10.0.0.5:8080');
  });

  it('keep configured names, and loopback for a device on the same machine', () => {
    expect(asSeenBy('mqtts://fleet.example.com:8883', 'other.name')).toBe('mqtts://fleet.example.com:8883');
    expect(asSeenBy('mqtt://127.0.0.1:1883', '127.0.0.1')).toBe('mqtt://127.0.0.1:1883');
    expect(asSeenBy('mqtt://127.0.0.1:1883', 'localhost')).toBe('mqtt://127.0.0.1:1883');
  });
});

describe('telemetry latency histograms from devices', () => {
  const point = (hist: Record<string, number>) => ({
    v: 1, deviceId: 'dev-a', seq: 1, ts: '2026-11-22T00:00:10.000Z', windowStart: '2026-11-22T00:00:00.000Z', windowEnd: '2026-11-22T00:00:10.000Z', system: null,
    models: [{ model: 'm', version: 1, requests: 1, failures: 0, latencyMs: { p50: 1, p95: 1, p99: 1, hist }, queueMs: { p50: 0, p95: 0, p99: 0, hist: {} }, batchSize: { mean: 1, max: 1 }, scoreBins: Array(10).fill(0), classes: {} }],
  });
  const decode = (hist: Record<string, number>) => decodeMessage('telemetry', Buffer.from(JSON.stringify(point(hist))), 'dev-a');

  it('accept canonical bucket indexes up to the last bucket', () => {
    expect(decode({ 0: 1, 7: 2, [HIST_MAX_INDEX]: 1 }).ok).toBe(true);
  });

  it('refuse keys that would not merge (leading zeros) or lie past the last bucket', () => {
    // "007" would be looked up as "7" when merged, turning that device's percentiles into NaN.
    for (const key of ['007', '00', String(HIST_MAX_INDEX + 1), '999', '-1', '1.5']) {
      const r = decode({ [key]: 1 });
      expect(r.ok, key).toBe(false);
    }
  });
});
