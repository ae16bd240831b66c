/**
 * Latency/throughput summaries and perf_analyzer's stability rule, shared by every phase of the bench.
 * Pure functions: no I/O, no clocks.
 */

export interface LatencySummary {
  /** Completed operations. */
  n: number;
  meanMs: number;
  minMs: number;
  p50Ms: number;
  p90Ms: number;
  p95Ms: number;
  p99Ms: number;
  maxMs: number;
}

/** Percentile by linear interpolation between closest ranks (numpy's default); `sorted` ascending, q in [0, 1]. */
export function percentile(sorted: ArrayLike<number>, q: number): number {
  const n = sorted.length;
  if (n === 0) return Number.NaN;
  const at = q * (n - 1);
  const lo = Math.floor(at);
  const hi = Math.min(n - 1, lo + 1);
  return sorted[lo]! + (sorted[hi]! - sorted[lo]!) * (at - lo);
}

export function summarise(latenciesMs: ArrayLike<number>): LatencySummary {
  const sorted = Float64Array.from(latenciesMs).sort();
  let sum = 0;
  for (const v of sorted) sum += v;
  const n = sorted.length;
  return {
    n,
    meanMs: n > 0 ? sum / n : Number.NaN,
    minMs: n > 0 ? sorted[0]! : Number.NaN,
    p50Ms: percentile(sorted, 0.5),
    p90Ms: percentile(sorted, 0.9),
    p95Ms: percentile(sorted, 0.95),
    p99Ms: percentile(sorted, 0.99),
    maxMs: n > 0 ? sorted[n - 1]! : Number.NaN,
  };
}

/**
 * perf_analyzer's rule (inference_profiler.cc, --stability-percentage): the last `count` windows are stable when
 * each one's throughput and mean latency lie within ±pct % of their average over those windows.
 */
export function isStable(windows: readonly { throughput: number; meanMs: number }[], pct: number, count = 3): boolean {
  if (windows.length < count) return false;
  const last = windows.slice(-count);
  const within = (values: number[]): boolean => {
    const avg = values.reduce((a, b) => a + b, 0) / values.length;
    return values.every((v) => Math.abs(v - avg) <= (avg * pct) / 100);
  };
  return within(last.map((w) => w.throughput)) && within(last.map((w) => w.meanMs));
}

/** Rounds for the report: 3 significant digits below 100, whole numbers above. */
export function round(v: number | undefined): number | undefined {
  if (v === undefined || !Number.isFinite(v)) return v;
  if (Math.abs(v) >= 100) return Math.round(v);
  return Number(v.toPrecision(3));
}
