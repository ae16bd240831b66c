import { describe, expect, it } from 'vitest';
import { ModelSpecError, resolveModelSpec, type SpecDefaults } from '../../agent/src/repository/model-spec.js';
import { selectVersions } from '../../agent/src/repository/scan.js';
import { parseManifest, type Manifest, type TensorSpec } from '../../shared/src/manifest.js';

const DEFAULTS: SpecDefaults = { batchingEnabled: true, maxBatchSize: 8, maxQueueDelayMs: 0, maxQueueSize: 64 };

const t = (name: string, dims: number[], datatype: TensorSpec['datatype'] = 'FP32'): TensorSpec => ({ name, datatype, dims });

/** A manifest as the agent loads it: through parseManifest, so schema defaults are applied the same way. */
function manifest(value: Record<string, unknown>): Manifest {
  const parsed = parseManifest({ name: 'm', version: 1, ...value });
  if (!parsed.ok) throw new Error(`test manifest invalid: ${parsed.problems.join('; ')}`);
  return parsed.manifest;
}

/** What an Ultralytics YOLOv8 export with two classes carries in its ONNX metadata_props. */
const ULTRALYTICS_META = { task: 'detect', names: `{0: 'person', 1: "teddy's bear"}`, imgsz: '[640, 640]', stride: '32' };
const YOLOV8_IO = { inputs: [t('images', [1, 3, 640, 640])], outputs: [t('output0', [1, 6, 8400])] };

describe('resolveModelSpec from ONNX metadata (no manifest)', () => {
  it('a bare Ultralytics detector resolves to detect/yolov8 with its labels and a letterbox of imgsz', () => {
    const spec = resolveModelSpec(YOLOV8_IO, undefined, ULTRALYTICS_META, DEFAULTS);
    expect(spec.task).toBe('detect');
    expect(spec.source).toBe('onnx-metadata');
    expect(spec.labels).toEqual(['person', "teddy's bear"]);
    expect(spec.image).toMatchObject({ input: 'images', layout: 'NCHW', datatype: 'FP32' });
    expect(spec.image!.spec).toMatchObject({ size: [640, 640], resize: 'letterbox', pad_position: 'center', pad_value: 114, color: 'RGB' });
    expect(spec.detect).toMatchObject({ format: 'yolov8', output: 'output0', confidence: 0.25, iou: 0.45, max_detections: 100 });
    expect(spec.classify).toBeUndefined();
  });

  it('a dynamic-shape export takes its size from imgsz and batches', () => {
    const io = { inputs: [t('images', [-1, 3, -1, -1])], outputs: [t('output0', [-1, 6, -1])] };
    const spec = resolveModelSpec(io, undefined, { ...ULTRALYTICS_META, imgsz: '[480, 640]' }, DEFAULTS);
    expect(spec.image!.spec.size).toEqual([480, 640]);
    expect(spec.detect!.format).toBe('yolov8');
    expect(spec.batching).toMatchObject({ dynamic: true, maxBatchSize: 8 });
  });

  it('an Ultralytics classifier center-crops and applies softmax only when needed', () => {
    const io = { inputs: [t('images', [1, 3, 224, 224])], outputs: [t('output0', [1, 3])] };
    const spec = resolveModelSpec(io, undefined, { task: 'classify', names: `{0: 'a', 1: 'b', 2: 'c'}`, imgsz: '224' }, DEFAULTS);
    expect(spec.task).toBe('classify');
    expect(spec.image!.spec).toMatchObject({ size: [224, 224], resize: 'center_crop' });
    expect(spec.classify).toMatchObject({ softmax: 'auto', top_k: 5, output: 'output0' });
    expect(spec.labels).toEqual(['a', 'b', 'c']);
  });

  it('a model with no metadata and no manifest is served raw', () => {
    const spec = resolveModelSpec({ inputs: [t('x', [1, 4])], outputs: [t('y', [1, 2])] }, undefined, {}, DEFAULTS);
    expect(spec).toMatchObject({ task: 'raw', source: 'model-io', image: undefined, detect: undefined, classify: undefined, labels: undefined });
  });

  it('guesses yolov5 for a [B, N, 5+C] output', () => {
    const io = { inputs: [t('images', [1, 3, 640, 640])], outputs: [t('output', [1, 25200, 7])] };
    expect(resolveModelSpec(io, undefined, ULTRALYTICS_META, DEFAULTS).detect!.format).toBe('yolov5');
    expect(resolveModelSpec(io, undefined, { task: 'detect', imgsz: '640' }, DEFAULTS).detect!.format).toBe('yolov5');
  });

  it('detects NHWC image inputs by their shape', () => {
    const io = { inputs: [t('images', [1, 320, 320, 3], 'UINT8')], outputs: [t('output0', [1, 6, 2100])] };
    const spec = resolveModelSpec(io, undefined, { ...ULTRALYTICS_META, imgsz: '320' }, DEFAULTS);
    expect(spec.image).toMatchObject({ layout: 'NHWC', datatype: 'UINT8' });
  });

  it('refuses unreadable names metadata with a clear message', () => {
    expect(() => resolveModelSpec(YOLOV8_IO, undefined, { ...ULTRALYTICS_META, names: `{0: 'a', 2: 'c'}` }, DEFAULTS)).toThrow(ModelSpecError);
    expect(() => resolveModelSpec(YOLOV8_IO, undefined, { ...ULTRALYTICS_META, names: `{0: 'a', 2: 'c'}` }, DEFAULTS)).toThrow(/names.*index 1 is missing/);
  });

  it('refuses an imgsz that contradicts the fixed input size', () => {
    expect(() => resolveModelSpec(YOLOV8_IO, undefined, { ...ULTRALYTICS_META, imgsz: '[320, 320]' }, DEFAULTS)).toThrow(/\[320,320\] does not match input 'images'/);
  });
});

describe('resolveModelSpec with a manifest', () => {
  it('a manifest input with the wrong datatype is refused, naming both', () => {
    const m = manifest({ task: 'detect', inputs: [t('images', [1, 3, 640, 640], 'UINT8')] });
    expect(() => resolveModelSpec(YOLOV8_IO, m, {}, DEFAULTS)).toThrow(ModelSpecError);
    expect(() => resolveModelSpec(YOLOV8_IO, m, {}, DEFAULTS)).toThrow("manifest input 'images' is UINT8 but the model's is FP32");
  });

  it('a manifest input name the model does not have is refused, listing the real ones', () => {
    const m = manifest({ task: 'detect', inputs: [t('input', [1, 3, 640, 640])] });
    expect(() => resolveModelSpec(YOLOV8_IO, m, {}, DEFAULTS)).toThrow("manifest input 'input' is not in the model (it has images)");
    const o = manifest({ task: 'detect', outputs: [t('boxes', [1, 6, 8400])] });
    expect(() => resolveModelSpec(YOLOV8_IO, o, {}, DEFAULTS)).toThrow(/manifest output 'boxes' is not in the model/);
  });

  it('a manifest output with a different rank is refused', () => {
    const m = manifest({ task: 'detect', outputs: [t('output0', [6, 8400])] });
    expect(() => resolveModelSpec(YOLOV8_IO, m, {}, DEFAULTS)).toThrow(/rank 2 but the model's has 3/);
  });

  it('a manifest may set the layout of an input the shape would guess wrong', () => {
    // [1, 3, 64, 3] looks NCHW (3 channels first); the manifest says it is a 3×64 NHWC image.
    const io = { inputs: [t('x', [1, 3, 64, 3])], outputs: [t('y', [1, 10])] };
    expect(resolveModelSpec(io, manifest({ task: 'classify', preprocessing: { size: [64, 3] } }), {}, DEFAULTS).image!.layout).toBe('NCHW');
    const m = manifest({ task: 'classify', inputs: [{ ...t('x', [1, 3, 64, 3]), layout: 'NHWC' }], preprocessing: { size: [3, 64] } });
    expect(resolveModelSpec(io, m, {}, DEFAULTS).image!.layout).toBe('NHWC');
  });

  it('labels that do not match the output classes are refused', () => {
    const threeLabels = { ...ULTRALYTICS_META, names: `{0: 'a', 1: 'b', 2: 'c'}` };
    expect(() => resolveModelSpec(YOLOV8_IO, undefined, threeLabels, DEFAULTS)).toThrow(ModelSpecError);
    expect(() => resolveModelSpec(YOLOV8_IO, undefined, threeLabels, DEFAULTS)).toThrow("3 labels but output 'output0' [1,6,8400] carries 2 classes as yolov8");
    const m = manifest({ task: 'detect', preprocessing: { size: [640, 640] }, postprocessing: { format: 'yolov8', labels: ['only-one'] } });
    expect(() => resolveModelSpec(YOLOV8_IO, m, {}, DEFAULTS)).toThrow(/1 labels but output 'output0'/);
  });

  it("the manifest's labels and thresholds win over the file's metadata", () => {
    const m = manifest({ task: 'detect', postprocessing: { format: 'yolov8', labels: ['cat', 'dog'], confidence: 0.6 } });
    const spec = resolveModelSpec(YOLOV8_IO, m, ULTRALYTICS_META, DEFAULTS);
    expect(spec.source).toBe('manifest');
    expect(spec.labels).toEqual(['cat', 'dog']);
    expect(spec.detect).toMatchObject({ confidence: 0.6, iou: 0.45 });
  });

  it('a detect manifest without a format still gets the format guessed from the output', () => {
    // YOLOv5 layout [B, N, 5+C]: a manifest that only sets thresholds must not force yolov8 on it.
    const io = { inputs: [t('images', [1, 3, 640, 640])], outputs: [t('output', [1, 25200, 7])] };
    const m = manifest({ task: 'detect', preprocessing: { size: [640, 640] }, postprocessing: { confidence: 0.4, labels: ['a', 'b'] } });
    const spec = resolveModelSpec(io, m, {}, DEFAULTS);
    expect(spec.detect).toMatchObject({ format: 'yolov5', confidence: 0.4 });
  });

  it("a classify manifest without softmax keeps softmax 'auto'; an explicit one is kept", () => {
    const io = { inputs: [t('images', [1, 3, 224, 224])], outputs: [t('probs', [1, 10])] };
    const base = { task: 'classify', preprocessing: { size: [224, 224], resize: 'center_crop' } };
    expect(resolveModelSpec(io, manifest({ ...base, postprocessing: { top_k: 3 } }), {}, DEFAULTS).classify).toMatchObject({ softmax: 'auto', top_k: 3 });
    expect(resolveModelSpec(io, manifest({ ...base, postprocessing: { softmax: false } }), {}, DEFAULTS).classify!.softmax).toBe(false);
    expect(resolveModelSpec(io, manifest({ ...base, postprocessing: { softmax: true } }), {}, DEFAULTS).classify!.softmax).toBe(true);
  });

  it('a raw manifest with preprocessing takes images on its first input', () => {
    const io = { inputs: [t('x', [1, 3, 32, 32])], outputs: [t('y', [1, 5])] };
    const spec = resolveModelSpec(io, manifest({ task: 'raw', preprocessing: { size: [32, 32], resize: 'stretch' } }), {}, DEFAULTS);
    expect(spec.task).toBe('raw');
    expect(spec.image!.spec.resize).toBe('stretch');
  });

  it('an image model with a variable size needs preprocessing.size', () => {
    const io = { inputs: [t('images', [1, 3, -1, -1])], outputs: [t('output0', [1, 6, -1])] };
    expect(() => resolveModelSpec(io, undefined, { task: 'detect' }, DEFAULTS)).toThrow(/no fixed height\/width; give preprocessing.size/);
  });
});

describe('resolveModelSpec batching', () => {
  const dynamicIo = { inputs: [t('x', [-1, 4]), t('mask', [-1, 4], 'BOOL')], outputs: [t('y', [-1, 2])] };

  it('a model with a variable first dim on every input and output batches up to the default', () => {
    expect(resolveModelSpec(dynamicIo, undefined, {}, DEFAULTS).batching).toEqual({ dynamic: true, maxBatchSize: 8, maxQueueDelayMs: 0, maxQueueSize: 64 });
  });

  it('a fixed first dim anywhere (input or output) means one request per run', () => {
    const fixedOutput = { inputs: dynamicIo.inputs, outputs: [t('y', [1, 2])] };
    expect(resolveModelSpec(fixedOutput, undefined, {}, DEFAULTS).batching).toMatchObject({ dynamic: false, maxBatchSize: 1 });
    const fixedInput = { inputs: [t('x', [-1, 4]), t('mask', [1, 4], 'BOOL')], outputs: dynamicIo.outputs };
    expect(resolveModelSpec(fixedInput, undefined, {}, DEFAULTS).batching).toMatchObject({ dynamic: false, maxBatchSize: 1 });
    const scalarOutput = { inputs: dynamicIo.inputs, outputs: [t('y', [])] };
    expect(resolveModelSpec(scalarOutput, undefined, {}, DEFAULTS).batching.dynamic).toBe(false);
  });

  it("the manifest's batching section overrides the defaults, but cannot batch a fixed model", () => {
    const b = { batching: { max_batch_size: 16, max_queue_delay_ms: 5, max_queue_size: 10 } };
    expect(resolveModelSpec(dynamicIo, manifest(b), {}, DEFAULTS).batching).toEqual({ dynamic: true, maxBatchSize: 16, maxQueueDelayMs: 5, maxQueueSize: 10 });
    const fixed = { inputs: [t('x', [1, 4])], outputs: [t('y', [1, 2])] };
    expect(resolveModelSpec(fixed, manifest(b), {}, DEFAULTS).batching.maxBatchSize).toBe(1);
  });

  it('batching.enabled false serves dynamic models one request per run', () => {
    expect(resolveModelSpec(dynamicIo, undefined, {}, { ...DEFAULTS, batchingEnabled: false }).batching).toMatchObject({ dynamic: true, maxBatchSize: 1 });
  });
});

describe('selectVersions', () => {
  it("'latest' serves the highest version only", () => {
    expect(selectVersions([1, 2, 10], 'latest', undefined)).toEqual([10]);
    expect(selectVersions([], 'latest', undefined)).toEqual([]);
  });

  it("'all' serves every version", () => {
    expect(selectVersions([1, 2, 10], 'all', undefined)).toEqual([1, 2, 10]);
  });

  it('a pinned list overrides the policy, and ignores pinned versions that are not there', () => {
    expect(selectVersions([1, 2, 10], 'latest', [2])).toEqual([2]);
    expect(selectVersions([1, 2, 10], 'all', [1, 10])).toEqual([1, 10]);
    expect(selectVersions([1, 2, 10], 'latest', [7])).toEqual([]);
  });
});

describe('parseManifest', () => {
  const valid = { name: 'yolov8n', version: 3, task: 'detect', preprocessing: { size: [640, 640] }, postprocessing: { confidence: 0.3 } };

  it('accepts a valid manifest and fills in defaults', () => {
    const r = parseManifest(valid);
    expect(r.ok).toBe(true);
    if (!r.ok) return;
    expect(r.manifest).toMatchObject({ name: 'yolov8n', version: 3, task: 'detect', instance_count: 1 });
    expect(r.manifest.preprocessing).toMatchObject({ size: [640, 640], resize: 'letterbox', pad_value: 114 });
  });

  it('rejects unknown keys, top-level and nested', () => {
    const top = parseManifest({ ...valid, treshold: 0.5 });
    expect(top.ok).toBe(false);
    if (!top.ok) expect(top.problems.join('\n')).toContain('treshold');
    const nested = parseManifest({ ...valid, preprocessing: { size: [640, 640], colour: 'RGB' } });
    expect(nested.ok).toBe(false);
    if (!nested.ok) expect(nested.problems.join('\n')).toMatch(/preprocessing.*colour/);
  });

  it('lists every problem, each with its path', () => {
    const r = parseManifest({ name: '-bad name', version: 0, task: 'segment', sha256: 'xyz', batching: { max_batch_size: 0 } });
    expect(r.ok).toBe(false);
    if (r.ok) return;
    for (const path of ['name', 'version', 'task', 'sha256', 'batching.max_batch_size']) {
      expect(r.problems.some((p) => p.startsWith(`${path}:`)), `${path} in ${JSON.stringify(r.problems)}`).toBe(true);
    }
  });

  it('checks postprocessing against the schema of the task', () => {
    const badDetect = parseManifest({ ...valid, postprocessing: { confidence: 2, format: 'yolov9', softmax: true } });
    expect(badDetect.ok).toBe(false);
    if (!badDetect.ok) {
      const text = badDetect.problems.join('\n');
      expect(text).toContain('postprocessing.confidence');
      expect(text).toContain('postprocessing.format');
      expect(text).toContain('softmax'); // a classify key on a detector
    }
    const badClassify = parseManifest({ name: 'c', version: 1, task: 'classify', postprocessing: { top_k: 0, iou: 0.5 } });
    expect(badClassify.ok).toBe(false);
    if (!badClassify.ok) {
      expect(badClassify.problems.join('\n')).toContain('postprocessing.top_k');
      expect(badClassify.problems.join('\n')).toContain('iou');
    }
    // A raw model's postprocessing is not the agent's business.
    expect(parseManifest({ name: 'r', version: 1, task: 'raw', postprocessing: { anything: 1 } }).ok).toBe(true);
  });

  it('rejects a non-object', () => {
    expect(parseManifest('yolov8n').ok).toBe(false);
    expect(parseManifest(null).ok).toBe(false);
  });
});
