import type { PointResult, WindowPlan } from './measure.js';

/** IPC messages between bench/agent.ts and its two kinds of child process (bare-worker, load-client). */

/** One model for the bare phase: the version directory as the agent would load it. */
export interface BareJob {
  type: 'bare';
  /** Model name and its version directory (model.onnx, optional manifest.json). */
  name: string;
  versionDir: string;
  /** Encoded image fed through the agent's preprocessImage (image models only). */
  imagePath: string | undefined;
  /** Where to write the model's input tensors (raw little-endian) and their description, for the HTTP bodies. */
  inputsOut: string;
  /** Where to write the reference output tensor of the first output (raw little-endian). */
  outputOut: string;
  concurrencies: number[];
  /** Extra serial runs with this many images per run, for models with a dynamic batch dimension. */
  batchSizes: number[];
  preprocess: boolean;
  plan: WindowPlan;
  intraOpThreads: number;
  interOpThreads: number;
}

export interface TensorFile {
  name: string;
  datatype: string;
  dims: number[];
  /** Raw little-endian element bytes. */
  file: string;
  bytes: number;
}

export interface BareResult {
  type: 'bare-result';
  name: string;
  /** Session options actually used, for the environment section. */
  sessionOptions: Record<string, unknown>;
  sessionCreateMs: number;
  inputs: TensorFile[];
  output: { name: string; datatype: string; dims: number[]; file: string };
  /** What the bare pipeline (agent preprocess → session.run → decode → NMS) finds in the image. */
  reference: { detections: number; labels: string[]; confidence: number; iou: number; maxDetections: number } | undefined;
  /** session.run at each concurrency (batch 1). */
  run: PointResult[];
  /** Serial session.run with several images per run; throughput is runs/s (× batch for images/s). */
  batched: (PointResult & { batch: number })[];
  /** preprocessImage alone, at each concurrency. */
  preprocess: PointResult[];
  spec: { task: string; dynamicBatch: boolean; imageSize: [number, number] | undefined; manifestBatching: unknown };
}

export type ResponseCheck =
  | { kind: 'detect'; expectedDetections: number }
  | { kind: 'kserve-binary'; expectedBinaryBytes: number }
  | { kind: 'kserve-json' };

export interface LoadJob {
  type: 'load';
  id: number;
  host: string;
  port: number;
  path: string;
  headers: Record<string, string>;
  bodyFile: string;
  check: ResponseCheck;
  concurrency: number;
  plan: WindowPlan;
  /** The agent, whose CPU use is sampled at window boundaries. */
  watchedPid: number;
}

export interface LoadResult {
  type: 'load-result';
  id: number;
  result: PointResult;
  /** Responses that were 200 but failed the check (wrong detection count, truncated body). */
  mismatches: number;
  statusCounts: Record<string, number>;
}

export interface ChildFailure {
  type: 'error';
  message: string;
}
