/**
 * Computes a model's golden section (shared/src/golden.ts) by running it once on CPU: what an operator ships in the
 * manifest so every agent that stages the model checks it answers the same before it serves anyone.
 */
import * as ort from 'onnxruntime-node';
import { goldenFeeds, outputValues, summarizeOutput, type GoldenDatatype } from '../../../shared/src/golden.js';
import type { Golden } from '../../../shared/src/manifest.js';

const ORT_TO_KSERVE: Record<string, GoldenDatatype> = {
  float32: 'FP32', float64: 'FP64', float16: 'FP16', int8: 'INT8', int16: 'INT16', int32: 'INT32', int64: 'INT64',
  uint8: 'UINT8', uint16: 'UINT16', uint32: 'UINT32', uint64: 'UINT64', bool: 'BOOL',
};
const KSERVE_TO_ORT = Object.fromEntries(Object.entries(ORT_TO_KSERVE).map(([k, v]) => [v, k])) as Record<GoldenDatatype, ort.Tensor.Type>;

interface ManifestInput {
  name?: unknown;
  dims?: unknown;
  layout?: unknown;
}

/**
 * One input per model input, filled from `seed` (+ its index, so two inputs differ); dims from the model, a
 * variable dim from the manifest's input dims, else 1; the image input (first input of a detect/classify model or
 * one with preprocessing) gets preprocessing.size as its height and width. Throws when the model's answer holds a
 * NaN or ±Infinity: such an output cannot be compared within a tolerance.
 */
export async function computeGolden(onnx: Uint8Array, manifest: Record<string, unknown> | null, opts: { seed?: number } = {}): Promise<Golden> {
  const seed = opts.seed ?? 1;
  const session = await ort.InferenceSession.create(onnx, { executionProviders: ['cpu'] });
  try {
    const declared = Array.isArray(manifest?.inputs) ? (manifest.inputs as ManifestInput[]) : [];
    const preprocessing = manifest?.preprocessing as { size?: unknown } | undefined;
    const size = Array.isArray(preprocessing?.size) && preprocessing.size.length === 2 ? (preprocessing.size as number[]) : undefined;
    const imageModel = manifest?.task === 'detect' || manifest?.task === 'classify' || preprocessing !== undefined;
    const golden: Golden = { inputs: {}, outputs: {}, atol: 1e-3, rtol: 1e-3 };
    session.inputMetadata.forEach((meta, index) => {
      if (!meta.isTensor) throw new Error(`input '${meta.name}' is not a tensor; a golden input cannot be built for it`);
      const datatype = ORT_TO_KSERVE[meta.type];
      if (!datatype) throw new Error(`input '${meta.name}' has type ${meta.type}; a golden input cannot be built for it`);
      const mine = declared.find((d) => d.name === meta.name);
      const manifestDims = Array.isArray(mine?.dims) ? (mine.dims as number[]) : [];
      const dims = meta.shape.map((d, i) => (typeof d === 'number' && d > 0 ? d : manifestDims[i] !== undefined && manifestDims[i]! > 0 ? manifestDims[i]! : 1));
      if (index === 0 && imageModel && size && dims.length === 4) {
        const layout = mine?.layout ?? (dims[3] === 3 && dims[1] !== 3 ? 'NHWC' : 'NCHW');
        const [h, w] = size as [number, number];
        if (layout === 'NHWC') dims.splice(1, 2, h, w);
        else dims.splice(2, 2, h, w);
      }
      golden.inputs[meta.name] = { datatype, dims, fill: { seed: (seed + index) >>> 0 } };
    });
    const feeds: Record<string, ort.Tensor> = {};
    for (const [name, f] of Object.entries(goldenFeeds(golden))) feeds[name] = new ort.Tensor(KSERVE_TO_ORT[f.datatype], f.data, f.dims);
    const results = await session.run(feeds);
    for (const [name, t] of Object.entries(results)) {
      const values = outputValues(t.type, t.data as ArrayLike<number | bigint>);
      const summary = summarizeOutput([...t.dims], values);
      if (!Number.isFinite(summary.sum) || !Number.isFinite(summary.abs_sum)) {
        throw new Error(`output '${name}' is not finite on the golden input (sum ${summary.sum}); cannot be used as a golden`);
      }
      golden.outputs[name] = summary;
    }
    return golden;
  } finally {
    await session.release();
  }
}
