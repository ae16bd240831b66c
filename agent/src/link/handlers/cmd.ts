import type { CmdMessage } from '../../../../shared/src/mqtt/messages.js';
import type { HandlerContext } from './index.js';

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
function result(id: string, outcome: { ok: true; result: Record<string, unknown> } | { ok: false; code: string; message: string }): Record<string, unknown> {
  const ts = new Date().toISOString();
  return outcome.ok ? { ts, id, ok: true, result: outcome.result } : { ts, id, ok: false, error: { code: outcome.code, message: outcome.message } };
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
  const body =
    message.kind === 'ping'
      ? result(message.id, { ok: true, result: { pong: true } })
      : result(message.id, { ok: false, code: 'AGENT_CMD_UNSUPPORTED', message: `command '${message.kind}' is not supported by this agent version yet` });
  ctx.log.info({ id: message.id, kind: message.kind, ok: body.ok }, 'command received');
  ctx.enqueue({ kind: 'cmd/result', body }).catch((err: unknown) => {
    ctx.log.error({ id: message.id, err: (err as Error).message }, 'cannot queue the command result');
  });
}
