/**
 * Cheap ONNX metadata: reads the top-level ModelProto fields (IR version, producer, opsets,
 * metadata_props) without decoding the graph.
 *
 * Why not decode the whole ModelProto: the graph holds the weights (many MB); a bare model.onnx
 * dropped into the repository only needs its labels and input size, which Ultralytics exports keep
 * in metadata_props. The graph field is skipped by its length prefix, so cost is independent of
 * model size apart from the scan itself.
 */
import protobuf from 'protobufjs';
import { ModelProtoField } from './onnx-proto.js';

export interface OnnxMetadata {
  irVersion: number;
  producerName: string;
  producerVersion: string;
  /** Opset version per domain; the default ONNX domain ("" in the file) is reported as "ai.onnx". */
  opsets: Record<string, number>;
  metadataProps: Record<string, string>;
}

const WIRE_VARINT = 0;
const WIRE_LENGTH_DELIMITED = 2;

/** protobufjs returns int64 as a Long when the long package is present, else as a number. */
function toSafeNumber(value: number | protobuf.Long, field: string): number {
  const n = typeof value === 'number' ? value : protobuf.util.LongBits.from(value).toNumber(false);
  if (!Number.isSafeInteger(n)) throw new Error(`ONNX ${field} is not a safe integer`);
  return n;
}

function readOpset(reader: protobuf.Reader, end: number): { domain: string; version: number } {
  let domain = '';
  let version = 0;
  while (reader.pos < end) {
    const tag = reader.uint32();
    const field = tag >>> 3;
    if (field === 1 && (tag & 7) === WIRE_LENGTH_DELIMITED) domain = reader.string();
    else if (field === 2 && (tag & 7) === WIRE_VARINT) version = toSafeNumber(reader.int64(), 'opset version');
    else reader.skipType(tag & 7);
  }
  return { domain, version };
}

function readStringPair(reader: protobuf.Reader, end: number): { key: string; value: string } {
  let key = '';
  let value = '';
  while (reader.pos < end) {
    const tag = reader.uint32();
    const field = tag >>> 3;
    if (field === 1 && (tag & 7) === WIRE_LENGTH_DELIMITED) key = reader.string();
    else if (field === 2 && (tag & 7) === WIRE_LENGTH_DELIMITED) value = reader.string();
    else reader.skipType(tag & 7);
  }
  return { key, value };
}

/**
 * Reads top-level ModelProto metadata. Throws on bytes that are not a well-formed protobuf message
 * (truncated file, or not ONNX at all) or that carry no ir_version (every ONNX model must).
 */
export function readOnnxMetadata(bytes: Uint8Array): OnnxMetadata {
  const reader = protobuf.Reader.create(bytes);
  const result: OnnxMetadata = { irVersion: 0, producerName: '', producerVersion: '', opsets: {}, metadataProps: {} };
  let sawIrVersion = false;
  try {
    while (reader.pos < reader.len) {
      const tag = reader.uint32();
      const field = tag >>> 3;
      const wire = tag & 7;
      if (field === 0) throw new Error('field number 0');
      if (field === ModelProtoField.irVersion && wire === WIRE_VARINT) {
        result.irVersion = toSafeNumber(reader.int64(), 'ir_version');
        sawIrVersion = true;
      } else if (field === ModelProtoField.producerName && wire === WIRE_LENGTH_DELIMITED) {
        result.producerName = reader.string();
      } else if (field === ModelProtoField.producerVersion && wire === WIRE_LENGTH_DELIMITED) {
        result.producerVersion = reader.string();
      } else if (field === ModelProtoField.opsetImport && wire === WIRE_LENGTH_DELIMITED) {
        const end = reader.uint32() + reader.pos;
        const { domain, version } = readOpset(reader, end);
        result.opsets[domain === '' ? 'ai.onnx' : domain] = version;
      } else if (field === ModelProtoField.metadataProps && wire === WIRE_LENGTH_DELIMITED) {
        const end = reader.uint32() + reader.pos;
        const { key, value } = readStringPair(reader, end);
        result.metadataProps[key] = value;
      } else {
        // The graph (field 7) lands here: skipType reads its length and jumps over it.
        reader.skipType(wire);
      }
    }
  } catch (err) {
    throw new Error(`not a readable ONNX model: ${(err as Error).message}`, { cause: err });
  }
  if (reader.pos !== reader.len) throw new Error('not a readable ONNX model: truncated');
  if (!sawIrVersion) throw new Error('not a readable ONNX model: no ir_version field');
  return result;
}

// The Ultralytics value parsers live in their own file; re-exported so callers reading metadata
// have one import.
export { parseUltralyticsImgsz, parseUltralyticsNames } from './ultralytics-metadata.js';
