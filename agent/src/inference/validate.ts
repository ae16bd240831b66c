import type { TensorSpec } from '../../../shared/src/manifest.js';
import { fail } from '../errors.js';
import type { ModelSpec } from '../repository/model-spec.js';
import { preprocessImage, type PreprocessedImage } from '../vision/preprocess.js';
import { assertFinite, DATATYPES, fromBinary, fromJsonData, shapeProduct, type HostTensor, type NumericDatatype } from './tensor.js';

/** One input as a client sent it, after the wire format is undone but before it is checked against the model. */
export interface RequestInput {
  name: string;
  datatype: string;
  shape: number[];
  /** Flat JSON values, raw little-endian bytes (binary extension), or encoded images for BYTES. */
  payload: { kind: 'json'; values: unknown[] } | { kind: 'binary'; bytes: Uint8Array } | { kind: 'images'; images: Uint8Array[] };
}

export interface Limits {
  maxTensorElements: number;
  maxImagePixels: number;
}

/**
 * Checks every input against the model (names, datatype, rank, fixed dims, element count, finite values)
 * and turns it into a HostTensor; BYTES inputs to an image model are decoded and preprocessed.
 */
export async function toFeeds(spec: ModelSpec, inputs: RequestInput[], limits: Limits): Promise<{ feeds: Record<string, HostTensor>; images: PreprocessedImage[] }> {
  const feeds: Record<string, HostTensor> = {};
  let images: PreprocessedImage[] = [];
  const seen = new Set<string>();
  for (const input of inputs) {
    const model = spec.inputs.find((i) => i.name === input.name);
    if (!model) throw fail('AGENT_UNKNOWN_INPUT', `model has no input '${input.name.slice(0, 64)}'; inputs are ${spec.inputs.map((i) => i.name).join(', ')}`);
    if (seen.has(input.name)) throw fail('AGENT_INVALID_REQUEST', `input '${input.name}' given twice`);
    seen.add(input.name);
    if (input.datatype === 'BYTES' && spec.image && spec.image.input === input.name) {
      images = await decodeImages(input, spec, limits);
      feeds[input.name] = stackImages(spec, images);
      continue;
    }
    feeds[input.name] = toTensor(input, model, limits);
  }
  for (const m of spec.inputs) {
    if (!seen.has(m.name)) throw fail('AGENT_MISSING_INPUT', `input '${m.name}' is missing`);
  }
  if (spec.batching.dynamic) {
    // The batcher stacks requests along dim 0; inputs that disagree on it would mis-slice a whole batch.
    const rows = new Set(Object.values(feeds).map((t) => t.dims[0]));
    if (rows.size > 1) throw fail('AGENT_WRONG_SHAPE', `inputs disagree on the batch dimension: ${Object.entries(feeds).map(([n, t]) => `${n}[0]=${t.dims[0]}`).join(', ')}`);
  }
  return { feeds, images };
}

function toTensor(input: RequestInput, model: TensorSpec, limits: Limits): HostTensor {
  if (input.datatype !== model.datatype) {
    throw fail('AGENT_WRONG_DATATYPE', `input '${input.name}' is ${String(input.datatype).slice(0, 16)} but the model expects ${model.datatype}`);
  }
  checkShape(input.name, input.shape, model.dims);
  const count = shapeProduct(input.shape, limits.maxTensorElements);
  const datatype = model.datatype as NumericDatatype;
  let tensor: HostTensor;
  if (input.payload.kind === 'json') {
    if (input.payload.values.length !== count) {
      throw fail('AGENT_DATA_SIZE_MISMATCH', `input '${input.name}' has ${input.payload.values.length} values but shape ${JSON.stringify(input.shape)} needs ${count}`);
    }
    tensor = { datatype, dims: input.shape, data: fromJsonData(input.name, datatype, input.payload.values) };
  } else if (input.payload.kind === 'binary') {
    const need = count * DATATYPES[datatype].bytes;
    if (input.payload.bytes.length !== need) {
      throw fail('AGENT_DATA_SIZE_MISMATCH', `input '${input.name}' has ${input.payload.bytes.length} bytes but ${datatype} ${JSON.stringify(input.shape)} needs ${need}`);
    }
    tensor = { datatype, dims: input.shape, data: fromBinary(datatype, input.payload.bytes, count) };
  } else {
    throw fail('AGENT_WRONG_DATATYPE', `input '${input.name}' is BYTES but the model expects ${model.datatype}`);
  }
  assertFinite(input.name, tensor);
  return tensor;
}

export function checkShape(name: string, shape: readonly number[], dims: readonly number[]): void {
  if (shape.length !== dims.length) {
    throw fail('AGENT_WRONG_SHAPE', `input '${name}' has shape ${JSON.stringify(shape)}; the model expects rank ${dims.length} ${JSON.stringify(dims)}`);
  }
  shape.forEach((d, i) => {
    if (!Number.isSafeInteger(d) || d < 0) throw fail('AGENT_WRONG_SHAPE', `input '${name}' dimension ${i} is ${d}`);
    if (dims[i]! >= 0 && dims[i] !== d) {
      throw fail('AGENT_WRONG_SHAPE', `input '${name}' has shape ${JSON.stringify(shape)}; the model expects ${JSON.stringify(dims)} (-1 = any)`);
    }
  });
}

async function decodeImages(input: RequestInput, spec: ModelSpec, limits: Limits): Promise<PreprocessedImage[]> {
  if (input.payload.kind !== 'images') throw fail('AGENT_WRONG_DATATYPE', `input '${input.name}' is BYTES but carries no encoded images`);
  const { images } = input.payload;
  if (input.shape.length !== 1 || input.shape[0] !== images.length) {
    throw fail('AGENT_WRONG_SHAPE', `BYTES input '${input.name}' must have shape [${images.length}] (one element per image), got ${JSON.stringify(input.shape)}`);
  }
  if (images.length === 0) throw fail('AGENT_EMPTY_BODY', `BYTES input '${input.name}' has no images`);
  const max = spec.batching.dynamic ? Math.max(spec.batching.maxBatchSize, 1) : 1;
  if (images.length > max) throw fail('AGENT_BATCH_TOO_LARGE', `${images.length} images exceed the model's batch of ${max}`);
  const image = spec.image!;
  return Promise.all(images.map((bytes) => preprocessImage(bytes, { spec: image.spec, layout: image.layout, datatype: image.datatype, maxPixels: limits.maxImagePixels })));
}

/** Stacks preprocessed images into one [N, …] input tensor. */
export function stackImages(spec: ModelSpec, images: PreprocessedImage[]): HostTensor {
  const image = spec.image!;
  const [h, w] = image.spec.size;
  const per = 3 * h * w;
  const dims = image.layout === 'NCHW' ? [images.length, 3, h, w] : [images.length, h, w, 3];
  if (images.length === 1) return { datatype: image.datatype, dims, data: images[0]!.data };
  const data = image.datatype === 'UINT8' ? new Uint8Array(per * images.length) : new Float32Array(per * images.length);
  images.forEach((img, i) => data.set(img.data, i * per));
  return { datatype: image.datatype, dims, data };
}
