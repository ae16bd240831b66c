import { open } from 'node:fs/promises';
import { readOnnxMetadata, type OnnxMetadata } from '../../../shared/src/onnx/model-metadata.js';
import { ModelProtoField } from '../../../shared/src/onnx/onnx-proto.js';

/**
 * Checks that a stored file is an ONNX ModelProto without reading it into memory: walks the top-level fields
 * with positioned reads, jumps over the graph (the weights, possibly gigabytes) by its length prefix, and hands
 * only the small metadata fields to the shared readOnnxMetadata. The walk must end exactly at the end of the
 * file, there must be a graph and readOnnxMetadata must accept the rest, so random bytes, a truncated upload
 * or an empty file are refused.
 */
export type OnnxCheck = { ok: true; metadata: OnnxMetadata } | { ok: false; reason: string };

/** Top-level fields readOnnxMetadata reads; copied into its input. */
const METADATA_FIELDS: ReadonlySet<number> = new Set([
  ModelProtoField.irVersion,
  ModelProtoField.producerName,
  ModelProtoField.producerVersion,
  ModelProtoField.opsetImport,
  ModelProtoField.metadataProps,
]);
/** A metadata field larger than this is not plausible; refusing it bounds the memory the check uses. */
const MAX_METADATA_FIELD_BYTES = 1024 * 1024;
/** Real models have about ten top-level fields; this bounds the reads a crafted file can cause. */
const MAX_TOP_LEVEL_FIELDS = 10_000;
/** Longest tag + length prefix: two 10-byte varints. */
const HEADER_WINDOW = 20;

const WIRE_VARINT = 0;
const WIRE_FIXED64 = 1;
const WIRE_LENGTH_DELIMITED = 2;
const WIRE_FIXED32 = 5;

class FormatError extends Error {}

/** Decodes a protobuf varint at `offset` as a number (exact up to 2^53, which bounds any real length). */
function readVarint(buf: Uint8Array, offset: number): { value: number; next: number } {
  let value = 0;
  let factor = 1;
  for (let i = offset; i < buf.length && i < offset + 10; i++) {
    const byte = buf[i]!;
    value += (byte & 0x7f) * factor;
    if ((byte & 0x80) === 0) return { value, next: i + 1 };
    factor *= 128;
  }
  throw new FormatError('truncated varint');
}

export async function inspectOnnxFile(file: string): Promise<OnnxCheck> {
  const handle = await open(file, 'r');
  try {
    const { size } = await handle.stat();
    if (size === 0) return { ok: false, reason: 'the file is empty' };
    const window = Buffer.alloc(HEADER_WINDOW);
    const kept: Buffer[] = [];
    let sawGraph = false;
    let pos = 0;
    for (let fields = 0; pos < size; fields++) {
      if (fields >= MAX_TOP_LEVEL_FIELDS) throw new FormatError(`more than ${MAX_TOP_LEVEL_FIELDS} top-level fields`);
      const { bytesRead } = await handle.read(window, 0, HEADER_WINDOW, pos);
      const head = window.subarray(0, bytesRead);
      const tag = readVarint(head, 0);
      const field = Math.floor(tag.value / 8);
      const wire = tag.value % 8;
      if (field === 0) throw new FormatError(`field number 0 at byte ${pos}`);
      let end: number;
      if (wire === WIRE_VARINT) end = pos + readVarint(head, tag.next).next;
      else if (wire === WIRE_FIXED64) end = pos + tag.next + 8;
      else if (wire === WIRE_FIXED32) end = pos + tag.next + 4;
      else if (wire === WIRE_LENGTH_DELIMITED) {
        const length = readVarint(head, tag.next);
        end = pos + length.next + length.value;
      } else throw new FormatError(`wire type ${wire} at byte ${pos}`);
      if (end > size) throw new FormatError(`field ${field} at byte ${pos} runs past the end of the file (truncated?)`);
      if (field === ModelProtoField.graph && wire === WIRE_LENGTH_DELIMITED) sawGraph = true;
      if (METADATA_FIELDS.has(field)) {
        if (end - pos > MAX_METADATA_FIELD_BYTES) throw new FormatError(`metadata field ${field} is ${end - pos} bytes`);
        const bytes = Buffer.alloc(end - pos);
        await handle.read(bytes, 0, bytes.length, pos);
        kept.push(bytes);
      }
      pos = end;
    }
    if (!sawGraph) throw new FormatError('no graph');
    return { ok: true, metadata: readOnnxMetadata(Buffer.concat(kept)) };
  } catch (err) {
    if (err instanceof FormatError) return { ok: false, reason: `not a readable ONNX model: ${err.message}` };
    // readOnnxMetadata's refusals; I/O errors (no code like EIO) propagate as server errors.
    if (err instanceof Error && !(err as NodeJS.ErrnoException).code && err.message.startsWith('not a readable ONNX model')) {
      return { ok: false, reason: err.message };
    }
    throw err;
  } finally {
    await handle.close();
  }
}
