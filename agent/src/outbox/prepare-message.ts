import { MAX_PAYLOAD_BYTES } from '../../../shared/src/mqtt/messages.js';
import { AGENT_TOPIC_KINDS, TOPIC_KINDS, type AgentTopicKind } from '../../../shared/src/mqtt/topics.js';
import { outboxError } from './errors.js';
import type { OutboxMessage } from './types.js';

/** Bytes the link's envelope adds to a body: {"v":1,"deviceId":"<≤64 chars>","seq":<≤16 digits>, */
const ENVELOPE_BYTES = 128;
/** Largest body (JSON bytes) the outbox accepts: with its envelope it must fit MAX_PAYLOAD_BYTES. */
export const MAX_BODY_BYTES = MAX_PAYLOAD_BYTES - ENVELOPE_BYTES;

export interface PreparedMessage {
  kind: AgentTopicKind;
  retain: boolean;
  /** The JSON text stored and published. */
  body: string;
  bytes: number;
}

/** Validates and serialises a message once, at enqueue; the stored text is what the link publishes. */
export function prepare(message: OutboxMessage): PreparedMessage {
  const kind = message?.kind;
  if (!AGENT_TOPIC_KINDS.includes(kind)) throw outboxError('OUTBOX_INVALID_MESSAGE', `unknown outbox kind ${JSON.stringify(kind)}`);
  const b = message.body;
  if (typeof b !== 'object' || b === null || Array.isArray(b)) throw outboxError('OUTBOX_INVALID_MESSAGE', 'an outbox body must be a JSON object');
  let body: string;
  try {
    body = JSON.stringify(b);
  } catch (err) {
    throw outboxError('OUTBOX_INVALID_MESSAGE', `the body cannot be encoded as JSON: ${(err as Error).message}`, { cause: err });
  }
  const bytes = Buffer.byteLength(body);
  if (bytes > MAX_BODY_BYTES) {
    throw outboxError('OUTBOX_TOO_LARGE', `a ${kind} body of ${bytes} bytes exceeds MAX_PAYLOAD_BYTES (${MAX_PAYLOAD_BYTES}) with its envelope`);
  }
  return { kind, retain: message.retain ?? TOPIC_KINDS[kind].retain, body, bytes };
}
