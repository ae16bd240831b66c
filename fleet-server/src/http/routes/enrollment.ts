import type { FastifyInstance } from 'fastify';
import { z } from 'zod';
import { DEVICE_ID_PATTERN } from '../../../../shared/src/mqtt/topics.js';
import type { HttpContext } from '../context.js';
import { parseInput } from '../validate.js';

/** Tag keys and values are short plain strings; they end up in rollout selectors and dashboards. */
export const TagsSchema = z
  .record(z.string().regex(/^[A-Za-z0-9][A-Za-z0-9_.\/-]{0,62}$/, 'tag keys: letters, digits, _ . / - (1–63, starting alphanumeric)'), z.string().max(256))
  .refine((t) => Object.keys(t).length <= 64, 'at most 64 tags');

const CreateTokenBody = z.strictObject({
  tags: TagsSchema.optional(),
  ttlSeconds: z.number().int().min(1).optional(),
  /** Re-enroll this device (or name the new one). */
  deviceId: z
    .string()
    .regex(DEVICE_ID_PATTERN, 'a device id: letters, digits, _ and -, at most 64, starting alphanumeric')
    // Broker logins of the fleet itself and of refused connections; a device by these names could pose as them.
    .refine((id) => id !== 'outpost-fleet' && !id.startsWith('outpost-fleet-') && !id.startsWith('refused-'), 'outpost-fleet… and refused-… are reserved names')
    .optional(),
});

const EnrollBody = z.strictObject({ token: z.string().min(1).max(256) });

/** POST /enrollment-tokens (operator). */
export function registerEnrollmentTokenRoutes(api: FastifyInstance, ctx: HttpContext): void {
  api.post('/enrollment-tokens', async (req, reply) => {
    const body = parseInput(CreateTokenBody, req.body, 'body');
    return reply.code(201).send(ctx.enrollment.createToken(body));
  });
}

/** POST /enroll: public; the one-time token is the credential. */
export function registerEnrollRoute(api: FastifyInstance, ctx: HttpContext): void {
  api.post('/enroll', { config: { public: true } }, async (req, reply) => {
    const { token } = parseInput(EnrollBody, req.body, 'body');
    const enrolled = await ctx.enrollment.enroll(token);
    const urls = ctx.urls();
    const mqttUrl = asSeenBy(urls.mqttUrl, req.hostname);
    const fleetUrl = asSeenBy(urls.fleetUrl, req.hostname);
    return reply.code(201).send({ deviceId: enrolled.deviceId, secret: enrolled.secret, mqttUrl, fleetUrl, fleetPublicKey: ctx.publicKeyPem, tags: enrolled.tags });
  });
}

const LOOPBACK = new Set(['127.0.0.1', 'localhost', '[::1]', '::1']);

/**
 * A URL on a loopback host (what a wildcard bind without broker.publicUrl/http.publicUrl falls back to) is
 * useless to a box that reached us over the network: `enroll --fleet http://fleet:8080` must be told
 * mqtt://fleet:1883, not its own 127.0.0.1. So when the enrolling request came in under a non-loopback
 * host name, that name replaces the loopback host; the port and scheme stay.
 */
export function asSeenBy(url: string, requestHost: string): string {
  const u = new URL(url);
  if (!LOOPBACK.has(u.hostname) || requestHost === '' || LOOPBACK.has(requestHost)) return url;
  u.hostname = requestHost;
  return u.toString().replace(/\/$/, '');
}
