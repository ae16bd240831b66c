import type { MessageOf } from '../../../../shared/src/mqtt/messages.js';
import type { AgentTopicKind } from '../../../../shared/src/mqtt/topics.js';
import type { IngestStore } from '../../storage/fleet-store.js';

/** What handling one validated message did: stored it, found it already stored, or (last will) marked the device offline. */
export type HandlerOutcome = 'stored' | 'duplicate' | 'offline';

export interface HandlerContext {
  store: IngestStore;
}

/** One handler per agent topic kind: maps the validated message to rows and stores them once. Synchronous. */
export type Handler<K extends AgentTopicKind> = (ctx: HandlerContext, deviceId: string, message: MessageOf<K>, receivedAt: string) => HandlerOutcome;
