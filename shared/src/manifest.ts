import { z } from 'zod';

/**
 * The model manifest (DESIGN §3.2), shared by the agent and the fleet registry.
 * Keys are snake_case as in Triton's config and the JSON files operators write.
 */
export const KSERVE_DATATYPES = [
  'BOOL', 'UINT8', 'UINT16', 'UINT32', 'UINT64', 'INT8', 'INT16', 'INT32', 'INT64', 'FP16', 'FP32', 'FP64', 'BYTES',
] as const;
export type KServeDatatype = (typeof KSERVE_DATATYPES)[number];

const positiveInt = z.number().int().positive();

export const TensorSpecSchema = z.strictObject({
  name: z.string().min(1),
  datatype: z.enum(KSERVE_DATATYPES),
  /** -1 marks a variable dimension. */
  dims: z.array(z.number().int().min(-1)),
  layout: z.enum(['NCHW', 'NHWC']).optional(),
});
export type TensorSpec = z.infer<typeof TensorSpecSchema>;

export const PreprocessingSchema = z.strictObject({
  /** [height, width] of the model input. */
  size: z.tuple([positiveInt, positiveInt]),
  resize: z.enum(['letterbox', 'stretch', 'center_crop']).default('letterbox'),
  /** center_crop only: the crop's share of the resized image's short side (0.875 = resize to 256, crop 224). */
  crop_fraction: z.number().gt(0).max(1).default(1),
  /** Where the letterboxed image sits: centred (Ultralytics) or top-left (YOLOX). */
  pad_position: z.enum(['center', 'top_left']).default('center'),
  pad_value: z.number().min(0).max(255).default(114),
  /** Multiplies each 0..255 pixel before mean/std: 1/255 maps to 0..1. */
  scale: z.number().default(1 / 255),
  mean: z.tuple([z.number(), z.number(), z.number()]).default([0, 0, 0]),
  std: z.tuple([z.number(), z.number(), z.number()]).refine((s) => s.every((v) => v !== 0), 'std must not contain 0').default([1, 1, 1]),
  color: z.enum(['RGB', 'BGR']).default('RGB'),
});
export type Preprocessing = z.output<typeof PreprocessingSchema>;

export const DetectPostprocessingSchema = z.strictObject({
  /**
   * yolov8 = [B, 4+C, N] (Ultralytics YOLOv8/YOLO11); yolov5 = [B, N, 5+C] with objectness (YOLOv5, decoded YOLOX);
   * yolox = YOLOX's raw head [B, N, 5+C] (grid offsets and log sizes per stride 8/16/32, decoded here).
   */
  format: z.enum(['yolov8', 'yolov5', 'yolox']).default('yolov8'),
  confidence: z.number().min(0).max(1).default(0.25),
  iou: z.number().min(0).max(1).default(0.45),
  max_detections: positiveInt.max(10_000).default(100),
  labels: z.array(z.string()).optional(),
});
export type DetectPostprocessing = z.output<typeof DetectPostprocessingSchema>;

export const ClassifyPostprocessingSchema = z.strictObject({
  softmax: z.boolean().default(true),
  top_k: positiveInt.max(1000).default(5),
  labels: z.array(z.string()).optional(),
});
export type ClassifyPostprocessing = z.output<typeof ClassifyPostprocessingSchema>;

export const BatchingSchema = z.strictObject({
  max_batch_size: positiveInt.max(1024),
  max_queue_delay_ms: z.number().min(0).max(10_000).optional(),
  max_queue_size: positiveInt.max(100_000).optional(),
});
export type Batching = z.infer<typeof BatchingSchema>;

/**
 * A golden input and what the model must answer to it, small enough to travel inside the signed desired state.
 * Inputs are given inline (`data`, row-major) or as a deterministic fill (`fill.seed`: uniform [0, 1) from a
 * seeded PRNG, so a 640×640 image costs 20 bytes). Outputs are summarised: the sum, the sum of absolute values and
 * the values at `sample_indices` (flat, row-major). A staged model passes when every figure is within
 * `atol + rtol·|expected|` (sums: `atol·n + rtol·|expected|`).
 */
const GoldenTensorSchema = z.strictObject({
  datatype: z.enum(['FP32', 'FP64', 'INT32', 'INT64', 'UINT8', 'INT8', 'FP16', 'BOOL', 'UINT16', 'UINT32', 'UINT64', 'INT16']),
  dims: z.array(z.number().int().min(1)).max(8),
  data: z.array(z.number()).max(4096).optional(),
  fill: z.strictObject({ seed: z.number().int().min(0).max(2 ** 32 - 1) }).optional(),
}).refine((t) => (t.data === undefined) !== (t.fill === undefined), 'give exactly one of data or fill');

export const GoldenOutputSchema = z.strictObject({
  dims: z.array(z.number().int().min(0)).max(8),
  sum: z.number(),
  abs_sum: z.number(),
  sample_indices: z.array(z.number().int().min(0)).max(256),
  sample: z.array(z.number()).max(256),
}).refine((o) => o.sample.length === o.sample_indices.length, 'sample and sample_indices must have the same length');

export const GoldenSchema = z.strictObject({
  inputs: z.record(z.string(), GoldenTensorSchema),
  outputs: z.record(z.string(), GoldenOutputSchema),
  atol: z.number().min(0).default(1e-3),
  rtol: z.number().min(0).default(1e-3),
});
export type Golden = z.output<typeof GoldenSchema>;
export type GoldenOutput = z.output<typeof GoldenOutputSchema>;

export const ManifestSchema = z.strictObject({
  name: z.string().regex(/^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$/, 'letters, digits, _ . - (max 128), not starting with a symbol'),
  version: positiveInt,
  /** sha256 (hex) of model.onnx; checked at load when present. */
  sha256: z.string().regex(/^[0-9a-f]{64}$/).optional(),
  task: z.enum(['detect', 'classify', 'raw']).default('raw'),
  description: z.string().max(2000).optional(),
  inputs: z.array(TensorSpecSchema).optional(),
  outputs: z.array(TensorSpecSchema).optional(),
  preprocessing: PreprocessingSchema.optional(),
  /** Checked against the task's schema (DetectPostprocessingSchema / ClassifyPostprocessingSchema) by parseManifest. */
  postprocessing: z.record(z.string(), z.unknown()).optional(),
  batching: BatchingSchema.optional(),
  /** Sessions run in parallel for this version (each request still runs on one). */
  instance_count: positiveInt.max(16).default(1),
  /** The golden-input smoke test run while an update is staged (shared/src/golden.ts); absent = warm-up only. */
  golden: z.lazy(() => GoldenSchema).optional(),
});
export type Manifest = z.output<typeof ManifestSchema>;

/** Validates a manifest, with postprocessing checked against the schema of its task. Lists every problem. */
export function parseManifest(value: unknown): { ok: true; manifest: Manifest } | { ok: false; problems: string[] } {
  const parsed = ManifestSchema.safeParse(value);
  if (!parsed.success) return { ok: false, problems: parsed.error.issues.map((i) => `${i.path.join('.') || '(root)'}: ${i.message}`) };
  const m = parsed.data;
  if (m.postprocessing !== undefined && m.task !== 'raw') {
    const schema = m.task === 'detect' ? DetectPostprocessingSchema : ClassifyPostprocessingSchema;
    const post = schema.safeParse(m.postprocessing);
    if (!post.success) {
      return { ok: false, problems: post.error.issues.map((i) => `${['postprocessing', ...i.path].join('.')}: ${i.message}`) };
    }
    // Validated but kept as written: the agent tells an unset format or softmax (guessed from the model,
    // 'auto') from an explicit one, which the schema defaults would hide.
  }
  return { ok: true, manifest: m };
}
