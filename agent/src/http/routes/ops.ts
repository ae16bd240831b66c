import type { FastifyInstance } from 'fastify';
import type { HttpContext } from '../server.js';

/** Operations: Prometheus metrics and a JSON status page. */
export function registerOpsRoutes(app: FastifyInstance, ctx: HttpContext): void {
  app.get('/metrics', async (_req, reply) => {
    const text = await ctx.metrics.registry.metrics();
    return reply.header('content-type', ctx.metrics.registry.contentType).send(text);
  });
  app.get('/status', async () => ctx.status());
}
