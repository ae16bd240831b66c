import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { fail } from '../../errors.js';
import type { HttpContext } from '../server.js';

type Params = { name: string; version?: string };
type Query = Record<string, string | string[] | undefined>;

/** Raw image bodies accepted by /detect and /classify (application/octet-stream is sniffed by libvips). */
const IMAGE_TYPES = new Set(['image/jpeg', 'image/jpg', 'image/png', 'image/webp', 'application/octet-stream']);

/** The convenience endpoints: an image in, labelled boxes or top-k classes out, in the image's own pixels. */
export function registerVisionRoutes(app: FastifyInstance, ctx: HttpContext): void {
  const detect = async (req: FastifyRequest<{ Params: Params; Querystring: Query }>, reply: FastifyReply) => {
    if (!ctx.accepting()) throw fail('AGENT_SHUTTING_DOWN', 'agent is stopping');
    // Resolved first so an unknown model is a 404 whatever the body, and again after the body has arrived: the
    // version that runs is picked in the same tick the inference starts, so a hot swap cannot retire it in between.
    ctx.models.resolve(req.params.name, req.params.version);
    const q = req.query;
    const options = {
      // A floor on confidence: at 0 every anchor becomes an NMS candidate, which a client could use to burn CPU.
      confidence: number(q.confidence, 'confidence', 0.001, 1),
      iou: number(q.iou, 'iou', 0, 1),
      maxDetections: integer(q.max_detections, 'max_detections', 1, 1000),
    };
    const image = await imageBody(req);
    const served = ctx.models.resolve(req.params.name, req.params.version);
    const r = await ctx.inference.detect(served, image, options);
    return reply.send({ model: served.name, version: String(served.version), width: r.width, height: r.height, detections: r.detections, timing: r.timing });
  };
  const classify = async (req: FastifyRequest<{ Params: Params; Querystring: Query }>, reply: FastifyReply) => {
    if (!ctx.accepting()) throw fail('AGENT_SHUTTING_DOWN', 'agent is stopping');
    ctx.models.resolve(req.params.name, req.params.version); // as in detect: 404 first, the serving version after the body
    const k = integer(req.query.top_k, 'top_k', 1, 1000);
    const image = await imageBody(req);
    const served = ctx.models.resolve(req.params.name, req.params.version);
    const r = await ctx.inference.classify(served, image, k);
    return reply.send({ model: served.name, version: String(served.version), classes: r.classes, timing: r.timing });
  };
  app.post('/v1/models/:name/detect', detect);
  app.post('/v1/models/:name/versions/:version/detect', detect);
  app.post('/v1/models/:name/classify', classify);
  app.post('/v1/models/:name/versions/:version/classify', classify);
}

/** The image: a raw image body, or the first file part of a multipart/form-data body. */
async function imageBody(req: FastifyRequest): Promise<Uint8Array> {
  const type = (req.headers['content-type'] ?? '').split(';')[0]!.trim().toLowerCase();
  if (type === 'multipart/form-data') {
    const file = await req.file().catch(malformedMultipart);
    if (!file) throw fail('AGENT_EMPTY_BODY', 'multipart body has no file part');
    const bytes = await file.toBuffer().catch(malformedMultipart);
    if (bytes.length === 0) throw fail('AGENT_EMPTY_BODY', `file part '${file.fieldname}' is empty`);
    return bytes;
  }
  if (!IMAGE_TYPES.has(type)) {
    throw fail('AGENT_UNSUPPORTED_MEDIA_TYPE', `Content-Type '${type.slice(0, 64) || '(none)'}' is not accepted; send image/jpeg, image/png, image/webp or multipart/form-data`);
  }
  const body = req.body as Buffer | undefined;
  if (!body || body.length === 0) throw fail('AGENT_EMPTY_BODY', 'the request has no image');
  return body;
}

/** busboy's parse errors ("Boundary not found", "Unexpected end of form") carry no code; fastify's limit errors do and map in server.ts. */
function malformedMultipart(err: unknown): never {
  const code = (err as { code?: unknown } | undefined)?.code;
  if (typeof code === 'string' && code.startsWith('FST_')) throw err; // fastify's limit errors map to 413 in server.ts
  throw fail('AGENT_INVALID_REQUEST', `malformed multipart/form-data body: ${String((err as Error | undefined)?.message ?? err).slice(0, 200)}`);
}

function number(raw: string | string[] | undefined, name: string, min: number, max: number): number | undefined {
  if (raw === undefined) return undefined;
  if (typeof raw !== 'string') throw fail('AGENT_BAD_QUERY', `${name} given more than once`);
  const v = Number(raw);
  if (raw.trim() === '' || !Number.isFinite(v) || v < min || v > max) throw fail('AGENT_BAD_QUERY', `${name} must be a number in [${min}, ${max}]`);
  return v;
}

function integer(raw: string | string[] | undefined, name: string, min: number, max: number): number | undefined {
  const v = number(raw, name, min, max);
  if (v !== undefined && !Number.isInteger(v)) throw fail('AGENT_BAD_QUERY', `${name} must be an integer in [${min}, ${max}]`);
  return v;
}
