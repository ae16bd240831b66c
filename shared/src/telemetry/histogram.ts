/**
 * Log-bucketed latency histogram shared by agent (aggregation) and fleet (merging windows).
 * Bucket i holds values in (BASE·2^((i-1)/8), BASE·2^(i/8)] ms; bucket 0 holds everything ≤ BASE.
 * Eight buckets per doubling bound the relative error of a percentile to 2^(1/8) - 1 ≈ 9 %.
 */
export const HIST_BASE_MS = 0.05;
export const HIST_BUCKETS_PER_DOUBLING = 8;
/** Last bucket: 0.05 ms · 2^(200/8) ≈ 28 min; slower values land here. */
export const HIST_MAX_INDEX = 200;

export type SparseHistogram = Record<string, number>;

export function bucketOf(valueMs: number): number {
  if (!(valueMs > HIST_BASE_MS)) return 0;
  const i = Math.ceil(Math.log2(valueMs / HIST_BASE_MS) * HIST_BUCKETS_PER_DOUBLING - 1e-9);
  return Math.min(HIST_MAX_INDEX, Math.max(0, i));
}

export function upperBoundOf(index: number): number {
  return HIST_BASE_MS * 2 ** (index / HIST_BUCKETS_PER_DOUBLING);
}

export function observe(hist: SparseHistogram, valueMs: number, times = 1): void {
  const key = String(bucketOf(valueMs));
  hist[key] = (hist[key] ?? 0) + times;
}

export function merge(into: SparseHistogram, from: SparseHistogram): SparseHistogram {
  for (const [k, n] of Object.entries(from)) into[k] = (into[k] ?? 0) + n;
  return into;
}

export function total(hist: SparseHistogram): number {
  let n = 0;
  for (const v of Object.values(hist)) n += v;
  return n;
}

/** The q-quantile (0 < q ≤ 1) as its bucket's upper bound in ms, rounded to 0.01; 0 for an empty histogram. */
export function quantile(hist: SparseHistogram, q: number): number {
  const n = total(hist);
  if (n === 0) return 0;
  const rank = Math.ceil(q * n);
  const keys = Object.keys(hist).map(Number).sort((a, b) => a - b);
  let seen = 0;
  for (const k of keys) {
    seen += hist[String(k)]!;
    if (seen >= rank) return Math.round(upperBoundOf(k) * 100) / 100;
  }
  return Math.round(upperBoundOf(keys[keys.length - 1]!) * 100) / 100;
}

export function summarize(hist: SparseHistogram): { p50: number; p95: number; p99: number; hist: SparseHistogram } {
  return { p50: quantile(hist, 0.5), p95: quantile(hist, 0.95), p99: quantile(hist, 0.99), hist: { ...hist } };
}
