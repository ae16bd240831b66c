/**
 * The golden-input check's pure parts (shared/src/golden.ts): the deterministic fill both the fleet and the agent
 * build the input from, the output summary, and the comparison with its tolerances.
 */
import { describe, expect, it } from 'vitest';
import { compareGolden, goldenFeeds, halfToFloat32, mulberry32, outputValues, summarizeOutput } from '../../shared/src/golden.js';
import { GoldenSchema, type Golden } from '../../shared/src/manifest.js';

const golden = (outputs: Golden['outputs'], tol: { atol?: number; rtol?: number } = {}): Golden =>
  GoldenSchema.parse({ inputs: { x: { datatype: 'FP32', dims: [2, 3], fill: { seed: 7 } } }, outputs, ...tol });

describe('goldenFeeds', () => {
  it('fills the same values for the same seed and different ones for another seed, in [0, 1)', () => {
    const g = (seed: number) => GoldenSchema.parse({ inputs: { x: { datatype: 'FP32', dims: [4, 64], fill: { seed } } }, outputs: {} });
    const a = goldenFeeds(g(42)).x!;
    const b = goldenFeeds(g(42)).x!;
    const c = goldenFeeds(g(43)).x!;
    expect(a.dims).toEqual([4, 64]);
    expect(a.data).toBeInstanceOf(Float32Array);
    expect(Array.from(a.data as Float32Array)).toEqual(Array.from(b.data as Float32Array));
    expect(Array.from(a.data as Float32Array)).not.toEqual(Array.from(c.data as Float32Array));
    const values = Array.from(a.data as Float32Array);
    expect(Math.min(...values)).toBeGreaterThanOrEqual(0);
    expect(Math.max(...values)).toBeLessThan(1);
    // Not a constant or a short cycle: a uniform draw of 256 values has many distinct ones and a mean near 0.5.
    expect(new Set(values).size).toBeGreaterThan(250);
    expect(Math.abs(values.reduce((s, v) => s + v, 0) / values.length - 0.5)).toBeLessThan(0.1);
  });

  it('pins the PRNG: the first draws of seed 1 are mulberry32\'s published ones, on every platform and release', () => {
    const next = mulberry32(1);
    expect([next(), next(), next()].map((v) => v.toFixed(8))).toEqual(['0.62707394', '0.00273572', '0.52744704']);
  });

  it('fills integer types with floor(x·256), INT64 as bigint, BOOL as 0/1, FP16 as half bits of x', () => {
    const g = GoldenSchema.parse({
      inputs: {
        i: { datatype: 'INT32', dims: [64], fill: { seed: 3 } },
        l: { datatype: 'INT64', dims: [64], fill: { seed: 3 } },
        b: { datatype: 'BOOL', dims: [64], fill: { seed: 3 } },
        h: { datatype: 'FP16', dims: [64], fill: { seed: 3 } },
        d: { datatype: 'FP64', dims: [64], fill: { seed: 3 } },
      },
      outputs: {},
    });
    const f = goldenFeeds(g);
    const x = Array.from(f.d!.data as Float64Array);
    expect(Array.from(f.i!.data as Int32Array)).toEqual(x.map((v) => Math.floor(v * 256)));
    expect(f.l!.data).toBeInstanceOf(BigInt64Array);
    expect(Array.from(f.l!.data as BigInt64Array)).toEqual(x.map((v) => BigInt(Math.floor(v * 256))));
    expect(Array.from(f.b!.data as Uint8Array)).toEqual(x.map((v) => (v >= 0.5 ? 1 : 0)));
    expect(f.h!.data).toBeInstanceOf(Uint16Array);
    Array.from(f.h!.data as Uint16Array).forEach((h, k) => expect(halfToFloat32(h)).toBeCloseTo(x[k]!, 3));
  });

  it('takes inline data as given and refuses a count that does not match the dims', () => {
    const inline = GoldenSchema.parse({ inputs: { x: { datatype: 'INT32', dims: [1, 3], data: [1, -2, 3.7] } }, outputs: {} });
    expect(Array.from(goldenFeeds(inline).x!.data as Int32Array)).toEqual([1, -2, 3]);
    const short = GoldenSchema.parse({ inputs: { x: { datatype: 'FP32', dims: [2, 3], data: [1, 2] } }, outputs: {} });
    expect(() => goldenFeeds(short)).toThrow(/2 values for dims \[2,3\]/);
  });
});

describe('summarizeOutput', () => {
  it('sums, abs-sums and samples evenly spaced flat indices, first and last included', () => {
    const data = Float32Array.from({ length: 100 }, (_, i) => (i % 2 === 0 ? i : -i));
    const s = summarizeOutput([10, 10], data, 5);
    expect(s.dims).toEqual([10, 10]);
    expect(s.sum).toBe(-50);
    expect(s.abs_sum).toBe(4950);
    expect(s.sample_indices).toEqual([0, 25, 50, 74, 99]);
    expect(s.sample).toEqual([0, -25, 50, 74, -99]);
    expect(summarizeOutput([3], Int32Array.from([1, 2, 3])).sample_indices).toEqual([0, 1, 2]);
    expect(summarizeOutput([2], BigInt64Array.from([5n, -7n])).sum).toBe(-2);
  });

  it('decodes FP16 half bits before summing', () => {
    const halves = Uint16Array.from([0x3c00, 0x4000, 0xc200]); // 1, 2, -3
    expect(summarizeOutput([3], outputValues('FP16', halves)).sum).toBe(0);
    expect(summarizeOutput([3], outputValues('FP16', halves)).abs_sum).toBe(6);
  });
});

describe('compareGolden', () => {
  const expected = Float32Array.from([1, 2, 3, 4, 5, 6]);
  const ok = golden({ y: summarizeOutput([2, 3], expected) }, { atol: 0.01, rtol: 0 });

  it('passes the outputs it was made from, and ignores outputs it does not name', () => {
    expect(compareGolden(ok, { y: { dims: [2, 3], data: expected }, extra: { dims: [1], data: [99] } })).toEqual([]);
  });

  it('fails a missing output, other dims, and a changed value', () => {
    expect(compareGolden(ok, { z: { dims: [2, 3], data: expected } })[0]).toMatch(/output 'y' is missing/);
    expect(compareGolden(ok, { y: { dims: [3, 2], data: expected } })[0]).toMatch(/dims \[3,2\], expected \[2,3\]/);
    const changed = Float32Array.from([1, 2, 3, 4, 5, 7]);
    const problems = compareGolden(ok, { y: { dims: [2, 3], data: changed } });
    expect(problems.some((p) => /sum is 22, expected 21/.test(p))).toBe(true);
    expect(problems.some((p) => /'y'\[5\] is 7, expected 6/.test(p))).toBe(true);
  });

  it('fails NaN anywhere, even where no sample looks and the sums are NaN-blind', () => {
    const withNaN = Float32Array.from([1, NaN, 3, 4, 5, 6]);
    const g = golden({ y: { ...summarizeOutput([2, 3], expected), sample_indices: [0], sample: [1] } }, { atol: 1e9 });
    expect(compareGolden(g, { y: { dims: [2, 3], data: withNaN } }).some((p) => /element 1 is NaN/.test(p))).toBe(true);
    // JSON cannot carry NaN, but a golden built in memory can; an expected NaN is never "close".
    const nanExpected: Golden = { ...golden({}), outputs: { y: { ...summarizeOutput([2, 3], expected), sample: [NaN, 2, 3, 4, 5, 6] } } };
    expect(compareGolden(nanExpected, { y: { dims: [2, 3], data: expected } })).not.toEqual([]);
  });

  it('accepts a sample exactly at atol + rtol·|expected| and refuses one just past it', () => {
    // Expected 100 with atol 1, rtol 0.01: tolerance 2. Values exactly representable, so the edge is exact.
    const g = golden({ y: { dims: [1], sum: 100, abs_sum: 100, sample_indices: [0], sample: [100] } }, { atol: 1, rtol: 0.01 });
    expect(compareGolden(g, { y: { dims: [1], data: [102] } })).toEqual([]);
    expect(compareGolden(g, { y: { dims: [1], data: [98] } })).toEqual([]);
    const past = compareGolden(g, { y: { dims: [1], data: [102.0625] } });
    expect(past.some((p) => /'y'\[0\] is 102.0625, expected 100 ± 2/.test(p))).toBe(true);
  });

  it('scales the sums\' tolerance with the element count (atol·n + rtol·|expected|)', () => {
    // 1000 elements each off by 0.5·atol: every sample passes, and so must the sum, off by 500·atol.
    const base = new Float64Array(1000).fill(1);
    const drifted = base.map((v) => v + 0.0005);
    const g = golden({ y: summarizeOutput([1000], base) }, { atol: 0.001, rtol: 0 });
    expect(compareGolden(g, { y: { dims: [1000], data: drifted } })).toEqual([]);
    // Off by 1.5·atol everywhere: the sum (1.5 per 1000) is out, and the samples too.
    const far = base.map((v) => v + 0.0015);
    expect(compareGolden(g, { y: { dims: [1000], data: far } }).some((p) => /sum is/.test(p))).toBe(true);
  });

  it('reports at most five sample lines per output, then a count', () => {
    const g = golden({ y: summarizeOutput([20], new Float32Array(20)) }, { atol: 0, rtol: 0 });
    const problems = compareGolden(g, { y: { dims: [20], data: new Float32Array(20).fill(1) } });
    expect(problems.filter((p) => /'y'\[\d+\]/.test(p))).toHaveLength(5);
    expect(problems.some((p) => /15 more sample\(s\)/.test(p))).toBe(true);
  });
});
