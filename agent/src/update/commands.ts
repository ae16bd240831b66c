import os from 'node:os';
import type { CmdMessage } from '../../../shared/src/mqtt/messages.js';
import type { CommandOutcome } from '../link/handlers/index.js';
import { AGENT_VERSION } from '../version.js';
import type { Updater } from './updater.js';

/** Deployments that failed for a reason that may pass (network, disk space) are retried by `reload`. */
const TRANSIENT = new Set(['download_failed', 'disk_full', 'disk_budget', 'loop_guard', 'internal']);

/**
 * The fleet's commands (cmd topic) that touch the update machine:
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
      const r = await updater.rollbackModel(args.model);
      return r.ok ? { ok: true, result: { model: args.model, from: r.from, to: r.to } } : { ok: false, code: 'AGENT_CMD_NOTHING_TO_ROLL_BACK', message: r.message };
    }
    case 'reload': {
      const retried = updater.retryTransient(TRANSIENT);
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
