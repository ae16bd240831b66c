import type { CmdMessage } from '../../../../shared/src/mqtt/messages.js';
import type { CommandOutcome, HandlerContext } from './index.js';

/** Command ids answered recently, bounded (oldest forgotten first). */
export class RecentIds {
  private readonly ids = new Set<string>();
  constructor(private readonly capacity = 256) {}

  /** True the first time an id is seen; false for a redelivery. */
  add(id: string): boolean {
    if (this.ids.has(id)) return false;
    this.ids.add(id);
    if (this.ids.size > this.capacity) this.ids.delete(this.ids.values().next().value!);
    return true;
  }
}

/** Result body for cmd/result (the link adds v, deviceId and seq when it publishes). */
function result(id: string, outcome: CommandOutcome): Record<string, unknown> {
  const ts = new Date().toISOString();
  return outcome.ok ? { ts, id, ok: true, result: outcome.result } : { ts, id, ok: false, error: { code: outcome.code, message: outcome.message.slice(0, 2000) } };
}

/** Runs a command within its timeout; never rejects. */
async function run(ctx: HandlerContext, message: CmdMessage): Promise<CommandOutcome> {
  if (message.kind === 'ping') return { ok: true, result: { pong: true } };
  if (!ctx.runCommand) return { ok: false, code: 'AGENT_CMD_UNSUPPORTED', message: `command '${message.kind}' is not supported by this agent` };
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<CommandOutcome>((resolve) => {
    timer = setTimeout(() => resolve({ ok: false, code: 'AGENT_CMD_TIMEOUT', message: `command '${message.kind}' did not finish within ${message.timeoutMs} ms` }), message.timeoutMs);
    timer.unref();
  });
  try {
    return await Promise.race([ctx.runCommand(message), timeout]);
  } catch (err) {
    return { ok: false, code: 'AGENT_CMD_FAILED', message: (err as Error).message };
  } finally {
    clearTimeout(timer);
  }
}

/**
 * Commands (QoS 1, not retained). Each is answered once on cmd/result with its id, through the outbox, so
 * an answer survives the link dropping right after the command arrived. A redelivered id is not run again:
 * the fleet already has (or will get) its answer from the outbox.
 */
export function handleCmd(ctx: HandlerContext, message: CmdMessage): void {
  if (!ctx.recentCmds.add(message.id)) {
    ctx.log.debug({ id: message.id, kind: message.kind }, 'command redelivered; already answered');
    return;
  }
  ctx.log.info({ id: message.id, kind: message.kind }, 'command received');
  void run(ctx, message).then((outcome) => {
    ctx.log.info({ id: message.id, kind: message.kind, ok: outcome.ok, ...(outcome.ok ? {} : { code: outcome.code }) }, 'command answered');
    return ctx.enqueue({ kind: 'cmd/result', body: result(message.id, outcome) });
  }).catch((err: unknown) => {
    ctx.log.error({ id: message.id, err: (err as Error).message }, 'cannot queue the command result');
  });
}
