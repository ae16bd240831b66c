/**
 * Reconnect delays: exponential growth with FULL jitter, capped (research §5.1 C4, §5.7 F3).
 *
 * Attempt n (0-based) waits a uniformly random time in [minMs, min(maxMs, minMs · 2^(n+1))]. The
 * randomness spans the whole window rather than ±10 % around it, so 1000 boxes that lost the same broker
 * at the same instant spread their reconnects over the window instead of arriving in step; the floor
 * keeps one box from hammering a broker that refuses it. After a connection that stayed up (the caller
 * decides what "stayed up" means), reset() starts over from the small window.
 */
export interface BackoffOptions {
  minMs: number;
  maxMs: number;
  /** Uniform [0, 1); injected so tests can seed it. */
  random?: () => number;
}

export class Backoff {
  private attempt = 0;
  private readonly random: () => number;

  constructor(private readonly options: BackoffOptions) {
    if (!(options.minMs > 0) || options.maxMs < options.minMs) throw new RangeError(`backoff needs 0 < minMs ≤ maxMs, got ${options.minMs}..${options.maxMs}`);
    this.random = options.random ?? Math.random;
  }

  /** Failed attempts since the last reset. */
  get attempts(): number {
    return this.attempt;
  }

  /** The upper bound of the window the next delay is drawn from. */
  ceilingMs(attempt = this.attempt): number {
    // 2^31 already exceeds any sane maxMs; clamping the exponent keeps the arithmetic finite.
    return Math.min(this.options.maxMs, this.options.minMs * 2 ** Math.min(attempt + 1, 31));
  }

  /** The delay before the next attempt, in ms; each call widens the window until it reaches maxMs. */
  next(): number {
    const ceiling = this.ceilingMs();
    this.attempt++;
    const r = Math.min(Math.max(this.random(), 0), 1);
    return Math.round(this.options.minMs + r * (ceiling - this.options.minMs));
  }

  reset(): void {
    this.attempt = 0;
  }
}

/** Resolves after `ms`, or early (without rejecting) when the signal aborts. */
export function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    if (signal?.aborted) return resolve();
    const onAbort = () => {
      clearTimeout(timer);
      resolve();
    };
    const timer = setTimeout(() => {
      signal?.removeEventListener('abort', onAbort);
      resolve();
    }, ms);
    signal?.addEventListener('abort', onAbort, { once: true });
  });
}

/** A small seeded PRNG (mulberry32) for reproducible jitter in tests and simulations. */
export function seededRandom(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (s + 0x6d2b79f5) >>> 0;
    let t = s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}
