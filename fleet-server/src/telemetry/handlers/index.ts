import type { MessageOf } from '../../../../shared/src/mqtt/messages.js';
import type { AgentTopicKind } from '../../../../shared/src/mqtt/topics.js';
import { handleCmdResult } from './cmd-result.js';
import { handleEvent } from './events.js';
import { handleState } from './state.js';
import { handleTelemetry } from './telemetry.js';
import type { Handler, HandlerContext, HandlerOutcome } from './types.js';

export type { HandlerContext, HandlerOutcome } from './types.js';

/** The dispatch table: one handler per topic kind an agent publishes. */
export const HANDLERS: { readonly [K in AgentTopicKind]: Handler<K> } = {
  state: handleState,
  telemetry: handleTelemetry,
  events: handleEvent,
  'cmd/result': handleCmdResult,
};

export function dispatch<K extends AgentTopicKind>(ctx: HandlerContext, kind: K, deviceId: string, message: MessageOf<K>, receivedAt: string): HandlerOutcome {
  return (HANDLERS[kind] as Handler<K>)(ctx, deviceId, message, receivedAt);
}
