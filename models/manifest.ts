/**
 * The manifest make-models writes next to each model.onnx (DESIGN §3.2). The types are the input side of the
 * one manifest schema in shared/src/manifest.ts, which the agent validates with, so the two cannot drift.
 */
import { createHash } from 'node:crypto';
import type { z } from 'zod';
import type {
  BatchingSchema, ClassifyPostprocessingSchema, DetectPostprocessingSchema, ManifestSchema, PreprocessingSchema, TensorSpecSchema,
} from '../shared/src/manifest.js';

export type TensorSpec = z.input<typeof TensorSpecSchema>;
export type Preprocessing = z.input<typeof PreprocessingSchema>;
export type DetectPostprocessing = z.input<typeof DetectPostprocessingSchema>;
export type ClassifyPostprocessing = z.input<typeof ClassifyPostprocessingSchema>;
export type Batching = z.input<typeof BatchingSchema>;
export type KServeDatatype = TensorSpec['datatype'];

export type ModelManifest = Omit<z.input<typeof ManifestSchema>, 'postprocessing'> & {
  sha256: string;
  description: string;
  inputs: TensorSpec[];
  outputs: TensorSpec[];
  /** Omitted for raw models. */
  postprocessing?: DetectPostprocessing | ClassifyPostprocessing;
};

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
    ...(batching ? { batching } : {}),
  };
}
