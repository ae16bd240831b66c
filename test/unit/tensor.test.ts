import { describe, expect, it } from 'vitest';
import { isAgentError } from '../../agent/src/errors.js';
import {
  assertFinite, float32ToHalf, fromBinary, fromJsonData, halfToFloat32, shapeProduct, toBinary, toJsonData, type HostTensor, type TensorData,
} from '../../agent/src/inference/tensor.js';

/** Elements of a non-BigInt typed array as plain numbers. */
const numbers = (d: TensorData): number[] => Array.from(d as ArrayLike<number>);

/** The catalog code a call throws, or undefined when it does not throw. */
function codeOf(run: () => unknown): string | undefined {
  try {
    run();
  } catch (err) {
    if (!isAgentError(err)) throw err;
    return err.code;
  }
  return undefined;
}

const LIMIT = 16 * 1024 * 1024;

describe('shapeProduct', () => {
  it('multiplies the dims', () => {
    expect(shapeProduct([1, 3, 640, 640], LIMIT)).toBe(1_228_800);
    expect(shapeProduct([], LIMIT)).toBe(1);
    expect(shapeProduct([4, 0, 8], LIMIT)).toBe(0);
  });

  it('refuses [2^31, 2^31] with AGENT_TOO_MANY_ELEMENTS instead of overflowing', () => {
    expect(codeOf(() => shapeProduct([2 ** 31, 2 ** 31], LIMIT))).toBe('AGENT_TOO_MANY_ELEMENTS');
    // Each dim alone is under the limit; the product is not.
    expect(codeOf(() => shapeProduct([65536, 65536], 2 ** 31))).toBe('AGENT_TOO_MANY_ELEMENTS');
  });

  it('allows exactly the limit and refuses one more', () => {
    expect(shapeProduct([4, 4], 16)).toBe(16);
    expect(codeOf(() => shapeProduct([17], 16))).toBe('AGENT_TOO_MANY_ELEMENTS');
  });

  it('refuses negative, fractional and unsafe dims with AGENT_WRONG_SHAPE', () => {
    expect(codeOf(() => shapeProduct([1, -1, 3], LIMIT))).toBe('AGENT_WRONG_SHAPE');
    expect(codeOf(() => shapeProduct([1.5], LIMIT))).toBe('AGENT_WRONG_SHAPE');
    expect(codeOf(() => shapeProduct([2 ** 53], LIMIT))).toBe('AGENT_WRONG_SHAPE');
  });
});

describe('fromJsonData', () => {
  it('converts numbers into the typed array of the datatype', () => {
    const f = fromJsonData('x', 'FP32', [1.5, -2, 0]);
    expect(f).toBeInstanceOf(Float32Array);
    expect(numbers(f)).toEqual([1.5, -2, 0]);
    const u = fromJsonData('x', 'UINT8', [0, 255]);
    expect(u).toBeInstanceOf(Uint8Array);
    expect(numbers(u)).toEqual([0, 255]);
    expect(numbers(fromJsonData('x', 'INT8', [-128, 127]))).toEqual([-128, 127]);
  });

  it('converts BOOL from booleans and 0/1, and refuses other values', () => {
    expect(numbers(fromJsonData('x', 'BOOL', [true, false, 1, 0]))).toEqual([1, 0, 1, 0]);
    expect(codeOf(() => fromJsonData('x', 'BOOL', [2]))).toBe('AGENT_WRONG_DATATYPE');
    expect(codeOf(() => fromJsonData('x', 'BOOL', ['true']))).toBe('AGENT_WRONG_DATATYPE');
  });

  it('converts INT64 into a BigInt64Array', () => {
    const d = fromJsonData('x', 'INT64', [-3, 2 ** 40, 0]);
    expect(d).toBeInstanceOf(BigInt64Array);
    expect(Array.from(d as BigInt64Array)).toEqual([-3n, 2n ** 40n, 0n]);
  });

  it('refuses strings, nested arrays and null in numeric tensors', () => {
    expect(codeOf(() => fromJsonData('x', 'FP32', [1, '2']))).toBe('AGENT_WRONG_DATATYPE');
    expect(codeOf(() => fromJsonData('x', 'INT32', [[1]]))).toBe('AGENT_WRONG_DATATYPE');
    expect(codeOf(() => fromJsonData('x', 'FP32', [null]))).toBe('AGENT_WRONG_DATATYPE');
  });

  it('refuses integers out of the datatype range instead of wrapping them', () => {
    expect(codeOf(() => fromJsonData('x', 'UINT8', [300]))).toBe('AGENT_WRONG_DATATYPE');
    expect(codeOf(() => fromJsonData('x', 'UINT8', [-1]))).toBe('AGENT_WRONG_DATATYPE');
    expect(codeOf(() => fromJsonData('x', 'INT8', [128]))).toBe('AGENT_WRONG_DATATYPE');
    expect(codeOf(() => fromJsonData('x', 'INT32', [2 ** 31]))).toBe('AGENT_WRONG_DATATYPE');
    expect(codeOf(() => fromJsonData('x', 'UINT64', [-1]))).toBe('AGENT_WRONG_DATATYPE');
    expect(codeOf(() => fromJsonData('x', 'INT64', [2 ** 60]))).toBe('AGENT_WRONG_DATATYPE');
  });

  it('refuses non-integers for integer datatypes', () => {
    expect(codeOf(() => fromJsonData('x', 'INT32', [1.5]))).toBe('AGENT_WRONG_DATATYPE');
    expect(codeOf(() => fromJsonData('x', 'INT64', [0.1]))).toBe('AGENT_WRONG_DATATYPE');
  });

  it('names the input and element in the message', () => {
    expect(() => fromJsonData('images', 'UINT8', [1, 2, 300])).toThrow(/'images' element 2 is 300/);
  });

  it('refuses non-finite floats with AGENT_NON_FINITE', () => {
    expect(codeOf(() => fromJsonData('x', 'FP32', [1, Infinity]))).toBe('AGENT_NON_FINITE');
    expect(codeOf(() => fromJsonData('x', 'FP64', [NaN]))).toBe('AGENT_NON_FINITE');
    expect(codeOf(() => fromJsonData('x', 'FP16', [-Infinity]))).toBe('AGENT_NON_FINITE');
  });

  it('converts FP16 values to half bits', () => {
    const d = fromJsonData('x', 'FP16', [1, -2, 0.5]);
    expect(d).toBeInstanceOf(Uint16Array);
    expect(numbers(d)).toEqual([0x3c00, 0xc000, 0x3800]);
  });
});

describe('assertFinite', () => {
  const t = (datatype: HostTensor['datatype'], data: HostTensor['data']): HostTensor => ({ datatype, dims: [data.length], data });

  it('passes finite float tensors', () => {
    expect(() => assertFinite('x', t('FP32', Float32Array.from([0, -1, 3.4e38])))).not.toThrow();
    expect(() => assertFinite('x', t('FP16', Uint16Array.from([0x3c00, 0x7bff])))).not.toThrow();
  });

  it('catches NaN and ±Infinity in FP32 and FP64', () => {
    expect(codeOf(() => assertFinite('x', t('FP32', Float32Array.from([1, NaN]))))).toBe('AGENT_NON_FINITE');
    expect(codeOf(() => assertFinite('x', t('FP32', Float32Array.from([-Infinity]))))).toBe('AGENT_NON_FINITE');
    expect(codeOf(() => assertFinite('x', t('FP64', Float64Array.from([0, 0, Infinity]))))).toBe('AGENT_NON_FINITE');
  });

  it('catches NaN and ±Infinity in FP16 bit patterns', () => {
    expect(codeOf(() => assertFinite('x', t('FP16', Uint16Array.from([0x3c00, 0x7c00]))))).toBe('AGENT_NON_FINITE'); // +Inf
    expect(codeOf(() => assertFinite('x', t('FP16', Uint16Array.from([0xfc00]))))).toBe('AGENT_NON_FINITE'); // -Inf
    expect(codeOf(() => assertFinite('x', t('FP16', Uint16Array.from([0x7e00]))))).toBe('AGENT_NON_FINITE'); // NaN
  });

  it('ignores integer tensors', () => {
    expect(() => assertFinite('x', t('UINT16', Uint16Array.from([0x7c00])))).not.toThrow();
  });
});

describe('float32ToHalf / halfToFloat32', () => {
  it('encodes known values to their IEEE half bits', () => {
    expect(float32ToHalf(1)).toBe(0x3c00);
    expect(float32ToHalf(-2)).toBe(0xc000);
    expect(float32ToHalf(0.5)).toBe(0x3800);
    expect(float32ToHalf(65504)).toBe(0x7bff);
    expect(float32ToHalf(Infinity)).toBe(0x7c00);
    expect(float32ToHalf(-Infinity)).toBe(0xfc00);
    expect(float32ToHalf(0)).toBe(0);
    expect(float32ToHalf(-0)).toBe(0x8000);
    expect(float32ToHalf(2 ** -24)).toBe(0x0001); // smallest subnormal
  });

  it('round-trips values a half can hold exactly', () => {
    for (const v of [1, -2, 0.5, 65504, -65504, 0.25, 1024, 2 ** -14, 2 ** -24, 3 * 2 ** -20]) {
      expect(halfToFloat32(float32ToHalf(v)), String(v)).toBe(v);
    }
    expect(halfToFloat32(float32ToHalf(Infinity))).toBe(Infinity);
    expect(halfToFloat32(float32ToHalf(-Infinity))).toBe(-Infinity);
    expect(halfToFloat32(float32ToHalf(NaN))).toBeNaN();
  });

  it('flushes values below half the smallest subnormal to zero, and rounds the rest to nearest', () => {
    // 1e-8 is under 2^-25 (≈ 2.98e-8): zero. Halfway cases tie to even.
    expect(halfToFloat32(float32ToHalf(1e-8))).toBe(0);
    expect(float32ToHalf(2 ** -25)).toBe(0); // tie between 0 and 2^-24 → even (0)
    expect(float32ToHalf(1.5 * 2 ** -24)).toBe(0x0002); // tie between 1 and 2 → even (2)
    expect(float32ToHalf(1 + 2 ** -11)).toBe(0x3c00); // tie → even mantissa
    expect(float32ToHalf(1 + 3 * 2 ** -11)).toBe(0x3c02); // tie → even mantissa, rounding up
    expect(halfToFloat32(float32ToHalf(0.1))).toBeCloseTo(0.1, 3);
  });

  it('overflows values past the half range to Infinity', () => {
    expect(float32ToHalf(65520)).toBe(0x7c00); // rounds up past 65504
    expect(float32ToHalf(1e6)).toBe(0x7c00);
    expect(float32ToHalf(-1e6)).toBe(0xfc00);
  });
});

describe('fromBinary / toBinary', () => {
  it('reads little-endian elements from an unaligned offset', () => {
    // FP32 1.0 = 00 00 80 3f and -2.0 = 00 00 00 c0 (little-endian), placed at byte offset 3.
    const body = Uint8Array.from([0xaa, 0xbb, 0xcc, 0x00, 0x00, 0x80, 0x3f, 0x00, 0x00, 0x00, 0xc0, 0xdd]);
    const d = fromBinary('FP32', body.subarray(3), 2);
    expect(d).toBeInstanceOf(Float32Array);
    expect(numbers(d)).toEqual([1, -2]);
  });

  it('reads INT32 and INT64 little-endian', () => {
    const i32 = fromBinary('INT32', Uint8Array.from([0x01, 0x02, 0x03, 0x04, 0xff, 0xff, 0xff, 0xff]).subarray(0), 2);
    expect(numbers(i32)).toEqual([0x04030201, -1]);
    const bytes = new Uint8Array(9);
    bytes.set([0xfe, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff], 1);
    expect(Array.from(fromBinary('INT64', bytes.subarray(1), 1) as BigInt64Array)).toEqual([-2n]);
  });

  it('copies: later changes to the body do not reach the tensor', () => {
    const body = Uint8Array.from([0x00, 0x00, 0x80, 0x3f]);
    const d = fromBinary('FP32', body, 1);
    body.fill(0);
    expect(d[0]).toBe(1);
  });

  it('toBinary gives back the same little-endian bytes, respecting subarray views', () => {
    const data = Float32Array.from([9, 1, -2]).subarray(1);
    const bytes = toBinary({ datatype: 'FP32', dims: [2], data });
    expect(Array.from(bytes)).toEqual([0x00, 0x00, 0x80, 0x3f, 0x00, 0x00, 0x00, 0xc0]);
  });
});

describe('toJsonData', () => {
  it('gives booleans for BOOL, floats for FP16, numbers for INT64', () => {
    expect(toJsonData({ datatype: 'BOOL', dims: [2], data: Uint8Array.from([1, 0]) })).toEqual([true, false]);
    expect(toJsonData({ datatype: 'FP16', dims: [2], data: Uint16Array.from([0x3c00, 0xc000]) })).toEqual([1, -2]);
    expect(toJsonData({ datatype: 'INT64', dims: [1], data: BigInt64Array.from([-5n]) })).toEqual([-5]);
  });
});
