/**
 * The model manifest as written next to each model.onnx (DESIGN §3.2). These types describe what
 * make-models writes; the agent validates manifests with its own schema, which follows the same
 * JSON (snake_case keys, as in Triton's config and KServe's protocol).
 */
import { createHash } from 'node:crypto';

/** KServe v2 tensor datatypes used by the project's models. */
export type KServeDatatype = 'BOOL' | 'UINT8' | 'UINT16' | 'UINT32' | 'UINT64' | 'INT8' | 'INT16' | 'INT32' | 'INT64' | 'FP16' | 'FP32' | 'FP64';

export interface TensorSpec {
  name: string;
  datatype: KServeDatatype;
  /** -1 = variable (batch or any size). */
  dims: number[];
  /** Only for image inputs. */
  layout?: 'NCHW' | 'NHWC';
}

export interface Preprocessing {
  /** [height, width] of the model input. */
  size: [number, number];
  resize: 'letterbox' | 'stretch';
  /** Letterbox only. */
  pad_position?: 'center';
  /** Letterbox only: grey level of the padding (Ultralytics uses 114). */
  pad_value?: number;
  /** Pixel values (0..255) are multiplied by scale, then (v − mean) / std per channel. */
  scale: number;
  mean: [number, number, number];
  std: [number, number, number];
  color: 'RGB' | 'BGR';
}

export interface DetectPostprocessing {
  /** yolov8 = [B, 4+C, N] (Ultralytics YOLOv8/YOLO11); yolov5 = [B, N, 5+C] with objectness (YOLOv5/YOLOX). */
  format: 'yolov8' | 'yolov5';
  confidence: number;
  iou: number;
  max_detections: number;
  labels: string[];
}

export interface ClassifyPostprocessing {
  softmax: boolean;
  top_k: number;
  labels: string[];
}

export interface Batching {
  /** 1 = the model cannot batch (fixed batch dim, or outputs without a batch dim). */
  max_batch_size: number;
  max_queue_delay_ms: number;
  max_queue_size: number;
}

export interface ModelManifest {
  name: string;
  version: number;
  sha256: string;
  task: 'detect' | 'classify' | 'raw';
  description: string;
  inputs: TensorSpec[];
  outputs: TensorSpec[];
  /** Omitted for raw models. */
  preprocessing?: Preprocessing;
  /** Omitted for raw models. */
  postprocessing?: DetectPostprocessing | ClassifyPostprocessing;
  batching: Batching;
}

/** Everything but the identity fields, which make-models fills in from the file it writes. */
export type ManifestBody = Omit<ModelManifest, 'name' | 'version' | 'sha256'>;

export function sha256Hex(bytes: Uint8Array): string {
  return createHash('sha256').update(bytes).digest('hex');
}

/** The manifest for a model file, keys in the documented order (stable JSON, stable diffs). */
export function buildManifest(name: string, version: number, model: Uint8Array, body: ManifestBody): ModelManifest {
  const { task, description, inputs, outputs, preprocessing, postprocessing, batching } = body;
  return {
    name,
    version,
    sha256: sha256Hex(model),
    task,
    description,
    inputs,
    outputs,
    ...(preprocessing ? { preprocessing } : {}),
    ...(postprocessing ? { postprocessing } : {}),
    batching,
  };
}
