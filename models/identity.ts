/**
 * `identity`: one Identity node per KServe datatype (input `x_<dt>` → output `y_<dt>`, dims
 * [-1, -1]), so tests can round-trip every tensor type the agent accepts through a real session —
 * JSON and binary encodings of INT64/UINT64 (BigInt), FP16 and BOOL are where servers usually break.
 */
import { GraphBuilder } from '../shared/src/onnx/graph-builder.js';
import type { OnnxDataTypeName } from '../shared/src/onnx/onnx-proto.js';

/** KServe v2 datatype → ONNX element type, for every type onnxruntime-node can carry. */
export const IDENTITY_DATATYPES = {
  FP32: 'FLOAT',
  FP64: 'DOUBLE',
  FP16: 'FLOAT16',
  INT8: 'INT8',
  INT16: 'INT16',
  INT32: 'INT32',
  INT64: 'INT64',
  UINT8: 'UINT8',
  UINT16: 'UINT16',
  UINT32: 'UINT32',
  UINT64: 'UINT64',
  BOOL: 'BOOL',
} as const satisfies Record<string, OnnxDataTypeName>;
export type IdentityDatatype = keyof typeof IDENTITY_DATATYPES;

export const identityInputName = (dt: IdentityDatatype): string => `x_${dt.toLowerCase()}`;
export const identityOutputName = (dt: IdentityDatatype): string => `y_${dt.toLowerCase()}`;

export function buildIdentity(): Uint8Array {
  // Opset 14+: Identity accepts every tensor type listed here (opset 13 is the same for these).
  const g = new GraphBuilder({ name: 'identity', opset: 17, producerName: 'outpost-make-models' });
  for (const dt of Object.keys(IDENTITY_DATATYPES) as IdentityDatatype[]) {
    const onnxType = IDENTITY_DATATYPES[dt];
    // Unnamed dims: the inputs are independent, a shared symbolic name would claim equal sizes.
    const x = g.input(identityInputName(dt), onnxType, [null, null]);
    g.op('Identity', [x], {}, identityOutputName(dt));
    g.output(identityOutputName(dt), onnxType, [null, null]);
  }
  return g.encode();
}
