import {
  ClassifyPostprocessingSchema, DetectPostprocessingSchema, PreprocessingSchema,
  type ClassifyPostprocessing, type DetectPostprocessing, type Manifest, type Preprocessing, type TensorSpec,
} from '../../../shared/src/manifest.js';
import { parseUltralyticsImgsz, parseUltralyticsNames } from '../../../shared/src/onnx/ultralytics-metadata.js';
import { yoloClassCount, type YoloFormat } from '../vision/yolo.js';

/** How an image input is fed: which input, its preprocessing, layout and element type. */
export interface ImageInput {
  input: string;
  spec: Preprocessing;
  layout: 'NCHW' | 'NHWC';
  datatype: 'FP32' | 'UINT8';
}

/** Everything the agent serves a model version by: the manifest where given, else read from the file. */
export interface ModelSpec {
  task: 'detect' | 'classify' | 'raw';
  description: string | undefined;
  inputs: TensorSpec[];
  outputs: TensorSpec[];
  /** Present when the model takes images (detect/classify, or a manifest with preprocessing). */
  image: ImageInput | undefined;
  detect: (DetectPostprocessing & { output: string }) | undefined;
  /** softmax 'auto' applies softmax unless the output already sums to 1. */
  classify: (Omit<ClassifyPostprocessing, 'softmax'> & { softmax: boolean | 'auto'; output: string }) | undefined;
  labels: string[] | undefined;
  batching: { dynamic: boolean; maxBatchSize: number; maxQueueDelayMs: number; maxQueueSize: number };
  /** Where task, labels and sizes came from. */
  source: 'manifest' | 'onnx-metadata' | 'model-io';
}

export interface SpecDefaults {
  batchingEnabled: boolean;
  maxBatchSize: number;
  maxQueueDelayMs: number;
  maxQueueSize: number;
}

/** Thrown when a model cannot be served as described; the message names the file's problem. */
export class ModelSpecError extends Error {}

export function resolveModelSpec(
  io: { inputs: TensorSpec[]; outputs: TensorSpec[] },
  manifest: Manifest | undefined,
  metadata: Record<string, string>,
  defaults: SpecDefaults,
): ModelSpec {
  const inputs = mergeDeclared('input', io.inputs, manifest?.inputs);
  const outputs = mergeDeclared('output', io.outputs, manifest?.outputs);
  const metaTask = metadata.task === 'detect' || metadata.task === 'classify' ? metadata.task : undefined;
  const task = manifest?.task !== undefined && (manifest.task !== 'raw' || metaTask === undefined) ? manifest.task : (metaTask ?? 'raw');
  const source = manifest ? 'manifest' : metaTask ? 'onnx-metadata' : 'model-io';

  let labels: string[] | undefined;
  const post = manifest?.postprocessing as { labels?: string[] } | undefined;
  if (post?.labels) labels = post.labels;
  else if (metadata.names !== undefined) {
    try {
      labels = parseUltralyticsNames(metadata.names);
    } catch (err) {
      throw new ModelSpecError(`ONNX metadata 'names' is unreadable: ${(err as Error).message}`);
    }
  }

  const image = task !== 'raw' || manifest?.preprocessing ? imageInput(inputs, task, manifest, metadata) : undefined;
  const out0 = outputs[0];
  let detect: ModelSpec['detect'];
  let classify: ModelSpec['classify'];
  if (task === 'detect') {
    if (!out0) throw new ModelSpecError('a detector needs an output');
    const given = DetectPostprocessingSchema.parse(manifest?.postprocessing ?? {});
    const format = (manifest?.postprocessing as { format?: YoloFormat } | undefined)?.format ?? guessFormat(out0.dims, labels?.length);
    const classes = yoloClassCount(out0.dims, format);
    if (out0.dims.length !== 3) throw new ModelSpecError(`detector output '${out0.name}' has dims ${JSON.stringify(out0.dims)}; expected [batch, 4+C, N] (yolov8) or [batch, N, 5+C] (yolov5)`);
    if (classes !== undefined && labels && labels.length !== classes) {
      throw new ModelSpecError(`${labels.length} labels but output '${out0.name}' ${JSON.stringify(out0.dims)} carries ${classes} classes as ${format}`);
    }
    detect = { ...given, format, output: out0.name };
  } else if (task === 'classify') {
    if (!out0) throw new ModelSpecError('a classifier needs an output');
    const given = ClassifyPostprocessingSchema.parse(manifest?.postprocessing ?? {});
    const explicit = (manifest?.postprocessing as { softmax?: boolean } | undefined)?.softmax;
    classify = { ...given, softmax: explicit ?? 'auto', output: out0.name };
  }

  const dynamic = inputs.length > 0 && [...inputs, ...outputs].every((t) => t.dims.length > 0 && t.dims[0] === -1);
  const b = manifest?.batching;
  const wanted = b?.max_batch_size ?? (dynamic ? defaults.maxBatchSize : 1);
  return {
    task, description: manifest?.description, inputs, outputs, image, detect, classify, labels, source,
    batching: {
      dynamic,
      maxBatchSize: dynamic && defaults.batchingEnabled ? wanted : 1,
      maxQueueDelayMs: b?.max_queue_delay_ms ?? defaults.maxQueueDelayMs,
      maxQueueSize: b?.max_queue_size ?? defaults.maxQueueSize,
    },
  };
}

/** The session's I/O is the truth; a manifest may add layout but must agree on names and datatypes. */
function mergeDeclared(kind: string, actual: TensorSpec[], declared: TensorSpec[] | undefined): TensorSpec[] {
  if (!declared) return actual;
  return actual.map((a) => {
    const d = declared.find((x) => x.name === a.name);
    if (!d) return a;
    if (d.datatype !== a.datatype) throw new ModelSpecError(`manifest ${kind} '${a.name}' is ${d.datatype} but the model's is ${a.datatype}`);
    if (d.dims.length !== a.dims.length) throw new ModelSpecError(`manifest ${kind} '${a.name}' has rank ${d.dims.length} but the model's has ${a.dims.length}`);
    return { ...a, ...(d.layout ? { layout: d.layout } : {}) };
  }).concat(
    declared.filter((d) => !actual.some((a) => a.name === d.name)).map((d) => {
      throw new ModelSpecError(`manifest ${kind} '${d.name}' is not in the model (it has ${actual.map((a) => a.name).join(', ')})`);
    }),
  );
}

function imageInput(inputs: TensorSpec[], task: string, manifest: Manifest | undefined, metadata: Record<string, string>): ImageInput {
  const input = inputs[0];
  if (!input || input.dims.length !== 4) throw new ModelSpecError(`an image model needs a 4-D first input; got ${input ? JSON.stringify(input.dims) : 'none'}`);
  if (input.datatype !== 'FP32' && input.datatype !== 'UINT8') throw new ModelSpecError(`image input '${input.name}' is ${input.datatype}; FP32 or UINT8 expected`);
  const layout = input.layout ?? (input.dims[3] === 3 && input.dims[1] !== 3 ? 'NHWC' : 'NCHW');
  const [h, w] = layout === 'NCHW' ? [input.dims[2]!, input.dims[3]!] : [input.dims[1]!, input.dims[2]!];
  let size: [number, number] | undefined = h > 0 && w > 0 ? [h, w] : undefined;
  if (metadata.imgsz !== undefined) {
    try {
      size = parseUltralyticsImgsz(metadata.imgsz);
    } catch (err) {
      throw new ModelSpecError(`ONNX metadata 'imgsz' is unreadable: ${(err as Error).message}`);
    }
  }
  const raw = manifest?.preprocessing ?? (size ? { size, resize: task === 'classify' ? 'center_crop' : 'letterbox' } : undefined);
  if (!raw) throw new ModelSpecError(`input '${input.name}' has no fixed height/width; give preprocessing.size in a manifest.json`);
  const spec = PreprocessingSchema.parse(raw);
  if ((h > 0 && h !== spec.size[0]) || (w > 0 && w !== spec.size[1])) {
    throw new ModelSpecError(`preprocessing.size ${JSON.stringify(spec.size)} does not match input '${input.name}' ${JSON.stringify(input.dims)}`);
  }
  return { input: input.name, spec, layout, datatype: input.datatype };
}

/** Ultralytics exports are [B, 4+C, N] with N ≫ C; YOLOv5/YOLOX are [B, N, 5+C]. */
function guessFormat(dims: readonly number[], labelCount: number | undefined): YoloFormat {
  if (labelCount !== undefined) {
    if (dims[1] === 4 + labelCount) return 'yolov8';
    if (dims[2] === 5 + labelCount) return 'yolov5';
  }
  const [, a = -1, b = -1] = dims;
  return a > 0 && (b < 0 || a < b) ? 'yolov8' : 'yolov5';
}
