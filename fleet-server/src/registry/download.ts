import type { Readable } from 'node:stream';
import type { FastifyReply, FastifyRequest } from 'fastify';
import send from '@fastify/send';
import { fail } from '../errors.js';
import type { ArtifactStore } from './artifact-store.js';
import type { ModelVersionRecord } from './model-version.js';

/**
 * Serves an artifact with HTTP Range support, so an agent on a flaky uplink resumes a download with one
 * `Range` + `If-Range` request (DESIGN §3.4).
 *
 * @fastify/send does the byte ranges, but its ETag is weak (size + mtime), which RFC 9110 §13.1.5 forbids
 * in If-Range and which differs between two servers holding the same file. The content hash is the perfect
 * strong validator, so the ETag is `"<sha256>"`, and If-Range / If-None-Match are decided here against it
 * before the remaining headers are handed to send.
 */
const SEND_OPTIONS = {
  acceptRanges: true,
  etag: false,
  lastModified: true,
  cacheControl: false,
  contentType: false,
  dotfiles: 'allow',
  index: false,
} as const;

/** Entity tags listed in an If-None-Match value (weak prefixes dropped: that header uses weak comparison). */
function listedTags(header: string): string[] {
  return header.split(',').map((t) => t.trim().replace(/^W\//, ''));
}

export async function sendArtifact(req: FastifyRequest, reply: FastifyReply, version: ModelVersionRecord, artifacts: ArtifactStore): Promise<FastifyReply> {
  const etag = `"${version.sha256}"`;
  const headers = { ...req.headers };
  const ifNoneMatch = headers['if-none-match'];
  if (typeof ifNoneMatch === 'string' && (ifNoneMatch.trim() === '*' || listedTags(ifNoneMatch).includes(etag))) {
    return reply.code(304).header('etag', etag).send();
  }
  // Decided here (or not supported): send would compare them against its own weak validators.
  delete headers['if-none-match'];
  delete headers['if-match'];
  const ifRange = headers['if-range'];
  if (typeof ifRange === 'string' && ifRange.includes('"')) {
    // Strong comparison: only the exact current tag keeps the Range; anything else gets the whole file.
    if (ifRange.trim() !== etag) delete headers.range;
    delete headers['if-range'];
  }
  // send reads only `method` and `headers` of the request it is given (checked against @fastify/send 4.2).
  const request = { method: req.raw.method, headers } as unknown as Readable;
  const result = await send(request, artifacts.relativePathOf(version.sha256), { ...SEND_OPTIONS, root: artifacts.root });
  if (result.statusCode === 416) {
    result.stream.destroy();
    throw fail('FLEET_RANGE_NOT_SATISFIABLE', `range "${String(req.headers.range).slice(0, 100)}" is outside the artifact's ${version.size} bytes`, {
      headers: { 'content-range': `bytes */${version.size}` },
    });
  }
  if (result.type !== 'file') {
    result.stream.destroy();
    const cause = result.type === 'error' ? result.metadata.error : undefined;
    req.log.error({ err: cause, sha256: version.sha256, status: result.statusCode }, 'artifact file unreadable');
    throw fail('FLEET_INTERNAL', `the artifact of ${version.name}@${version.version} cannot be read from storage`, { cause });
  }
  return reply
    .code(result.statusCode)
    .headers(result.headers)
    .header('etag', etag)
    .header('content-type', 'application/octet-stream')
    .header('content-disposition', `attachment; filename="${version.name}-${version.version}.onnx"`)
    // Agents re-validate with the ETag; the bytes behind a name@version can change only by delete + push.
    .header('cache-control', 'private, no-cache')
    .send(result.stream);
}
