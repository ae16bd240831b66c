/**
 * The golden-input smoke test (manifest `golden`, DESIGN §4 "Rollouts"): the fleet runs a model once on a known
 * input and ships a summary of the answer; the agent runs the staged model on the same input and refuses the
 * update when the answers differ. Both sides build the input with goldenFeeds, so it is the same bytes.
 * Pure functions, no onnxruntime: the agent and the fleet CLI each run the session their own way.
 */
import type { Golden, GoldenOutput } from './manifest.js';
import { float32ToHalf, halfToFloat32 } from './half.js';

export { float32ToHalf, halfToFloat32 };

export type GoldenDatatype = Golden['inputs'][string]['datatype'];

export type GoldenData =
  | Float32Array | Float64Array | Int8Array | Int16Array | Int32Array | Uint8Array | Uint16Array | Uint32Array
  | BigInt64Array | BigUint64Array;

export interface GoldenFeed {
  datatype: GoldenDatatype;
  dims: number[];
  data: GoldenData;
}

/** Largest golden input, in elements: a signed but mistaken manifest must not make the agent allocate gigabytes. */
export const GOLDEN_MAX_ELEMENTS = 1 << 24;

type Kind = 'float' | 'half' | 'int' | 'big' | 'bool';
const TYPES: Record<GoldenDatatype, { make: (n: number) => GoldenData; kind: Kind }> = {
  FP32: { make: (n) => new Float32Array(n), kind: 'float' },
  FP64: { make: (n) => new Float64Array(n), kind: 'float' },
  // FP16 travels as raw IEEE half bits, as everywhere in the agent (Node 20 has no Float16Array).
  FP16: { make: (n) => new Uint16Array(n), kind: 'half' },
  INT8: { make: (n) => new Int8Array(n), kind: 'int' },
  INT16: { make: (n) => new Int16Array(n), kind: 'int' },
  INT32: { make: (n) => new Int32Array(n), kind: 'int' },
  INT64: { make: (n) => new BigInt64Array(n), kind: 'big' },
  UINT8: { make: (n) => new Uint8Array(n), kind: 'int' },
  UINT16: { make: (n) => new Uint16Array(n), kind: 'int' },
  UINT32: { make: (n) => new Uint32Array(n), kind: 'int' },
  UINT64: { make: (n) => new BigUint64Array(n), kind: 'big' },
  BOOL: { make: (n) => new Uint8Array(n), kind: 'bool' },
};

/** mulberry32: a 32-bit state PRNG, uniform in [0, 1). Tiny, fast and the same on every platform. */
export function mulberry32(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) | 0;
    let t = Math.imul(a ^ (a >>> 15), 1 | a);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/**
 * The golden inputs as typed tensors. `fill.seed` draws x uniform in [0, 1) per element: floats take x, integer
 * types floor(x·256) (stored as the typed array stores it, so INT8 wraps), BOOL x ≥ 0.5. Inline `data` is
 * converted the same way an agent converts JSON (integers truncated, BOOL non-zero). Throws on a count mismatch.
 */
export function goldenFeeds(golden: Golden): Record<string, GoldenFeed> {
  const feeds: Record<string, GoldenFeed> = {};
  for (const [name, t] of Object.entries(golden.inputs)) {
    const n = t.dims.reduce((a, b) => a * b, 1);
    if (!Number.isSafeInteger(n) || n > GOLDEN_MAX_ELEMENTS) throw new Error(`golden input '${name}' has ${n} elements; at most ${GOLDEN_MAX_ELEMENTS}`);
    if (t.data !== undefined && t.data.length !== n) throw new Error(`golden input '${name}' has ${t.data.length} values for dims ${JSON.stringify(t.dims)} (${n} elements)`);
    const { make, kind } = TYPES[t.datatype];
    const data = make(n);
    const next = t.data !== undefined ? ((values) => { let i = 0; return () => values[i++]!; })(t.data) : mulberry32(t.fill!.seed);
    const fill = t.data === undefined;
    for (let i = 0; i < n; i++) {
      const x = next();
      if (kind === 'float') (data as Float64Array)[i] = x;
      else if (kind === 'half') (data as Uint16Array)[i] = float32ToHalf(x);
      else if (kind === 'bool') (data as Uint8Array)[i] = (fill ? x >= 0.5 : x !== 0) ? 1 : 0;
      else {
        const v = fill ? Math.floor(x * 256) : Math.trunc(x);
        if (kind === 'big') (data as BigInt64Array)[i] = BigInt(v);
        else (data as Int32Array)[i] = v;
      }
    }
    feeds[name] = { datatype: t.datatype, dims: [...t.dims], data };
  }
  return feeds;
}

/** Output data as numbers a summary can add up: FP16 half bits decoded, everything else as it is. */
export function outputValues(datatype: string, data: ArrayLike<number | bigint>): ArrayLike<number | bigint> {
  if (datatype !== 'FP16' && datatype !== 'float16') return data;
  return Float64Array.from(data as ArrayLike<number>, (h) => halfToFloat32(h));
}

/** The summary a golden carries for one output: sums and `samples` values at evenly spaced flat indices (first and last included). */
export function summarizeOutput(dims: readonly number[], data: ArrayLike<number | bigint>, samples = 32): GoldenOutput {
  const { sum, absSum } = sums(data);
  const n = data.length;
  const k = Math.min(Math.max(0, Math.floor(samples)), n);
  const indices = k === 1 ? [0] : Array.from({ length: k }, (_, i) => Math.round((i * (n - 1)) / (k - 1)));
  return { dims: [...dims], sum, abs_sum: absSum, sample_indices: indices, sample: indices.map((i) => Number(data[i]!)) };
}

/**
 * Problems with `outputs` against the golden's expectations; empty means the model passes. Per output: present,
 * same dims, no NaN, sum and abs_sum within atol·n + rtol·|expected| (n = element count: float rounding grows
 * with the number of terms), each sample within atol + rtol·|expected|. Outputs the golden does not name are ignored.
 */
export function compareGolden(golden: Golden, outputs: Record<string, { dims: readonly number[]; data: ArrayLike<number | bigint> }>): string[] {
  const problems: string[] = [];
  const { atol, rtol } = golden;
  const close = (actual: number, expected: number, tol: number) => Math.abs(actual - expected) <= tol; // false for NaN
  for (const [name, want] of Object.entries(golden.outputs)) {
    const got = outputs[name];
    if (!got) {
      problems.push(`output '${name}' is missing (the model has ${Object.keys(outputs).join(', ') || 'no outputs'})`);
      continue;
    }
    if (got.dims.length !== want.dims.length || got.dims.some((d, i) => d !== want.dims[i])) {
      problems.push(`output '${name}' has dims ${JSON.stringify(got.dims)}, expected ${JSON.stringify(want.dims)}`);
      continue;
    }
    const n = got.data.length;
    const nanAt = firstNaN(got.data);
    if (nanAt >= 0) problems.push(`output '${name}' element ${nanAt} is NaN`);
    const { sum, absSum } = sums(got.data);
    const sumTol = atol * n + rtol * Math.abs(want.sum);
    if (!close(sum, want.sum, sumTol)) problems.push(`output '${name}' sum is ${sum}, expected ${want.sum} ± ${sumTol}`);
    const absTol = atol * n + rtol * Math.abs(want.abs_sum);
    if (!close(absSum, want.abs_sum, absTol)) problems.push(`output '${name}' abs_sum is ${absSum}, expected ${want.abs_sum} ± ${absTol}`);
    let off = 0;
    want.sample_indices.forEach((index, j) => {
      const expected = want.sample[j]!;
      const actual = index < n ? Number(got.data[index]!) : NaN;
      const tol = atol + rtol * Math.abs(expected);
      if (index < n && close(actual, expected, tol)) return;
      // A few lines are enough to tell a wrong model from a numerical drift; the count says the rest.
      if (off++ < 5) problems.push(index >= n ? `output '${name}' has no element ${index} (it has ${n})` : `output '${name}'[${index}] is ${actual}, expected ${expected} ± ${tol}`);
    });
    if (off > 5) problems.push(`output '${name}': ${off - 5} more sample(s) out of tolerance`);
  }
  return problems;
}

function sums(data: ArrayLike<number | bigint>): { sum: number; absSum: number } {
  let sum = 0;
  let absSum = 0;
  for (let i = 0; i < data.length; i++) {
    const v = Number(data[i]!);
    sum += v;
    absSum += Math.abs(v);
  }
  return { sum, absSum };
}

function firstNaN(data: ArrayLike<number | bigint>): number {
  for (let i = 0; i < data.length; i++) if (typeof data[i] === 'number' && Number.isNaN(data[i])) return i;
  return -1;
}
