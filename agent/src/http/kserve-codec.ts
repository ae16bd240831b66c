import { z } from 'zod';
import { KSERVE_DATATYPES } from '../../../shared/src/manifest.js';
import { fail } from '../errors.js';
import type { RequestInput } from '../inference/validate.js';
import { toBinary, toJsonData, type HostTensor } from '../inference/tensor.js';
import { parseJsonBody } from './json-body.js';

const Parameters = z.record(z.string(), z.union([z.string(), z.number(), z.boolean()]));

const InferInput = z.object({
  name: z.string().min(1).max(256),
  shape: z.array(z.number().int().min(0).max(Number.MAX_SAFE_INTEGER)).max(16),
  datatype: z.string().max(16),
  parameters: Parameters.optional(),
  data: z.array(z.unknown()).optional(),
});

const InferRequest = z.object({
  id: z.string().max(256).optional(),
  parameters: Parameters.optional(),
  inputs: z.array(InferInput).min(1).max(64),
  outputs: z.array(z.object({ name: z.string().min(1).max(256), parameters: Parameters.optional() })).max(64).optional(),
});

export interface ParsedInferRequest {
  id: string | undefined;
  inputs: RequestInput[];
  /** Requested outputs (all when undefined) and whether each goes back as binary. */
  outputs: { name: string; binary: boolean }[] | undefined;
  /** Request-level binary_data_output: every output binary unless it says otherwise. */
  binaryByDefault: boolean;
  timeoutMs: number | undefined;
}

/**
 * Decodes a KServe v2 infer request: plain JSON, or Triton's binary tensor extension where the JSON header
 * is the first Inference-Header-Content-Length bytes and each input with parameters.binary_data_size takes
 * its bytes, in input order, from what follows.
 */
export function decodeInferRequest(body: Uint8Array, headerLength: string | undefined, maxJsonDepth: number): ParsedInferRequest {
  let jsonPart: Uint8Array = body;
  let binary: Uint8Array = new Uint8Array(0);
  if (headerLength !== undefined) {
    if (!/^\d{1,12}$/.test(headerLength) || Number(headerLength) > body.length) {
      throw fail('AGENT_BAD_BINARY_HEADER', `Inference-Header-Content-Length ${JSON.stringify(headerLength.slice(0, 20))} is not a length within the ${body.length}-byte body`);
    }
    jsonPart = body.subarray(0, Number(headerLength));
    binary = body.subarray(Number(headerLength));
  }
  const parsed = InferRequest.safeParse(parseJsonBody(jsonPart, maxJsonDepth));
  if (!parsed.success) {
    const issue = parsed.error.issues[0]!;
    throw fail('AGENT_INVALID_REQUEST', `invalid inference request at ${issue.path.join('.') || '(root)'}: ${issue.message}`);
  }
  const req = parsed.data;
  let offset = 0;
  const inputs: RequestInput[] = req.inputs.map((input) => {
    if (!(KSERVE_DATATYPES as readonly string[]).includes(input.datatype)) {
      throw fail('AGENT_WRONG_DATATYPE', `input '${input.name}' has unknown datatype ${JSON.stringify(input.datatype)}; one of ${KSERVE_DATATYPES.join(', ')}`);
    }
    const size = input.parameters?.binary_data_size;
    if (size !== undefined) {
      if (typeof size !== 'number' || !Number.isSafeInteger(size) || size < 0 || offset + size > binary.length) {
        throw fail('AGENT_BAD_BINARY_HEADER', `input '${input.name}' binary_data_size ${String(size)} runs past the ${binary.length} binary bytes`);
      }
      if (input.data !== undefined) throw fail('AGENT_INVALID_REQUEST', `input '${input.name}' has both data and binary_data_size`);
      const bytes = binary.subarray(offset, offset + size);
      offset += size;
      return { name: input.name, datatype: input.datatype, shape: input.shape, payload: input.datatype === 'BYTES' ? { kind: 'images', images: splitLengthPrefixed(input.name, bytes) } : { kind: 'binary', bytes } };
    }
    if (input.data === undefined) throw fail('AGENT_INVALID_REQUEST', `input '${input.name}' has neither data nor parameters.binary_data_size`);
    if (input.datatype === 'BYTES') return { name: input.name, datatype: 'BYTES', shape: input.shape, payload: { kind: 'images', images: input.data.map((v, i) => base64Element(input.name, v, i)) } };
    return { name: input.name, datatype: input.datatype, shape: input.shape, payload: { kind: 'json', values: flatten(input.data) } };
  });
  if (offset !== binary.length) {
    throw fail('AGENT_BAD_BINARY_HEADER', `binary_data_size of the inputs adds up to ${offset} bytes but ${binary.length} follow the JSON header`);
  }
  const binaryByDefault = req.parameters?.binary_data_output === true;
  const timeout = req.parameters?.timeout_ms;
  if (timeout !== undefined && (typeof timeout !== 'number' || !(timeout > 0))) throw fail('AGENT_INVALID_REQUEST', 'parameters.timeout_ms must be a positive number');
  return {
    id: req.id,
    inputs,
    outputs: req.outputs?.map((o) => ({ name: o.name, binary: o.parameters?.binary_data === undefined ? binaryByDefault : o.parameters.binary_data === true })),
    binaryByDefault,
    timeoutMs: timeout as number | undefined,
  };
}

/** Row-major flattening of nested data arrays (KServe allows both flat and nested); depth is already bounded. */
function flatten(values: unknown[]): unknown[] {
  if (!values.some(Array.isArray)) return values;
  const out: unknown[] = [];
  const walk = (v: unknown): void => {
    if (Array.isArray(v)) for (const x of v) walk(x);
    else out.push(v);
  };
  walk(values);
  return out;
}

/** BYTES elements in JSON: a base64 string, or {"b64": "..."} as TensorFlow Serving and OVMS accept. */
function base64Element(name: string, v: unknown, i: number): Uint8Array {
  const text = typeof v === 'string' ? v : typeof v === 'object' && v !== null && typeof (v as { b64?: unknown }).b64 === 'string' ? (v as { b64: string }).b64 : undefined;
  if (text === undefined || !/^[A-Za-z0-9+/\r\n]*={0,2}$/.test(text)) throw fail('AGENT_WRONG_DATATYPE', `BYTES input '${name}' element ${i} is not base64 (a string or {"b64": ...})`);
  return Buffer.from(text, 'base64');
}

/** BYTES in the binary extension: each element is a 4-byte little-endian length then that many bytes. */
function splitLengthPrefixed(name: string, bytes: Uint8Array): Uint8Array[] {
  const out: Uint8Array[] = [];
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  for (let at = 0; at < bytes.length; ) {
    if (at + 4 > bytes.length) throw fail('AGENT_BAD_BINARY_HEADER', `BYTES input '${name}' ends inside a length prefix`);
    const len = view.getUint32(at, true);
    if (at + 4 + len > bytes.length) throw fail('AGENT_BAD_BINARY_HEADER', `BYTES input '${name}' element of ${len} bytes runs past its data`);
    out.push(bytes.subarray(at + 4, at + 4 + len));
    at += 4 + len;
  }
  return out;
}

export interface EncodedResponse {
  body: Buffer | Record<string, unknown>;
  headers: Record<string, string>;
}

/** Builds the KServe v2 response, with the binary outputs appended after the JSON header when asked. */
export function encodeInferResponse(
  model: { name: string; version: number },
  id: string | undefined,
  outputs: Record<string, HostTensor>,
  wanted: { name: string; binary: boolean }[],
): EncodedResponse {
  const parts: Buffer[] = [];
  const json = wanted.map(({ name, binary }) => {
    const t = outputs[name]!;
    if (binary) {
      const bytes = toBinary(t);
      parts.push(bytes);
      return { name, datatype: t.datatype, shape: t.dims, parameters: { binary_data_size: bytes.length } };
    }
    return { name, datatype: t.datatype, shape: t.dims, data: toJsonData(t) };
  });
  const header = { model_name: model.name, model_version: String(model.version), ...(id !== undefined ? { id } : {}), outputs: json };
  if (parts.length === 0) return { body: header, headers: { 'content-type': 'application/json; charset=utf-8' } };
  const head = Buffer.from(JSON.stringify(header));
  return {
    body: Buffer.concat([head, ...parts]),
    headers: { 'content-type': 'application/octet-stream', 'inference-header-content-length': String(head.length) },
  };
}
