import type { ModelPoint } from '../../../shared/src/mqtt/messages.js';
import { merge as mergeHist, observe, summarize, type SparseHistogram } from '../../../shared/src/telemetry/histogram.js';
import type { RequestObservation } from './types.js';

/** Score bins over [0, 1], as ModelPointSchema.scoreBins wants. */
export const SCORE_BINS = 10;
/** Most distinct labels one window keeps per model version (ModelPointSchema allows 1000); the rest count under OTHER_LABEL. */
export const MAX_CLASSES = 1000;
export const OTHER_LABEL = '(other)';
/** Longest label kept (ModelPointSchema limit). */
export const MAX_LABEL_CHARS = 128;

/**
 * What one model version did in one window, in a mergeable form: sums, maxima and sparse histograms, so
 * the deltas of each group commit add onto the stored row and windows of crashed processes add up too.
 * Latency counts successful requests only (as Triton's success duration): failed ones are mostly instant
 * refusals and would hide a slow model.
 */
export interface WindowData {
  requests: number;
  failures: number;
  latency: SparseHistogram;
  queue: SparseHistogram;
  batch: { sum: number; count: number; max: number };
  scoreBins: number[];
  classes: Record<string, number>;
}

export function emptyWindow(): WindowData {
  return { requests: 0, failures: 0, latency: {}, queue: {}, batch: { sum: 0, count: 0, max: 0 }, scoreBins: new Array<number>(SCORE_BINS).fill(0), classes: {} };
}

export function observeRequest(w: WindowData, r: RequestObservation): void {
  w.requests++;
  if (!r.ok) w.failures++;
  if (r.ok && Number.isFinite(r.latencyMs)) observe(w.latency, Math.max(0, r.latencyMs));
  if (r.queueMs !== undefined && Number.isFinite(r.queueMs)) observe(w.queue, Math.max(0, r.queueMs));
  if (r.batchSize !== undefined && Number.isInteger(r.batchSize) && r.batchSize > 0) {
    w.batch.sum += r.batchSize;
    w.batch.count++;
    if (r.batchSize > w.batch.max) w.batch.max = r.batchSize;
  }
  for (const s of r.scores ?? []) {
    if (!Number.isFinite(s)) continue;
    const bin = Math.min(SCORE_BINS - 1, Math.max(0, Math.floor(s * SCORE_BINS)));
    w.scoreBins[bin]!++;
  }
  for (const label of r.classes ?? []) addClass(w.classes, label, 1);
}

/** Adds `from` into `into` and returns `into`. */
export function mergeWindow(into: WindowData, from: WindowData): WindowData {
  into.requests += from.requests;
  into.failures += from.failures;
  mergeHist(into.latency, from.latency);
  mergeHist(into.queue, from.queue);
  into.batch.sum += from.batch.sum;
  into.batch.count += from.batch.count;
  into.batch.max = Math.max(into.batch.max, from.batch.max);
  for (let i = 0; i < SCORE_BINS; i++) into.scoreBins[i] = (into.scoreBins[i] ?? 0) + (from.scoreBins[i] ?? 0);
  for (const [label, n] of Object.entries(from.classes)) addClass(into.classes, label, n);
  return into;
}

/** The telemetry point the fleet receives (ModelPointSchema). */
export function toModelPoint(model: string, version: number, w: WindowData): ModelPoint {
  return {
    model,
    version,
    requests: w.requests,
    failures: w.failures,
    latencyMs: summarize(w.latency),
    queueMs: summarize(w.queue),
    batchSize: { mean: w.batch.count === 0 ? 0 : Math.round((w.batch.sum / w.batch.count) * 100) / 100, max: w.batch.max },
    scoreBins: [...w.scoreBins],
    classes: { ...w.classes },
  };
}

/**
 * Reads a stored window back. A row this code cannot read (hand-edited, or from a future version) gives
 * undefined, and the caller drops it with a log line rather than block every later window.
 */
export function parseWindow(text: string): WindowData | undefined {
  let v: unknown;
  try {
    v = JSON.parse(text);
  } catch {
    return undefined;
  }
  const o = v as Partial<WindowData> | null;
  if (!o || typeof o !== 'object') return undefined;
  const isCount = (n: unknown): n is number => typeof n === 'number' && Number.isInteger(n) && n >= 0;
  const isCounts = (r: unknown): r is Record<string, number> => !!r && typeof r === 'object' && !Array.isArray(r) && Object.values(r).every(isCount);
  if (!isCount(o.requests) || !isCount(o.failures) || !isCounts(o.latency) || !isCounts(o.queue) || !isCounts(o.classes)) return undefined;
  if (!o.batch || !isCount(o.batch.sum) || !isCount(o.batch.count) || !isCount(o.batch.max)) return undefined;
  if (!Array.isArray(o.scoreBins) || o.scoreBins.length !== SCORE_BINS || !o.scoreBins.every(isCount)) return undefined;
  return o as WindowData;
}

function addClass(classes: Record<string, number>, rawLabel: string, n: number): void {
  let label = String(rawLabel).slice(0, MAX_LABEL_CHARS);
  // Object.hasOwn, not `in`: labels such as "constructor" must count like any other.
  if (!Object.hasOwn(classes, label)) {
    // Counting keys only for a new label keeps this O(1) per detection once the labels are known.
    if (label !== OTHER_LABEL && Object.keys(classes).length >= MAX_CLASSES - 1) label = OTHER_LABEL;
    if (!Object.hasOwn(classes, label)) {
      // defineProperty: a plain assignment to "__proto__" would be swallowed by the prototype setter.
      Object.defineProperty(classes, label, { value: 0, enumerable: true, writable: true, configurable: true });
    }
  }
  classes[label] = classes[label]! + n;
}
