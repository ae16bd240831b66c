import type { FastifyInstance, FastifyRequest } from 'fastify';
import { fail } from '../../errors.js';
import type { ServedVersion } from '../../inference/model-manager.js';
import { decodeInferRequest, encodeInferResponse } from '../kserve-codec.js';
import type { HttpContext } from '../server.js';

type ModelParams = { name: string; version?: string };

/** KServe v2 / Open Inference Protocol REST routes, with Triton's binary tensor extension. */
export function registerKServeRoutes(app: FastifyInstance, ctx: HttpContext): void {
  const { models } = ctx;

  app.get('/v2/health/live', async () => ({ live: true }));

  app.get('/v2/health/ready', async (_req, reply) => {
    const ready = ctx.accepting() && models.loaded && models.list().every((v) => v.state !== 'loading');
    return reply.code(ready ? 200 : 503).send({ ready });
  });

  app.get('/v2', async () => ({
    name: 'outpost-agent',
    version: ctx.version,
    extensions: ['binary_tensor_data', 'outpost_image_detect'],
  }));

  const metadata = async (req: FastifyRequest<{ Params: ModelParams }>) => {
    const { name, version } = req.params;
    return modelMetadata(models.resolve(name, version), models.versionsOf(name)!);
  };
  app.get('/v2/models/:name', metadata);
  app.get('/v2/models/:name/versions/:version', metadata);

  const ready = async (req: FastifyRequest<{ Params: ModelParams }>, reply: import('fastify').FastifyReply) => {
    const { name, version } = req.params;
    const versions = models.versionsOf(name);
    if (!versions) throw fail('AGENT_MODEL_NOT_FOUND', `unknown model '${name}'`);
    // Unversioned: the version an unversioned infer would get (the active one), not merely the highest.
    const v = version === undefined ? models.target(name) : versions.find((x) => String(x.version) === version);
    if (!v) throw fail('AGENT_VERSION_NOT_FOUND', `model '${name}' has no served version ${version}`);
    const isReady = v.state === 'ready' && (version !== undefined || !v.staged);
    return reply.code(isReady ? 200 : 503).send({ name, version: String(v.version), ready: isReady, state: v.state, ...(v.error ? { error: v.error } : {}) });
  };
  app.get('/v2/models/:name/ready', ready);
  app.get('/v2/models/:name/versions/:version/ready', ready);

  const infer = async (req: FastifyRequest<{ Params: ModelParams }>, reply: import('fastify').FastifyReply) => {
    if (!ctx.accepting()) throw fail('AGENT_SHUTTING_DOWN', 'agent is stopping');
    const served = models.resolve(req.params.name, req.params.version);
    const body = req.body as Buffer | undefined;
    if (!body || body.length === 0) throw fail('AGENT_EMPTY_BODY', 'an inference request body is required');
    const header = req.headers['inference-header-content-length'];
    const request = decodeInferRequest(body, Array.isArray(header) ? header[0] : header, ctx.config.limits.maxJsonDepth);
    const spec = served.spec!;
    for (const o of request.outputs ?? []) {
      if (!spec.outputs.some((x) => x.name === o.name)) throw fail('AGENT_UNKNOWN_OUTPUT', `model has no output '${o.name.slice(0, 64)}'; outputs are ${spec.outputs.map((x) => x.name).join(', ')}`);
    }
    const result = await ctx.inference.infer(served, request.inputs, request.timeoutMs);
    const wanted = request.outputs ?? spec.outputs.map((o) => ({ name: o.name, binary: request.binaryByDefault }));
    const encoded = encodeInferResponse(served, request.id, result.outputs, wanted);
    return reply.headers(encoded.headers).send(encoded.body);
  };
  app.post('/v2/models/:name/infer', infer);
  app.post('/v2/models/:name/versions/:version/infer', infer);
}

function modelMetadata(v: ServedVersion, all: ServedVersion[]) {
  const spec = v.spec!;
  return {
    name: v.name,
    versions: all.map((x) => String(x.version)),
    platform: 'onnxruntime_onnx',
    inputs: spec.inputs.map((i) => ({ name: i.name, datatype: i.datatype, shape: i.dims })),
    outputs: spec.outputs.map((o) => ({ name: o.name, datatype: o.datatype, shape: o.dims })),
    parameters: {
      version: String(v.version),
      task: spec.task,
      execution_provider: v.provider,
      skipped_providers: v.skippedProviders,
      max_batch_size: spec.batching.maxBatchSize,
      dynamic_batch: spec.batching.dynamic,
      labels: spec.labels?.length ?? 0,
      source: spec.source,
      sha256: v.sha256,
      ...(spec.image ? { image_input: spec.image.input, image_size: spec.image.spec.size, resize: spec.image.spec.resize } : {}),
      ...(spec.detect ? { detector_format: spec.detect.format } : {}),
      ...(spec.description ? { description: spec.description } : {}),
    },
  };
}
