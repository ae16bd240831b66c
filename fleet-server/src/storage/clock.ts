/**
 * The time source the fleet stamps rows, expiries and delays with. A seam so tests can move time
 * (token expiry, retention) without sleeping; the real default is the system clock.
 */
export interface Clock {
  /** Milliseconds since the epoch. */
  now(): number;
}

export const systemClock: Clock = { now: () => Date.now() };

/** A clock a test moves by hand. */
export function manualClock(startMs = Date.now()): Clock & { advance(ms: number): void; set(ms: number): void } {
  let t = startMs;
  return {
    now: () => t,
    advance(ms: number) {
      t += ms;
    },
    set(ms: number) {
      t = ms;
    },
  };
}

export function isoAt(ms: number): string {
  return new Date(ms).toISOString();
}

/** Any ISO-8601 timestamp (with offset or Z) as canonical UTC `…Z` text, so stored times compare as text. */
export function canonicalIso(value: string): string {
  return new Date(value).toISOString();
}
