/**
 * `slow`: y = ReduceSum(x · xᵀ) for x FP32 [n, m] — n²·m multiply-adds, so the client picks how
 * long a request takes by the size it sends. Used to test per-request timeouts, queueing and
 * overload without sleeping in the model (ONNX has no sleep op, and compute is what a real
 * overloaded box is busy with).
 */
import { attr, GraphBuilder } from '../shared/src/onnx/graph-builder.js';

export function buildSlow(): Uint8Array {
  const g = new GraphBuilder({ name: 'slow', opset: 13, producerName: 'outpost-make-models' });
  const x = g.input('x', 'FLOAT', ['n', 'm']);
  const gram = g.op('MatMul', [x, g.op('Transpose', [x], { perm: attr.ints([1, 0]) })]);
  // No axes input and noop_with_empty_axes=0: reduce over all axes.
  const total = g.op('ReduceSum', [gram], { keepdims: attr.int(0) });
  g.op('Reshape', [total, g.ints64([1])], {}, 'y');
  g.output('y', 'FLOAT', [1]);
  return g.encode();
}
