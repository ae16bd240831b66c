import { merge, quantile, type SparseHistogram } from '../../../shared/src/telemetry/histogram.js';
import type { IngestStore, StoredModelPoint } from '../storage/fleet-store.js';

/** Most points one answer lists; the sums and percentiles always cover every point in the range. */
export const MAX_POINTS = 10_000;

export interface ModelMetrics {
  deviceId: string;
  model: string;
  since: string;
  until: string;
  requests: number;
  failures: number;
  /** Percentiles of the merged latency histograms in ms (≈9 % bucket error); null when no request was timed. */
  latency: { p50: number | null; p95: number | null; p99: number | null };
  points: (Omit<StoredModelPoint, 'latencyHist'>)[];
  /** True when more than MAX_POINTS points matched and `points` holds the first MAX_POINTS. */
  truncated: boolean;
}

/**
 * One model's metrics on one device over (since, until]: request and failure sums, and p50/p95/p99 from the
 * merged per-window histograms. Percentiles cannot be averaged across windows; histograms can be added.
 */
export function queryModelMetrics(store: IngestStore, q: { deviceId: string; model: string; since: string; until: string }): ModelMetrics {
  let requests = 0;
  let failures = 0;
  const hist: SparseHistogram = {};
  const points: ModelMetrics['points'] = [];
  let truncated = false;
  for (const p of store.modelPoints(q)) {
    requests += p.requests;
    failures += p.failures;
    merge(hist, p.latencyHist);
    const { latencyHist: _omit, ...point } = p;
    if (points.length < MAX_POINTS) points.push(point);
    else truncated = true;
  }
  const timed = Object.keys(hist).length > 0;
  const pct = (q: number) => (timed ? quantile(hist, q) : null);
  return { ...q, requests, failures, latency: { p50: pct(0.5), p95: pct(0.95), p99: pct(0.99) }, points, truncated };
}
