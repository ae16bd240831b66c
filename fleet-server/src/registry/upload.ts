import type { KeyObject } from 'node:crypto';
import type { Readable } from 'node:stream';
import type { FastifyRequest } from 'fastify';
import type { Logger } from 'pino';
import type {} from '@fastify/multipart'; // request.parts() types
import { parseManifest } from '../../../shared/src/manifest.js';
import { OutpostError } from '../../../shared/src/errors.js';
import { modelStatement, signStatement } from '../../../shared/src/signing.js';
import { fail } from '../errors.js';
import type { ArtifactStore, ReceivedArtifact } from './artifact-store.js';
import type { ModelVersionRecord } from './model-version.js';
import { inspectOnnxFile } from './onnx-check.js';
import type { RegistryStore } from './registry-store.js';

export interface UploadDeps {
  store: RegistryStore;
  artifacts: ArtifactStore;
  /** Largest artifact accepted, bytes. */
  maxArtifactBytes: number;
  signingKey: KeyObject;
  log: Logger;
}

/** Largest manifest field, bytes (real manifests with 1000 labels are ~30 KiB). */
export const MAX_MANIFEST_BYTES = 1024 * 1024;
/** What a multipart body may carry beyond the artifact: the manifest, boundaries and part headers. */
const MULTIPART_ALLOWANCE_BYTES = MAX_MANIFEST_BYTES + 64 * 1024;

const USAGE = 'send multipart/form-data with an optional field "manifest" (JSON) followed by the file field "artifact"';

/** Client aborts as Node and busboy report them: the client is gone, so this is no server fault. */
const CLIENT_GONE = new Set(['ECONNRESET', 'ECONNABORTED', 'ERR_STREAM_PREMATURE_CLOSE']);

/**
 * Multipart/busboy refusals → the fleet catalog. Other system errors (disk full, EIO) are returned unchanged:
 * they are the server's fault and the app's error handler reports them as FLEET_INTERNAL.
 */
function toUploadError(err: unknown): unknown {
  if (err instanceof OutpostError) return err;
  const code = (err as { code?: string }).code ?? '';
  const message = err instanceof Error ? err.message : String(err);
  if (['FST_PARTS_LIMIT', 'FST_FILES_LIMIT', 'FST_FIELDS_LIMIT', 'FST_REQ_FILE_TOO_LARGE'].includes(code)) {
    return fail('FLEET_PAYLOAD_TOO_LARGE', `upload refused: ${message}; ${USAGE}`);
  }
  if (code === 'FST_INVALID_JSON_FIELD_ERROR') return fail('FLEET_MANIFEST_INVALID', 'the manifest field is not valid JSON');
  if (code === 'FST_INVALID_MULTIPART_CONTENT_TYPE') return fail('FLEET_UNSUPPORTED_MEDIA_TYPE', USAGE);
  if (CLIENT_GONE.has(code)) return fail('FLEET_BAD_REQUEST', 'the upload was interrupted', { cause: err });
  if (code.startsWith('E')) return err;
  return fail('FLEET_BAD_REQUEST', `malformed multipart body: ${message}`, { cause: err });
}

/** Validates the manifest field; returns the document as written (defaults are the agent's business). */
function parseManifestField(value: unknown, target: { name: string; version: number }): Record<string, unknown> {
  let doc = value;
  if (typeof value === 'string') {
    try {
      doc = JSON.parse(value);
    } catch (err) {
      throw fail('FLEET_MANIFEST_INVALID', `the manifest is not JSON: ${(err as Error).message}`);
    }
  }
  const parsed = parseManifest(doc);
  if (!parsed.ok) throw fail('FLEET_MANIFEST_INVALID', `manifest refused: ${parsed.problems.join('; ')}`);
  const problems: string[] = [];
  if (parsed.manifest.name !== target.name) problems.push(`name is "${parsed.manifest.name}" but the upload is for "${target.name}"`);
  if (parsed.manifest.version !== target.version) problems.push(`version is ${parsed.manifest.version} but the upload is for ${target.version}`);
  if (problems.length > 0) throw fail('FLEET_MANIFEST_INVALID', `manifest refused: ${problems.join('; ')}`);
  return doc as Record<string, unknown>;
}

async function drain(stream: Readable): Promise<void> {
  stream.resume();
  for await (const _ of stream) {
    // discarded: busboy already caps each file at maxArtifactBytes + 1
  }
}

/**
 * Streams the form into the artifact store and returns the version to register (not yet inserted).
 * Refusals found while the body is still arriving are held until it has been read to the end, so the
 * client always gets the JSON error rather than a reset connection.
 */
async function receiveForm(req: FastifyRequest, target: { name: string; version: number }, deps: UploadDeps) {
  let manifest: Record<string, unknown> | null = null;
  let received: ReceivedArtifact | undefined;
  let problem: OutpostError | undefined;
  const options = {
    limits: { fileSize: deps.maxArtifactBytes + 1, files: 1, fields: 4, parts: 8, fieldSize: MAX_MANIFEST_BYTES, headerPairs: 100 },
    // The artifact store counts and refuses oversize itself, after the part has ended.
    throwFileSizeLimit: false,
  } as Parameters<FastifyRequest['parts']>[0];
  try {
    for await (const part of req.parts(options)) {
      if (part.type === 'field') {
        if (problem || part.fieldname !== 'manifest') continue; // unknown text fields are ignored
        if (received) problem = fail('FLEET_BAD_REQUEST', `the manifest field came after the artifact; ${USAGE}`);
        else if (manifest) problem = fail('FLEET_BAD_REQUEST', 'more than one manifest field');
        else if (part.valueTruncated) problem = fail('FLEET_PAYLOAD_TOO_LARGE', `the manifest is larger than ${MAX_MANIFEST_BYTES} bytes`);
        else {
          try {
            manifest = parseManifestField(part.value, target);
          } catch (err) {
            if (!(err instanceof OutpostError)) throw err;
            problem = err;
          }
        }
        continue;
      }
      if (problem || received || part.fieldname !== 'artifact') {
        problem ??= fail('FLEET_BAD_REQUEST', received ? 'more than one file in the form' : `unexpected file field "${part.fieldname}"; ${USAGE}`);
        await drain(part.file);
        continue;
      }
      try {
        received = await deps.artifacts.receive(part.file, deps.maxArtifactBytes);
      } catch (err) {
        if (!(err instanceof OutpostError)) throw err;
        problem = err;
      }
    }
  } catch (err) {
    if (received) deps.artifacts.discard(received);
    // Whatever is left of the body is read and dropped so the client can see the error response.
    req.raw.unpipe();
    req.raw.resume();
    throw toUploadError(err);
  }
  if (problem) {
    if (received) deps.artifacts.discard(received);
    throw problem;
  }
  if (!received) throw fail('FLEET_BAD_REQUEST', `no file field "artifact" in the form; ${USAGE}`);
  return { manifest, received };
}

/** Handles POST /models/{name}/versions/{version}: stream, verify, sign, store. */
export async function receiveUpload(req: FastifyRequest, target: { name: string; version: number }, deps: UploadDeps): Promise<ModelVersionRecord> {
  if (!req.isMultipart()) throw fail('FLEET_UNSUPPORTED_MEDIA_TYPE', USAGE);
  // Refused before reading the body when the exact size is declared (Node discards the unread rest).
  const declared = Number(req.headers['content-length']);
  if (Number.isFinite(declared) && declared > deps.maxArtifactBytes + MULTIPART_ALLOWANCE_BYTES) {
    throw fail('FLEET_PAYLOAD_TOO_LARGE', `the upload is ${declared} bytes; artifacts are limited to ${deps.maxArtifactBytes} bytes`);
  }
  if (deps.store.get(target.name, target.version)) {
    throw fail('FLEET_MODEL_EXISTS', `${target.name}@${target.version} already exists; versions are immutable, push a new version`);
  }
  const { manifest, received } = await receiveForm(req, target, deps);
  try {
    if (received.size === 0) throw fail('FLEET_ARTIFACT_INVALID', 'the artifact is empty');
    const check = await inspectOnnxFile(received.tmpPath);
    if (!check.ok) throw fail('FLEET_ARTIFACT_INVALID', `the artifact is not an ONNX model: ${check.reason}`);
    if (manifest && typeof manifest.sha256 === 'string' && manifest.sha256 !== received.sha256) {
      throw fail('FLEET_ARTIFACT_INVALID', `the artifact's sha256 is ${received.sha256} but the manifest declares ${manifest.sha256}`);
    }
    const record: ModelVersionRecord = {
      ...target,
      sha256: received.sha256,
      size: received.size,
      manifest: manifest ? { ...manifest, sha256: received.sha256 } : null,
      signature: signStatement(deps.signingKey, modelStatement({ ...target, sha256: received.sha256 })),
      createdAt: new Date().toISOString(),
    };
    // INVARIANT: no await between placing the file and inserting its row. Deleting a version (routes.ts) is
    // synchronous too, so the two never interleave and no row can point at a file a delete just removed.
    const isNewFile = deps.artifacts.place(received);
    try {
      deps.store.insert(record);
    } catch (err) {
      if (isNewFile && !deps.store.isArtifactReferenced(record.sha256)) deps.artifacts.remove(record.sha256);
      throw err;
    }
    deps.log.info({ name: record.name, version: record.version, sha256: record.sha256, size: record.size, dedup: !isNewFile }, 'model version registered');
    return record;
  } finally {
    deps.artifacts.discard(received); // no-op once placed
  }
}
