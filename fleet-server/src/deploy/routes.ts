import type { FastifyInstance } from 'fastify';
import { z } from 'zod';
import { CmdMessageSchema } from '../../../shared/src/mqtt/messages.js';
import { DEVICE_ID_PATTERN } from '../../../shared/src/mqtt/topics.js';
import type { Db } from '../../../shared/src/sqlite.js';
import type { RequireOperator } from '../auth/principal.js';
import { fail } from '../errors.js';
import { parseInput } from '../http/validate.js';
import { MAX_MODEL_VERSION, MODEL_NAME_PATTERN } from '../registry/model-ref.js';
import { createRegistryStore } from '../registry/registry-store.js';
import { reportedVersion } from '../rollouts/engine.js';
import { isoAt, type Clock } from '../storage/clock.js';
import type { DeviceRecord, DeviceStore } from '../storage/fleet-store.js';
import type { Commands } from './commands.js';
import type { Deployer } from './deployer.js';
import { cronProblem, type MaintenanceWindowInput, type MaintenanceWindows } from './maintenance.js';

export interface DeployRoutesContext {
  db: Db;
  devices: DeviceStore;
  deployer: Deployer;
  commands: Commands;
  maintenance: MaintenanceWindows;
  /** The version the device ran before its latest rollout of the model (rollout engine), or null. */
  previousVersionOf(deviceId: string, model: string): number | null;
  clock: Clock;
  requireOperator: RequireOperator;
}

const DeviceParams = z.strictObject({ id: z.string().regex(DEVICE_ID_PATTERN, 'not a device id') });
const CommandParams = DeviceParams.extend({ cmdId: z.string().min(1).max(64) });
const modelName = z.string().regex(MODEL_NAME_PATTERN, `a model name (${MODEL_NAME_PATTERN.source})`);
const modelVersion = z.number().int().min(1).max(MAX_MODEL_VERSION);

const RollbackBody = z.strictObject({ model: modelName, version: modelVersion.optional() });

const CommandBody = z.strictObject({
  kind: CmdMessageSchema.shape.kind,
  args: z.record(z.string(), z.unknown()).optional(),
  timeoutMs: z.number().int().min(1).max(3_600_000).optional(),
});
const CommandsQuery = z.strictObject({ limit: z.coerce.number().int().min(1).max(1000).default(100) });

const WindowBody = z
  .strictObject({
    deviceId: z.string().regex(DEVICE_ID_PATTERN, 'not a device id').optional(),
    tag: z.strictObject({ key: z.string().min(1).max(64), value: z.string().max(256) }).optional(),
    cron: z.string().min(1).max(128),
    durationMinutes: z.number().int().min(1).max(1440),
  })
  .refine((w) => (w.deviceId === undefined) !== (w.tag === undefined), 'give exactly one of deviceId and tag');
const WindowsBody = z.strictObject({ windows: z.array(WindowBody).max(1000) });

/**
 * Operator routes of safe updates around single devices: rollback to a previous version, commands, the desired
 * state as sent, and maintenance windows (docs/fleet-api.md "Deployments").
 */
export function registerDeployRoutes(api: FastifyInstance, ctx: DeployRoutesContext): void {
  const registry = createRegistryStore(ctx.db);

  const deviceOf = (params: unknown): DeviceRecord => {
    const { id } = parseInput(DeviceParams, params, 'params');
    const device = ctx.devices.get(id);
    if (!device) throw fail('FLEET_NOT_FOUND', `no device ${id}`);
    return device;
  };

  /** Default rollback target: the version before the latest rollout, else the highest registry version below the current one. */
  function previousVersion(device: DeviceRecord, model: string): number {
    // A removal tombstone names the version it removed: the fleet took the model off the box, so it has no current
    // version to step back from (the operator names the version to deploy).
    const entry = ctx.deployer.entry(device.id, model);
    if (entry?.removed) throw fail('FLEET_BAD_REQUEST', `${model} was removed from device ${device.id}; name the version to deploy in "version"`);
    const current = entry?.version ?? reportedVersion(device, model);
    const fromRollout = ctx.previousVersionOf(device.id, model);
    if (fromRollout !== null && fromRollout !== current) return fromRollout;
    const below = current === null ? undefined : registry.listVersions(model).filter((v) => v.version < current).at(-1);
    if (!below) throw fail('FLEET_BAD_REQUEST', `no previous version of ${model} is known for device ${device.id}; name one in "version"`);
    return below.version;
  }

  api.register(async (scope) => {
    scope.addHook('onRequest', async (req) => ctx.requireOperator(req));

    scope.post('/devices/:id/rollback', async (req, reply) => {
      const device = deviceOf(req.params);
      const body = parseInput(RollbackBody, req.body, 'body');
      const version = body.version ?? previousVersion(device, body.model);
      const { deployment } = ctx.deployer.setDesired(device.id, body.model, { version, rollout: null });
      return reply.code(202).send({ deviceId: device.id, model: body.model, version, deployment });
    });

    scope.get('/devices/:id/desired', async (req) => {
      const device = deviceOf(req.params);
      return { deviceId: device.id, message: ctx.deployer.message(device.id) ?? null };
    });

    scope.post('/devices/:id/commands', async (req, reply) => {
      const device = deviceOf(req.params);
      const body = parseInput(CommandBody, req.body, 'body');
      return reply.code(202).send(ctx.commands.send(device.id, body));
    });

    scope.get('/devices/:id/commands', async (req) => {
      const device = deviceOf(req.params);
      const q = parseInput(CommandsQuery, req.query, 'query');
      return { commands: ctx.commands.list(device.id, q.limit) };
    });

    scope.get('/devices/:id/commands/:cmdId', async (req) => {
      const { id, cmdId } = parseInput(CommandParams, req.params, 'params');
      const cmd = ctx.commands.get(id, cmdId);
      if (!cmd) throw fail('FLEET_COMMAND_NOT_FOUND', `device ${id} has no command ${cmdId.slice(0, 64)}`);
      return cmd;
    });

    scope.get('/maintenance-windows', async () => ({ windows: ctx.maintenance.list() }));

    scope.put('/maintenance-windows', async (req) => {
      const body = parseInput(WindowsBody, req.body, 'body');
      body.windows.forEach((w, i) => {
        const problem = cronProblem(w.cron);
        if (problem) throw fail('FLEET_BAD_REQUEST', `invalid body: windows.${i}.cron: "${w.cron}" ${problem}`);
      });
      // Devices whose window changes get a new desired revision (the window travels in the desired message).
      const windowOf = (id: string) => {
        const d = ctx.devices.get(id);
        return JSON.stringify(d ? ctx.maintenance.windowFor(d) : null);
      };
      const ids = ctx.deployer.deviceIds();
      const before = new Map(ids.map((id) => [id, windowOf(id)]));
      ctx.maintenance.replace(body.windows as MaintenanceWindowInput[], isoAt(ctx.clock.now()));
      const changed = ids.filter((id) => windowOf(id) !== before.get(id));
      ctx.deployer.touch(changed);
      return { windows: ctx.maintenance.list(), republished: changed.length };
    });
  });
}
