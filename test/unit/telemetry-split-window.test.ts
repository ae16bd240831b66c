import { describe, expect, it } from 'vitest';
import { MAX_BODY_BYTES } from '../../agent/src/outbox/prepare-message.js';
import { splitToFit, type TelemetryBody } from '../../agent/src/telemetry/split-window.js';
import { OTHER_LABEL, emptyWindow, observeRequest, toModelPoint } from '../../agent/src/telemetry/window-data.js';
import { TelemetryMessageSchema, type ModelPoint } from '../../shared/src/mqtt/messages.js';

const SYSTEM = { cpuPercent: 1, memUsedBytes: 1, memTotalBytes: 2, temperatureC: null, diskUsedBytes: 1, diskTotalBytes: 2, gpus: [] };

/** A classifier point with `labels` distinct long labels (an ImageNet-like model), label i seen i+1 times. */
function bigPoint(model: string, labels: number): ModelPoint {
  const w = emptyWindow();
  for (let i = 0; i < labels; i++) {
    const label = `n${String(i).padStart(8, '0')} ${'great white shark, white shark, man-eater, man-eating shark'.slice(0, 100)}`;
    observeRequest(w, { model, version: 1, ok: true, latencyMs: 1 + (i % 300), queueMs: i % 7, scores: [i / labels], classes: [label] });
    w.classes[label] = i + 1;
  }
  return toModelPoint(model, 1, w);
}

function body(models: ModelPoint[]): TelemetryBody {
  return { ts: '2026-11-22T10:00:10.000Z', windowStart: '2026-11-22T10:00:00.000Z', windowEnd: '2026-11-22T10:00:10.000Z', models, system: SYSTEM };
}

const bytes = (b: TelemetryBody) => Buffer.byteLength(JSON.stringify(b));
const valid = (b: TelemetryBody) => TelemetryMessageSchema.safeParse({ v: 1, deviceId: 'box', seq: 1, ...b }).success;

describe('splitting a telemetry window that does not fit one payload', () => {
  it('leaves a window that fits alone', () => {
    const b = body([bigPoint('a', 10)]);
    expect(splitToFit(b, MAX_BODY_BYTES)).toEqual([b]);
  });

  it('splits by model, keeping every count and the system sample once', () => {
    const models = ['a', 'b', 'c', 'd'].map((m) => bigPoint(m, 999));
    const b = body(models);
    expect(bytes(b)).toBeGreaterThan(MAX_BODY_BYTES);
    const parts = splitToFit(b, MAX_BODY_BYTES);
    expect(parts.length).toBeGreaterThan(1);
    for (const p of parts) {
      expect(bytes(p)).toBeLessThanOrEqual(MAX_BODY_BYTES);
      expect(valid(p)).toBe(true);
      expect(p.windowStart).toBe(b.windowStart);
    }
    expect(parts.flatMap((p) => p.models)).toEqual(models);
    expect(parts.filter((p) => p.system !== null)).toHaveLength(1);
  });

  it('splits a window with more model versions than one message may carry', () => {
    const many = Array.from({ length: 300 }, (_, i) => toModelPoint(`m${i}`, 1, emptyWindow()));
    const parts = splitToFit(body(many), MAX_BODY_BYTES);
    expect(parts.map((p) => p.models.length)).toEqual([150, 150]);
    expect(parts.every(valid)).toBe(true);
  });

  it('trims one oversized point to its most frequent classes, counting the rest under (other)', () => {
    const point = bigPoint('huge', 999);
    const tight = 40_000;
    const [part, ...rest] = splitToFit(body([point]), tight);
    expect(rest).toEqual([]);
    expect(bytes(part!)).toBeLessThanOrEqual(tight);
    const kept = part!.models[0]!;
    expect(kept.requests).toBe(point.requests);
    expect(kept.latencyMs).toEqual(point.latencyMs);
    // Same total; the labels kept are the most frequent ones (label i was seen i+1 times).
    const total = (c: Record<string, number>) => Object.values(c).reduce((a, n) => a + n, 0);
    expect(total(kept.classes)).toBe(total(point.classes));
    const keptCounts = Object.entries(kept.classes).filter(([l]) => l !== OTHER_LABEL).map(([, n]) => n);
    expect(keptCounts.length).toBeGreaterThan(0);
    expect(Math.min(...keptCounts)).toBeGreaterThan(kept.classes[OTHER_LABEL]! / (999 - keptCounts.length));
    expect(valid(part!)).toBe(true);
  });

  it('refuses, before anything is queued, a window that cannot be made to fit', () => {
    expect(() => splitToFit(body([bigPoint('a', 5)]), 100)).toThrow(/cannot be made to fit 100 bytes/);
  });
});
