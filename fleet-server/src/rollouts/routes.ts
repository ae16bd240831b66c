import type { FastifyInstance } from 'fastify';
import { z } from 'zod';
import { ThresholdsSchema } from '../../../shared/src/mqtt/messages.js';
import { DEVICE_ID_PATTERN } from '../../../shared/src/mqtt/topics.js';
import type { RequireOperator } from '../auth/principal.js';
import { parseInput } from '../http/validate.js';
import { MAX_MODEL_VERSION, MODEL_NAME_PATTERN } from '../registry/model-ref.js';
import type { RolloutEngine } from './engine.js';
import type { RolloutAction } from './plan.js';

const t = ThresholdsSchema.shape;

const CreateBody = z.strictObject({
  model: z.string().regex(MODEL_NAME_PATTERN, `a model name (${MODEL_NAME_PATTERN.source})`),
  version: z.number().int().min(1).max(MAX_MODEL_VERSION),
  deviceIds: z.array(z.string().regex(DEVICE_ID_PATTERN, 'not a device id')).max(100_000).optional(),
  selector: z.record(z.string().min(1).max(64), z.string().max(256)).optional(),
  stages: z.array(z.number().gt(0).max(100)).min(1).max(100).optional(),
  minDevices: z.number().int().min(1).max(1_000_000).optional(),
  maxFailurePct: z.number().min(0).max(100).optional(),
  probationSeconds: t.probationSeconds,
  probationRequests: t.probationRequests,
  maxErrorRate: t.maxErrorRate,
  maxLatencyFactor: t.maxLatencyFactor,
  minRequests: t.minRequests,
  schedule: z.string().min(1).max(128).optional(),
});

const RolloutParams = z.strictObject({ id: z.string().regex(/^[A-Za-z0-9_-]{1,64}$/, 'not a rollout id') });

/** Rollouts (operator): create, list, show, and the actions pause | resume | abort | rollback (docs/fleet-api.md "Rollouts"). */
export function registerRolloutRoutes(api: FastifyInstance, ctx: { engine: RolloutEngine; requireOperator: RequireOperator }): void {
  const { engine } = ctx;
  api.register(async (scope) => {
    scope.addHook('onRequest', async (req) => ctx.requireOperator(req));

    scope.post('/rollouts', async (req, reply) => {
      const b = parseInput(CreateBody, req.body, 'body');
      const thresholds = Object.fromEntries(
        (['probationSeconds', 'probationRequests', 'maxErrorRate', 'maxLatencyFactor', 'minRequests'] as const).filter((k) => b[k] !== undefined).map((k) => [k, b[k]]),
      );
      const view = engine.create({
        model: b.model, version: b.version, deviceIds: b.deviceIds, selector: b.selector, stages: b.stages, minDevices: b.minDevices,
        maxFailurePct: b.maxFailurePct, thresholds, schedule: b.schedule,
      });
      return reply.code(201).send(view);
    });

    scope.get('/rollouts', async () => ({ rollouts: engine.list() }));

    scope.get('/rollouts/:id', async (req) => engine.get(parseInput(RolloutParams, req.params, 'params').id));

    for (const action of ['pause', 'resume', 'abort', 'rollback'] as const satisfies readonly RolloutAction[]) {
      scope.post(`/rollouts/:id/${action}`, async (req) => engine.act(parseInput(RolloutParams, req.params, 'params').id, action));
    }
  });
}
