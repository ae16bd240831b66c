import type { RequestObservation } from '../telemetry/types.js';

/** The thresholds one probation runs with: the desired message's, else the agent's config (update.*). */
export interface ProbationPolicy {
  probationSeconds: number;
  probationRequests: number;
  maxErrorRate: number;
  maxLatencyFactor: number;
  minRequests: number;
}

/** The thresholds of one probation: the desired message's where it sets them, else the agent's update.* config. */
export function probationPolicy(config: ProbationPolicy, thresholds: Partial<ProbationPolicy>): ProbationPolicy {
  return {
    probationSeconds: thresholds.probationSeconds ?? config.probationSeconds, probationRequests: thresholds.probationRequests ?? config.probationRequests,
    maxErrorRate: thresholds.maxErrorRate ?? config.maxErrorRate, maxLatencyFactor: thresholds.maxLatencyFactor ?? config.maxLatencyFactor,
    minRequests: thresholds.minRequests ?? config.minRequests,
  };
}

export type ProbationVerdict =
  | { verdict: 'continue' }
  | { verdict: 'commit'; requests: number; failures: number; p95Ms: number | null }
  | { verdict: 'rollback'; reason: 'error_rate' | 'latency'; detail: string };

/** Latencies of the last RING requests per model version: the baseline a new version's p95 is compared with. */
const RING = 512;

class LatencyRing {
  private readonly values = new Float64Array(RING);
  private n = 0;

  push(ms: number): void {
    this.values[this.n % RING] = ms;
    this.n++;
  }

  get count(): number {
    return Math.min(this.n, RING);
  }

  p95(): number | null {
    const count = this.count;
    if (count === 0) return null;
    const sorted = Array.from(this.values.subarray(0, count)).sort((a, b) => a - b);
    return sorted[Math.min(count - 1, Math.ceil(0.95 * count) - 1)]!;
  }
}

/**
 * Failures a new version is judged by: the runtime failed, the agent broke, or the model was too slow (queue
 * full, timeouts). Everything else in the catalog is the caller's fault (bad input, unknown model, shutting
 * down) and says nothing about the version.
 */
const SERVER_FAULTS = new Set(['AGENT_INFERENCE_FAILED', 'AGENT_INTERNAL', 'AGENT_OVERLOADED', 'AGENT_TIMEOUT', 'AGENT_REQUEST_TIMEOUT', 'AGENT_MODEL_NOT_READY']);

interface Watch {
  model: string;
  version: number;
  startedAt: number;
  policy: ProbationPolicy;
  /** p95 of the previous version before the flip; null when it served too few requests to say. */
  baselineP95: number | null;
  requests: number;
  failures: number;
  latency: LatencyRing;
}

/**
 * Watches every request (it is a telemetry observer) and judges the version on probation: roll back on an error
 * rate above the threshold or a p95 above factor × the previous version's, commit after N seconds or M requests.
 * Cheap per request: a counter and a ring write; the p95 sort runs only when a verdict is due.
 */
export class ProbationMonitor {
  private readonly rings = new Map<string, LatencyRing>();
  private readonly watches = new Map<string, Watch>();
  private readonly baselines = new Map<string, number>();

  constructor(private readonly now: () => number = Date.now) {}

  observe(r: RequestObservation & { code?: string }): void {
    if (!r.ok && r.code !== undefined && !SERVER_FAULTS.has(r.code)) return;
    const key = `${r.model}@${r.version}`;
    let ring = this.rings.get(key);
    if (!ring) this.rings.set(key, (ring = new LatencyRing()));
    if (r.ok) ring.push(r.latencyMs);
    const w = this.watches.get(r.model);
    if (!w || w.version !== r.version) return;
    w.requests++;
    if (!r.ok) w.failures++;
    else w.latency.push(r.latencyMs);
  }

  /**
   * Keeps the serving version's p95 as it is now, before the new version is staged beside it: requests that run
   * while a session loads and warms up are slower, and a baseline that includes them would let a slow version pass.
   */
  freezeBaseline(model: string, version: number | undefined, minRequests: number): void {
    if (version === undefined) return;
    const ring = this.rings.get(`${model}@${version}`);
    const p95 = ring && ring.count >= minRequests ? ring.p95() : null;
    if (p95 !== null) this.baselines.set(`${model}@${version}`, p95);
  }

  /** Starts judging `version` of `model` against `previous` (its p95 before staging, else so far, is the baseline). */
  start(model: string, version: number, previous: number | null, policy: ProbationPolicy, startedAt = this.now(), kept: number | null = null): void {
    const base = previous === null ? undefined : this.rings.get(`${model}@${previous}`);
    const frozen = previous === null ? undefined : this.baselines.get(`${model}@${previous}`);
    const baselineP95 = kept ?? frozen ?? (base && base.count >= policy.minRequests ? base.p95() : null);
    this.watches.set(model, { model, version, startedAt, policy, baselineP95, requests: 0, failures: 0, latency: new LatencyRing() });
  }

  stop(model: string): void {
    this.watches.delete(model);
  }

  /** Forgets a version's latencies (it was retired). */
  forget(model: string, version: number): void {
    this.rings.delete(`${model}@${version}`);
    this.baselines.delete(`${model}@${version}`);
  }

  progress(model: string): { requests: number; failures: number; elapsedMs: number; baselineP95: number | null } | undefined {
    const w = this.watches.get(model);
    return w && { requests: w.requests, failures: w.failures, elapsedMs: this.now() - w.startedAt, baselineP95: w.baselineP95 };
  }

  /** The verdict for the model on probation now. */
  judge(model: string): ProbationVerdict {
    const w = this.watches.get(model);
    if (!w) return { verdict: 'continue' };
    const { policy } = w;
    if (w.requests >= policy.minRequests) {
      const rate = w.failures / w.requests;
      if (rate > policy.maxErrorRate) {
        return { verdict: 'rollback', reason: 'error_rate', detail: `${w.failures} of ${w.requests} requests failed (${(rate * 100).toFixed(1)} % > ${(policy.maxErrorRate * 100).toFixed(1)} %)` };
      }
      const p95 = w.latency.count >= policy.minRequests ? w.latency.p95() : null;
      if (p95 !== null && w.baselineP95 !== null && p95 > policy.maxLatencyFactor * w.baselineP95) {
        return { verdict: 'rollback', reason: 'latency', detail: `p95 ${p95.toFixed(1)} ms > ${policy.maxLatencyFactor} × the previous version's ${w.baselineP95.toFixed(1)} ms` };
      }
    }
    const elapsedMs = this.now() - w.startedAt;
    if (w.requests >= policy.probationRequests || elapsedMs >= policy.probationSeconds * 1000) {
      return { verdict: 'commit', requests: w.requests, failures: w.failures, p95Ms: w.latency.p95() };
    }
    return { verdict: 'continue' };
  }
}
