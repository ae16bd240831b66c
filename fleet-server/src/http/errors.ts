import { z } from 'zod';
import { fail, isFleetError, type FleetErrorCode } from '../errors.js';
import type { OutpostError } from '../../../shared/src/errors.js';

export type FleetError = OutpostError<FleetErrorCode>;

/** Maps anything a route or fastify throws into the catalog: ours as they are, fastify's by code, the rest internal. */
export function toFleetError(error: unknown): FleetError {
  if (isFleetError(error)) return error;
  const message = error instanceof Error ? error.message : String(error);
  if (error instanceof z.ZodError) return fail('FLEET_BAD_REQUEST', `invalid request: ${error.issues[0]?.message ?? message}`);
  switch ((error as { code?: string }).code) {
    case 'FST_ERR_CTP_BODY_TOO_LARGE':
    case 'FST_REQ_FILE_TOO_LARGE':
    case 'FST_FILES_LIMIT':
    case 'FST_PARTS_LIMIT':
    case 'FST_FIELDS_LIMIT':
      return fail('FLEET_PAYLOAD_TOO_LARGE', `request body too large: ${message}`);
    case 'FST_ERR_CTP_INVALID_MEDIA_TYPE':
    case 'FST_INVALID_MULTIPART_CONTENT_TYPE':
      return fail('FLEET_UNSUPPORTED_MEDIA_TYPE', message);
    case 'FST_ERR_CTP_EMPTY_JSON_BODY':
    case 'FST_ERR_CTP_INVALID_CONTENT_LENGTH':
    case 'FST_ERR_BAD_URL':
    case 'FST_ERR_MAX_PARAM_LENGTH':
    case 'FST_ERR_ASYNC_CONSTRAINT':
    case 'FST_PROTO_VIOLATION':
    case 'FST_NO_FORM_DATA':
      return fail('FLEET_BAD_REQUEST', message);
  }
  switch ((error as { statusCode?: number }).statusCode) {
    case 400:
      return fail('FLEET_BAD_REQUEST', message);
    case 404:
      return fail('FLEET_NOT_FOUND', message);
    case 413:
      return fail('FLEET_PAYLOAD_TOO_LARGE', message);
    case 415:
      return fail('FLEET_UNSUPPORTED_MEDIA_TYPE', message);
    case 416:
      return fail('FLEET_RANGE_NOT_SATISFIABLE', message);
    case 503:
      return fail('FLEET_UNAVAILABLE', message);
  }
  return fail('FLEET_INTERNAL', `internal error: ${message.slice(0, 300)}`, { cause: error });
}
