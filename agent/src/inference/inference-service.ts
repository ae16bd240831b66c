import { fail, isAgentError } from '../errors.js';
import type { AgentMetrics } from '../metrics/agent-metrics.js';
import type { AgentStateStore } from '../storage/agent-state.js';
import { looksLikeProbabilities, softmax, topK, type ClassScore } from '../vision/classify.js';
import { nms } from '../vision/nms.js';
import { preprocessImage, type PreprocessedImage } from '../vision/preprocess.js';
import { decodeYolo, toImagePixels } from '../vision/yolo.js';
import type { BatchResult } from './batcher.js';
import type { ServedVersion } from './model-manager.js';
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
  ) {}

  /** KServe v2 infer: tensors in, all model outputs out (the HTTP layer picks the requested ones). */
  infer(served: ServedVersion, inputs: RequestInput[], timeoutMs?: number): Promise<BatchResult> {
    return this.track(served, async () => {
      const spec = served.spec!;
      const prepared = await toFeeds(spec, inputs, this.limits);
      if (prepared.images.length > 0) this.observePreprocess(served, prepared.images);
      return this.submit(served, prepared.feeds, timeoutMs);
    });
  }

  detect(served: ServedVersion, image: Uint8Array, options: DetectOptions = {}): Promise<{ detections: Detection[]; timing: Timing; width: number; height: number }> {
    return this.track(served, async () => {
      const spec = served.spec!;
      if (spec.task !== 'detect' || !spec.detect || !spec.image) throw fail('AGENT_TASK_MISMATCH', `model '${served.name}' is a ${spec.task} model, not a detector`);
      const started = performance.now();
      const pre = await this.preprocess(served, image);
      const result = await this.submit(served, { [spec.image.input]: stackImages(spec, [pre]) });
      const postStart = performance.now();
      const d = spec.detect;
      const confidence = options.confidence ?? d.confidence;
      const output = result.outputs[d.output]!;
      const kept = nms(decodeYolo(output, 0, d.format, confidence, spec.image.spec.size), options.iou ?? d.iou, options.maxDetections ?? d.max_detections);
      const detections = kept.map((c) => {
        const m = toImagePixels(c, pre.transform);
        const r = (v: number) => Math.round(v * 10) / 10;
        return { label: spec.labels?.[c.classId] ?? String(c.classId), class_id: c.classId, score: Math.round(c.score * 10000) / 10000, box: { x1: r(m.box.x1), y1: r(m.box.y1), x2: r(m.box.x2), y2: r(m.box.y2) } };
      });
      const now = performance.now();
      return { detections, width: pre.transform.width, height: pre.transform.height, timing: timing(pre, result, now - postStart, now - started) };
    });
  }

  classify(served: ServedVersion, image: Uint8Array, k?: number): Promise<{ classes: ClassScore[]; timing: Timing }> {
    return this.track(served, async () => {
      const spec = served.spec!;
      if (spec.task !== 'classify' || !spec.classify || !spec.image) throw fail('AGENT_TASK_MISMATCH', `model '${served.name}' is a ${spec.task} model, not a classifier`);
      const started = performance.now();
      const pre = await this.preprocess(served, image);
      const result = await this.submit(served, { [spec.image.input]: stackImages(spec, [pre]) });
      const postStart = performance.now();
      const scores = Array.from(result.outputs[spec.classify.output]!.data as Float32Array);
      const probs = spec.classify.softmax === true || (spec.classify.softmax === 'auto' && !looksLikeProbabilities(scores)) ? softmax(scores) : scores;
      const classes = topK(probs, k ?? spec.classify.top_k, spec.labels).map((c) => ({ ...c, score: Math.round(c.score * 10000) / 10000 }));
      const now = performance.now();
      return { classes, timing: timing(pre, result, now - postStart, now - started) };
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

  private async submit(served: ServedVersion, feeds: Parameters<NonNullable<ServedVersion['batcher']>['submit']>[0], timeoutMs?: number): Promise<BatchResult> {
    const labels = { model: served.name, version: String(served.version) };
    const batcher = served.batcher!;
    // A request's own parameters.timeout_ms replaces the configured deadline, as a KServe client's timeout does.
    const promise = batcher.submit(feeds, timeoutMs ?? this.limits.inferenceTimeoutMs);
    this.metrics.pending.set(labels, batcher.pending);
    try {
      const result = await promise;
      this.metrics.queueDuration.observe(labels, result.queueMs / 1000);
      this.metrics.computeDuration.observe(labels, result.computeMs / 1000);
      return result;
    } finally {
      this.metrics.pending.set(labels, batcher.pending);
    }
  }

  /** Counts the request and its outcome, and times it, for metrics and the lifetime counters in SQLite. */
  private async track<T>(served: ServedVersion, work: () => Promise<T>): Promise<T> {
    const labels = { model: served.name, version: String(served.version) };
    const end = this.metrics.requestDuration.startTimer(labels);
    this.metrics.requests.inc(labels);
    try {
      const result = await work();
      this.metrics.successes.inc(labels);
      this.state.count(served.name, served.version, true);
      return result;
    } catch (err) {
      const code = isAgentError(err) ? err.code : 'AGENT_INTERNAL';
      this.metrics.failures.inc({ ...labels, code });
      this.state.count(served.name, served.version, false);
      throw err;
    } finally {
      end();
    }
  }
}

function timing(pre: PreprocessedImage, r: BatchResult, postMs: number, totalMs: number): Timing {
  const ms = (v: number) => Math.round(v * 100) / 100;
  return { decode_ms: ms(pre.decodeMs), queue_ms: ms(r.queueMs), infer_ms: ms(r.computeMs), post_ms: ms(postMs), total_ms: ms(totalMs) };
}
