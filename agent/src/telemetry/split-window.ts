import type { ModelPoint, SystemPoint } from '../../../shared/src/mqtt/messages.js';
import { OTHER_LABEL } from './window-data.js';

/** The body of a telemetry message: TelemetryMessageSchema without v, deviceId and seq (the link adds those). */
export interface TelemetryBody {
  ts: string;
  windowStart: string;
  windowEnd: string;
  models: ModelPoint[];
  system: SystemPoint | null;
}

const bytesOf = (body: TelemetryBody) => Buffer.byteLength(JSON.stringify(body));
/** TelemetryMessageSchema takes at most this many model points per message. */
export const MAX_MODELS_PER_MESSAGE = 256;

/**
 * Splits a window that would not fit one MQTT payload into several bodies of the same window, each under
 * `maxBytes` and MAX_MODELS_PER_MESSAGE points: first by model (the system sample stays with the first part only), then, for a single model
 * whose point alone is too big (e.g. 1000 long ImageNet labels), by keeping its most frequent classes and
 * counting the rest under "(other)", and last by dropping its bucket histograms (percentiles stay).
 * Request counts are never dropped. Throws when even that does not fit, before anything is queued.
 */
export function splitToFit(body: TelemetryBody, maxBytes: number): TelemetryBody[] {
  if (body.models.length <= MAX_MODELS_PER_MESSAGE && bytesOf(body) <= maxBytes) return [body];
  if (body.models.length > 1) {
    const mid = Math.ceil(body.models.length / 2);
    return [...splitToFit({ ...body, models: body.models.slice(0, mid) }, maxBytes), ...splitToFit({ ...body, models: body.models.slice(mid), system: null }, maxBytes)];
  }
  const point = body.models[0];
  if (point) {
    const ranked = Object.entries(point.classes).filter(([label]) => label !== OTHER_LABEL).sort((a, b) => b[1] - a[1]);
    for (let keep = Math.floor(ranked.length / 2); keep >= 0; keep = keep === 0 ? -1 : Math.floor(keep / 2)) {
      const trimmed = { ...body, models: [{ ...point, classes: topClasses(point.classes, ranked, keep) }] };
      if (bytesOf(trimmed) <= maxBytes) return [trimmed];
    }
    const bare = { ...body, models: [{ ...point, classes: topClasses(point.classes, ranked, 0), latencyMs: { ...point.latencyMs, hist: {} }, queueMs: { ...point.queueMs, hist: {} } }] };
    if (bytesOf(bare) <= maxBytes) return [bare];
  }
  throw new Error(`a telemetry window part of ${bytesOf(body)} bytes cannot be made to fit ${maxBytes} bytes`);
}

function topClasses(all: Record<string, number>, ranked: [string, number][], keep: number): Record<string, number> {
  const out: Record<string, number> = {};
  let other = Object.hasOwn(all, OTHER_LABEL) ? all[OTHER_LABEL]! : 0;
  ranked.forEach(([label, n], i) => {
    if (i < keep) Object.defineProperty(out, label, { value: n, enumerable: true, writable: true, configurable: true });
    else other += n;
  });
  if (other > 0) out[OTHER_LABEL] = other;
  return out;
}
