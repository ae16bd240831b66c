import { STATUS_CODES } from 'node:http';
import Fastify, { LogController, type FastifyBaseLogger, type FastifyInstance, type FastifyReply } from 'fastify';
import { fail } from '../errors.js';
import type { HttpContext } from './context.js';
import { toFleetError, type FleetError } from './errors.js';
import { registerDeviceRoutes } from './routes/devices.js';
import { registerEnrollmentTokenRoutes, registerEnrollRoute } from './routes/enrollment.js';
import { registerInfoRoutes } from './routes/info.js';
import { registerOpsRoutes } from './routes/ops.js';

declare module 'fastify' {
  interface FastifyContextConfig {
    /** A route in /api/v1 that needs no credentials (only POST /enroll, whose token is the credential). */
    public?: boolean;
  }
}

/** JSON bodies of the fleet's own routes are small; the registry sets its own limit per upload route. */
const JSON_BODY_LIMIT = 1024 * 1024;

/**
 * Builds the REST API (docs/fleet-api.md) without listening. Layout:
 *   /healthz, /metrics                 unauthenticated
 *   /api/v1/enroll                     public (the one-time token is the credential)
 *   /api/v1/… (everything else)        authenticated: operator token or device Basic credentials (scope hook)
 *     info, enrollment-tokens, devices  operator only (nested scope hook)
 *     registry (ctx.apiRoutes)          each route calls requireOperator / requirePrincipal itself
 */
export async function buildHttpServer(ctx: HttpContext): Promise<FastifyInstance> {
  const refuse = (e: FleetError, reply: FastifyReply) => {
    ctx.metrics.httpRefusals.inc({ code: e.code });
    return reply.code(e.httpStatus).headers(e.headers).send(e.toJSON());
  };
  const app = Fastify({
    loggerInstance: ctx.log as FastifyBaseLogger,
    // Devices download artifacts and operators poll; a log line per request would drown what matters.
    logController: new LogController({ disableRequestLogging: true }),
    bodyLimit: JSON_BODY_LIMIT,
    onProtoPoisoning: 'error',
    onConstructorPoisoning: 'error',
    // close() ends idle keep-alive connections at once and waits for requests in flight; fleet.ts stop() gives
    // those a deadline (a stalled download would otherwise hold shutdown forever: requestTimeout is 0).
    forceCloseConnections: 'idle',
    routerOptions: { maxParamLength: 256 },
    // Router refusals (bad %-escapes, over-long parameters) reach neither a route nor the error handler.
    frameworkErrors(error, _req, reply) {
      void refuse(toFleetError(error), reply as FastifyReply);
    },
    // Unparsable HTTP is answered in the catalog's format too, then the socket is closed.
    clientErrorHandler(err, socket) {
      if (err.code === 'ECONNRESET' || socket.destroyed) return;
      const e = fail('FLEET_BAD_REQUEST', `malformed HTTP request (${String(err.code).slice(0, 40)})`);
      ctx.metrics.httpRefusals.inc({ code: e.code });
      const body = JSON.stringify(e.toJSON());
      if (socket.writable) {
        socket.write(`HTTP/1.1 ${e.httpStatus} ${STATUS_CODES[e.httpStatus]}\r\nContent-Type: application/json; charset=utf-8\r\nContent-Length: ${Buffer.byteLength(body)}\r\nConnection: close\r\n\r\n${body}`);
      }
      socket.destroy(err);
    },
  });

  app.setNotFoundHandler((req, reply) => refuse(fail('FLEET_NOT_FOUND', `no route ${req.method} ${req.url.slice(0, 200)}`), reply));
  app.setErrorHandler((error, req, reply) => {
    const e = toFleetError(error);
    if (e.httpStatus >= 500) req.log.error({ err: error, url: req.url.slice(0, 200) }, 'request failed');
    else req.log.debug({ code: e.code, url: req.url.slice(0, 200) }, e.message);
    return refuse(e, reply);
  });

  registerOpsRoutes(app, ctx);
  await app.register(
    async (api) => {
      api.addHook('onRequest', async (req) => {
        if (req.routeOptions.config.public !== true) ctx.requirePrincipal(req);
      });
      registerEnrollRoute(api, ctx);
      await api.register(async (operator) => {
        operator.addHook('onRequest', async (req) => ctx.requireOperator(req));
        registerInfoRoutes(operator, ctx);
        registerEnrollmentTokenRoutes(operator, ctx);
        registerDeviceRoutes(operator, ctx);
      });
      for (const register of ctx.apiRoutes) await register(api);
    },
    { prefix: '/api/v1' },
  );
  return app;
}
