import type { FastifyInstance } from 'fastify';
import type { HttpContext } from '../context.js';

/** Unauthenticated operations routes: liveness and Prometheus metrics (like the agent's /metrics). */
export function registerOpsRoutes(app: FastifyInstance, ctx: HttpContext): void {
  app.get('/healthz', async () => ({ ok: true }));
  app.get('/metrics', async (_req, reply) => {
    const text = await ctx.metrics.registry.metrics();
    return reply.header('content-type', ctx.metrics.registry.contentType).send(text);
  });
}
