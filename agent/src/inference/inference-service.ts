import { fail, isAgentError } from '../errors.js';
import type { AgentMetrics } from '../metrics/agent-metrics.js';
import type { AgentStateStore } from '../storage/agent-state.js';
import type { RequestObservation, RequestObserver } from '../telemetry/types.js';
import { looksLikeProbabilities, softmax, topK, type ClassScore } from '../vision/classify.js';
import { nms } from '../vision/nms.js';
import { preprocessImage, type PreprocessedImage } from '../vision/preprocess.js';
import { decodeYolo, toImagePixels } from '../vision/yolo.js';
import type { ModelSpec } from '../repository/model-spec.js';
import type { BatchResult } from './batcher.js';
import type { ServedVersion } from './model-manager.js';
import type { HostTensor } from './tensor.js';
import { stackImages, toFeeds, type Limits, type RequestInput } from './validate.js';

export interface Detection {
  label: string;
  class_id: number;
  score: number;
  box: { x1: number; y1: number; x2: number; y2: number };
}

export interface Timing {
  decode_ms: number;
  queue_ms: number;
  infer_ms: number;
  post_ms: number;
  total_ms: number;
}

/** What a request learns on its way for telemetry (filled in as far as it got). */
type Observed = Pick<RequestObservation, 'queueMs' | 'batchSize' | 'scores' | 'classes'>;

export interface DetectOptions {
  confidence?: number | undefined;
  iou?: number | undefined;
  maxDetections?: number | undefined;
}

/** The request path below HTTP: validate → preprocess → batcher → session.run → postprocess, with metrics. */
export class InferenceService {
  constructor(
    private readonly metrics: AgentMetrics,
    private readonly state: AgentStateStore,
    private readonly limits: Limits & { inferenceTimeoutMs: number },
    /** Telemetry (agent/src/telemetry): told once about every finished request, success or failure. */
    private readonly observer?: RequestObserver,
  ) {}

  /** KServe v2 infer: tensors in, all model outputs out (the HTTP layer picks the requested ones). */
  infer(served: ServedVersion, inputs: RequestInput[], timeoutMs?: number): Promise<BatchResult> {
    return this.track(served, async (observed) => {
      const spec = served.spec!;
      const prepared = await toFeeds(spec, inputs, this.limits);
      if (prepared.images.length > 0) this.observePreprocess(served, prepared.images);
      return this.submit(served, prepared.feeds, timeoutMs, observed);
    });
  }

  detect(served: ServedVersion, image: Uint8Array, options: DetectOptions = {}): Promise<{ detections: Detection[]; timing: Timing; width: number; height: number }> {
    return this.runImage(served, image, 'detect', (spec, outputs, pre, observed) => {
      const d = spec.detect!;
      const candidates = decodeYolo(outputs[d.output]!, 0, d.format, options.confidence ?? d.confidence, spec.image!.spec.size);
      const kept = nms(candidates, options.iou ?? d.iou, options.maxDetections ?? d.max_detections);
      const r = (v: number) => Math.round(v * 10) / 10;
      const detections = kept.map((c) => {
        const m = toImagePixels(c, pre.transform);
        return { label: spec.labels?.[c.classId] ?? String(c.classId), class_id: c.classId, score: Math.round(c.score * 10000) / 10000, box: { x1: r(m.box.x1), y1: r(m.box.y1), x2: r(m.box.x2), y2: r(m.box.y2) } };
      });
      observed.scores = detections.map((x) => x.score);
      observed.classes = detections.map((x) => x.label);
      return { detections, width: pre.transform.width, height: pre.transform.height };
    });
  }

  classify(served: ServedVersion, image: Uint8Array, k?: number): Promise<{ classes: ClassScore[]; timing: Timing }> {
    return this.runImage(served, image, 'classify', (spec, outputs, _pre, observed) => {
      const c = spec.classify!;
      const scores = Array.from(outputs[c.output]!.data as Float32Array);
      const probs = c.softmax === true || (c.softmax === 'auto' && !looksLikeProbabilities(scores)) ? softmax(scores) : scores;
      const classes = topK(probs, k ?? c.top_k, spec.labels).map((x) => ({ ...x, score: Math.round(x.score * 10000) / 10000 }));
      const top = classes[0];
      if (top) {
        observed.scores = [top.score];
        observed.classes = [top.label];
      }
      return { classes };
    });
  }

  /** The image endpoints' common path: task check → preprocess → batcher → `post` on the outputs, timed per stage. */
  private runImage<T>(
    served: ServedVersion,
    image: Uint8Array,
    task: 'detect' | 'classify',
    post: (spec: ModelSpec, outputs: Record<string, HostTensor>, pre: PreprocessedImage, observed: Observed) => T,
  ): Promise<T & { timing: Timing }> {
    return this.track(served, async (observed) => {
      const spec = served.spec!;
      if (spec.task !== task || !spec.image || !(task === 'detect' ? spec.detect : spec.classify)) {
        throw fail('AGENT_TASK_MISMATCH', `model '${served.name}' is a ${spec.task} model, not a ${task === 'detect' ? 'detector' : 'classifier'}`);
      }
      const started = performance.now();
      const pre = await this.preprocess(served, image);
      const result = await this.submit(served, { [spec.image.input]: stackImages(spec, [pre]) }, undefined, observed);
      const postStart = performance.now();
      const out = post(spec, result.outputs, pre, observed);
      const now = performance.now();
      return { ...out, timing: timing(pre, result, now - postStart, now - started) };
    });
  }

  private async preprocess(served: ServedVersion, image: Uint8Array): Promise<PreprocessedImage> {
    const spec = served.spec!.image!;
    const pre = await preprocessImage(image, { spec: spec.spec, layout: spec.layout, datatype: spec.datatype, maxPixels: this.limits.maxImagePixels });
    this.observePreprocess(served, [pre]);
    return pre;
  }

  private observePreprocess(served: ServedVersion, images: PreprocessedImage[]): void {
    const labels = { model: served.name, version: String(served.version) };
    for (const img of images) this.metrics.preprocessDuration.observe(labels, img.decodeMs / 1000);
  }

  private async submit(
    served: ServedVersion,
    feeds: Parameters<NonNullable<ServedVersion['batcher']>['submit']>[0],
    timeoutMs: number | undefined,
    observed: Observed,
  ): Promise<BatchResult> {
    const labels = { model: served.name, version: String(served.version) };
    const batcher = served.batcher!;
    // A request's own parameters.timeout_ms replaces the configured deadline, as a KServe client's timeout does.
    const promise = batcher.submit(feeds, timeoutMs ?? this.limits.inferenceTimeoutMs);
    this.metrics.pending.set(labels, batcher.pending);
    try {
      const result = await promise;
      this.metrics.queueDuration.observe(labels, result.queueMs / 1000);
      this.metrics.computeDuration.observe(labels, result.computeMs / 1000);
      observed.queueMs = result.queueMs;
      observed.batchSize = result.batchSize;
      return result;
    } finally {
      this.metrics.pending.set(labels, batcher.pending);
    }
  }

  /**
   * Counts the request and its outcome, and times it, for metrics, the lifetime counters in SQLite and telemetry;
   * holds the version in service (its in-flight count) until the request has finished.
   */
  private async track<T>(served: ServedVersion, work: (observed: Observed) => Promise<T>): Promise<T> {
    const labels = { model: served.name, version: String(served.version) };
    const end = this.metrics.requestDuration.startTimer(labels);
    this.metrics.requests.inc(labels);
    const observed: Observed = {};
    let ok = false;
    let code: string | undefined;
    // Before any await: the caller resolved `served` in this same tick, so a retire() that takes the version out of
    // service afterwards sees this request and waits for it; entered right before `try` so it is always left.
    served.inFlight?.enter();
    try {
      const result = await work(observed);
      ok = true;
      this.metrics.successes.inc(labels);
      this.state.count(served.name, served.version, true);
      return result;
    } catch (err) {
      code = isAgentError(err) ? err.code : 'AGENT_INTERNAL';
      this.metrics.failures.inc({ ...labels, code });
      this.state.count(served.name, served.version, false);
      throw err;
    } finally {
      served.inFlight?.leave();
      const seconds = end();
      if (this.observer) this.observe({ model: served.name, version: served.version, ok, latencyMs: seconds * 1000, ...observed, ...(code === undefined ? {} : { code }) });
    }
  }

  /** Telemetry must never fail or slow a request it observes. */
  private observe(r: RequestObservation): void {
    try {
      this.observer!(r);
    } catch {
      // The observer is in-memory accounting; a bug there is not the client's problem.
    }
  }
}

function timing(pre: PreprocessedImage, r: BatchResult, postMs: number, totalMs: number): Timing {
  const ms = (v: number) => Math.round(v * 100) / 100;
  return { decode_ms: ms(pre.decodeMs), queue_ms: ms(r.queueMs), infer_ms: ms(r.computeMs), post_ms: ms(postMs), total_ms: ms(totalMs) };
}
