/**
 * Bench child: the floor. One onnxruntime session with the agent's CPU session options, session.run on a
 * pre-built input (no HTTP, no copies), the agent's own preprocessImage alone, and the reference detections
 * of the bare pipeline that the HTTP detect responses are checked against. Started by bench/agent.ts with
 * child_process.fork; one BareJob in, one BareResult out, then it exits.
 */
import { readFileSync, writeFileSync, existsSync } from 'node:fs';
import path from 'node:path';
import * as ort from 'onnxruntime-node';
import { DATATYPES, kserveFromOrt, type HostTensor, type NumericDatatype } from '../agent/src/inference/tensor.js';
import { stackImages } from '../agent/src/inference/validate.js';
import { resolveModelSpec } from '../agent/src/repository/model-spec.js';
import { nms } from '../agent/src/vision/nms.js';
import { preprocessImage, type PreprocessTarget } from '../agent/src/vision/preprocess.js';
import { decodeYolo } from '../agent/src/vision/yolo.js';
import { parseManifest, type Manifest } from '../shared/src/manifest.js';
import { readOnnxMetadata } from '../shared/src/onnx/model-metadata.js';
import { measureClosedLoop } from './measure.js';
import type { BareJob, BareResult, ChildFailure, TensorFile } from './protocol.js';

async function runBare(job: BareJob): Promise<BareResult> {
  const bytes = readFileSync(path.join(job.versionDir, 'model.onnx'));
  const manifestPath = path.join(job.versionDir, 'manifest.json');
  let manifest: Manifest | undefined;
  if (existsSync(manifestPath)) {
    const parsed = parseManifest(JSON.parse(readFileSync(manifestPath, 'utf8')));
    if (!parsed.ok) throw new Error(`${manifestPath}: ${parsed.problems.join('; ')}`);
    manifest = parsed.manifest;
  }
  // The same options the agent's session.ts gives the CPU provider.
  const sessionOptions: ort.InferenceSession.SessionOptions = {
    executionProviders: ['cpu'],
    graphOptimizationLevel: 'all',
    ...(job.intraOpThreads > 0 ? { intraOpNumThreads: job.intraOpThreads } : {}),
    ...(job.interOpThreads > 0 ? { interOpNumThreads: job.interOpThreads } : {}),
  };
  const createStart = performance.now();
  const session = await ort.InferenceSession.create(bytes, sessionOptions);
  const sessionCreateMs = performance.now() - createStart;
  const describe = (meta: readonly ort.InferenceSession.ValueMetadata[]) =>
    meta.map((m) => ({ name: m.name, datatype: m.isTensor ? (kserveFromOrt(m.type) ?? 'BYTES') : 'BYTES', dims: m.isTensor ? m.shape.map((d) => (typeof d === 'number' && d >= 0 ? d : -1)) : [] }));
  const spec = resolveModelSpec({ inputs: describe(session.inputMetadata), outputs: describe(session.outputMetadata) }, manifest, readOnnxMetadata(bytes).metadataProps, {
    batchingEnabled: true, maxBatchSize: 8, maxQueueDelayMs: 0, maxQueueSize: 64,
  });

  // The input: the preprocessed image for image models, deterministic values otherwise.
  const host: Record<string, HostTensor> = {};
  let target: PreprocessTarget | undefined;
  let image: Uint8Array | undefined;
  let transform;
  if (spec.image) {
    if (!job.imagePath) throw new Error(`${job.name} takes images; the job has no image`);
    image = readFileSync(job.imagePath);
    target = { spec: spec.image.spec, layout: spec.image.layout, datatype: spec.image.datatype, maxPixels: 40_000_000 };
    const pre = await preprocessImage(image, target);
    transform = pre.transform;
    host[spec.image.input] = stackImages(spec, [pre]);
  }
  spec.inputs.forEach((input, k) => {
    if (host[input.name]) return;
    const datatype = input.datatype as NumericDatatype;
    if (!(datatype in DATATYPES)) throw new Error(`input '${input.name}' is ${input.datatype}; the bench feeds numeric inputs only`);
    const dims = input.dims.map((d) => (d < 0 ? 1 : d));
    const n = dims.reduce((a, b) => a * b, 1);
    const t = DATATYPES[datatype];
    const data = t.make(n);
    for (let i = 0; i < n; i++) {
      const v = (i * (k + 3)) % 97;
      (data as unknown as ArrayLike<unknown> & Record<number, unknown>)[i] = t.big ? BigInt(v) : t.float && datatype !== 'FP16' ? v / 97 : v;
    }
    host[input.name] = { datatype, dims, data };
  });
  const toOrt = (t: HostTensor, batch = 1): ort.Tensor => {
    if (batch === 1) return new ort.Tensor(DATATYPES[t.datatype].ort, t.data as never, t.dims);
    const data = DATATYPES[t.datatype].make(t.data.length * batch);
    for (let b = 0; b < batch; b++) (data as Float32Array).set(t.data as Float32Array, b * t.data.length);
    return new ort.Tensor(DATATYPES[t.datatype].ort, data as never, [t.dims[0]! * batch, ...t.dims.slice(1)]);
  };
  const feeds = Object.fromEntries(Object.entries(host).map(([name, t]) => [name, toOrt(t)]));

  const inputs: TensorFile[] = Object.entries(host).map(([name, t], i) => {
    const file = `${job.inputsOut}.${i}.bin`;
    const raw = Buffer.from(t.data.buffer, t.data.byteOffset, t.data.byteLength);
    writeFileSync(file, raw);
    return { name, datatype: t.datatype, dims: t.dims, file, bytes: raw.length };
  });

  // Reference output and detections.
  const first = await session.run(feeds);
  const outName = session.outputNames[0]!;
  const out = first[outName]!;
  const outData = out.data as unknown as ArrayBufferView;
  writeFileSync(job.outputOut, Buffer.from(outData.buffer, outData.byteOffset, outData.byteLength));
  let reference: BareResult['reference'];
  if (spec.detect && spec.image && transform) {
    const d = spec.detect;
    const tensor: HostTensor = { datatype: 'FP32', dims: [...first[d.output]!.dims], data: first[d.output]!.data as Float32Array };
    const kept = nms(decodeYolo(tensor, 0, d.format, d.confidence, spec.image.spec.size), d.iou, d.max_detections);
    reference = { detections: kept.length, labels: kept.map((c) => spec.labels?.[c.classId] ?? String(c.classId)), confidence: d.confidence, iou: d.iou, maxDetections: d.max_detections };
  }

  const run = [];
  for (const c of job.concurrencies) run.push(await measureClosedLoop(async () => void (await session.run(feeds)), c, job.plan));
  const batched = [];
  if (spec.batching.dynamic) {
    for (const b of job.batchSizes) {
      const big = Object.fromEntries(Object.entries(host).map(([name, t]) => [name, toOrt(t, b)]));
      batched.push({ ...(await measureClosedLoop(async () => void (await session.run(big)), 1, job.plan)), batch: b });
    }
  }
  const preprocess = [];
  if (job.preprocess && target && image) {
    const img = image;
    const tgt = target;
    for (const c of job.concurrencies) preprocess.push(await measureClosedLoop(async () => void (await preprocessImage(img, tgt)), c, job.plan));
  }
  await session.release();
  return {
    type: 'bare-result',
    name: job.name,
    sessionOptions: { ...sessionOptions, intraOpNumThreads: job.intraOpThreads || 'onnxruntime default', interOpNumThreads: job.interOpThreads || 'onnxruntime default' },
    sessionCreateMs,
    inputs,
    output: { name: outName, datatype: kserveFromOrt(out.type) ?? out.type, dims: [...out.dims], file: job.outputOut },
    reference,
    run,
    batched,
    preprocess,
    spec: { task: spec.task, dynamicBatch: spec.batching.dynamic, imageSize: spec.image?.spec.size, manifestBatching: manifest?.batching },
  };
}

// The parent going away (bench killed) ends this child too.
process.on('disconnect', () => process.exit(1));
process.once('message', (job: BareJob) => {
  runBare(job).then(
    (result) => process.send!(result, () => process.exit(0)),
    (err: unknown) => process.send!({ type: 'error', message: err instanceof Error ? (err.stack ?? err.message) : String(err) } satisfies ChildFailure, () => process.exit(1)),
  );
});
