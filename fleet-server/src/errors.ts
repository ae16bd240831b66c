import { errorFactory, OutpostError, type ErrorSpec } from '../../shared/src/errors.js';

/** The fleet server's error catalog: stable codes, documented in docs/fleet-errors.md (a test keeps them in sync). */
export const FLEET_ERRORS = {
  FLEET_BAD_REQUEST: { httpStatus: 400, retryable: false, description: 'The request body, path or query does not match the API schema.' },
  FLEET_UNAUTHORIZED: { httpStatus: 401, retryable: false, description: 'No credentials, or an unknown or revoked operator token or device secret.' },
  FLEET_FORBIDDEN: { httpStatus: 403, retryable: false, description: 'The credentials are valid but may not do this (e.g. a device calling an operator route).' },
  FLEET_ENROLLMENT_TOKEN_INVALID: { httpStatus: 401, retryable: false, description: 'The enrollment token is unknown, expired or already used.' },
  FLEET_NOT_FOUND: { httpStatus: 404, retryable: false, description: 'No such device, model, version or route.' },
  FLEET_DEVICE_REVOKED: { httpStatus: 409, retryable: false, description: 'The device is revoked; enroll it again with a token for its id.' },
  FLEET_MODEL_EXISTS: { httpStatus: 409, retryable: false, description: 'That model version is already in the registry; versions are immutable, push a new one.' },
  FLEET_MODEL_IN_USE: { httpStatus: 409, retryable: false, description: 'A device reports running that model version; it cannot be deleted.' },
  FLEET_MANIFEST_INVALID: { httpStatus: 400, retryable: false, description: 'The manifest does not match the manifest schema or does not match the artifact.' },
  FLEET_ARTIFACT_INVALID: { httpStatus: 400, retryable: false, description: 'The uploaded artifact is empty, not an ONNX model, or its hash does not match the declared one.' },
  FLEET_PAYLOAD_TOO_LARGE: { httpStatus: 413, retryable: false, description: 'The body or artifact is larger than the configured limit.' },
  FLEET_UNSUPPORTED_MEDIA_TYPE: { httpStatus: 415, retryable: false, description: 'The Content-Type is not one this route accepts.' },
  FLEET_RANGE_NOT_SATISFIABLE: { httpStatus: 416, retryable: false, description: 'The Range header asks for bytes outside the artifact.' },
  FLEET_MODEL_NOT_FOUND: { httpStatus: 404, retryable: false, description: 'A deployment, rollout or rollback names a model version the registry does not have.' },
  FLEET_ROLLOUT_NOT_FOUND: { httpStatus: 404, retryable: false, description: 'No rollout with that id.' },
  FLEET_ROLLOUT_STATE: { httpStatus: 409, retryable: false, description: 'The rollout is in a state that does not allow this action (e.g. resume of a running rollout).' },
  FLEET_ROLLOUT_CONFLICT: { httpStatus: 409, retryable: false, description: 'A target device is already in an unfinished rollout of the same model.' },
  FLEET_COMMAND_NOT_FOUND: { httpStatus: 404, retryable: false, description: 'No command with that id for that device.' },
  FLEET_UNAVAILABLE: { httpStatus: 503, retryable: true, description: 'The server is starting or stopping, or its storage failed; retry later.' },
  FLEET_INTERNAL: { httpStatus: 500, retryable: false, description: 'An unexpected error; the server log has the details.' },
} as const satisfies Record<string, ErrorSpec>;

export type FleetErrorCode = keyof typeof FLEET_ERRORS;

export const fail = errorFactory(FLEET_ERRORS);

export function isFleetError(err: unknown): err is OutpostError<FleetErrorCode> {
  return err instanceof OutpostError && Object.hasOwn(FLEET_ERRORS, err.code);
}
