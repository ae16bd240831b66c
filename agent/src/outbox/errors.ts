import { errorFactory, OutpostError, type ErrorSpec } from '../../../shared/src/errors.js';

/**
 * Why the outbox refused or failed a message. These reach the agent's own producers (events, state,
 * command results, telemetry), never an HTTP client, so httpStatus only says how an API that surfaced
 * one would answer.
 */
export const OUTBOX_ERRORS = {
  OUTBOX_ALARM: { httpStatus: 503, retryable: false, description: 'A commit failed earlier and the outbox refuses new messages: after disk full or a busy lock until a retried commit succeeds (1 s doubling to 30 s), after an I/O error until the agent restarts.' },
  OUTBOX_COMMIT_FAILED: { httpStatus: 503, retryable: false, description: 'The group commit holding this message failed; the message is not durable. The outbox is now in alarm.' },
  OUTBOX_CLOSED: { httpStatus: 503, retryable: false, description: 'The outbox was closed (agent stopping).' },
  OUTBOX_INVALID_MESSAGE: { httpStatus: 400, retryable: false, description: 'Unknown topic kind, a body that is not a JSON object, or a body JSON.stringify cannot encode.' },
  OUTBOX_TOO_LARGE: { httpStatus: 413, retryable: false, description: 'The body with its envelope would exceed MAX_PAYLOAD_BYTES, so no broker would take it.' },
} as const satisfies Record<string, ErrorSpec>;

export type OutboxErrorCode = keyof typeof OUTBOX_ERRORS;
export const outboxError = errorFactory(OUTBOX_ERRORS);

export function isOutboxError(err: unknown, code?: OutboxErrorCode): err is OutpostError<OutboxErrorCode> {
  return err instanceof OutpostError && err.code in OUTBOX_ERRORS && (code === undefined || err.code === code);
}
