import { rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { CmdMessage, DesiredModel } from '../../../shared/src/mqtt/messages.js';
import type { CommandOutcome } from '../link/handlers/index.js';
import { AGENT_VERSION } from '../version.js';
import { installedVersion } from './install.js';
import { SERVING_NEW, TERMINAL } from './states.js';
import { StepError } from './steps.js';
import type { Updater } from './updater.js';
import { checkDeployment, safeVersionDir } from './verify.js';

/** Deployments that failed for a reason that may pass (network, disk space) are retried by `reload`. */
const TRANSIENT = new Set(['download_failed', 'disk_full', 'disk_budget', 'loop_guard', 'internal']);

/**
 * The fleet's commands (cmd topic) that touch the update machine, and the signed removal of a model:
 * - rollback {model}: the version on probation rolls back; a committed one gives way to the previous version
 *   kept on disk (the rolled-back version stays on disk as the new "previous", so a roll forward is as quick).
 * - reload {}: re-reads the saved desired state, and retries deployments that failed for a transient reason.
 * - diagnostics {}: a bundle for support: versions, update machine, recent deployments, process and host.
 */
export async function runCommand(updater: Updater, message: CmdMessage): Promise<CommandOutcome> {
  const args = message.args;
  switch (message.kind) {
    case 'rollback': {
      if (typeof args.model !== 'string') return { ok: false, code: 'AGENT_CMD_BAD_ARGS', message: 'rollback needs args.model (a model name)' };
      const r = await rollbackModel(updater, args.model);
      return r.ok ? { ok: true, result: { model: args.model, from: r.from, to: r.to } } : { ok: false, code: 'AGENT_CMD_NOTHING_TO_ROLL_BACK', message: r.message };
    }
    case 'reload': {
      const retried = retryTransient(updater, TRANSIENT);
      return { ok: true, result: { retried } };
    }
    case 'diagnostics':
      return { ok: true, result: diagnostics(updater) };
    default:
      return { ok: false, code: 'AGENT_CMD_UNSUPPORTED', message: `command '${message.kind}' is not supported by this agent` };
  }
}

function diagnostics(updater: Updater): Record<string, unknown> {
  const mem = process.memoryUsage();
  return {
    agentVersion: AGENT_VERSION,
    node: process.version,
    uptimeSeconds: Math.round(process.uptime()),
    memory: { rssBytes: mem.rss, heapUsedBytes: mem.heapUsed, externalBytes: mem.external },
    host: { hostname: os.hostname(), loadavg: os.loadavg(), freememBytes: os.freemem(), totalmemBytes: os.totalmem() },
    update: updater.summary(),
    // The last 20 deployments, newest first, without the signed entries (they are on the fleet already).
    recentDeployments: updater.store.recent(20).map((r) => ({
      model: r.model, version: r.version, deployment: r.deployment, rollout: r.rollout, state: r.state, reason: r.reason,
      detail: r.detail, attempts: r.attempts, probationBoots: r.probationBoots, updatedAt: new Date(r.updatedAt).toISOString(),
    })),
  };
}

/** The operator's rollback of one model: the version on probation rolls back; a committed one gives way to the previous. */
export async function rollbackModel(u: Updater, model: string): Promise<{ ok: true; from: number; to: number } | { ok: false; message: string }> {
  const { models } = u.deps;
  const latest = u.store.latest(model);
  const back = latest ? u.previousOf(latest) : null;
  if (latest && SERVING_NEW.has(latest.state) && back !== null) {
    if (u.current?.id === latest.id) u.current.abort.abort(new StepError('operator', 'rolled back by the operator'));
    else await u.rollback(latest, 'operator', 'rolled back by the operator');
    return { ok: true, from: latest.version, to: back };
  }
  const pointer = u.store.pointer(model);
  if (!pointer || pointer.active === null || pointer.previous === null) return { ok: false, message: `${model} has no previous version on this device` };
  if (latest && !TERMINAL.has(latest.state)) u.supersede(latest);
  const { active, previous } = pointer;
  const dir = installedVersion(safeVersionDir(u.deps.config.modelRepository, model, previous), previous);
  if (!dir) return { ok: false, message: `${model}@${previous} is no longer on disk` };
  if (!models.versionsOf(model)?.some((v) => v.version === previous && v.state === 'ready')) await models.stage(model, dir);
  models.activate(model, previous);
  u.store.setPointer(model, previous, active);
  u.deps.events.emit({ kind: 'update.rollback', severity: 'warn', message: `${model} rolled back from ${active} to ${previous} by the operator`, data: { model, from: active, to: previous } });
  await u.retire(model, active);
  return { ok: true, from: active, to: previous };
}

/** `reload`: the saved desired state again, and a new attempt for each model whose last deployment failed transiently. */
export function retryTransient(u: Updater, reasons: ReadonlySet<string>): number {
  let retried = 0;
  u.reporter.clearRefused();
  for (const p of u.store.pointers()) {
    const latest = u.store.latest(p.model);
    if (latest?.state !== 'failed' || latest.reason === null || !reasons.has(latest.reason)) continue;
    // Only what the fleet still wants, under an entry that still passes its checks (an expired one does not: U4).
    const entry = u.desired?.models.find((m) => m.name === p.model && m.deployment === latest.deployment);
    if (!entry || !checkDeployment(entry, { deviceId: u.deps.credentials?.deviceId ?? '', fleetPublicKeyPem: u.deps.credentials?.fleetPublicKey ?? '', now: new Date() }).ok) continue;
    u.store.retry(latest);
    retried++;
  }
  u.reconcile();
  return retried;
}

/** Unloads a model the fleet removed (signed) and deletes its files; an update in progress for it ends first. */
export async function removeModel(u: Updater, entry: DesiredModel): Promise<void> {
  const model = entry.name;
  const latest = u.store.latest(model);
  if (latest && !TERMINAL.has(latest.state)) {
    if (u.current?.id === latest.id) u.current.abort.abort(new StepError('operator', 'the fleet no longer wants this model'));
    else if (SERVING_NEW.has(latest.state)) await u.rollback(latest, 'operator', 'the fleet no longer wants this model');
    else if (latest.state !== 'rolling_back') u.move(latest, 'failed', { reason: 'operator', detail: 'the fleet no longer wants this model' });
  }
  const pointer = u.store.pointer(model);
  if (!pointer || (pointer.active === null && pointer.previous === null)) return;
  u.store.setPointer(model, null, null);
  for (const v of u.deps.models.versionsOf(model) ?? []) await u.deps.models.unload(model, v.version).catch(() => undefined);
  rmSync(path.join(u.deps.config.modelRepository, model), { recursive: true, force: true });
  u.deps.log.warn({ model, was: pointer.active }, 'model removed: the fleet no longer wants it');
  u.deps.events.emit({ kind: 'update.removed', severity: 'warn', message: `${model} removed by a signed removal from the fleet`, data: { model, version: pointer.active } });
  if (pointer.active !== null) {
    // The rollout that asked for the removal hears that the version it had installed is gone (rolled back to nothing).
    u.deps.events.emit({
      kind: 'update.transition', severity: 'warn', message: `${model}@${pointer.active} removed`,
      data: { model, version: pointer.active, previousVersion: null, from: 'committed', to: 'rolled_back', deployment: entry.deployment, rollout: entry.rollout, reason: 'operator', detail: 'removed by the fleet' },
    });
  }
  u.changed();
}
