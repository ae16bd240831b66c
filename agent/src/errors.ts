import { errorFactory, OutpostError, type ErrorSpec } from '../../shared/src/errors.js';

/**
 * Every refusal the agent's HTTP API can answer with. Codes are stable: clients branch on them.
 * docs/errors.md documents each one; test/unit/error-catalog.test.ts fails when one is missing there.
 */
export const AGENT_ERRORS = {
  AGENT_MALFORMED_JSON: { httpStatus: 400, retryable: false, description: 'The body is not valid JSON.' },
  AGENT_JSON_TOO_DEEP: { httpStatus: 400, retryable: false, description: 'The JSON nests deeper than limits.maxJsonDepth.' },
  AGENT_FORBIDDEN_KEY: { httpStatus: 400, retryable: false, description: 'The JSON contains a __proto__ or constructor.prototype key (prototype poisoning).' },
  AGENT_INVALID_REQUEST: { httpStatus: 400, retryable: false, description: 'The inference request does not match the KServe v2 request schema (missing inputs, wrong field types, bad parameters).' },
  AGENT_UNKNOWN_INPUT: { httpStatus: 400, retryable: false, description: 'An input name the model does not have.' },
  AGENT_MISSING_INPUT: { httpStatus: 400, retryable: false, description: 'A model input was not sent.' },
  AGENT_UNKNOWN_OUTPUT: { httpStatus: 400, retryable: false, description: 'A requested output name the model does not have.' },
  AGENT_WRONG_DATATYPE: { httpStatus: 400, retryable: false, description: "The input's datatype differs from the model's, or is not a KServe datatype." },
  AGENT_WRONG_SHAPE: { httpStatus: 400, retryable: false, description: "The input's shape does not fit the model's dims (rank or a fixed dimension differs)." },
  AGENT_TOO_MANY_ELEMENTS: { httpStatus: 400, retryable: false, description: 'The shape product exceeds limits.maxTensorElements (also catches overflow such as [2^31, 2^31]).' },
  AGENT_DATA_SIZE_MISMATCH: { httpStatus: 400, retryable: false, description: 'The number of data elements (or binary bytes) does not equal the shape product.' },
  AGENT_NON_FINITE: { httpStatus: 400, retryable: false, description: 'A floating-point input holds NaN or Infinity.' },
  AGENT_BAD_BINARY_HEADER: { httpStatus: 400, retryable: false, description: 'The Inference-Header-Content-Length header or binary_data_size parameters are invalid or inconsistent with the body.' },
  AGENT_BATCH_TOO_LARGE: { httpStatus: 400, retryable: false, description: "The request's batch dimension exceeds the model's max_batch_size." },
  AGENT_EMPTY_BODY: { httpStatus: 400, retryable: false, description: 'The request has no body where one is required.' },
  AGENT_IMAGE_DECODE_FAILED: { httpStatus: 400, retryable: false, description: 'The image is truncated, corrupt or not an image.' },
  AGENT_IMAGE_TOO_LARGE: { httpStatus: 400, retryable: false, description: 'The image declares more pixels than limits.maxImagePixels (decompression-bomb guard).' },
  AGENT_TASK_MISMATCH: { httpStatus: 400, retryable: false, description: "The endpoint needs a different model task (e.g. /detect on a classifier or a raw model)." },
  AGENT_BAD_QUERY: { httpStatus: 400, retryable: false, description: 'A query parameter is out of range (e.g. confidence outside 0..1).' },
  AGENT_BODY_TOO_LARGE: { httpStatus: 413, retryable: false, description: 'The body exceeds limits.maxBodyBytes; refused while streaming, before it is buffered.' },
  AGENT_UNSUPPORTED_MEDIA_TYPE: { httpStatus: 415, retryable: false, description: 'The Content-Type is not accepted by this endpoint.' },
  AGENT_NOT_FOUND: { httpStatus: 404, retryable: false, description: 'No such route.' },
  AGENT_MODEL_NOT_FOUND: { httpStatus: 404, retryable: false, description: 'No model of that name in the repository.' },
  AGENT_VERSION_NOT_FOUND: { httpStatus: 404, retryable: false, description: 'The model exists but not that version (or the version policy does not serve it).' },
  AGENT_MODEL_NOT_READY: { httpStatus: 503, retryable: true, description: 'The model (version) is loading or failed to load.' },
  AGENT_OVERLOADED: { httpStatus: 503, retryable: true, description: "The model's queue is full (load shedding); sent with Retry-After." },
  AGENT_SHUTTING_DOWN: { httpStatus: 503, retryable: true, description: 'The agent is stopping and takes no new work.' },
  AGENT_REQUEST_TIMEOUT: { httpStatus: 408, retryable: true, description: 'The client did not send the whole request within http.requestTimeoutMs.' },
  AGENT_TIMEOUT: { httpStatus: 504, retryable: true, description: 'Inference did not finish within limits.inferenceTimeoutMs (or the request\'s own timeout parameter).' },
  AGENT_INFERENCE_FAILED: { httpStatus: 500, retryable: false, description: 'onnxruntime refused or failed to run the inputs.' },
  AGENT_INTERNAL: { httpStatus: 500, retryable: false, description: 'A bug; the message says what failed. The agent keeps running.' },
} as const satisfies Record<string, ErrorSpec>;

export type AgentErrorCode = keyof typeof AGENT_ERRORS;
export type AgentError = OutpostError<AgentErrorCode>;
export const fail = errorFactory(AGENT_ERRORS);

export function isAgentError(err: unknown): err is AgentError {
  return err instanceof OutpostError && err.code in AGENT_ERRORS;
}
