import type { Logger } from 'pino';
import { decodeMessage, type CmdMessage, type DesiredMessage, type MessageOf, type RejectReason } from '../../../../shared/src/mqtt/messages.js';
import { parseTopic, type FleetTopicKind } from '../../../../shared/src/mqtt/topics.js';
import type { OutboxMessage } from '../../outbox/types.js';
import { handleCmd, RecentIds } from './cmd.js';
import { handleDesired } from './desired.js';

/** What a handler may touch: the outbox to answer through, and the link's own small state. */
export interface HandlerContext {
  deviceId: string;
  log: Logger;
  /** outbox.enqueue: every answer goes through the outbox like everything else the agent sends. */
  enqueue(message: OutboxMessage): Promise<unknown>;
  /** The latest desired state accepted; undefined until the first one arrives. */
  desired: DesiredMessage | undefined;
  /** Called with a desired state newer than the one held. */
  onDesired(message: DesiredMessage): void;
  /** Command ids already answered (QoS 1 may deliver a command twice). */
  recentCmds: RecentIds;
  /** Runs rollback, reload and diagnostics (the update machine); absent: those kinds are unsupported. */
  runCommand?: CommandRunner;
}

export type CommandOutcome = { ok: true; result: Record<string, unknown> } | { ok: false; code: string; message: string };
export type CommandRunner = (message: CmdMessage) => Promise<CommandOutcome>;

type Handler<K extends FleetTopicKind> = (ctx: HandlerContext, message: MessageOf<K>) => void;

/** The dispatch table: one handler per topic kind the fleet sends (aedes lib/handlers/index.js style). */
export const HANDLERS: { [K in FleetTopicKind]: Handler<K> } = {
  desired: handleDesired,
  cmd: handleCmd,
};

export type DispatchResult = { ok: true; kind: FleetTopicKind } | { ok: false; kind: string; reason: RejectReason; detail: string };

/**
 * Validates an incoming publish and runs its handler. Never throws: anything unexpected (a topic that is
 * not ours, oversized, not JSON, schema violation, another device's payload) comes back as a reason that
 * the caller logs and counts, and the link carries on.
 */
export function dispatch(ctx: HandlerContext, topic: string, payload: Uint8Array): DispatchResult {
  const parsed = parseTopic(topic);
  if (!parsed || parsed.deviceId !== ctx.deviceId || !Object.hasOwn(HANDLERS, parsed.kind)) {
    return { ok: false, kind: parsed?.kind ?? 'unknown', reason: 'unknown-topic', detail: `not a topic this device subscribes to: ${topic.slice(0, 200)}` };
  }
  const kind = parsed.kind as FleetTopicKind;
  const decoded = decodeMessage(kind, payload, ctx.deviceId);
  if (!decoded.ok) return { ok: false, kind, reason: decoded.reason, detail: decoded.detail };
  try {
    (HANDLERS[kind] as Handler<FleetTopicKind>)(ctx, decoded.message);
  } catch (err) {
    // A handler bug must not take the link down; it shows up as a counted rejection with the message.
    ctx.log.error({ kind, err: (err as Error).message }, 'handler failed on a valid message');
    return { ok: false, kind, reason: 'invalid', detail: `handler failed: ${(err as Error).message}` };
  }
  return { ok: true, kind };
}
