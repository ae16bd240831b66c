/**
 * `simple`, after Triton's classic example model: OUTPUT0 = INPUT0 + INPUT1 and
 * OUTPUT1 = INPUT0 − INPUT1 on INT32 [batch, 16]. Clients written against Triton's docs work
 * against it unchanged, and its raw-tensor path has nothing to preprocess.
 *
 * Version 2 adds 1000 to OUTPUT0 so a client can tell which version answered (version policies,
 * hot swap and rollback tests need versions that differ observably).
 */
import { GraphBuilder } from '../shared/src/onnx/graph-builder.js';

export const SIMPLE_WIDTH = 16;
/** What version 2 adds to OUTPUT0. */
export const SIMPLE_V2_OFFSET = 1000;

export function buildSimple(version: 1 | 2): Uint8Array {
  const g = new GraphBuilder({ name: `simple_v${version}`, opset: 13, producerName: 'outpost-make-models' });
  const a = g.input('INPUT0', 'INT32', ['batch', SIMPLE_WIDTH]);
  const b = g.input('INPUT1', 'INT32', ['batch', SIMPLE_WIDTH]);
  if (version === 1) {
    g.op('Add', [a, b], {}, 'OUTPUT0');
  } else {
    const sum = g.op('Add', [a, b]);
    g.op('Add', [sum, g.int32('version_offset', [], [SIMPLE_V2_OFFSET])], {}, 'OUTPUT0');
  }
  g.op('Sub', [a, b], {}, 'OUTPUT1');
  g.output('OUTPUT0', 'INT32', ['batch', SIMPLE_WIDTH]);
  g.output('OUTPUT1', 'INT32', ['batch', SIMPLE_WIDTH]);
  return g.encode();
}
