/** One finished inference request, as the inference service reports it to telemetry. */
export interface RequestObservation {
  model: string;
  version: number;
  /** False when the request failed (bad input, overload, timeout, runtime error). */
  ok: boolean;
  /** The error code of a failed request (the agent's catalog, agent/src/errors.ts). */
  code?: string;
  /** Whole request, from validation to the answer, in ms. */
  latencyMs: number;
  /** Time waiting in the batcher's queue, in ms (only for requests that reached it). */
  queueMs?: number;
  /** Size of the batch the request ran in. */
  batchSize?: number;
  /** Detection scores (/detect) or the top-1 score (/classify), each in [0, 1]. */
  scores?: number[];
  /** Predicted labels, one per score. */
  classes?: string[];
}

/** Called once per finished request; must be cheap and must not throw (the caller guards it anyway). */
export type RequestObserver = (r: RequestObservation) => void;
