import { readFileSync, writeFileSync } from 'node:fs';
import type { TensorFile } from './protocol.js';

/**
 * KServe v2 request bodies built from the exact input bytes the bare phase ran on, so (a), (b) and (c) feed
 * the model the same tensor.
 */
export interface RequestBody {
  file: string;
  bytes: number;
  headers: Record<string, string>;
}

type Numeric = Float32Array | Float64Array | Int8Array | Int16Array | Int32Array | Uint8Array | Uint16Array | Uint32Array;

function view(t: TensorFile): Numeric {
  const raw = readFileSync(t.file);
  const buf = raw.buffer.slice(raw.byteOffset, raw.byteOffset + raw.byteLength);
  switch (t.datatype) {
    case 'FP32': return new Float32Array(buf);
    case 'FP64': return new Float64Array(buf);
    case 'INT8': return new Int8Array(buf);
    case 'INT16': return new Int16Array(buf);
    case 'INT32': return new Int32Array(buf);
    case 'UINT8': case 'BOOL': return new Uint8Array(buf);
    case 'UINT16': return new Uint16Array(buf);
    case 'UINT32': return new Uint32Array(buf);
    default: throw new Error(`the bench cannot write ${t.datatype} as JSON`);
  }
}

/**
 * Plain JSON tensors, as a generic client (tritonclient, curl) sends them: every element a JSON number.
 * FP32 values print with the shortest round-trip digits of their double value (what numpy's tolist() gives).
 */
export function jsonBody(inputs: TensorFile[], file: string): RequestBody {
  const body = Buffer.from(JSON.stringify({
    inputs: inputs.map((t) => ({ name: t.name, shape: t.dims, datatype: t.datatype, data: Array.from(view(t)) })),
  }));
  writeFileSync(file, body);
  return { file, bytes: body.length, headers: { 'content-type': 'application/json' } };
}

/** Triton's binary tensor extension both ways: raw input bytes after the JSON header, binary_data_output. */
export function binaryBody(inputs: TensorFile[], file: string): RequestBody {
  const header = Buffer.from(JSON.stringify({
    inputs: inputs.map((t) => ({ name: t.name, shape: t.dims, datatype: t.datatype, parameters: { binary_data_size: t.bytes } })),
    parameters: { binary_data_output: true },
  }));
  const body = Buffer.concat([header, ...inputs.map((t) => readFileSync(t.file))]);
  writeFileSync(file, body);
  return { file, bytes: body.length, headers: { 'content-type': 'application/octet-stream', 'inference-header-content-length': String(header.length) } };
}

/** Largest |a − b| between a response tensor and the bare reference (both raw little-endian FP32 or INT32). */
export function maxAbsDiff(datatype: string, a: Uint8Array, b: Uint8Array): number {
  if (a.length !== b.length) return Number.POSITIVE_INFINITY;
  const copy = (x: Uint8Array) => x.buffer.slice(x.byteOffset, x.byteOffset + x.byteLength);
  const [x, y] = datatype === 'FP32' ? [new Float32Array(copy(a)), new Float32Array(copy(b))] : datatype === 'INT32' ? [new Int32Array(copy(a)), new Int32Array(copy(b))] : [a, b];
  let worst = 0;
  for (let i = 0; i < x.length; i++) worst = Math.max(worst, Math.abs(x[i]! - y[i]!));
  return worst;
}

/** Row-major values of a JSON output's data (flat or nested) as raw little-endian bytes of `datatype`. */
export function jsonDataToBytes(datatype: string, data: unknown[]): Uint8Array {
  const flat = data.flat(Infinity) as number[];
  const out = datatype === 'FP32' ? Float32Array.from(flat) : datatype === 'INT32' ? Int32Array.from(flat) : Float64Array.from(flat);
  return new Uint8Array(out.buffer);
}
