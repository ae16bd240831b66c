/**
 * Broken and heavy versions of `simple` (same inputs and outputs: INPUT0/INPUT1 INT32 [batch, 16] →
 * OUTPUT0 = INPUT0 + INPUT1 + offset, OUTPUT1 = INPUT0 − INPUT1), for the update tests and the rollout bench:
 * a model that loads and passes a warm-up but is bad in a way only probation or the golden input can see.
 */
import { attr, GraphBuilder } from '../shared/src/onnx/graph-builder.js';
import { SIMPLE_WIDTH } from './simple.js';

/** A deterministic uniform [-scale, scale) sequence (mulberry32), so the same call builds the same bytes. */
function weights(n: number, seed: number, scale: number): Float32Array {
  const out = new Float32Array(n);
  let s = seed >>> 0;
  for (let i = 0; i < n; i++) {
    s = (s + 0x6d2b79f5) >>> 0;
    let t = s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    out[i] = ((((t ^ (t >>> 14)) >>> 0) / 4294967296) * 2 - 1) * scale;
  }
  return out;
}

function io(g: GraphBuilder): { a: string; b: string } {
  return { a: g.input('INPUT0', 'INT32', ['batch', SIMPLE_WIDTH]), b: g.input('INPUT1', 'INT32', ['batch', SIMPLE_WIDTH]) };
}

/** OUTPUT0 = a + b + offset + (extra × 0): `extra` is computed (never folded away) but changes nothing. */
function finish(g: GraphBuilder, a: string, b: string, offset: number, extraInt32Scalar: string | undefined): void {
  let sum = g.op('Add', [a, b]);
  if (offset !== 0) sum = g.op('Add', [sum, g.int32('offset', [], [offset])]);
  if (extraInt32Scalar) sum = g.op('Add', [sum, g.op('Mul', [extraInt32Scalar, g.int32('zero', [], [0])])]);
  g.op('Identity', [sum], {}, 'OUTPUT0');
  g.op('Sub', [a, b], {}, 'OUTPUT1');
  g.output('OUTPUT0', 'INT32', ['batch', SIMPLE_WIDTH]);
  g.output('OUTPUT1', 'INT32', ['batch', SIMPLE_WIDTH]);
}

/**
 * `simple` plus `layers` dense layers of width `width` whose result is multiplied by 0: the answers are
 * version 1's (plus `offset`), the time per request grows with width² × layers, and the file with width²
 * (width 1536 ≈ 9.4 MB: the rollout bench's "~10 MB model").
 */
export function buildSimpleHeavy(options: { width: number; layers: number; offset?: number; seed?: number }): Uint8Array {
  const { width, layers } = options;
  const g = new GraphBuilder({ name: `simple_heavy_${width}x${layers}`, opset: 13, producerName: 'outpost-make-models' });
  const { a, b } = io(g);
  const x = g.op('Cast', [a], { to: attr.int(1) }); // FLOAT
  let h = g.op('MatMul', [x, g.float32('w_in', [SIMPLE_WIDTH, width], weights(SIMPLE_WIDTH * width, options.seed ?? 1, 1e-2))]);
  const w = g.float32('w_hidden', [width, width], weights(width * width, (options.seed ?? 1) + 1, 1 / width));
  for (let i = 0; i < layers; i++) h = g.op('MatMul', [h, w]);
  const total = g.op('ReduceSum', [h], { keepdims: attr.int(0) });
  const extra = g.op('Cast', [g.op('Mul', [total, g.float32('fzero', [], [0])])], { to: attr.int(6) }); // INT32
  finish(g, a, b, options.offset ?? 0, extra);
  return g.encode();
}

/**
 * Loads, warms up on zeros and answers zeros, but fails on real inputs: INPUT0[0, 15] indexes a 4-element table,
 * so any request whose last INPUT0 value is ≥ 4 (the test requests send 0..15) fails in the runtime.
 */
export function buildSimpleFailing(options: { offset?: number } = {}): Uint8Array {
  const g = new GraphBuilder({ name: 'simple_failing', opset: 13, producerName: 'outpost-make-models' });
  const { a, b } = io(g);
  const last = g.op('Slice', [a, g.ints64([0, SIMPLE_WIDTH - 1]), g.ints64([1, SIMPLE_WIDTH])]); // [1, 1]
  const index = g.op('Reshape', [g.op('Cast', [last], { to: attr.int(7) }), g.ints64([1])]); // INT64 [1]
  const picked = g.op('Gather', [g.int32('table', [4], [1, 2, 3, 4]), index]); // [1], out of bounds for ≥ 4
  const extra = g.op('ReduceSum', [picked], { keepdims: attr.int(0) });
  finish(g, a, b, options.offset ?? 0, extra);
  return g.encode();
}
