import type { FastifyInstance } from 'fastify';
import type { HttpContext } from '../context.js';

/** GET /api/v1/info: what a client needs to talk to this fleet (operator route). */
export function registerInfoRoutes(api: FastifyInstance, ctx: HttpContext): void {
  api.get('/info', async () => ({ version: ctx.version, publicKey: ctx.publicKeyPem, ...ctx.urls() }));
}
