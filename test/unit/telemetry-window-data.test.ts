import { describe, expect, it } from 'vitest';
import { ModelPointSchema } from '../../shared/src/mqtt/messages.js';
import { MAX_CLASSES, OTHER_LABEL, emptyWindow, mergeWindow, observeRequest, parseWindow, toModelPoint, type WindowData } from '../../agent/src/telemetry/window-data.js';
import type { RequestObservation } from '../../agent/src/telemetry/types.js';

const req = (over: Partial<RequestObservation> = {}): RequestObservation => ({ model: 'm', version: 1, ok: true, latencyMs: 10, ...over });

function windowOf(rs: RequestObservation[]): WindowData {
  const w = emptyWindow();
  for (const r of rs) observeRequest(w, r);
  return w;
}

/** The per-model window the fleet receives: what the drift and rollout decisions are computed from. */
describe('telemetry window data', () => {
  it('reports requests, failures, latency percentiles of successful requests, queue time and batch sizes', () => {
    const rs: RequestObservation[] = [];
    for (let ms = 1; ms <= 100; ms++) rs.push(req({ latencyMs: ms, queueMs: ms / 10, batchSize: (ms % 4) + 1 }));
    // Failures are mostly instant refusals or timeouts; they are counted but kept out of the latency percentiles.
    for (let i = 0; i < 10; i++) rs.push(req({ ok: false, latencyMs: 60_000 }));
    const p = toModelPoint('m', 1, windowOf(rs));
    expect(p.requests).toBe(110);
    expect(p.failures).toBe(10);
    // Percentiles are the upper bound of a log bucket: never below the true value, at most 2^(1/8) above it.
    const within = (got: number, want: number) => got >= want && got <= want * 2 ** (1 / 8) + 0.01;
    expect(within(p.latencyMs.p50, 50)).toBe(true);
    expect(within(p.latencyMs.p95, 95)).toBe(true);
    expect(within(p.latencyMs.p99, 99)).toBe(true);
    expect(within(p.queueMs.p50, 5)).toBe(true);
    expect(p.batchSize).toEqual({ mean: 2.5, max: 4 });
    expect(ModelPointSchema.safeParse(p).success).toBe(true);
  });

  it('bins scores into 10 bins over [0, 1] and counts predicted classes', () => {
    const w = windowOf([
      req({ scores: [0, 0.05, 0.1, 0.55, 0.999, 1], classes: ['cat', 'dog', 'cat', 'cat', 'constructor', '__proto__'] }),
      req({ scores: [Number.NaN, -0.2, 1.7], classes: [] }),
    ]);
    const p = toModelPoint('m', 1, w);
    expect(p.scoreBins).toEqual([3, 1, 0, 0, 0, 1, 0, 0, 0, 3]);
    expect(p.classes).toEqual({ cat: 3, dog: 1, constructor: 1, ['__proto__']: 1 });
    expect(Object.hasOwn(p.classes, '__proto__')).toBe(true);
    expect(ModelPointSchema.safeParse(p).success).toBe(true);
  });

  it('keeps at most 1000 labels per window, counting the rest under (other), so the message stays valid', () => {
    const labels = Array.from({ length: 1500 }, (_, i) => `label-${i}`);
    const w = windowOf([req({ classes: labels, scores: labels.map(() => 0.5) }), req({ classes: ['x'.repeat(300)] })]);
    const p = toModelPoint('m', 1, w);
    expect(Object.keys(p.classes)).toHaveLength(MAX_CLASSES);
    expect(Object.values(p.classes).reduce((a, b) => a + b, 0)).toBe(1501);
    expect(p.classes[OTHER_LABEL]).toBe(1501 - (MAX_CLASSES - 1));
    expect(ModelPointSchema.safeParse(p).success).toBe(true);
  });

  it('merges windows exactly: the counts of two commits (or of a crashed run and the next) add up to one window', () => {
    const rs = Array.from({ length: 50 }, (_, i) => req({ ok: i % 7 !== 0, latencyMs: i * 3 + 1, queueMs: i % 5, batchSize: (i % 3) + 1, scores: [i / 50], classes: [`c${i % 4}`] }));
    const whole = windowOf(rs);
    const merged = mergeWindow(windowOf(rs.slice(0, 17)), parseWindow(JSON.stringify(windowOf(rs.slice(17))))!);
    expect(toModelPoint('m', 1, merged)).toEqual(toModelPoint('m', 1, whole));
  });

  it('refuses a stored window it cannot read instead of adding garbage into the counts', () => {
    expect(parseWindow('not json')).toBeUndefined();
    expect(parseWindow('{"requests":-1}')).toBeUndefined();
    expect(parseWindow(JSON.stringify({ ...emptyWindow(), scoreBins: [1, 2] }))).toBeUndefined();
    expect(parseWindow(JSON.stringify({ ...emptyWindow(), classes: { a: 'many' } }))).toBeUndefined();
    expect(parseWindow(JSON.stringify(emptyWindow()))).toEqual(emptyWindow());
  });
});
