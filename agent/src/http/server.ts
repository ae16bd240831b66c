import multipart from '@fastify/multipart';
import { STATUS_CODES } from 'node:http';
import Fastify, { LogController, type FastifyBaseLogger, type FastifyInstance, type FastifyReply } from 'fastify';
import type { Logger } from 'pino';
import type { AgentConfig } from '../config/schema.js';
import { fail, isAgentError, type AgentError } from '../errors.js';
import type { InferenceService } from '../inference/inference-service.js';
import type { ModelManager } from '../inference/model-manager.js';
import type { AgentMetrics } from '../metrics/agent-metrics.js';
import { registerKServeRoutes } from './routes/kserve.js';
import { registerOpsRoutes } from './routes/ops.js';
import { registerVisionRoutes } from './routes/vision.js';

/** What the routes need from the agent; built by createAgent (the composition root). */
export interface HttpContext {
  config: AgentConfig;
  models: ModelManager;
  inference: InferenceService;
  metrics: AgentMetrics;
  log: Logger;
  version: string;
  status(): Record<string, unknown>;
  /** False once the agent is stopping; new inference is refused with 503. */
  accepting(): boolean;
}

/** Builds the local API (DESIGN §3.3) without listening: tests inject or listen on port 0. */
export async function buildHttpServer(ctx: HttpContext): Promise<FastifyInstance> {
  const { config } = ctx;
  const app = Fastify({
    loggerInstance: ctx.log as FastifyBaseLogger,
    // No log line per request: at camera frame rates that is most of the log. Refusals are counted in
    // outpost_http_refused_requests_total and logged at debug; 5xx errors at error.
    logController: new LogController({ disableRequestLogging: true }),
    bodyLimit: config.limits.maxBodyBytes,
    requestTimeout: config.http.requestTimeoutMs,
    keepAliveTimeout: config.http.keepAliveTimeoutMs,
    // Slowloris: a client that has not finished its headers in time is cut off (Node's default is 60 s).
    http: {
      headersTimeout: config.http.headersTimeoutMs,
      requestTimeout: config.http.requestTimeoutMs,
      // Node checks those two timeouts only this often (default 30 s), so a tight timeout needs a tighter check.
      connectionsCheckingInterval: Math.max(100, Math.min(1000, Math.floor(config.http.headersTimeoutMs / 2))),
    },
    onProtoPoisoning: 'error',
    onConstructorPoisoning: 'error',
    // While closing, routes answer themselves: inference gets AGENT_SHUTTING_DOWN, readiness says false.
    return503OnClosing: false,
    forceCloseConnections: 'idle',
    routerOptions: { maxParamLength: 256 },
    // Refusals by the router (a malformed %-escape, a path parameter over maxParamLength) reach neither a
    // route nor the error handler; without this fastify answers them in its own format, with no catalog code.
    frameworkErrors(error, _req, reply) {
      const e = toAgentError(error);
      ctx.metrics.refusals.inc({ code: e.code });
      void (reply as FastifyReply).code(e.httpStatus).headers(e.headers).send(e.toJSON());
    },
    // Refusals at the socket, before fastify has a request (headers or body not received in time,
    // unparsable HTTP), answer in the catalog's format too; fastify's default body has no `code`.
    clientErrorHandler(err, socket) {
      if (err.code === 'ECONNRESET' || socket.destroyed) return;
      const e = err.code === 'ERR_HTTP_REQUEST_TIMEOUT'
        ? fail('AGENT_REQUEST_TIMEOUT', 'the request was not received within http.headersTimeoutMs / http.requestTimeoutMs')
        : fail('AGENT_INVALID_REQUEST', `malformed HTTP request (${String(err.code).slice(0, 40)})`);
      ctx.metrics.refusals.inc({ code: e.code });
      const body = JSON.stringify(e.toJSON());
      if (socket.writable) {
        socket.write(`HTTP/1.1 ${e.httpStatus} ${STATUS_CODES[e.httpStatus]}\r\nContent-Type: application/json; charset=utf-8\r\nContent-Length: ${Buffer.byteLength(body)}\r\nConnection: close\r\n\r\n${body}`);
      }
      socket.destroy(err);
    },
  });
  if (config.http.maxConnections > 0) app.server.maxConnections = config.http.maxConnections;

  // Every body is taken as bytes, under bodyLimit counted while it streams (chunked bodies too); routes decode.
  // The catch-all matters because `curl -d @request.json` sends application/x-www-form-urlencoded.
  app.removeAllContentTypeParsers();
  app.addContentTypeParser('*', { parseAs: 'buffer' }, (_req, body, done) => done(null, body));
  await app.register(multipart, { limits: { fileSize: config.limits.maxBodyBytes, files: 1, fields: 16, parts: 32, fieldSize: 64 * 1024 } });

  app.setNotFoundHandler((req, reply) => {
    ctx.metrics.refusals.inc({ code: 'AGENT_NOT_FOUND' });
    void reply.code(404).send(fail('AGENT_NOT_FOUND', `no route ${req.method} ${req.url.slice(0, 200)}`).toJSON());
  });
  app.setErrorHandler((error, req, reply) => {
    const e = toAgentError(error);
    ctx.metrics.refusals.inc({ code: e.code });
    if (e.httpStatus >= 500 && e.code !== 'AGENT_OVERLOADED' && e.code !== 'AGENT_MODEL_NOT_READY') req.log.error({ err: error, url: req.url }, 'request failed');
    else req.log.debug({ code: e.code, url: req.url }, e.message);
    void reply.code(e.httpStatus).headers(e.headers).send(e.toJSON());
  });
  registerKServeRoutes(app, ctx);
  registerVisionRoutes(app, ctx);
  registerOpsRoutes(app, ctx);
  return app;
}

/** Maps anything thrown into the catalog: ours as they are, fastify's by its code, the rest as internal. */
export function toAgentError(error: unknown): AgentError {
  if (isAgentError(error)) return error;
  const code = (error as { code?: string }).code;
  const message = error instanceof Error ? error.message : String(error);
  switch (code) {
    case 'FST_ERR_CTP_BODY_TOO_LARGE':
    case 'FST_REQ_FILE_TOO_LARGE':
    case 'FST_FILES_LIMIT':
    case 'FST_PARTS_LIMIT':
    case 'FST_FIELDS_LIMIT':
      return fail('AGENT_BODY_TOO_LARGE', `request body too large: ${message}`);
    case 'FST_ERR_CTP_INVALID_MEDIA_TYPE':
    case 'FST_INVALID_MULTIPART_CONTENT_TYPE':
      return fail('AGENT_UNSUPPORTED_MEDIA_TYPE', message);
    case 'FST_ERR_CTP_EMPTY_JSON_BODY':
    case 'FST_NO_FORM_DATA':
      return fail('AGENT_EMPTY_BODY', message);
    case 'FST_ERR_CTP_INVALID_CONTENT_LENGTH':
    case 'FST_ERR_BAD_URL':
    case 'FST_ERR_MAX_PARAM_LENGTH':
    case 'FST_ERR_ASYNC_CONSTRAINT':
      return fail('AGENT_INVALID_REQUEST', message);
    case 'FST_PROTO_VIOLATION':
      return fail('AGENT_FORBIDDEN_KEY', message);
  }
  if ((error as { statusCode?: number }).statusCode === 400) return fail('AGENT_INVALID_REQUEST', message);
  if ((error as { statusCode?: number }).statusCode === 413) return fail('AGENT_BODY_TOO_LARGE', message);
  if ((error as { statusCode?: number }).statusCode === 408) return fail('AGENT_REQUEST_TIMEOUT', message);
  return fail('AGENT_INTERNAL', `internal error: ${message.slice(0, 300)}`, { cause: error });
}
