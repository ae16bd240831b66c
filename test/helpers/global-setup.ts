import { mkdirSync } from 'node:fs';
import { makeModels } from '../../models/make-models.js';
import { GENERATED_REPOSITORY, GENERATED_SAMPLES, SHARED_MISSING, sharedModel } from './paths.js';

/** Generates the project's own models once for the whole run (deterministic, about a second). */
export default async function setup(): Promise<void> {
  mkdirSync(GENERATED_REPOSITORY, { recursive: true });
  await makeModels({ repositoryDir: GENERATED_REPOSITORY, samplesDir: GENERATED_SAMPLES });
  if (!sharedModel('detect/yolov8n-int8-640.onnx')) console.warn(`[outpost tests] ${SHARED_MISSING}`);
}
