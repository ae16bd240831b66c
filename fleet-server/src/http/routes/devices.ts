import type { FastifyInstance } from 'fastify';
import { z } from 'zod';
import { DEVICE_ID_PATTERN } from '../../../../shared/src/mqtt/topics.js';
import { deviceDetail, deviceView } from '../../devices/device-view.js';
import { fail } from '../../errors.js';
import { canonicalIso, isoAt } from '../../storage/clock.js';
import { queryModelMetrics } from '../../telemetry/metrics-query.js';
import type { HttpContext } from '../context.js';
import { isoDateTime, parseInput } from '../validate.js';

const HOUR_MS = 3_600_000;
const DAY_MS = 24 * HOUR_MS;

const DeviceParams = z.strictObject({ id: z.string().regex(DEVICE_ID_PATTERN, 'not a device id') });

const MetricsQuery = z.strictObject({
  model: z.string().min(1).max(128),
  since: isoDateTime.optional(),
  until: isoDateTime.optional(),
});

const EventsQuery = z.strictObject({
  since: isoDateTime.optional(),
  until: isoDateTime.optional(),
  /** Paging: only events after this seq (pass the last seq of the previous page). */
  afterSeq: z.coerce.number().int().min(0).max(Number.MAX_SAFE_INTEGER).default(0),
  limit: z.coerce.number().int().min(1).max(1000).default(100),
});

/** Devices (operator routes): list, detail, revoke, per-model metrics, events. */
export function registerDeviceRoutes(api: FastifyInstance, ctx: HttpContext): void {
  const { store } = ctx;

  const existing = (params: unknown) => {
    const { id } = parseInput(DeviceParams, params, 'params');
    const device = store.devices.get(id);
    if (!device) throw fail('FLEET_NOT_FOUND', `no device ${id}`);
    return device;
  };

  api.get('/devices', async () => ({ devices: store.devices.list().map(deviceView) }));

  api.get('/devices/:id', async (req) => deviceDetail(existing(req.params)));

  api.post('/devices/:id/revoke', async (req) => {
    const { id } = parseInput(DeviceParams, req.params, 'params');
    return ctx.enrollment.revoke(id);
  });

  api.get('/devices/:id/metrics', async (req) => {
    const device = existing(req.params);
    const q = parseInput(MetricsQuery, req.query, 'query');
    // Default window: the hour before `until` (itself defaulting to now).
    const until = q.until === undefined ? isoAt(ctx.clock.now()) : canonicalIso(q.until);
    const since = q.since === undefined ? isoAt(Date.parse(until) - HOUR_MS) : canonicalIso(q.since);
    if (since >= until) throw fail('FLEET_BAD_REQUEST', `since (${since}) must be before until (${until})`);
    return queryModelMetrics(store.ingest, { deviceId: device.id, model: q.model, since, until });
  });

  api.get('/devices/:id/events', async (req) => {
    const device = existing(req.params);
    const q = parseInput(EventsQuery, req.query, 'query');
    // Events are listed by seq (the device's order); by default the last day, with no upper time bound so a
    // device whose clock runs ahead still shows its latest events.
    const since = q.since === undefined ? isoAt(ctx.clock.now() - DAY_MS) : canonicalIso(q.since);
    const until = q.until === undefined ? null : canonicalIso(q.until);
    return { events: store.ingest.events({ deviceId: device.id, since, until, afterSeq: q.afterSeq, limit: q.limit }) };
  });
}
