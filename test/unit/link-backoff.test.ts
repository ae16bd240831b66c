import { describe, expect, it } from 'vitest';
import { Backoff, seededRandom, sleep } from '../../agent/src/link/backoff.js';

const MIN = 1_000;
const MAX = 60_000;

describe('reconnect backoff', () => {
  it('draws each delay from a window that doubles from min and stops growing at max', () => {
    const b = new Backoff({ minMs: MIN, maxMs: MAX, random: seededRandom(7) });
    const ceilings: number[] = [];
    for (let i = 0; i < 12; i++) {
      const ceiling = b.ceilingMs();
      const delay = b.next();
      expect(delay).toBeGreaterThanOrEqual(MIN);
      expect(delay).toBeLessThanOrEqual(ceiling);
      ceilings.push(ceiling);
    }
    expect(ceilings.slice(0, 6)).toEqual([2_000, 4_000, 8_000, 16_000, 32_000, MAX]);
    expect(ceilings.slice(6).every((c) => c === MAX)).toBe(true);
  });

  it('the delays grow on average and never pass the cap', () => {
    // Many independent boxes (seeds), so the comparison is about the windows, not one lucky draw.
    const meanAt = (attempt: number) => {
      let sum = 0;
      for (let seed = 1; seed <= 500; seed++) {
        const b = new Backoff({ minMs: MIN, maxMs: MAX, random: seededRandom(seed) });
        let d = 0;
        for (let i = 0; i <= attempt; i++) d = b.next();
        expect(d).toBeLessThanOrEqual(MAX);
        sum += d;
      }
      return sum / 500;
    };
    const means = [0, 1, 2, 3, 4].map(meanAt);
    for (let i = 1; i < means.length; i++) expect(means[i]!).toBeGreaterThan(means[i - 1]!);
    expect(meanAt(10)).toBeGreaterThan(MAX / 3);
  });

  it('spreads a fleet that lost the broker at the same instant instead of reconnecting in step', () => {
    // 1000 boxes, first retry after a broker restart: count them per tenth of the window [min, 2·min].
    const buckets = new Array<number>(10).fill(0);
    for (let seed = 1; seed <= 1000; seed++) {
      const d = new Backoff({ minMs: MIN, maxMs: MAX, random: seededRandom(seed * 7919) }).next();
      buckets[Math.min(9, Math.floor(((d - MIN) / MIN) * 10))]!++;
    }
    // Uniform would be 100 per bucket; in step would be 1000 in one.
    expect(Math.max(...buckets)).toBeLessThan(150);
    expect(Math.min(...buckets)).toBeGreaterThan(50);
  });

  it('starts again from the smallest window after reset() (a connection that stayed up)', () => {
    const b = new Backoff({ minMs: MIN, maxMs: MAX, random: () => 0.999 });
    for (let i = 0; i < 8; i++) b.next();
    expect(b.next()).toBeGreaterThan(50_000);
    b.reset();
    expect(b.attempts).toBe(0);
    expect(b.next()).toBeLessThanOrEqual(2 * MIN);
  });

  it('is driven by the injected random source (same seed, same delays; other seed, other delays)', () => {
    const run = (seed: number) => {
      const b = new Backoff({ minMs: MIN, maxMs: MAX, random: seededRandom(seed) });
      return Array.from({ length: 6 }, () => b.next());
    };
    expect(run(42)).toEqual(run(42));
    expect(run(42)).not.toEqual(run(43));
  });

  it('refuses an empty or inverted range', () => {
    expect(() => new Backoff({ minMs: 0, maxMs: 10 })).toThrow(RangeError);
    expect(() => new Backoff({ minMs: 100, maxMs: 10 })).toThrow(RangeError);
  });

  it('sleep() ends early when aborted (stop does not wait out a 60 s backoff)', async () => {
    const ac = new AbortController();
    const started = Date.now();
    const slept = sleep(60_000, ac.signal);
    ac.abort();
    await slept;
    expect(Date.now() - started).toBeLessThan(1_000);
  });
});
