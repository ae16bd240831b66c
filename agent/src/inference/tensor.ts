import type { Tensor } from 'onnxruntime-node';
import type { KServeDatatype } from '../../../shared/src/manifest.js';
import { fail } from '../errors.js';
import { float32ToHalf, halfToFloat32 } from '../../../shared/src/half.js';

/** Numeric KServe datatypes the runtime carries (BYTES is only accepted as encoded images). */
export type NumericDatatype = Exclude<KServeDatatype, 'BYTES'>;

export type TensorData =
  | Float32Array | Float64Array | Int8Array | Int16Array | Int32Array | Uint8Array | Uint16Array | Uint32Array
  | BigInt64Array | BigUint64Array;

/** A tensor on the host, in KServe terms; the unit every layer above onnxruntime passes around. */
export interface HostTensor {
  datatype: NumericDatatype;
  dims: number[];
  data: TensorData;
}

interface TypeInfo {
  ort: Tensor.Type;
  bytes: number;
  make: (n: number) => TensorData;
  view: (buf: ArrayBuffer, offset: number, n: number) => TensorData;
  float: boolean;
  big: boolean;
}

const info = (ort: Tensor.Type, Ctor: { BYTES_PER_ELEMENT: number; new (n: number): TensorData; new (b: ArrayBuffer, o: number, n: number): TensorData }, float = false, big = false): TypeInfo => ({
  ort, bytes: Ctor.BYTES_PER_ELEMENT, make: (n) => new Ctor(n), view: (b, o, n) => new Ctor(b, o, n), float, big,
});

export const DATATYPES: Readonly<Record<NumericDatatype, TypeInfo>> = {
  BOOL: info('bool', Uint8Array),
  UINT8: info('uint8', Uint8Array),
  UINT16: info('uint16', Uint16Array),
  UINT32: info('uint32', Uint32Array),
  UINT64: info('uint64', BigUint64Array, false, true),
  INT8: info('int8', Int8Array),
  INT16: info('int16', Int16Array),
  INT32: info('int32', Int32Array),
  INT64: info('int64', BigInt64Array, false, true),
  // FP16 travels as raw IEEE half bits (Node 20 has no Float16Array); JSON values are converted.
  FP16: info('float16', Uint16Array, true),
  FP32: info('float32', Float32Array, true),
  FP64: info('float64', Float64Array, true),
};

const ORT_TO_KSERVE = new Map<string, NumericDatatype>(
  (Object.entries(DATATYPES) as [NumericDatatype, TypeInfo][]).map(([k, v]) => [v.ort, k]),
);

export function kserveFromOrt(type: string): KServeDatatype | undefined {
  if (type === 'string') return 'BYTES';
  return ORT_TO_KSERVE.get(type);
}

export function isNumericDatatype(dt: string): dt is NumericDatatype {
  return Object.hasOwn(DATATYPES, dt);
}

/**
 * Element count of a shape, refusing negative dims and products past `maxElements`
 * (checked as it multiplies, so [2^31, 2^31] cannot overflow into a small number).
 */
export function shapeProduct(dims: readonly number[], maxElements: number): number {
  let n = 1;
  for (const d of dims) {
    if (!Number.isSafeInteger(d) || d < 0) throw fail('AGENT_WRONG_SHAPE', `shape ${JSON.stringify(dims)} has an invalid dimension ${d}`);
    n *= d;
    if (n > maxElements) throw fail('AGENT_TOO_MANY_ELEMENTS', `shape ${JSON.stringify(dims)} has more than ${maxElements} elements (limits.maxTensorElements)`);
  }
  return n;
}

/** Converts a flat JSON array into typed data, refusing wrong element types and non-finite floats. */
export function fromJsonData(name: string, datatype: NumericDatatype, values: readonly unknown[]): TensorData {
  const t = DATATYPES[datatype];
  const out = t.make(values.length);
  for (let i = 0; i < values.length; i++) {
    const v = values[i];
    if (datatype === 'BOOL') {
      if (typeof v !== 'boolean' && v !== 0 && v !== 1) throw badElement(name, datatype, i, v);
      (out as Uint8Array)[i] = v ? 1 : 0;
    } else if (typeof v !== 'number') {
      throw badElement(name, datatype, i, v);
    } else if (t.float) {
      if (!Number.isFinite(v)) throw fail('AGENT_NON_FINITE', `input '${name}' element ${i} is not finite`);
      if (datatype === 'FP16') (out as Uint16Array)[i] = float32ToHalf(v);
      else (out as Float32Array)[i] = v;
    } else {
      if (!Number.isInteger(v) || !fitsInteger(datatype, v)) throw badElement(name, datatype, i, v);
      if (t.big) (out as BigInt64Array)[i] = BigInt(v) as never;
      else (out as Int32Array)[i] = v;
    }
  }
  return out;
}

function badElement(name: string, datatype: string, i: number, v: unknown): Error {
  const shown = typeof v === 'string' ? JSON.stringify(v.slice(0, 20)) : typeof v === 'object' ? (Array.isArray(v) ? 'an array' : String(v)) : String(v);
  return fail('AGENT_WRONG_DATATYPE', `input '${name}' element ${i} is ${shown}, not a ${datatype} value`);
}

const INT_RANGES: Partial<Record<NumericDatatype, [number, number]>> = {
  INT8: [-128, 127], INT16: [-32768, 32767], INT32: [-2147483648, 2147483647], INT64: [Number.MIN_SAFE_INTEGER, Number.MAX_SAFE_INTEGER],
  UINT8: [0, 255], UINT16: [0, 65535], UINT32: [0, 4294967295], UINT64: [0, Number.MAX_SAFE_INTEGER],
};

function fitsInteger(datatype: NumericDatatype, v: number): boolean {
  const r = INT_RANGES[datatype];
  return r !== undefined && v >= r[0] && v <= r[1];
}

/** Copies little-endian raw bytes (Triton binary extension) into typed data of the given length. */
export function fromBinary(datatype: NumericDatatype, bytes: Uint8Array, count: number): TensorData {
  const t = DATATYPES[datatype];
  // Copy: the body buffer's offset is rarely aligned to the element size.
  const copy = new Uint8Array(count * t.bytes);
  copy.set(bytes.subarray(0, count * t.bytes));
  return t.view(copy.buffer, 0, count);
}

/** Throws AGENT_NON_FINITE when a float tensor carries NaN or ±Infinity. */
export function assertFinite(name: string, t: HostTensor): void {
  if (t.datatype === 'FP32' || t.datatype === 'FP64') {
    const d = t.data as Float32Array;
    for (let i = 0; i < d.length; i++) {
      // x - x is NaN exactly for NaN and ±Infinity: one comparison per element.
      if (d[i]! - d[i]! !== 0) throw fail('AGENT_NON_FINITE', `input '${name}' element ${i} is ${d[i]}`);
    }
  } else if (t.datatype === 'FP16') {
    const d = t.data as Uint16Array;
    for (let i = 0; i < d.length; i++) {
      if ((d[i]! & 0x7c00) === 0x7c00) throw fail('AGENT_NON_FINITE', `input '${name}' element ${i} is not finite`);
    }
  }
}

/** JSON-friendly values: numbers (INT64 beyond 2^53 lose precision, as in Triton's JSON), booleans for BOOL. */
export function toJsonData(t: HostTensor): (number | boolean)[] {
  const d = t.data;
  if (t.datatype === 'BOOL') return Array.from(d as Uint8Array, (v) => v !== 0);
  if (t.datatype === 'FP16') return Array.from(d as Uint16Array, halfToFloat32);
  if (DATATYPES[t.datatype].big) return Array.from(d as BigInt64Array, (v) => Number(v));
  return Array.from(d as Float32Array);
}

export function toBinary(t: HostTensor): Buffer {
  return Buffer.from(t.data.buffer, t.data.byteOffset, t.data.byteLength);
}

export { float32ToHalf, halfToFloat32 };
