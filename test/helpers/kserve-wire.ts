/**
 * A small, independent KServe v2 client for the integration tests: builds JSON and binary-extension
 * requests and reads responses back, so the tests speak the wire format the way a client would
 * (Triton's binary tensor extension: JSON header of Inference-Header-Content-Length bytes, then the
 * tensors' raw little-endian bytes in order).
 */

export interface WireTensor {
  name: string;
  datatype: string;
  shape: number[];
  /** JSON `data` when the tensor came back as JSON. */
  data?: unknown[];
  /** Raw bytes when the tensor came back in the binary part. */
  bytes?: Buffer;
  parameters?: Record<string, unknown>;
}

export interface InferReply {
  status: number;
  headers: Headers;
  /** The JSON (or the JSON header of a binary response). */
  json: Record<string, unknown>;
  outputs: Record<string, WireTensor>;
}

/** A binary-extension request body: the JSON header followed by `parts`; header length to send along. */
export function binaryRequest(header: unknown, parts: Uint8Array[]): { body: Buffer; headerLength: number } {
  const head = Buffer.from(JSON.stringify(header));
  return { body: Buffer.concat([head, ...parts.map((p) => Buffer.from(p.buffer, p.byteOffset, p.byteLength))]), headerLength: head.length };
}

/** BYTES elements for the binary extension: each a 4-byte little-endian length, then the bytes. */
export function lengthPrefixed(items: Uint8Array[]): Buffer {
  return Buffer.concat(
    items.flatMap((item) => {
      const len = Buffer.alloc(4);
      len.writeUInt32LE(item.length, 0);
      return [len, Buffer.from(item)];
    }),
  );
}

/** POSTs a plain JSON infer request. */
export function postJson(url: string, body: unknown): Promise<InferReply> {
  return send(url, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) });
}

/** POSTs a binary-extension infer request. */
export function postBinary(url: string, header: unknown, parts: Uint8Array[]): Promise<InferReply> {
  const { body, headerLength } = binaryRequest(header, parts);
  return send(url, { method: 'POST', headers: { 'content-type': 'application/octet-stream', 'inference-header-content-length': String(headerLength) }, body });
}

/** Sends and decodes an infer response: JSON, or a JSON header plus binary outputs in header order. */
export async function send(url: string, init: RequestInit): Promise<InferReply> {
  const res = await fetch(url, init);
  const raw = Buffer.from(await res.arrayBuffer());
  const headerLength = res.headers.get('inference-header-content-length');
  const jsonBytes = headerLength === null ? raw : raw.subarray(0, Number(headerLength));
  const json = JSON.parse(jsonBytes.toString('utf8')) as Record<string, unknown>;
  const outputs: Record<string, WireTensor> = {};
  let at = headerLength === null ? raw.length : Number(headerLength);
  for (const o of (json.outputs as WireTensor[] | undefined) ?? []) {
    const size = o.parameters?.binary_data_size;
    if (typeof size === 'number') {
      outputs[o.name] = { ...o, bytes: raw.subarray(at, at + size) };
      at += size;
    } else outputs[o.name] = o;
  }
  if (at !== raw.length) throw new Error(`response has ${raw.length - at} bytes after the declared binary outputs`);
  return { status: res.status, headers: res.headers, json, outputs };
}

const VIEWS = {
  BOOL: Uint8Array, UINT8: Uint8Array, UINT16: Uint16Array, UINT32: Uint32Array, UINT64: BigUint64Array,
  INT8: Int8Array, INT16: Int16Array, INT32: Int32Array, INT64: BigInt64Array,
  FP16: Uint16Array, FP32: Float32Array, FP64: Float64Array,
} as const;
export type NumericWireType = keyof typeof VIEWS;

/** Bytes per element of a numeric KServe datatype. */
export function elementBytes(datatype: NumericWireType): number {
  return VIEWS[datatype].BYTES_PER_ELEMENT;
}

/** A typed view over little-endian tensor bytes (copied, so alignment never matters). */
export function typedFromBytes(datatype: NumericWireType, bytes: Uint8Array): ArrayLike<number | bigint> {
  const copy = new Uint8Array(bytes);
  const Ctor = VIEWS[datatype];
  return new Ctor(copy.buffer, 0, copy.length / Ctor.BYTES_PER_ELEMENT);
}

/** Raw little-endian bytes of typed data, as the binary extension carries them. */
export function bytesOf(data: ArrayBufferView): Buffer {
  return Buffer.from(data.buffer, data.byteOffset, data.byteLength);
}

/** A tensor's values as JS numbers whichever way it came back (JSON data or binary bytes; not FP16 bits). */
export function numbersOf(t: WireTensor): number[] {
  if (t.bytes) return Array.from(typedFromBytes(t.datatype as NumericWireType, t.bytes), (v) => Number(v));
  return (t.data ?? []).map((v) => Number(v));
}
