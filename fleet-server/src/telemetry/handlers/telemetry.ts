import { canonicalIso } from '../../storage/clock.js';
import type { Handler } from './types.js';

/** A telemetry window: one model_points row per model version served, plus the system sample if any. */
export const handleTelemetry: Handler<'telemetry'> = (ctx, deviceId, m, receivedAt) => {
  const windowStart = canonicalIso(m.windowStart);
  const windowEnd = canonicalIso(m.windowEnd);
  return ctx.store.accept(
    { deviceId, seq: m.seq, receivedAt },
    {
      kind: 'telemetry',
      points: m.models.map((p) => ({
        model: p.model,
        version: p.version,
        windowStart,
        windowEnd,
        requests: p.requests,
        failures: p.failures,
        p50: p.latencyMs.p50,
        p95: p.latencyMs.p95,
        p99: p.latencyMs.p99,
        latencyHist: p.latencyMs.hist,
        // Kept whole for drift and dashboards; only latency is queried by column.
        detail: { queueMs: p.queueMs, batchSize: p.batchSize, scoreBins: p.scoreBins, classes: p.classes },
      })),
      system: m.system === null ? null : { windowEnd, data: m.system },
    },
  );
};
